"""Budgets and the usage ledger.

The paper's unit of test-time compute is the *generation*: best-of-N and beam search with N beams cost N,
lookahead with k steps costs N·(k+1). A :class:`Budget` may also cap policy completion tokens, wall seconds and
dollars. The ledger is a plain dict (it lives in graph state and checkpoints) merged by :func:`merge_usage`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ttc_graph.errors import ConfigurationError
from ttc_graph.prices import PER_TOKENS, Price, price_of
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
    "run_cost",
    "usage_delta",
]

NodeKind = Literal["propose", "verify", "revise"]
COUNTERS = ("generations", "requests", "prompt_tokens", "completion_tokens", "failed_requests")
OPTIONAL_COUNTERS = ("unconfirmed_tokens", "cost")
"""Counters a ledger holds only once they are non-zero (tokens reserved by requests whose answer was lost, and
dollars spent where the endpoints know their model's price)."""
MAX_UNBUDGETED_N = 1024
"""The largest ``n`` a strategy accepts without a budget (4x the paper's largest); set one to go beyond."""
POLICY_KINDS: tuple[NodeKind, ...] = ("propose", "revise")


class Budget(BaseModel):
    """Limits of one run. ``None`` means no limit on that axis.

    ``generations`` counts policy generations (propose and revise, as in the paper); ``tokens`` counts the
    policy's completion tokens, and the ``max_tokens`` of every request whose answer was lost (the server may have
    generated them); ``seconds`` is wall time from the start of the run. Counts are integers (not bools or
    strings) and seconds a finite number: anything else is a validation error naming the field.

    ``dollars`` caps the run's cost: the ledger's ``cost`` (every request, verifier included, at its endpoint's
    price) plus lost answers' ``max_tokens`` at the output price. Like ``tokens`` it is planned before a request
    (each request's ``max_tokens`` capped at its share of the dollars left, at ``price``'s output price after the
    prompt's expected cost) and checked exactly after. ``price`` is the policy's :class:`~ttc_graph.prices.Price`,
    or a model name looked up in the shipped table; without one the controller plans at the run's dollars per
    completion token so far, an upper bound of the output price (none in the first round: then only the check after
    each round holds it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    generations: int | None = Field(None, ge=1, strict=True)
    tokens: int | None = Field(None, ge=1, strict=True)
    seconds: float | None = Field(None, gt=0, allow_inf_nan=False, strict=True)
    dollars: float | None = Field(None, gt=0, allow_inf_nan=False, strict=True)
    price: Price | None = None

    @field_validator("price", mode="before")
    @classmethod
    def _price_by_name(cls, value: object) -> object:
        if isinstance(value, str):
            found = price_of(value)
            if found is None:
                raise ValueError(f"no price known for model {value!r}; pass a Price(input=..., output=...)")
            return found
        return value

    @property
    def limited(self) -> bool:
        """Whether any axis has a limit."""
        return any(v is not None for v in (self.generations, self.tokens, self.seconds, self.dollars))


def check_n(n: object, budget: Budget | None = None, *, name: str = "n") -> int:
    """``n`` as a count of samples: an integer >= 1 (not a bool), at most :data:`MAX_UNBUDGETED_N` unless a budget
    sets a limit; else a :class:`~ttc_graph.errors.ConfigurationError` naming it."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"{name}: must be an integer >= 1, got {n!r}")
    limited = budget is not None and budget.limited
    if n > MAX_UNBUDGETED_N and not limited:
        raise ConfigurationError(
            f"{name}: {n} is above {MAX_UNBUDGETED_N}, the most a strategy runs without a budget; pass"
            " budget=Budget(generations=..., tokens=..., seconds=... or dollars=...) to bound it"
        )
    return n


def empty_usage() -> dict[str, Any]:
    """A ledger with nothing spent."""
    return {**dict.fromkeys(COUNTERS, 0), "by_kind": {}, "seconds": 0.0}


def usage_delta(kind: NodeKind, usage: RequestUsage | None = None, *, generations: int = 0) -> dict[str, Any]:
    """A ledger entry for one node's spend, charged to ``kind``."""
    u = usage or RequestUsage()
    counters: dict[str, float] = {
        "generations": generations,
        "requests": u.requests,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "failed_requests": u.failed_requests,
    }
    if u.unconfirmed_tokens:
        counters["unconfirmed_tokens"] = u.unconfirmed_tokens
    if u.cost:
        counters["cost"] = u.cost
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


def run_cost(usage: dict[str, Any] | None) -> float:
    """Dollars the run spent (every request, verifier included, at its endpoint's price)."""
    return float((usage or {}).get("cost", 0.0))


def policy_generations(usage: dict[str, Any] | None) -> int:
    by_kind = (usage or {}).get("by_kind", {})
    return sum(by_kind.get(k, {}).get("generations", 0) for k in POLICY_KINDS)


@dataclass(frozen=True, slots=True)
class Remaining:
    """What a budget still allows; ``math.inf`` where it sets no limit."""

    generations: float
    tokens: float
    seconds: float
    dollars: float = math.inf
    output_price: float = 0.0
    """Dollars per completion token the dollars left are planned at (0: unknown, no plan)."""
    prompt_cost: float = 0.0
    """Expected dollars of one request's prompt (the ledger's mean prompt at the input price)."""

    @property
    def exhausted(self) -> str | None:
        """The first axis that is used up, or None."""
        for axis in ("generations", "tokens", "seconds", "dollars"):
            if getattr(self, axis) <= 0:
                return axis
        return None

    def max_tokens_each(self, samples: int, wanted: int | None) -> int | None:
        """A per-sample ``max_tokens`` so ``samples`` generations cannot overrun the token or the dollar limit."""
        shares = []
        if not math.isinf(self.tokens):
            shares.append(int(self.tokens // max(samples, 1)))
        if not math.isinf(self.dollars) and self.output_price > 0:
            each = self.dollars / max(samples, 1) - self.prompt_cost
            shares.append(max(0, math.floor(each / self.output_price + 1e-9)))
        if not shares:
            return wanted
        share = min(shares)
        return share if wanted is None else min(wanted, share)

    def short_of(self, samples: int) -> str:
        """The axis that leaves ``samples`` generations less than a token each: ``tokens`` or ``dollars``."""
        tokens_only = Remaining(self.generations, self.tokens, self.seconds)
        cap = tokens_only.max_tokens_each(samples, None)
        return "tokens" if cap is not None and cap < 1 else "dollars"


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
    if budget.dollars is None:
        return Remaining(gens, toks, secs)
    return Remaining(gens, toks, secs, *_dollars_left(budget.dollars, budget.price, usage or {}))


def _dollars_left(dollars: float, price: Price | None, usage: dict[str, Any]) -> tuple[float, float, float]:
    """Dollars left, the output price per token to plan them at, and one prompt's expected cost."""
    spent = run_cost(usage)
    completion = int(usage.get("completion_tokens", 0))
    if price is not None:
        output, input_ = price.output / PER_TOKENS, price.input / PER_TOKENS
    elif completion:
        output, input_ = spent / completion, 0.0  # all spend charged to completions: an upper bound on the price
    else:
        output, input_ = 0.0, 0.0
    requests = int(usage.get("requests", 0))
    prompt_cost = input_ * (int(usage.get("prompt_tokens", 0)) / requests) if requests else 0.0
    left = dollars - spent - output * policy_unconfirmed_tokens(usage)
    return left, output, prompt_cost
