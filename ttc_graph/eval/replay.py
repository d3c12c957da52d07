"""Best-of-N at every budget from one pool of samples per question, at no model cost (the paper's method).

Given N samples per question (final answer, verifier score, correctness), the accuracy of naive best-of-N,
best-of-N weighted and majority voting at a budget b <= N is estimated by drawing b of the N samples without
replacement many times (seeded) and averaging, or computed exactly by enumerating all C(N, b) subsets. A drawn
subset's pick is :func:`ttc_graph.selection.select_answer`'s on the subset in pool order; the exact enumeration
computes the same picks for every subset at once, as arrays.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ttc_graph._files import existing_file
from ttc_graph.answers import group_answers
from ttc_graph.errors import ConfigurationError
from ttc_graph.eval.bootstrap import DEFAULT_RESAMPLES, bootstrap_mean
from ttc_graph.eval.datasets import DatasetWarning
from ttc_graph.eval.pool_samples import PoolSample, pool_candidates, read_pool
from ttc_graph.selection import select_answer, subset_picks
from ttc_graph.state import Candidate

__all__ = [
    "METHODS",
    "Estimate",
    "Method",
    "PoolQuestion",
    "ReplayResult",
    "Sample",
    "as_candidates",
    "choose",
    "exact_accuracy",
    "exact_question",
    "load_pool",
    "paired_difference",
    "pool_from_samples",
    "replay",
    "subset_correct",
]

Method = Literal["naive", "weighted", "majority", "oracle"]
METHODS: tuple[Method, ...] = ("naive", "weighted", "majority")
ALL_METHODS: tuple[Method, ...] = (*METHODS, "oracle")
CI = Literal["bootstrap", "normal"]
_Z95 = 1.959963984540054


Sample = PoolSample
"""A replayed sample: its final answer, verifier score (None: unscored), correctness and tokens."""


@dataclass(frozen=True, slots=True)
class PoolQuestion:
    """N samples drawn for one question; ``groups`` labels equivalent answers (None: no answer)."""

    id: str
    samples: tuple[PoolSample, ...]
    groups: tuple[int | None, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.groups) != len(self.samples):
            labels: list[int | None] = [None] * len(self.samples)
            for g, members in enumerate(group_answers([s.answer for s in self.samples])):
                for i in members:
                    labels[i] = g
            object.__setattr__(self, "groups", tuple(labels))

    @property
    def n(self) -> int:
        return len(self.samples)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Accuracy of one selection method at one budget, with its 95% interval and the exact expectation."""

    method: str
    budget: int
    accuracy: float
    low: float
    high: float
    exact: float | None
    tokens: float | None
    questions: int
    trials: int


@dataclass(frozen=True, slots=True)
class ReplayResult:
    estimates: list[Estimate]
    ci: CI
    trials: int
    seed: int
    questions: int
    pool_size: int

    def get(self, method: str, budget: int) -> Estimate:
        for e in self.estimates:
            if e.method == method and e.budget == budget:
                return e
        raise KeyError((method, budget))


# ------------------------------------------------------------------------------------------------ loading


def _answer_text(pred: object) -> str | None:
    if pred is None:
        return None
    if isinstance(pred, float) and pred.is_integer():
        return str(int(pred))
    return str(pred)


def load_pool(path: str | Path, *, score: Literal["mean_lp", "min_lp"] = "mean_lp") -> list[PoolQuestion]:
    """A pool file: one ``{"idx", "gold", "samples": [{"pred", "correct", "mean_lp", "tokens", ...}]}`` per line.

    A sample's score is ``exp(mean_lp)`` (the policy's geometric-mean token probability) or ``exp(min_lp)``.
    Bad JSON lines are skipped with a :class:`DatasetWarning`; a line without ``samples`` is an error.
    """
    file = existing_file(path, "pool")
    if score not in ("mean_lp", "min_lp"):
        raise ConfigurationError(f"score: unknown {score!r}; use 'mean_lp' or 'min_lp'")
    pool: list[PoolQuestion] = []
    bad: list[int] = []
    with file.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad.append(line_no)
                continue
            if not isinstance(row, dict) or not isinstance(row.get("samples"), list) or not row["samples"]:
                raise ConfigurationError(f"pool: {file}:{line_no} has no 'samples' list")
            samples = []
            for s in row["samples"]:
                lp = s.get(score)
                samples.append(
                    Sample(
                        _answer_text(s.get("pred")),
                        None if lp is None else math.exp(min(0.0, float(lp))),
                        bool(s.get("correct")),
                        s.get("tokens"),
                    )
                )
            pool.append(PoolQuestion(str(row.get("idx", line_no - 1)), tuple(samples)))
    if bad:
        warnings.warn(f"pool: skipped {len(bad)} malformed line(s) in {file}: {bad[:5]}", DatasetWarning, stacklevel=2)
    if not pool:
        raise ConfigurationError(f"pool: {file} holds no questions")
    return pool


