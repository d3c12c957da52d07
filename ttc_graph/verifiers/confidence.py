"""Self-confidence from the policy's own token log-probabilities: a verifier that costs no model call."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

from ttc_graph.errors import ConfigurationError, VerifierError
from ttc_graph.verifiers.base import Score, VerificationResult, Verifier, VerifyItem

__all__ = ["ConfidenceVerifier", "lowest_group_logprob", "mean_logprob"]

ConfidenceMethod = Literal["mean", "group"]
_POSITIVE_SLACK = 1e-3  # servers round; a log-probability above this is not one


def _checked(logprobs: Sequence[float]) -> list[float]:
    values = []
    for i, lp in enumerate(logprobs):
        try:
            v = float(lp)
        except (TypeError, ValueError) as exc:
            raise VerifierError(f"token {i}: {lp!r} is not a log-probability") from exc
        if math.isnan(v) or v > _POSITIVE_SLACK:
            raise VerifierError(f"token {i}: {lp!r} is not a log-probability")
        values.append(min(v, 0.0))
    return values


def mean_logprob(logprobs: Sequence[float]) -> float:
    """Mean token log-probability (``-inf`` if any token has probability 0)."""
    values = _checked(logprobs)
    if not values:
        raise VerifierError("no token log-probabilities")
    if any(math.isinf(v) for v in values):
        return -math.inf
    return math.fsum(values) / len(values)


def lowest_group_logprob(logprobs: Sequence[float], window: int) -> float:
    """Lowest mean log-probability over any ``window`` consecutive tokens (the whole sequence if shorter)."""
    values = _checked(logprobs)
    if not values:
        raise VerifierError("no token log-probabilities")
    if any(math.isinf(v) for v in values):
        return -math.inf
    if len(values) <= window:
        return math.fsum(values) / len(values)
    total = math.fsum(values[:window])
    lowest, start = total, 0
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        if total < lowest:
            lowest, start = total, i - window + 1
    return math.fsum(values[start : start + window]) / window  # exact sum of the winning window


class ConfidenceVerifier(Verifier):
    """Scores a solution by the policy's confidence in it, from ``VerifyItem.token_logprobs``.

    ``method="mean"``: exp(mean token log-probability), the geometric-mean token probability.
    ``method="group"``: exp(lowest mean log-probability over any ``window`` consecutive tokens), DeepConf's
    lowest group confidence (the whole sequence when it is shorter than ``window``). A solution without
    log-probabilities is unscored. Strategies ask the policy for logprobs because ``needs_logprobs`` is True.
    """

    granularity = "outcome"
    needs_logprobs: ClassVar[bool] = True

    def __init__(self, method: ConfidenceMethod = "mean", window: int = 16) -> None:
        if method not in ("mean", "group"):
            raise ConfigurationError(f"method: unknown {method!r}; use 'mean' or 'group'")
        if not isinstance(window, int) or window < 1:
            raise ConfigurationError(f"window: must be an integer >= 1, got {window!r}")
        self.method: ConfidenceMethod = method
        self.window = window

    @property
    def name(self) -> str:
        detail = "mean" if self.method == "mean" else f"group, window={self.window}"
        return f"ConfidenceVerifier[{detail}]"

    def score(self, token_logprobs: Sequence[float] | None) -> Score:
        """The score of one solution's token log-probabilities."""
        if not token_logprobs:
            return Score(None, error="no token log-probabilities (ask the policy for logprobs)")
        try:
            if self.method == "mean":
                lp = mean_logprob(token_logprobs)
            else:
                lp = lowest_group_logprob(token_logprobs, self.window)
        except VerifierError as exc:
            return Score(None, error=f"confidence: {exc}")
        return Score(min(1.0, math.exp(lp)))

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        return VerificationResult([self.score(item.token_logprobs) for item in items])
