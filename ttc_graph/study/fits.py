"""Compute-optimal fits on weighted questions, for the point estimate and every bootstrap resample at once (numpy).

A fit chooses, per difficulty bin, the template with the best mean on one fold of the questions and scores that
choice on the other fold (two-fold cross-validation stratified by bin, the paper's protocol), averaged over many
random splits. A bootstrap resample is a vector of weights (how often each question is drawn), so one pass over
an ``(resamples, questions)`` weight array refits every resample: a question drawn twice weighs twice and its
copies share a fold.

Records: a question may stand for several records (``draws``: one per disjoint set of router probes), each with
its own difficulty and values; a question's records share its fold and its weight.

- Bins: records ranked from easiest (highest level) to hardest, ties in a seeded random order (the order
  :func:`ttc_graph.compute_optimal.difficulty.assign_bins` uses); a record's bin is ``1 + n_bins * (weight of
  the records ranked before it) // (total weight)``, which with unit weights is exactly ``assign_bins``. Each
  split redraws the tie order (seed + split), as :func:`ttc_graph.compute_optimal.calibrate` does.
- Folds: a question's stratum is its records' easiest bin; questions drawn at least once are dealt to the two
  folds in turn in the order (stratum, a seeded random key), the turn carrying over from stratum to stratum.
- Choice: the template with the largest weighted sum in the bin on the training fold; ties (within 1e-9) go to
  the earliest template (the baseline first); a bin empty in the training fold uses the whole fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ttc_graph.compute_optimal.difficulty import _ranked

__all__ = ["FitResult", "fit_cv", "matching_ratio"]

_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class FitResult:
    """A fit's cross-validated accuracy per weight row, and for the first row (the point estimate, unit weights)
    each question's cross-validated value (averaged over its records and the splits), the in-sample accuracy and
    the in-sample choice per bin (template index)."""

    cv: np.ndarray  # (rows,)
    per_question: np.ndarray  # (questions,) of the first row
    in_sample: float
    chosen: list[int]  # per bin, 0-based bins


def _orders(level: np.ndarray, splits: int, seed: int) -> list[np.ndarray]:
    """Per split: the record indices (flattened draws x questions) from easiest to hardest."""
    keys = {str(i): float(v) for i, v in enumerate(level.ravel())}
    return [np.array([int(k) for k in _ranked(keys, seed + j)]) for j in range(splits)]


def _bins(w_rec: np.ndarray, order: np.ndarray, n_bins: int) -> np.ndarray:
    """Each record's 0-based bin per weight row, by weighted rank."""
    ordered = w_rec[:, order]
    before = np.cumsum(ordered, axis=1) - ordered
    total = ordered.sum(axis=1, keepdims=True)
    in_order = np.minimum((n_bins * before) // np.maximum(total, 1), n_bins - 1)
    out = np.empty_like(in_order)
    out[:, order] = in_order
    return out


def _choose(sums: np.ndarray) -> np.ndarray:
    """The first index of the maximum along the last axis, ties within 1e-9 to the earliest."""
    best = sums.max(axis=-1, keepdims=True)
    return np.argmax(sums >= best - 1e-9 * np.maximum(1.0, np.abs(best)), axis=-1)


def _cv_chunk(
    values: np.ndarray, weights: np.ndarray, orders: list[np.ndarray], n_bins: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated accuracy per weight row and per-record values of the splits (summed over splits)."""
    t, d, g = values.shape
    flat = values.reshape(t, d * g)  # record r = draw * g + question
    rows = weights.shape[0]
    w_rec = np.tile(weights, (1, d)).astype(np.int64)  # (rows, records)
    present = weights > 0
    acc = np.zeros(rows)
    record_sum = np.zeros(d * g)
    col = np.arange(d * g)
    tiled = np.tile(flat, (1, rows))  # (templates, rows * records): each row's records in turn
    for j, order in enumerate(orders):
        bins = _bins(w_rec, order, n_bins)  # (rows, records)
        stratum = bins.reshape(rows, d, g).min(axis=1)
        key = np.random.default_rng(seed + j).random((g,))
        dealt = np.argsort(stratum + key[None, :], axis=1, kind="stable")
        turn = (np.cumsum(np.take_along_axis(present, dealt, axis=1), axis=1) - 1) % 2
        fold = np.empty_like(turn)
        np.put_along_axis(fold, dealt, turn, axis=1)
        fold_rec = np.tile(fold, (1, d))
        vals = np.zeros((rows, d * g))
        cell = (np.arange(rows)[:, None] * n_bins + bins).ravel()  # (row, bin) of each record
        for f in (0, 1):
            train = w_rec * (fold_rec == f)
            weighted = train.ravel()
            mass = np.bincount(cell, weights=weighted, minlength=rows * n_bins).reshape(rows, n_bins)
            sums = np.stack(
                [np.bincount(cell, weights=weighted * tiled[i], minlength=rows * n_bins) for i in range(t)],
                axis=-1,
            ).reshape(rows, n_bins, t)
            whole = train @ flat.T  # (rows, templates)
            sums = np.where(mass[:, :, None] > 0, sums, whole[:, None, :])
            choice = _choose(sums)  # (rows, bins)
            picked = np.take_along_axis(choice, bins, axis=1)  # (rows, records): the template for that bin
            vals = np.where(fold_rec != f, flat[picked, col[None, :]], vals)
        acc += (w_rec * vals).sum(axis=1) / w_rec.sum(axis=1)
        record_sum += vals[0]
    return acc / len(orders), record_sum / len(orders)


def fit_cv(
    values: np.ndarray,
    level: np.ndarray,
    weights: np.ndarray,
    *,
    n_bins: int,
    splits: int,
    seed: int = 0,
    point_splits: int | None = None,
) -> FitResult:
    """Fit on every row of ``weights`` (``(rows, questions)``; row 0 should be the unit weights of the point).

    ``values``: ``(templates, draws, questions)``, the baseline first; ``level``: ``(draws, questions)``.
    Row 0 is averaged over ``point_splits`` splits (default ``splits``), every other row over ``splits``."""
    t, d, g = values.shape
    orders = _orders(level, max(splits, point_splits or splits), seed)
    first, per_record = _cv_chunk(values, weights[:1], orders[: point_splits or splits], n_bins, seed)
    cv = [first]
    for start in range(1, len(weights), _CHUNK):
        chunk, _ = _cv_chunk(values, weights[start : start + _CHUNK], orders[:splits], n_bins, seed)
        cv.append(chunk)
    per_question = per_record.reshape(d, g).mean(axis=0)
    # in sample: chosen on every question with the first split's bins, scored on the same questions
    flat = values.reshape(t, d * g)
    bins = _bins(np.ones((1, d * g), dtype=np.int64), orders[0], n_bins)[0]
    sums = np.stack([flat[:, bins == k].sum(axis=1) for k in range(n_bins)])
    chosen = _choose(sums)
    in_sample = float(flat[chosen[bins], np.arange(d * g)].mean())
    return FitResult(np.concatenate(cv), per_question, in_sample, [int(c) for c in chosen])


def matching_ratio(budgets: np.ndarray, curve: np.ndarray, target: np.ndarray, budget: int) -> np.ndarray:
    """Per row: the budget at which the baseline ``curve`` (``(rows, len(budgets))``, budgets ascending) first
    reaches ``target`` (log2-linear interpolation between its points; within 1e-9 counts as reached), over
    ``budget``; ``inf`` where it never does within its budgets."""
    logb = np.log2(budgets.astype(float))
    reached = curve >= target[:, None] - 1e-9
    first = np.argmax(reached, axis=1)
    out = np.full(len(target), np.inf)
    hit = reached.any(axis=1)
    at_start = hit & (first == 0)
    out[at_start] = budgets[0]
    mid = hit & (first > 0)
    rows = np.nonzero(mid)[0]
    j = first[rows]
    a0, a1 = curve[rows, j - 1], curve[rows, j]
    frac = np.clip((target[rows] - a0) / np.where(a1 > a0, a1 - a0, 1.0), 0.0, 1.0)
    needed = np.where(target[rows] >= a1 - 1e-9, budgets[j], 2 ** (logb[j - 1] + frac * (logb[j] - logb[j - 1])))
    out[rows] = needed
    return out / budget