def pool_from_samples(
    pools: Mapping[str, Sequence[Mapping[str, Any]]], verifier: str = "confidence"
) -> list[PoolQuestion]:
    """Sweep pools (``ResultStore.pools(run)``: question id → stored samples) scored by ``verifier``."""
    out = [
        PoolQuestion(
            qid,
            tuple(Sample(s.answer, s.scored_by(verifier), bool(s.correct), s.tokens) for s in read_pool(samples)),
        )
        for qid, samples in pools.items()
        if samples
    ]
    if not out:
        raise ConfigurationError("pool: the run has no stored best-of-N samples")
    return out


def as_candidates(samples: Sequence[PoolSample]) -> list[Candidate]:
    """Samples as graph candidates (ids ``s0``, ``s1``, ...) for :func:`select_answer`."""
    return pool_candidates(samples)


# ---------------------------------------------------------------------------------------------- selection


def choose(q: PoolQuestion, subset: Sequence[int], how: Method) -> int | None:
    """Index of the sample ``how`` selects among ``subset`` (ascending pool indices) by
    :func:`~ttc_graph.selection.select_answer`; None if no answer."""
    picked = select_answer(as_candidates([q.samples[i] for i in subset]), how).candidate_id  # type: ignore[arg-type]
    return None if picked is None else subset[int(picked[1:])]


def subset_correct(q: PoolQuestion, subset: Sequence[int], how: Method) -> bool:
    """Whether ``how`` picks a correct answer from ``subset`` (``oracle``: any sample is correct)."""
    if how == "oracle":
        return any(q.samples[i].correct for i in subset)
    pick = choose(q, subset, how)
    return pick is not None and bool(q.samples[pick].correct)


def exact_question(q: PoolQuestion, budget: int, how: Method, *, given: int = 0) -> float:
    """Exact expected correctness at ``budget``: the mean over all C(N, budget) subsets, or over those holding
    the first ``given`` samples (e.g. probes already drawn: the expectation given them)."""
    if not 0 <= given <= budget <= q.n:
        raise ConfigurationError(f"given: need 0 <= given ({given}) <= budget ({budget}) <= pool size ({q.n})")
    if how == "oracle" and not given:
        c = sum(1 for s in q.samples if s.correct)
        return 1.0 - math.comb(q.n - c, budget) / math.comb(q.n, budget)
    rest = np.array(list(itertools.combinations(range(given, q.n), budget - given)), dtype=np.int64)
    subsets = np.hstack([np.tile(np.arange(given), (len(rest), 1)), rest.reshape(len(rest), budget - given)])
    return float(_subsets_correct(q, subsets, how).mean())


def _subsets_correct(q: PoolQuestion, subsets: np.ndarray, how: Method) -> np.ndarray:
    """:func:`subset_correct` of every row of ``subsets`` (ascending pool indices) at once, with the picks of
    :func:`~ttc_graph.selection.subset_picks` (the same as :func:`~ttc_graph.selection.select_answer`'s)."""
    correct = np.array([bool(s.correct) for s in q.samples])
    if how == "oracle":
        return correct[subsets].any(axis=1)
    picks = subset_picks(q.groups, [s.score for s in q.samples], subsets, how)
    return np.where(picks >= 0, correct[np.maximum(picks, 0)], False)


def exact_accuracy(pool: Sequence[PoolQuestion], budget: int, how: Method) -> float:
    """Exact expected accuracy over the pool's questions at ``budget``."""
    _check_budgets(pool, [budget])
    return statistics.fmean(exact_question(q, budget, how) for q in pool)


# ------------------------------------------------------------------------------------------------- replay


