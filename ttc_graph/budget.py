"""Budgets and the usage ledger.

The paper's unit of test-time compute is the *generation*: best-of-N and beam search with N beams cost N,
lookahead with k steps costs N·(k+1). A :class:`Budget` may also cap policy completion tokens and wall
seconds. The ledger is a plain dict (it lives in graph state and checkpoints) merged by :func:`merge_usage`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ttc_graph.errors import ConfigurationError
from ttc_graph.usage import RequestUsage

__all__ = [
    "COUNTERS",
    "MAX_UNBUDGETED_N",
    "OPTIONAL_COUNTERS",
    "Budget",
    "NodeKind",
    "Remaining",
    "check_n",
    "empty_usage",
    "merge_usage",
    "policy_generations",
    "policy_tokens",
    "policy_unconfirmed_tokens",
    "remaining",
    "usage_delta",
]

NodeKind = Literal["propose", "verify", "revise"]
COUNTERS = ("generations", "requests", "prompt_tokens", "completion_tokens", "failed_requests")
OPTIONAL_COUNTERS = ("unconfirmed_tokens",)
"""Counters a ledger holds only once they are non-zero (tokens reserved by requests whose answer was lost)."""
MAX_UNBUDGETED_N = 1024
"""The largest ``n`` a strategy accepts without a budget (4x the paper's largest); set one to go beyond."""
POLICY_KINDS: tuple[NodeKind, ...] = ("propose", "revise")


class Budget(BaseModel):
    """Limits of one run. ``None`` means no limit on that axis.

    ``generations`` counts policy generations (propose and revise, as in the paper); ``tokens`` counts the
    policy's completion tokens, and the ``max_tokens`` of every request whose answer was lost (the server may have
    generated them); ``seconds`` is wall time from the start of the run. Counts are integers (not bools or
    strings) and seconds a finite number: anything else is a validation error naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    generations: int | None = Field(None, ge=1, strict=True)
    tokens: int | None = Field(None, ge=1, strict=True)
    seconds: float | None = Field(None, gt=0, allow_inf_nan=False, strict=True)


def check_n(n: object, budget: Budget | None = None, *, name: str = "n") -> int:
    """``n`` as a count of samples: an integer >= 1 (not a bool), at most :data:`MAX_UNBUDGETED_N` unless a budget
    sets a limit; else a :class:`~ttc_graph.errors.ConfigurationError` naming it."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"{name}: must be an integer >= 1, got {n!r}")
    limited = budget is not None and any(v is not None for v in (budget.generations, budget.tokens, budget.seconds))
    if n > MAX_UNBUDGETED_N and not limited:
        raise ConfigurationError(
            f"{name}: {n} is above {MAX_UNBUDGETED_N}, the most a strategy runs without a budget; pass"
            " budget=Budget(generations=..., tokens=... or seconds=...) to bound it"
        )
    return n


def empty_usage() -> dict[str, Any]:
    """A ledger with nothing spent."""
    return {**dict.fromkeys(COUNTERS, 0), "by_kind": {}, "seconds": 0.0}


def usage_delta(kind: NodeKind, usage: RequestUsage | None = None, *, generations: int = 0) -> dict[str, Any]:
    """A ledger entry for one node's spend, charged to ``kind``."""
    u = usage or RequestUsage()
    counters = {
        "generations": generations,
        "requests": u.requests,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "failed_requests": u.failed_requests,
    }
    if u.unconfirmed_tokens:
        counters["unconfirmed_tokens"] = u.unconfirmed_tokens
    return {**counters, "by_kind": {kind: dict(counters)}, "seconds": 0.0}


def _add(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    out = {k: left.get(k, 0) + right.get(k, 0) for k in COUNTERS}
    for key in OPTIONAL_COUNTERS:
        if key in left or key in right:
            out[key] = left.get(key, 0) + right.get(key, 0)
    return out


def merge_usage(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer: add counters (overall and per kind); ``seconds`` keeps the larger value."""
    if not left:
        left = empty_usage()
        if not right:
            return left
    if not right:
        return left
    out: dict[str, Any] = _add(left, right)
    by_kind: dict[str, dict[str, int]] = {k: _add(v, {}) for k, v in left.get("by_kind", {}).items()}
    for kind, counters in right.get("by_kind", {}).items():
        by_kind[kind] = _add(by_kind.get(kind, {}), counters)
    out["by_kind"] = by_kind
    out["seconds"] = max(float(left.get("seconds", 0.0)), float(right.get("seconds", 0.0)))
    return out


def policy_tokens(usage: dict[str, Any] | None) -> int:
    """Completion tokens the policy spent (propose and revise)."""
    by_kind = (usage or {}).get("by_kind", {})
    return sum(by_kind.get(k, {}).get("completion_tokens", 0) for k in POLICY_KINDS)


def policy_unconfirmed_tokens(usage: dict[str, Any] | None) -> int:
    """Completion tokens the policy may have spent on requests whose answer was lost (their ``max_tokens``)."""
    by_kind = (usage or {}).get("by_kind", {})
    return sum(by_kind.get(k, {}).get("unconfirmed_tokens", 0) for k in POLICY_KINDS)


def policy_generations(usage: dict[str, Any] | None) -> int:
    by_kind = (usage or {}).get("by_kind", {})
    return sum(by_kind.get(k, {}).get("generations", 0) for k in POLICY_KINDS)


@dataclass(frozen=True, slots=True)
class Remaining:
    """What a budget still allows; ``math.inf`` where it sets no limit."""

    generations: float
    tokens: float
    seconds: float

    @property
    def exhausted(self) -> str | None:
        """The first axis that is used up, or None."""
        for axis in ("generations", "tokens", "seconds"):
            if getattr(self, axis) <= 0:
                return axis
        return None

    def max_tokens_each(self, samples: int, wanted: int | None) -> int | None:
        """A per-sample ``max_tokens`` so ``samples`` generations cannot overrun the token limit."""
        if math.isinf(self.tokens):
            return wanted
        share = int(self.tokens // max(samples, 1))
        return share if wanted is None else min(wanted, share)


def remaining(budget: Budget | None, usage: dict[str, Any] | None, started_at: float | None) -> Remaining:
    """What ``budget`` still allows after ``usage``, ``started_at`` being ``time.time()`` at the start."""
    if budget is None:
        return Remaining(math.inf, math.inf, math.inf)
    gens = math.inf if budget.generations is None else budget.generations - policy_generations(usage)
    spent = policy_tokens(usage) + policy_unconfirmed_tokens(usage)  # a lost answer counts what it reserved
    toks = math.inf if budget.tokens is None else budget.tokens - spent
    if budget.seconds is None or started_at is None:
        secs = math.inf
    else:
        secs = budget.seconds - (time.time() - started_at)
    return Remaining(gens, toks, secs)
