"""Question difficulty in quintile bins: oracle (pass@1, needs labels) or predicted (verifier score, needs none)."""

from __future__ import annotations

import bisect
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ttc_graph.errors import ConfigurationError

__all__ = ["DifficultyBins", "DifficultyMetric", "assign_bins", "fit_bins", "probe_score", "small_bins"]

logger = logging.getLogger("ttc_graph.compute_optimal")

DifficultyMetric = Literal["pass_rate", "verifier_score"]


class DifficultyBins(BaseModel):
    """Bin edges fitted on a calibration set. Bin 1 is the easiest: the highest pass rate or verifier score.

    ``edges`` are the ascending quantile cut points of the metric (``n_bins - 1`` of them).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: DifficultyMetric
    edges: tuple[float, ...] = Field(min_length=1)
    probes: int = Field(
        0,
        ge=0,
        description="Probe samples the router draws per question (predicted bins; 0: estimated offline, not routable).",
    )
    temperature: float | None = Field(
        None, ge=0, description="The sampling temperature of the probes the bins were fitted on (the router's default)."
    )
    max_tokens: int | None = Field(
        None, ge=1, description="The probes' max_tokens when the bins were fitted (the router's default)."
    )

    @model_validator(mode="after")
    def _ascending(self) -> DifficultyBins:
        if list(self.edges) != sorted(self.edges):
            raise ValueError(f"edges: must be ascending, got {list(self.edges)}")
        return self

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def bin_of(self, value: float) -> int:
        """The bin (1 = easiest) of a metric value: higher values are easier; a value on an edge is the harder."""
        above = len(self.edges) - bisect.bisect_left(self.edges, value)
        return above + 1


def _check_size(count: int, n_bins: int, min_per_bin: int) -> None:
    if n_bins < 2:
        raise ConfigurationError(f"n_bins: must be >= 2, got {n_bins}")
    if count < n_bins * min_per_bin:
        raise ConfigurationError(
            f"calibration set: {count} questions cannot fill {n_bins} bins with at least {min_per_bin} each;"
            f" need {n_bins * min_per_bin} or more"
        )


def _ranked(values: Mapping[str, float], seed: int) -> list[str]:
    """Questions from easiest (highest value) to hardest; ties in a seeded random order."""
    rng = random.Random(seed)
    tie_break = {q: rng.random() for q in sorted(values)}
    return sorted(values, key=lambda q: (-values[q], tie_break[q]))


def assign_bins(values: Mapping[str, float], *, n_bins: int = 5, seed: int = 0, min_per_bin: int = 2) -> dict[str, int]:
    """Each question's bin (1 = easiest) by rank, ties broken by a seeded shuffle, so bins hold equal counts.

    With few samples per question the metric has many ties (8 samples give pass@1 only 9 values); cutting at
    quantile values would leave some bins empty and others oversized. Bin sizes differ by at most one.
    """
    _check_size(len(values), n_bins, min_per_bin)
    order = _ranked(values, seed)
    return {q: 1 + (i * n_bins) // len(order) for i, q in enumerate(order)}


def small_bins(bin_of: Mapping[str, int], n_bins: int) -> list[str]:
    """Warnings for bins holding fewer than half their share of the questions (logged too)."""
    share = len(bin_of) / n_bins
    warnings = []
    for b in range(1, n_bins + 1):
        size = sum(1 for v in bin_of.values() if v == b)
        if size < share / 2:
            warnings.append(f"difficulty bin {b} holds {size} questions, less than half its share ({share:.1f})")
    for warning in warnings:
        logger.warning(warning)
    return warnings


def fit_bins(
    values: Mapping[str, float] | Sequence[float],
    metric: DifficultyMetric,
    *,
    n_bins: int = 5,
    probes: int = 0,
    min_per_bin: int = 2,
    seed: int = 0,
) -> DifficultyBins:
    """Edges between the rank bins of ``values`` (see :func:`assign_bins`), for binning new questions.

    An edge is the midpoint between the last value of a bin and the first of the next; where a tie spans a
    boundary both are equal and a new question with that value goes to the harder bin.
    """
    mapping = values if isinstance(values, Mapping) else {str(i): v for i, v in enumerate(values)}
    bin_of = assign_bins(mapping, n_bins=n_bins, seed=seed, min_per_bin=min_per_bin)
    edges = []
    for b in range(1, n_bins):
        easier_min = min(mapping[q] for q, v in bin_of.items() if v == b)
        harder_max = max(mapping[q] for q, v in bin_of.items() if v == b + 1)
        edges.append((easier_min + harder_max) / 2)
    return DifficultyBins(metric=metric, edges=tuple(sorted(edges)), probes=probes)


def probe_score(scores: Sequence[float | None]) -> float:
    """The predicted-difficulty metric: the mean verifier score of the probe samples (unscored count as 0)."""
    if not scores:
        raise ConfigurationError("probes: no probe scores to estimate difficulty from")
    return sum(s or 0.0 for s in scores) / len(scores)
