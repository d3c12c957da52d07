"""Choose the best strategy per (difficulty bin, budget) with two-fold cross-validation, as the paper does."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ttc_graph.compute_optimal.difficulty import DifficultyBins, DifficultyMetric, assign_bins, fit_bins, small_bins
from ttc_graph.compute_optimal.table import PolicyTable, probe_share
from ttc_graph.errors import ConfigurationError

__all__ = ["Record", "calibrate", "cv_folds", "efficiency_ratio", "matching_budget"]


@dataclass(frozen=True, slots=True)
class Record:
    """How well ``strategy`` did on ``question`` at ``budget``: expected correctness in [0, 1]."""

    question: str
    strategy: str
    budget: int
    accuracy: float


def matching_budget(curve: Mapping[int, float], target: float) -> float | None:
    """The budget at which an accuracy ``curve`` first reaches ``target`` (log2-linear interpolation).

    None when the curve never gets there within its budgets.
    """
    points = sorted(curve.items())
    if not points:
        return None
    if points[0][1] >= target:
        return float(points[0][0])
    for (b0, a0), (b1, a1) in itertools.pairwise(points):
        if a1 >= target > a0:
            frac = (target - a0) / (a1 - a0)
            return float(2 ** (math.log2(b0) + frac * (math.log2(b1) - math.log2(b0))))
    return None


def efficiency_ratio(baseline: Mapping[int, float], optimal: Mapping[int, float]) -> dict[int, float | None]:
    """Per budget B: the budget the baseline needs to match compute-optimal at B, divided by B.

    A ratio of 4 means the baseline needs 4x the generations. None: the baseline never matches within its budgets.
    """
    out: dict[int, float | None] = {}
    for budget, acc in sorted(optimal.items()):
        needed = matching_budget(baseline, acc)
        out[budget] = None if needed is None else needed / budget
    return out


def _best(
    acc: Mapping[tuple[str, str, int], float],
    questions: Sequence[str],
    names: Sequence[str],
    budget: int,
    share: Mapping[str, int],
) -> str:
    """The strategy with the highest mean accuracy on ``questions``; ties go to the earliest of ``names``."""
    best_name, best_value = None, -1.0
    for name in names:
        spend = budget - share[name]
        values = [acc[(q, name, spend)] for q in questions if (q, name, spend) in acc]
        if len(values) != len(questions) or not values:
            continue
        value = statistics.fmean(values)
        if value > best_value:
            best_name, best_value = name, value
    if best_name is None:
        raise ConfigurationError(f"calibration: no strategy has results for every question at budget {budget}")
    return best_name


def cv_folds(
    questions: Sequence[str], bin_of: Mapping[str, int], groups: Mapping[str, str], seed: int
) -> list[list[str]]:
    """Two folds, stratified by bin: each bin's groups are shuffled and dealt to the folds in turn, the turn
    carrying over from bin to bin so the folds differ in size by at most one group. Every question of a group
    (the copies of one question in a bootstrap resample) lands in the same fold."""
    members: dict[str, list[str]] = defaultdict(list)
    for q in questions:
        members[groups.get(q, q)].append(q)
    by_bin: dict[int, list[str]] = defaultdict(list)
    for group, qs in sorted(members.items()):
        by_bin[min(bin_of[q] for q in qs)].append(group)
    rng = random.Random(seed)
    folds: list[list[str]] = [[], []]
    turn = 0
    for bin_ in sorted(by_bin):
        dealt = by_bin[bin_]
        rng.shuffle(dealt)
        for group in dealt:
            folds[turn].extend(members[group])
            turn = 1 - turn
    return folds


def calibrate(
    records: Sequence[Record],
    difficulty: Mapping[str, float],
    strategies: Mapping[str, dict[str, Any]],
    *,
    metric: DifficultyMetric,
    n_bins: int = 5,
    probes: int = 0,
    baseline: str | None = None,
    seed: int = 0,
    cv_repeats: int = 1,
    groups: Mapping[str, str] | None = None,
) -> PolicyTable:
    """The policy table, with its two-fold cross-validated report.

    ``difficulty`` maps each question to its metric (pass rate for oracle bins, mean probe score for predicted
    bins); ``records`` hold each strategy's accuracy per question and budget. ``baseline`` names the strategy
    the efficiency ratio is measured against (best-of-N weighted in the paper).

    With ``probes`` > 0 (predicted bins, routed live) a budget is the router's total: a non-best-of-N strategy
    competes at budget B with its records at B - probes, since the probes take the rest (best-of-N reuses them).

    The folds are stratified by bin; the cross-validated accuracy is the mean over ``cv_repeats`` random
    splits (seeds ``seed``, ``seed + 1``, ...; each also breaks ties between equal metrics afresh), so it does
    not hang on one split. ``groups`` maps a question to
    its group (e.g. the copies of one question in a bootstrap resample): a group never straddles the folds.
    Where strategies tie, the baseline wins, then the earlier in ``strategies``.
    """
    if cv_repeats < 1:
        raise ConfigurationError(f"cv_repeats: must be >= 1, got {cv_repeats}")
    names = list(strategies)
    if baseline is not None and baseline in strategies:
        names = [baseline, *(n for n in names if n != baseline)]  # ties go to the baseline
    unknown = {r.strategy for r in records} - set(names)
    if unknown:
        raise ConfigurationError(f"records: unknown strategies {sorted(unknown)}")
    questions = sorted(difficulty)
    bins = fit_bins(difficulty, metric, n_bins=n_bins, probes=probes, seed=seed)
    bin_of = assign_bins(difficulty, n_bins=n_bins, seed=seed)  # by rank: equal counts even with many ties
    warnings = small_bins(bin_of, bins.n_bins)
    acc = {(r.question, r.strategy, r.budget): r.accuracy for r in records}
    budgets = sorted({r.budget for r in records})
    share = {name: probe_share(strategies[name], probes) for name in names}

    def choose_table(train: Sequence[str], bin_of: Mapping[str, int]) -> dict[int, dict[int, str]]:
        table: dict[int, dict[int, str]] = {}
        for b in range(1, bins.n_bins + 1):
            members = [q for q in train if bin_of[q] == b]
            if not members:
                warnings.append(f"difficulty bin {b} has no training question in a fold; it uses the whole fold")
                members = list(train)
            table[b] = {budget: _best(acc, members, names, budget, share) for budget in budgets}
        return table

    cv_scores: dict[int, list[float]] = defaultdict(list)
    per_bin: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for repeat in range(cv_repeats):
        # each split draws its own tie-break too: with many tied metrics (pass@1 of few samples) the bins are
        # otherwise one arbitrary draw
        split_bins = bin_of if repeat == 0 else assign_bins(difficulty, n_bins=n_bins, seed=seed + repeat)
        folds = cv_folds(questions, split_bins, groups or {}, seed + repeat)
        for k, test in enumerate(folds):
            table = choose_table(folds[1 - k], split_bins)
            for q in test:
                for budget in budgets:
                    name = table[split_bins[q]][budget]
                    value = acc[(q, name, budget - share[name])]
                    cv_scores[budget].append(value)
                    per_bin[split_bins[q]][budget].append(value)
    optimal = {b: statistics.fmean(v) for b, v in cv_scores.items()}
    fixed = {
        name: {b: statistics.fmean(acc[(q, name, b)] for q in questions) for b in budgets}
        for name in names
        if all((q, name, b) in acc for q in questions for b in budgets)
    }
    fixed_per_bin = {
        name: {
            str(bin_): {
                str(b): statistics.fmean(acc[(q, name, b)] for q in questions if bin_of[q] == bin_) for b in budgets
            }
            for bin_ in range(1, bins.n_bins + 1)
            if any(bin_of[q] == bin_ for q in questions)
        }
        for name in fixed
    }
    final = choose_table(questions, bin_of)
    in_sample = {  # the final table scored on the questions it was chosen on: CV's gap to it is selection noise
        budget: statistics.fmean(
            acc[(q, name, budget - share[name])] for q in questions for name in [final[bin_of[q]][budget]]
        )
        for budget in budgets
    }
    report: dict[str, Any] = {
        "questions": len(questions),
        "bin_sizes": {str(b): sum(1 for q in questions if bin_of[q] == b) for b in range(1, bins.n_bins + 1)},
        "binning": "rank, ties broken by a seeded shuffle",
        "warnings": list(dict.fromkeys(warnings)),  # once each, however many splits repeat it
        "compute_optimal_cv": {str(b): v for b, v in optimal.items()},
        "compute_optimal_in_sample": {str(b): v for b, v in in_sample.items()},
        "compute_optimal_cv_per_bin": {
            str(bin_): {str(b): statistics.fmean(v) for b, v in row.items()} for bin_, row in sorted(per_bin.items())
        },
        "fixed": {name: {str(b): v for b, v in curve.items()} for name, curve in fixed.items()},
        "fixed_per_bin": fixed_per_bin,
    }
    if baseline is not None:
        if baseline not in fixed:
            raise ConfigurationError(f"baseline: {baseline!r} has no results at every budget")
        report["baseline"] = baseline
        report["efficiency_ratio"] = {str(b): r for b, r in efficiency_ratio(fixed[baseline], optimal).items()}
    return PolicyTable(
        difficulty=DifficultyBins(metric=metric, edges=bins.edges, probes=probes),
        budgets=budgets,
        strategies=dict(strategies),
        table={str(b): {str(k): v for k, v in row.items()} for b, row in final.items()},
        report=report,
    )
