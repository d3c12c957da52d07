"""The one bootstrap of the library: resampling questions with replacement, percentile intervals, and paired
sign-flip (permutation) tests. Every interval and p-value the evaluation and the study report print comes from here.

- A resample draws ``n`` of the ``n`` questions with replacement; :func:`resample_counts` gives how often each
  question is drawn in each resample (an ``(resamples, n)`` array), so that any statistic of weighted questions,
  a refitted policy included, can be recomputed on every resample at once.
- The interval is the **percentile interval cut the same number of resamples from each end**: with ``R``
  resamples sorted, ``k = floor(R * (1 - level) / 2)`` are cut below and ``k`` above, and the interval is the
  ``k``-th and the ``(R - 1 - k)``-th order statistics (0-based). No interpolation, no bias correction; an
  infinite statistic (e.g. an efficiency ratio never matched) sorts last and may be an end.
- A paired difference resamples the questions once and takes both arms' means on the same draw, so each question
  is compared with itself.
- The sign-flip test of a paired difference: under the null hypothesis that the two arms are exchangeable on each
  question, each per-question difference is as likely negated. The two-sided p-value is the share of sign
  assignments whose mean is at least as far from 0 as the observed one, exact (every assignment) when the nonzero
  differences are few enough, else ``(1 + hits) / (1 + R)`` over ``R`` random assignments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_RESAMPLES",
    "bootstrap_mean",
    "paired_bootstrap",
    "percentile_interval",
    "resample_counts",
    "resample_means",
    "sign_flip_p",
]

DEFAULT_RESAMPLES = 10_000
LEVEL = 0.95
_TOL = 1e-12


def resample_counts(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """How many times each of ``n`` questions is drawn in each of ``resamples`` bootstrap resamples:
    an integer array of shape ``(resamples, n)`` whose rows sum to ``n``."""
    if n < 1 or resamples < 1:
        raise ValueError(f"bootstrap: need n >= 1 and resamples >= 1, got {n} and {resamples}")
    drawn = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    offsets = (np.arange(resamples) * n)[:, None]
    return np.bincount((drawn + offsets).ravel(), minlength=resamples * n).reshape(resamples, n)


def resample_means(values: Sequence[float] | np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean of ``values`` (one per question) in each resample of ``counts``."""
    v = np.asarray(values, dtype=float)
    return counts @ v / counts.sum(axis=1)


def percentile_interval(statistics: Sequence[float] | np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap ``statistics``: as many resamples cut off below as above (see the
    module's docstring)."""
    ordered = np.sort(np.asarray(statistics, dtype=float))
    if not len(ordered):
        raise ValueError("bootstrap: no resamples")
    cut = int(len(ordered) * (1 - level) / 2)
    return float(ordered[cut]), float(ordered[len(ordered) - 1 - cut])


def bootstrap_mean(
    values: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """The mean of per-question ``values`` with its 95% percentile bootstrap interval over the questions."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        mean = float(v.mean()) if len(v) else float("nan")
        return mean, mean, mean
    means = resample_means(v, resample_counts(len(v), resamples, seed))
    return (float(v.mean()), *percentile_interval(means))


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` over the same questions with its 95% paired bootstrap interval (each resample
    draws questions once and takes both arms on them)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired bootstrap: {len(x)} values against {len(y)}")
    return bootstrap_mean(x - y, resamples, seed)


def sign_flip_p(differences: Sequence[float], resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip (permutation) test that per-question ``differences`` centre on 0
    (see the module's docstring). 1.0 when every difference is 0."""
    d = np.asarray(differences, dtype=float)
    d = d[np.abs(d) > _TOL]
    if not len(d):
        return 1.0
    observed = abs(d.sum()) - 1e-9 * max(1.0, abs(d.sum()))
    if 2 ** len(d) <= resamples:  # every assignment of signs: the exact p-value
        signs = ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1) * 2 - 1
        return float(np.mean(np.abs(signs @ d) >= observed))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, 2000):
        signs = rng.choice((-1.0, 1.0), size=(min(2000, resamples - start), len(d)))
        hits += int(np.sum(np.abs(signs @ d) >= observed))
    return (1 + hits) / (1 + resamples)
