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

from ttc_graph.usage import RequestUsage

__all__ = [
    "COUNTERS",
    "Budget",
    "NodeKind",
    "Remaining",
    "empty_usage",
    "merge_usage",
    "policy_generations",
    "policy_tokens",
    "remaining",
    "usage_delta",
]

NodeKind = Literal["propose", "verify", "revise"]
COUNTERS = ("generations", "requests", "prompt_tokens", "completion_tokens", "failed_requests")
POLICY_KINDS: tuple[NodeKind, ...] = ("propose", "revise")


class Budget(BaseModel):
    """Limits of one run. ``None`` means no limit on that axis.

    ``generations`` counts policy generations (propose and revise, as in the paper); ``tokens`` counts the
    policy's completion tokens; ``seconds`` is wall time from the start of the run.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    generations: int | None = Field(None, ge=1)
    tokens: int | None = Field(None, ge=1)
    seconds: float | None = Field(None, gt=0)


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
    return {**counters, "by_kind": {kind: dict(counters)}, "seconds": 0.0}


def merge_usage(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer: add counters (overall and per kind); ``seconds`` keeps the larger value."""
    if not left:
        return dict(right or empty_usage())
    if not right:
        return left
    out: dict[str, Any] = {k: left.get(k, 0) + right.get(k, 0) for k in COUNTERS}
    by_kind: dict[str, dict[str, int]] = {k: dict(v) for k, v in left.get("by_kind", {}).items()}
    for kind, counters in right.get("by_kind", {}).items():
        mine = by_kind.setdefault(kind, dict.fromkeys(COUNTERS, 0))
        for key in COUNTERS:
            mine[key] = mine.get(key, 0) + counters.get(key, 0)
    out["by_kind"] = by_kind
    out["seconds"] = max(float(left.get("seconds", 0.0)), float(right.get("seconds", 0.0)))
    return out


def policy_tokens(usage: dict[str, Any] | None) -> int:
    """Completion tokens the policy spent (propose and revise)."""
    by_kind = (usage or {}).get("by_kind", {})
    return sum(by_kind.get(k, {}).get("completion_tokens", 0) for k in POLICY_KINDS)


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
    toks = math.inf if budget.tokens is None else budget.tokens - policy_tokens(usage)
    if budget.seconds is None or started_at is None:
        secs = math.inf
    else:
        secs = budget.seconds - (time.time() - started_at)
    return Remaining(gens, toks, secs)
