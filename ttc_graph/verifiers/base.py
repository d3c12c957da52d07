"""The verifier interface: batched, async, per-step or per-solution scores in [0, 1]."""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ttc_graph.endpoints.base import RequestUsage
from ttc_graph.errors import VerifierError
from ttc_graph.verifiers.aggregation import DEFAULT_AGGREGATION, Aggregation, aggregate

__all__ = [
    "Aggregation",
    "Score",
    "VerificationResult",
    "Verifier",
    "VerifyItem",
    "aggregate",
    "check_unit_interval",
]


@dataclass(frozen=True, slots=True)
class VerifyItem:
    """A solution (or a partial one) to score.

    ``conversation`` holds the whole conversation the model answered, the question's turn included (OpenAI's wire
    format: an agent's tool calls and results too), ``tools`` the tools the model was offered and ``tool_calls``
    the calls the candidate proposes (LangChain's shape); the text then shows the calls too, so a text-only verifier
    sees them.
    """

    question: str
    steps: tuple[str, ...]
    token_logprobs: tuple[float, ...] | None = None
    conversation: tuple[dict[str, Any], ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    tool_calls: tuple[dict[str, Any], ...] = ()

    @property
    def text(self) -> str:
        return "\n\n".join(self.steps)


@dataclass(frozen=True, slots=True)
class Score:
    """A verifier's verdict. ``value`` None means *unscored* (with ``error`` saying why), never a silent 0."""

    value: float | None
    step_scores: tuple[float, ...] | None = None
    error: str | None = None

    @property
    def scored(self) -> bool:
        return self.value is not None


@dataclass(slots=True)
class VerificationResult:
    scores: list[Score]
    usage: RequestUsage = field(default_factory=RequestUsage)


def check_unit_interval(value: float, what: str) -> float:
    """``value`` as a float in [0, 1], or :class:`VerifierError`: a real number (numpy's included), never a bool or
    a string that looks like one."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise VerifierError(f"{what}: expected a number in [0, 1], got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0.0 or v > 1.0:
        raise VerifierError(f"{what}: expected a number in [0, 1], got {value!r}")
    return v


class Verifier(ABC):
    """Scores a batch of solutions. ``granularity`` says whether it judges every step or whole solutions.

    ``timeout`` (seconds, None for none) bounds each call: a run abandons a call that outlasts it (or the run's
    own deadline) and goes on with those items unscored (:func:`ttc_graph.verifiers.deadline.verify_within`).
    Set it on any verifier (``verifier.timeout = 30``) or with a verifier spec's ``timeout``.
    """

    granularity: Literal["process", "outcome"] = "outcome"
    aggregation: Aggregation = DEFAULT_AGGREGATION
    timeout: float | None = None

    @abstractmethod
    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        """Score ``items``; a failed item is an unscored :class:`Score` with an ``error``, not an exception."""

    @property
    def name(self) -> str:
        return type(self).__name__
