"""Several verifiers as one: a weighted product or weighted geometric mean of their scores."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Literal

from ttc_graph.endpoints.base import RequestUsage
from ttc_graph.errors import ConfigurationError, VerifierError
from ttc_graph.verifiers.aggregation import DEFAULT_AGGREGATION, Aggregation, aggregate, check_aggregation
from ttc_graph.verifiers.base import Score, VerificationResult, Verifier, VerifyItem
from ttc_graph.verifiers.function import VerifierLike, as_verifier

__all__ = ["COMBINATIONS", "Combination", "CombinedVerifier", "check_weights", "combine_scores"]

Combination = Literal["product", "geometric"]
COMBINATIONS: tuple[Combination, ...] = ("product", "geometric")
Granularity = Literal["auto", "process", "outcome"]


def check_weights(n_parts: int, weights: Sequence[float] | None) -> tuple[float, ...]:
    """``weights`` as floats (all 1.0 when None), or :class:`ConfigurationError` naming the problem."""
    if n_parts < 1:
        raise ConfigurationError("parts: a combined verifier needs at least one part")
    if weights is None:
        return (1.0,) * n_parts
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
        raise ConfigurationError(f"weights: expected a list of {n_parts} numbers, got {type(weights).__name__}")
    if len(weights) != n_parts:
        raise ConfigurationError(f"weights: {len(weights)} weights for {n_parts} parts; give one weight per part")
    out = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise ConfigurationError(f"weights[{i}]: must be a finite number >= 0, got {w!r}")
        out.append(float(w))
    if not any(out):
        raise ConfigurationError("weights: at least one weight must be > 0")
    return tuple(out)


def combine_scores(values: Sequence[float], weights: Sequence[float], how: Combination = "product") -> float:
    """``prod(v_i ** w_i)`` (``product``), or its ``1 / sum(w)`` power (``geometric``, a weighted geometric mean).

    A part with weight 0 is ignored, even when its score is 0.
    """
    if how not in COMBINATIONS:
        raise ConfigurationError(f"how: unknown {how!r}; use one of {', '.join(COMBINATIONS)}")
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if w > 0]
    if any(v <= 0.0 for v, _ in pairs):
        return 0.0
    log_total = math.fsum(w * math.log(v) for v, w in pairs)
    if how == "geometric":
        log_total /= math.fsum(w for _, w in pairs)
    return min(1.0, math.exp(log_total))


class CombinedVerifier(Verifier):
    """Scores a solution by combining its parts' scores: ``product`` (``prod(s_i ** w_i)``) or ``geometric``
    (the weighted geometric mean, ``prod(s_i ** w_i) ** (1 / sum(w))``).

    With ``granularity="auto"`` the combination is a process verifier when every part is one: step scores are
    combined step by step and aggregated by ``aggregation`` (the parts' own aggregations are not used), so
    beam search and DVTS can rank prefixes. Otherwise it is an outcome verifier combining the parts' solution
    scores. ``granularity="process"`` refuses outcome parts. Where a process part gives no step scores for a
    solution (or the parts disagree on its number of steps), that solution's parts' solution scores are combined
    instead, without step scores. A part that leaves a solution unscored leaves the
    combination unscored (its error names the part). Parts run concurrently on each batch; their usage is
    summed, and ``needs_logprobs`` is True when any part needs the policy's logprobs.
    """

    def __init__(
        self,
        parts: Sequence[VerifierLike],
        weights: Sequence[float] | None = None,
        how: Combination = "product",
        *,
        granularity: Granularity = "auto",
        aggregation: Aggregation = DEFAULT_AGGREGATION,
    ) -> None:
        if isinstance(parts, Verifier) or callable(parts) or not isinstance(parts, Sequence) or not parts:
            raise ConfigurationError("parts: a combined verifier needs a non-empty list of verifiers")
        resolved: list[Verifier] = []
        for i, part in enumerate(parts):
            try:
                verifier = as_verifier(part)
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"parts[{i}]: expected a Verifier or a callable, got {type(part).__name__}"
                ) from exc
            if verifier is None:
                raise ConfigurationError(f"parts[{i}]: expected a Verifier or a callable, got None")
            resolved.append(verifier)
        self.weights = check_weights(len(resolved), weights)
        if how not in COMBINATIONS:
            raise ConfigurationError(f"how: unknown {how!r}; use one of {', '.join(COMBINATIONS)}")
        check_aggregation(aggregation)
        if granularity not in ("auto", "process", "outcome"):
            raise ConfigurationError(f"granularity: unknown {granularity!r}; use 'auto', 'process' or 'outcome'")
        if granularity == "process":
            for i, verifier in enumerate(resolved):
                if verifier.granularity != "process":
                    raise ConfigurationError(
                        f"parts[{i}] ({type(verifier).__name__}): an outcome verifier cannot be part of a step-wise "
                        "(granularity='process') combination; use granularity='outcome' or a process verifier"
                    )
        all_process = all(v.granularity == "process" for v in resolved)
        self.parts: tuple[Verifier, ...] = tuple(resolved)
        self.how: Combination = how
        self.aggregation = aggregation
        self.granularity = "process" if granularity != "outcome" and all_process else "outcome"

    @property
    def needs_logprobs(self) -> bool:
        return any(bool(getattr(p, "needs_logprobs", False)) for p in self.parts)

    @property
    def name(self) -> str:
        inner = ", ".join(
            p.name if w == 1.0 else f"{p.name}^{w:g}" for p, w in zip(self.parts, self.weights, strict=True)
        )
        return f"CombinedVerifier[{self.how}]({inner})"

    def combine(self, scores: Sequence[Score]) -> Score:
        """One solution's combined score from its parts' scores (in part order)."""
        for i, score in enumerate(scores):
            if score.value is None:
                reason = score.error or "unscored"
                return Score(None, error=f"parts[{i}] ({self.parts[i].name}): {reason}")
        if self.granularity == "process":
            steps = [s.step_scores for s in scores]
            lengths = {len(s) for s in steps if s}
            if all(steps) and len(lengths) == 1:
                columns = zip(*(s for s in steps if s), strict=True)
                combined = tuple(combine_scores(column, self.weights, self.how) for column in columns)
                return Score(aggregate(combined, self.aggregation), combined)
        return Score(combine_scores([s.value for s in scores], self.weights, self.how))  # type: ignore[misc]

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        if not items:
            return VerificationResult([])
        outcomes = await asyncio.gather(*(part.verify(items) for part in self.parts), return_exceptions=True)
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            raise failure
        results = [o for o in outcomes if isinstance(o, VerificationResult)]
        usage = RequestUsage()
        for i, result in enumerate(results):
            if len(result.scores) != len(items):
                raise VerifierError(
                    f"parts[{i}] ({self.parts[i].name}): returned {len(result.scores)} scores for {len(items)} items"
                )
            usage.add(result.usage)
        per_item = zip(*(r.scores for r in results), strict=True)
        return VerificationResult([self.combine(scores) for scores in per_item], usage)