def _check_budgets(pool: Sequence[PoolQuestion], budgets: Sequence[int]) -> None:
    if not pool:
        raise ConfigurationError("pool: no questions")
    smallest = min(q.n for q in pool)
    for b in budgets:
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise ConfigurationError(f"budgets: each must be an integer >= 1, got {b!r}")
        if b > smallest:
            raise ConfigurationError(f"budgets: {b} exceeds the smallest pool ({smallest} samples per question)")


def _interval(values: Sequence[float], ci: CI, seed: int, resamples: int) -> tuple[float, float]:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean
    if ci == "normal":
        half = _Z95 * statistics.stdev(values) / math.sqrt(len(values))
        return max(0.0, mean - half), min(1.0, mean + half)
    _, low, high = bootstrap_mean(values, resamples, seed)
    return low, high


def replay(
    pool: Sequence[PoolQuestion],
    budgets: Sequence[int],
    *,
    methods: Sequence[Method] = METHODS,
    trials: int = 200,
    seed: int = 0,
    ci: CI = "bootstrap",
    resamples: int = DEFAULT_RESAMPLES,
    exact_limit: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Subsampled accuracy of each method at each budget, with a 95% interval across questions.

    For every question and budget, ``trials`` subsets of ``b`` samples are drawn without replacement (all
    methods see the same subsets) and the question's accuracy is the fraction of correct picks. The estimate
    is the mean over questions; its interval is a percentile bootstrap over questions (``resamples``
    resamples, :mod:`ttc_graph.eval.bootstrap`) or, with ``ci="normal"``, mean ± 1.96·sd/√Q across questions.
    ``exact`` holds the combinatorial expectation when C(N, b) <= ``exact_limit`` for every question.
    """
    _check_budgets(pool, budgets)
    if not isinstance(trials, int) or trials < 1:
        raise ConfigurationError(f"trials: must be an integer >= 1, got {trials!r}")
    if ci not in ("bootstrap", "normal"):
        raise ConfigurationError(f"ci: unknown {ci!r}; use 'bootstrap' or 'normal'")
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ConfigurationError(f"methods: unknown {unknown}; use {', '.join(ALL_METHODS)}")
    rng = random.Random(seed)
    estimates: list[Estimate] = []
    total, done = len(budgets) * len(pool), 0
    for b in budgets:
        per_q: dict[str, list[float]] = {m: [] for m in methods}
        for q in pool:
            hits = dict.fromkeys(methods, 0)
            for _ in range(trials):
                subset = sorted(rng.sample(range(q.n), b))
                for m in methods:
                    hits[m] += subset_correct(q, subset, m)
            for m in methods:
                per_q[m].append(hits[m] / trials)
            done += 1
            if progress:
                progress(done, total)
        can_enumerate = all(math.comb(q.n, b) <= exact_limit for q in pool)
        token_means = [statistics.fmean(s.tokens or 0 for s in q.samples) for q in pool if _has_tokens(q)]
        tokens = b * statistics.fmean(token_means) if len(token_means) == len(pool) else None
        for m in methods:
            low, high = _interval(per_q[m], ci, seed + 1 + b, resamples)
            exact = statistics.fmean(exact_question(q, b, m) for q in pool) if can_enumerate else None
            acc = statistics.fmean(per_q[m])
            estimates.append(Estimate(m, b, acc, low, high, exact, tokens, len(pool), trials))
    return ReplayResult(estimates, ci, trials, seed, len(pool), min(q.n for q in pool))


def paired_difference(
    pool: Sequence[PoolQuestion],
    budget: int,
    a: Method,
    b: Method,
    *,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
) -> tuple[float, float, float]:
    """Exact accuracy of ``a`` minus ``b`` at ``budget``, with a 95% paired bootstrap interval over questions."""
    _check_budgets(pool, [budget])
    unknown = [m for m in (a, b) if m not in ALL_METHODS]
    if unknown:
        raise ConfigurationError(f"methods: unknown {unknown}; use {', '.join(ALL_METHODS)}")
    diffs = [exact_question(q, budget, a) - exact_question(q, budget, b) for q in pool]
    return bootstrap_mean(diffs, resamples, seed)


def _has_tokens(q: PoolQuestion) -> bool:
    return all(isinstance(s.tokens, int) for s in q.samples)
