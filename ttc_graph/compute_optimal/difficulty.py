"""Question difficulty in quintile bins: oracle (pass@1, needs labels) or predicted (verifier score, needs none)."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ttc_graph.errors import ConfigurationError

__all__ = ["DifficultyBins", "DifficultyMetric", "fit_bins", "probe_score"]

DifficultyMetric = Literal["pass_rate", "verifier_score"]


class DifficultyBins(BaseModel):
    """Bin edges fitted on a calibration set. Bin 1 is the easiest: the highest pass rate or verifier score.

    ``edges`` are the ascending quantile cut points of the metric (``n_bins - 1`` of them).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: DifficultyMetric
    edges: tuple[float, ...] = Field(min_length=1)
    probes: int = Field(0, ge=0, description="Probe samples per question (predicted bins only).")

    @model_validator(mode="after")
    def _ascending(self) -> DifficultyBins:
        if list(self.edges) != sorted(self.edges):
            raise ValueError(f"edges: must be ascending, got {list(self.edges)}")
        if self.metric == "verifier_score" and self.probes < 1:
            raise ValueError("probes: predicted (verifier_score) bins need at least one probe sample")
        return self

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def bin_of(self, value: float) -> int:
        """The bin (1 = easiest) of a metric value: higher values are easier; a value on an edge is the harder."""
        above = len(self.edges) - bisect.bisect_left(self.edges, value)
        return above + 1


def fit_bins(
    values: Mapping[str, float] | Sequence[float],
    metric: DifficultyMetric,
    *,
    n_bins: int = 5,
    probes: int = 0,
    min_per_bin: int = 2,
) -> DifficultyBins:
    """Quantile edges of ``values`` (per question) so each of ``n_bins`` bins holds about as many questions."""
    data = sorted(values.values() if isinstance(values, Mapping) else values)
    if n_bins < 2:
        raise ConfigurationError(f"n_bins: must be >= 2, got {n_bins}")
    if len(data) < n_bins * min_per_bin:
        raise ConfigurationError(
            f"calibration set: {len(data)} questions cannot fill {n_bins} bins with at least {min_per_bin} each;"
            f" need {n_bins * min_per_bin} or more"
        )
    edges = []
    for k in range(1, n_bins):
        pos = k * len(data) / n_bins
        lo = data[max(0, int(pos) - 1)]
        hi = data[min(len(data) - 1, int(pos))]
        edges.append((lo + hi) / 2 if pos == int(pos) else hi)
    return DifficultyBins(metric=metric, edges=tuple(edges), probes=probes)


def probe_score(scores: Sequence[float | None]) -> float:
    """The predicted-difficulty metric: the mean verifier score of the probe samples (unscored count as 0)."""
    if not scores:
        raise ConfigurationError("probes: no probe scores to estimate difficulty from")
    return sum(s or 0.0 for s in scores) / len(scores)
