"""How per-step scores become one solution score: the choices, their default and the function."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

from ttc_graph.errors import ConfigurationError, VerifierError

__all__ = ["AGGREGATIONS", "DEFAULT_AGGREGATION", "Aggregation", "aggregate", "check_aggregation"]

Aggregation = Literal["last", "min", "prod", "mean"]
"""The ``last`` step's score (the paper's choice), the ``min``, the ``prod`` or the ``mean`` of the step scores."""
AGGREGATIONS: tuple[Aggregation, ...] = get_args(Aggregation)
DEFAULT_AGGREGATION: Aggregation = "last"


def check_aggregation(value: object) -> Aggregation:
    """``value`` as an :data:`Aggregation`, or a :class:`ConfigurationError` naming the choices."""
    if not isinstance(value, str) or value not in AGGREGATIONS:
        raise ConfigurationError(f"aggregation: unknown {value!r}; use one of {', '.join(AGGREGATIONS)}")
    return value  # type: ignore[return-value]


def aggregate(step_scores: Sequence[float], how: Aggregation = DEFAULT_AGGREGATION) -> float:
    """One solution score from per-step scores; ``last`` is the paper's choice."""
    if not step_scores:
        raise VerifierError("aggregate: no step scores to aggregate")
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    raise VerifierError(f"aggregation: unknown {how!r}; use one of {', '.join(AGGREGATIONS)}")
