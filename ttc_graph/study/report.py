"""The study's report, from its database alone: accuracy per template and budget, per difficulty bin, the
compute-optimal curves against best-of-N weighted with efficiency ratios, bootstrap intervals over questions and
sign-flip p-values (:mod:`ttc_graph.eval.bootstrap`), cost per question, and the fitted policy tables. No model call.

One estimator of best-of-N per comparison: every figure that compares a template with best-of-N (accuracy,
paired differences, bin tables, fits, the curve an efficiency ratio reads its matching budget from) takes
best-of-N (weighted, majority) at N as the mean over every N-subset of the first half of a question's pool (the
scoring samples, ``StudyConfig.scoring_samples``); the second half bins the question's difficulty. Only the
perfect-verifier headroom (pass@N beside best-of-N, no template in it) reads the whole pool.

Partial grids: each comparison uses the questions complete for it (the template's run and a full pool) and says how
many; a fit uses the questions complete for every template it chooses among at that budget."""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttc_graph.answers import answers_equal, extract_answer, group_answers
from ttc_graph.compute_optimal.calibration import Record, calibrate
from ttc_graph.compute_optimal.difficulty import DifficultyMetric, assign_bins
from ttc_graph.compute_optimal.table import PolicyTable, probe_share
from ttc_graph.eval.bootstrap import (
    DEFAULT_RESAMPLES,
    paired_bootstrap,
    percentile_interval,
    resample_counts,
    resample_means,
    sign_flip_p,
)
from ttc_graph.eval.grading import grade
from ttc_graph.eval.pool_samples import pool_candidate
from ttc_graph.eval.replay import Method, PoolQuestion, Sample, _subsets_correct, exact_question
from ttc_graph.eval.store import ResultRow, ResultStore
from ttc_graph.selection import revision_chains, select_pooled
from ttc_graph.specs.models import RevisionsSpec
from ttc_graph.study.config import StudyConfig
from ttc_graph.study.fits import fit_cv, matching_ratio
from ttc_graph.study.rescore import checked_score, stored_programs
from ttc_graph.study.runner import stored_candidate

__all__ = [
    "BIN_TABLES",
    "BOOT_SPLITS",
    "CV_SPLITS",
    "EXACT_SUBSETS",
    "FULL_GRID",
    "SAMPLED_SUBSETS",
    "Binning",
    "ChainSteps",
    "Fit",
    "StudyAnalysis",
    "StudyData",
    "analyze",
    "baseline_expected",
    "binnings",
    "bins_fit",
    "checked_question",
    "exact",
    "family_fit",
    "fit_plan",
    "load_study_data",
    "long_paths",
    "probe_views",
    "question_index",
    "revision_steps",
    "unit_values",
    "unsolved_by_sampling",
]

N_BINS = 5
FEWER_BINS = (2, 3)  # the report's fits with fewer bins
CV_SPLITS = 100  # random two-fold splits averaged in a fit's point estimate
BOOT_SPLITS = 10  # random two-fold splits averaged in each bootstrap resample's refit
BIN_TABLES = ("oracle", "predicted")  # the binnings the report breaks accuracy down by, and fits families on
FULL_GRID = "full grid"  # the family of every template, fit apart when some run on fewer questions


@dataclass(frozen=True, slots=True)
class Binning:
    """How a fit estimates each question's difficulty.

    ``pass_rate``: pass@1 over the question's pool (oracle: needs the labels). ``verifier_score``: the mean
    verifier score of its pool samples; uncharged, as the paper does (``probes`` 0), or of the first ``probes``
    only, charged to every budget as the router charges them (a routable table).

    ``split`` > 0: difficulty from the pool samples after the first ``split`` (the scoring samples), so that a
    question's bin and best-of-N's score on it are independent draws. Binned and scored on the same 16 samples,
    best-of-N would score exactly 0 in a bin of pass@1 0 and too well in the easiest bin, by construction (the
    paper's pools of 2,048 samples make that overlap negligible; 16 do not). A routed binning draws its probes
    from the scoring samples.
    """

    metric: DifficultyMetric
    probes: int = 0
    split: int = 0


def binnings(data: StudyData) -> dict[str, Binning]:
    """The report's three fits: oracle and predicted (offline, as the paper; binned on the second half of each
    pool) and routed (probes charged, drawn from the scoring samples; best-of-N reuses them, as the router does)."""
    cfg = data.config
    split = cfg.scoring_samples
    return {
        "oracle": Binning("pass_rate", split=split),
        "predicted": Binning("verifier_score", split=split),
        "routed": Binning("verifier_score", cfg.router_probes),
    }


@dataclass(frozen=True, slots=True)
class Fit:
    """One compute-optimal fit: the binning (a key of :func:`binnings`), the templates it chooses among and the
    number of difficulty bins."""

    binning: str
    templates: tuple[str, ...]
    n_bins: int = N_BINS


def family_fit(binning: str, family: str) -> str:
    """The name of the fit within ``family`` on ``binning``."""
    return f"{binning}:{family}"


def bins_fit(binning: str, n_bins: int) -> str:
    """The name of the fit over every template on ``binning`` with ``n_bins`` bins (one of FEWER_BINS)."""
    return f"{binning}:{n_bins} bins"


def fit_plan(data: StudyData) -> dict[str, Fit]:
    """Every compute-optimal fit of the report, by name. One per binning over every template that runs on every
    question (named as the binning; with a trimmed grid, one per bin table over every template as well, on the
    questions they share: ``"predicted:full grid"``); one per family and bin table (``"predicted:search"``), as
    the paper fits search and revisions apart; and one per bin table with fewer bins (``"predicted:2 bins"``):
    with few questions a bin's choice rests on few of them, and fewer bins trade resolution in difficulty for less
    noise in the choice."""
    every = tuple(data.config.grid_templates())
    plan = {m: Fit(m, every) for m in binnings(data)}
    if len(every) < len(data.config.templates):  # a trimmed grid: the full grid too, on its fewer questions
        plan |= {family_fit(m, FULL_GRID): Fit(m, tuple(data.config.templates)) for m in BIN_TABLES}
    for family, members in data.config.families.items():
        plan |= {family_fit(m, family): Fit(m, members) for m in BIN_TABLES}
    plan |= {bins_fit(m, k): Fit(m, every, k) for k in FEWER_BINS for m in BIN_TABLES}
    return plan


@dataclass(slots=True)
class StudyData:
    """What the database holds for a study: rows by (template, budget, question) and pools by question."""

    config: StudyConfig
    rows: dict[tuple[str, int, str], ResultRow]
    pools: dict[str, list[dict[str, Any]]]
    references: dict[str, str]
    questions: list[str] = field(default_factory=list)  # complete: every template x budget, and a full pool
    pool_questions: list[str] = field(default_factory=list)  # with a reference and a full pool (pool_samples)
    programs: dict[str, tuple[str | None, ...]] = field(default_factory=dict)  # rescore: program answers by question

    def template_row(self, name: str, budget: int, qid: str) -> ResultRow:
        return self.rows[(name, budget, qid)]

    def rotated(self, offset: int) -> StudyData:
        """The same study with every pool's scoring samples rotated to start at its sample ``offset``: the first
        samples, which a routed fit takes for the router's probes, are then another set of the scoring samples."""
        k = self.config.scoring_samples
        pools = {q: s[offset:k] + s[:offset] + s[k:] for q, s in self.pools.items()}
        return StudyData(
            self.config, self.rows, pools, self.references, self.questions, self.pool_questions, self.programs
        )


def probe_views(data: StudyData, probes: int) -> list[StudyData]:
    """The views a fit with ``probes`` router probes averages over: the data itself when it takes none, else one
    per disjoint set of ``probes`` scoring samples (samples 1-4, 5-8, ... of the scoring half of each pool), each
    rotated to come first. Any such set is as likely a draw of the router's probes; one alone would let its luck
    set the routed figures."""
    if not probes:
        return [data]
    draws = data.config.scoring_samples // probes
    return [data.rotated(d * probes) for d in range(max(draws, 1))]


def question_index(qids: Sequence[str]) -> dict[str, int]:
    """Each question's 0-based position in the data set: its id when ids are line numbers (GSM8K's), else its rank
    among ``qids``."""
    if all(q.isdigit() for q in qids):
        return {q: int(q) for q in qids}
    return {q: i for i, q in enumerate(sorted(qids, key=lambda q: (len(q), q)))}


def load_study_data(store: ResultStore, config: StudyConfig) -> StudyData:
    """The rows of ``config``'s templates, budgets and questions (a database may hold other templates or questions
    run under the same name and settings, for another config's view) and the pools. A question is complete when
    its pool is full and every template that runs on it is stored at each of its budgets."""
    stored = store.rows(config.name)
    index = question_index(sorted({r.question_id for r in stored}))
    kept = [r for r in stored if config.covers(r.strategy, r.budget, index[r.question_id])]
    rows = {(r.strategy, r.budget, r.question_id): r for r in kept}
    # a pool extended for another config (a larger pool_size) reads as this config's first samples
    pools = {q: samples[: config.pool_samples] for q, samples in store.pools(config.name).items()}
    references = {r.question_id: str(r.reference) for r in rows.values()}
    full = [q for q in sorted(references, key=lambda q: (len(q), q)) if len(pools.get(q, ())) >= config.pool_samples]
    complete = [
        q
        for q in full
        if all(
            (t, b, q) in rows for t in config.templates for b in config.budgets_of(t) if config.covers(t, b, index[q])
        )
    ]
    return StudyData(config, rows, pools, references, complete, full, stored_programs(store, config))


def _sample_correct(data: StudyData, qid: str, sample: dict[str, Any]) -> bool:
    return grade(data.config.dataset, extract_answer(sample["text"]), data.references[qid])


def oracle_difficulty(data: StudyData, qids: Sequence[str], start: int = 0) -> dict[str, float]:
    """pass@1 of each question over its pool samples from ``start`` on, up to the study's pool size (needs the
    labels)."""
    stop = data.config.pool_samples
    return {q: statistics.fmean(_sample_correct(data, q, s) for s in data.pools[q][start:stop]) for q in qids}


def predicted_difficulty(data: StudyData, qids: Sequence[str], probes: int = 0, start: int = 0) -> dict[str, float]:
    """The mean verifier score of each question's pool samples from ``start`` on, or of its first ``probes``
    (needs no labels; unscored count as 0). The first samples are the router's probes: best-of-N at budget B
    reuses them."""
    chosen = slice(0, probes) if probes else slice(start, data.config.pool_samples)
    return {q: statistics.fmean(float(s.get("score") or 0.0) for s in data.pools[q][chosen]) for q in qids}


def difficulty_of(data: StudyData, qids: Sequence[str], binning: Binning) -> dict[str, float]:
    if binning.metric == "pass_rate":
        return oracle_difficulty(data, qids, binning.split)
    return predicted_difficulty(data, qids, binning.probes, binning.split)


def pool_question(data: StudyData, qid: str, first: int | None = None) -> PoolQuestion:
    """A question's pool samples (its ``first`` only, if given), answered and graded, for exact subset
    expectations."""
    cands = [pool_candidate(i, s) for i, s in enumerate(data.pools[qid][:first])]
    samples = tuple(
        Sample(c["answer"], c["score"], grade(data.config.dataset, c["answer"], data.references[qid]), c["tokens"])
        for c in cands
    )
    return PoolQuestion(qid, samples)


def checked_question(data: StudyData, qid: str, first: int | None = None) -> PoolQuestion:
    """:func:`pool_question` scored by the study's verifier times the program verifier (``rescore``)."""
    plain, programs = pool_question(data, qid, first), data.programs[qid]
    samples = tuple(
        Sample(s.answer, checked_score(data.config, s.score, s.answer, programs), s.correct, s.tokens)
        for s in plain.samples
    )
    return PoolQuestion(qid, samples)


def _rescored(
    data: StudyData, qids: Sequence[str], resamples: int, seed: int
) -> tuple[dict[int, dict[str, Interval]], dict[int, tuple[Interval, float]]]:
    """Best-of-N on the scoring samples of ``qids`` at N = 1, 2, 4, ... with the study's verifier, with it times
    the program verifier, majority and pass@N; and the paired difference checked - study's at each N."""
    k = data.config.scoring_samples
    plain = {q: pool_question(data, q, k) for q in qids}
    checked = {q: checked_question(data, q, k) for q in qids}
    table: dict[int, dict[str, Interval]] = {}
    gaps: dict[int, tuple[Interval, float]] = {}
    for n in _powers(k):
        per = {
            "study": [_expected(plain[q], n, "weighted") for q in qids],
            "checked": [_expected(checked[q], n, "weighted") for q in qids],
            "majority": [_expected(plain[q], n, "majority") for q in qids],
            "oracle": [_expected(plain[q], n, "oracle") for q in qids],
        }
        table[n] = {how: _with_ci(v, resamples, _seed(seed, "rescore", how, n)) for how, v in per.items()}
        diff = [x - y for x, y in zip(per["checked"], per["study"], strict=True)]
        gaps[n] = (
            paired_bootstrap(per["checked"], per["study"], resamples, _seed(seed, "rescore gap", n)),
            sign_flip_p(diff, resamples, _seed(seed, "rescore gap", n)),
        )
    return table, gaps


def _selection(data: StudyData, template: str) -> Method | None:
    """How a best-of-N template selects (None: not best-of-N, its live runs are its records)."""
    spec = data.config.templates[template]
    return spec.get("selection", "weighted") if spec.get("kind") == "best_of_n" else None


EXACT_SUBSETS = 100_000  # above this many N-subsets, an expectation is the mean over SAMPLED_SUBSETS random ones
SAMPLED_SUBSETS = 20_000


def exact(n: int, budget: int, given: int = 0) -> bool:
    """Whether the expectation at ``budget`` over a pool of ``n`` enumerates every subset (else it samples)."""
    return math.comb(n - given, budget - given) <= EXACT_SUBSETS


@functools.lru_cache(maxsize=16384)
def _expected(question: PoolQuestion, budget: int, how: Method, given: int = 0) -> float:
    """:func:`exact_question`, remembered: the baseline curve and the best-of-N units share their subsets. Beyond
    ``EXACT_SUBSETS`` subsets (a 32-sample pool at N = 8 holds 10.5 million) the mean over ``SAMPLED_SUBSETS``
    uniformly drawn ones, seeded by the question, budget and method (pass@N stays exact: it has a closed form)."""
    if (how == "oracle" and not given) or exact(question.n, budget, given):
        return exact_question(question, budget, how, given=given)
    rng = np.random.default_rng(_seed(0, question.id, budget, how, given))
    rest = np.sort(np.argsort(rng.random((SAMPLED_SUBSETS, question.n - given)), axis=1)[:, : budget - given], axis=1)
    subsets = np.hstack([np.tile(np.arange(given), (SAMPLED_SUBSETS, 1)), rest + given])
    return float(_subsets_correct(question, subsets, how).mean())


def baseline_expected(
    data: StudyData, qid: str, budgets: Sequence[int], given: int = 0, first: int | None = None
) -> dict[int, float]:
    """Best-of-N weighted's expected correctness on a question at each budget: the mean over every subset of
    that many of its pool samples (its ``first`` only, if given: the scoring samples) (the paper's subsampling;
    one prefix is a single noisy draw).

    With ``given`` > 0, the expectation given the first ``given`` samples (the router's probes): over the subsets
    of them below ``given``, over the subsets that hold them from ``given`` on. It is the baseline a routed fit
    is compared with, since the router draws the same first samples: the luck of the probes then cancels."""
    question = pool_question(data, qid, first)
    how = _selection(data, data.config.baseline) or "weighted"
    probes = pool_question(data, qid, given) if given else question
    return {
        b: _expected(probes, b, how) if b < given else _expected(question, b, how, given)
        for b in budgets
        if b <= question.n
    }


def unit_values(
    data: StudyData, qids: Sequence[str], *, given: int = 0, first: int | None = None
) -> dict[tuple[str, int, str], float]:
    """Each (template, budget, question)'s correctness: a live template's recorded run; a best-of-N template's
    expected correctness over the subsets of its budget's size of the pool (of its ``first`` samples, if given)
    that hold the first ``given`` samples (all subsets at 0; the router's probes otherwise). Its recorded run is
    one such subset, a single draw of the same value. With ``given`` > 0 a live run's answer is the router's:
    best-of-N weighted over the probes and the run's finalists (``select_pooled``)."""
    out: dict[tuple[str, int, str], float] = {}
    pools = {q: pool_question(data, q, first) for q in set(qids)}
    probes = {q: [pool_candidate(i, s) for i, s in enumerate(data.pools[q][:given])] for q in set(qids)}
    heads = {q: pool_question(data, q, given) for q in set(qids)} if given else pools
    for t in data.config.templates:
        how = _selection(data, t)
        for b in data.config.budgets_of(t):
            spec = data.config.spec_for(t, b) if given else None
            chains = spec.selection if isinstance(spec, RevisionsSpec) else None
            for q in set(qids):
                row = data.rows.get((t, b, q))
                if how is not None and b <= pools[q].n:
                    # below the probes: best-of-N of b of them, as the routed baseline curve takes it
                    out[(t, b, q)] = _expected(heads[q], b, how) if b < given else _expected(pools[q], b, how, given)
                elif how is not None or row is None:  # best-of-N beyond the pool, or a live unit not run yet
                    continue
                elif given:  # the router's answer: best-of-N weighted over its probes and the run's finalists
                    chosen = select_pooled(probes[q], [stored_candidate(c) for c in row.candidates], chains)
                    out[(t, b, q)] = float(grade(data.config.dataset, chosen.answer, data.references[q]))
                else:
                    out[(t, b, q)] = float(row.correct)
    return out


Interval = tuple[float, float, float]  # value, low, high


@dataclass(frozen=True, slots=True)
class Compared:
    """A paired comparison with the baseline on the ``n`` questions complete for it: the template's mean, the
    baseline's, their difference with its 95% paired bootstrap interval and the sign-flip p-value."""

    n: int
    value: float
    baseline: float
    difference: Interval
    p: float


@dataclass(frozen=True, slots=True)
class FitOutcome:
    """One compute-optimal fit at one budget, on the ``n`` questions complete for every template it chooses
    among: cross-validated accuracy, in-sample, best-of-N weighted on the same questions (each with its interval),
    the efficiency ratio (``inf``: never matched within the curve) and the p-value of compute-optimal against
    best-of-N at the same budget (paired sign-flip over questions)."""

    n: int
    optimal: Interval
    in_sample: float
    baseline: Interval
    ratio: Interval
    p: float
    chosen: dict[int, str]  # bin (1 = easiest) -> template, fit on every question
    curve: dict[int, float]  # the baseline curve the ratio is read on (these questions; routed: given the probes)


@dataclass(slots=True)
class StudyAnalysis:
    """Every figure of the report; intervals are 95% percentile bootstrap intervals over questions
    (:mod:`ttc_graph.eval.bootstrap`, ``resamples`` resamples), p-values paired sign-flip tests."""

    questions: int  # complete for every template at every budget
    pool_questions: int  # with a full pool: the questions best-of-N is scored on
    budgets: tuple[int, ...]
    comparable: tuple[int, ...]  # budgets best-of-N can be scored at on the scoring samples
    resamples: int
    scoring: int  # pool samples 1..scoring score best-of-N
    pool_size: int  # pool samples scoring+1..pool_size bin
    accuracy: dict[str, dict[int, tuple[int, Interval] | None]]  # template -> budget -> (questions, mean [CI])
    difference: dict[str, dict[int, Compared | None]]  # template - baseline, paired over questions
    baseline: dict[int, Interval]  # best-of-N weighted on the scoring samples of every pool question
    headroom: dict[int, dict[str, Interval]]  # N -> weighted, majority, pass@N on the whole pool
    headroom_gap: dict[int, tuple[Interval, float]]  # N -> pass@N - weighted [CI], p
    bins: dict[str, dict[str, dict[int, dict[int, tuple[int, float] | None]]]]  # binning -> t -> bin -> b -> n, acc
    bin_difference: dict[str, dict[str, dict[int, dict[int, Compared | None]]]]
    bin_sizes: dict[str, dict[int, int]]
    fits: dict[str, dict[int, FitOutcome | None]]  # fit (fit_plan) -> budget -> outcome (None: too few questions)
    fit_questions: dict[str, dict[int, int]]  # fit -> budget -> questions complete for it
    cost: dict[str, dict[int, dict[str, float | None]]]
    steps: dict[str, dict[int, float | None]]
    distinct: dict[str, dict[int, float | None]]  # template -> budget -> mean distinct final answers per run
    tables: dict[str, PolicyTable]  # by binning (oracle, predicted, routed): the router's tables
    binnings: dict[str, Binning]
    probe_draws: dict[str, int]  # by binning: the disjoint probe sets of the scoring samples a fit averages over
    long_paths: dict[str, int]  # see long_paths
    unsolved: dict[str, int]  # see unsolved_by_sampling
    revision_steps: dict[str, ChainSteps]  # see revision_steps
    rescored_questions: int = 0  # pool questions with the rescore verifier's programs stored
    rescored: dict[int, dict[str, Interval]] = field(default_factory=dict)  # N -> study, checked, majority, pass@N
    rescored_gap: dict[int, tuple[Interval, float]] = field(default_factory=dict)  # N -> checked - study [CI], p


def _fit(
    data: StudyData,
    qids: Sequence[str],
    binning: Binning,
    seed: int,
    values: Mapping[tuple[str, int, str], float],
    level: Mapping[str, float],
    templates: Sequence[str],
    n_bins: int = N_BINS,
    draws: Mapping[str, Sequence[str]] | None = None,
    budgets: Sequence[int] | None = None,
) -> PolicyTable:
    """The policy table (what the router loads) on ``qids`` from ``values`` and each question's difficulty
    ``level`` under ``binning`` in ``n_bins`` bins, choosing among ``templates`` at ``budgets``. ``draws`` maps a
    question to the keys of ``values`` and ``level`` it stands for (itself by default; one per probe set for a
    routed fit): each is a record, and a question's records share a fold."""
    keys = {f"{key}#{i}": (key, q) for i, q in enumerate(qids) for key in (draws[q] if draws else (q,))}
    difficulty = {r: level[key] for r, (key, _) in keys.items()}
    budgets = budgets or data.config.budgets
    records = [
        Record(r, t, b, values[(t, b, key)])
        for r, (key, _) in keys.items()
        for t in templates
        for b in budgets
        if (t, b, key) in values
    ]
    table = calibrate(
        records,
        difficulty,
        {name: data.config.template(name) for name in templates},
        metric=binning.metric,
        n_bins=n_bins,
        probes=binning.probes,
        baseline=data.config.baseline,
        seed=seed,
        groups={r: q for r, (_, q) in keys.items()},  # a question's probe draws share a fold
    )
    if binning.probes:  # the router samples its probes as the pool's first samples were drawn
        sampling = {"temperature": data.config.temperature, "max_tokens": data.config.max_tokens}
        table.difficulty = table.difficulty.model_copy(update=sampling)
    return table


def _draw_key(qid: str, draw: int, draws: int) -> str:
    """A question's key in the ``draw``-th of ``draws`` probe views (the question itself when there is one)."""
    return qid if draws == 1 else f"{qid}|probes {draw + 1}"


def _mean_curve(curves: Sequence[Mapping[int, float]]) -> dict[int, float]:
    return {b: statistics.fmean(c[b] for c in curves) for b in curves[0]}


def _seed(seed: int, *parts: object) -> int:
    """A seed per comparison, stable across runs (no hash randomisation)."""
    return seed + sum((i + 1) * sum(map(ord, str(p))) for i, p in enumerate(parts))


def _compare(a: Sequence[float], b: Sequence[float], resamples: int, seed: int) -> Compared | None:
    if not a:
        return None
    diff = [x - y for x, y in zip(a, b, strict=True)]
    return Compared(
        len(a), statistics.fmean(a), statistics.fmean(b), paired_bootstrap(a, b, resamples, seed),
        sign_flip_p(diff, resamples, seed),
    )  # fmt: skip


def _with_ci(values: Sequence[float], resamples: int, seed: int) -> Interval:
    counts = resample_counts(len(values), resamples, seed)
    return (statistics.fmean(values), *percentile_interval(resample_means(values, counts)))


def _powers(top: int) -> list[int]:
    out, n = [], 1
    while n < top:
        out.append(n)
        n *= 2
    return [*out, top]


def analyze(data: StudyData, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> StudyAnalysis:
    """Every figure of the report from ``data``: each comparison on the questions complete for it."""
    cfg = data.config
    pool_q = data.pool_questions
    if len(pool_q) < 2 * N_BINS:
        raise ValueError(
            f"study: {len(pool_q)} complete questions (a reference and a pool of {cfg.pool_samples} samples);"
            f" the analysis needs at least {2 * N_BINS}"
        )
    if len(data.questions) < 2 * N_BINS:
        raise ValueError(
            f"study: {len(data.questions)} complete questions (a full pool and every template that runs on the"
            f" question at each of its budgets); the report needs at least {2 * N_BINS}"
        )
    budgets, base, k = cfg.budgets, cfg.baseline, cfg.scoring_samples
    comparable = tuple(b for b in budgets if b <= k)
    kinds = binnings(data)
    plain = unit_values(data, pool_q, first=k)

    def have(t: str, b: int) -> list[str]:
        return [q for q in pool_q if (t, b, q) in plain]

    accuracy: dict[str, dict[int, tuple[int, Interval] | None]] = {}
    difference: dict[str, dict[int, Compared | None]] = {}
    for t in cfg.templates:
        accuracy[t], difference[t] = {}, {}
        for b in budgets:
            qs = have(t, b)
            accuracy[t][b] = (
                (len(qs), _with_ci([plain[(t, b, q)] for q in qs], resamples, _seed(seed, t, b))) if qs else None
            )
            if t != base:
                both = [q for q in qs if (base, b, q) in plain]
                difference[t][b] = _compare(
                    [plain[(t, b, q)] for q in both],
                    [plain[(base, b, q)] for q in both],
                    resamples,
                    _seed(seed, t, b, "d"),
                )
    difference.pop(base)

    curve_budgets = sorted({*_powers(k), *comparable})
    base_q = {q: baseline_expected(data, q, curve_budgets, first=k) for q in pool_q}
    baseline = {n: _with_ci([base_q[q][n] for q in pool_q], resamples, _seed(seed, "curve", n)) for n in curve_budgets}

    # the perfect-verifier headroom: the whole pool, no template compared
    headroom: dict[int, dict[str, Interval]] = {}
    headroom_gap: dict[int, tuple[Interval, float]] = {}
    whole = {q: pool_question(data, q, cfg.pool_samples) for q in pool_q}
    for n in _powers(cfg.pool_samples):
        per = {how: [_expected(whole[q], n, how) for q in pool_q] for how in ("weighted", "majority", "oracle")}
        headroom[n] = {how: _with_ci(v, resamples, _seed(seed, "headroom", how, n)) for how, v in per.items()}
        gap = [x - y for x, y in zip(per["oracle"], per["weighted"], strict=True)]
        headroom_gap[n] = (
            paired_bootstrap(per["oracle"], per["weighted"], resamples, _seed(seed, "gap", n)),
            sign_flip_p(gap, resamples, _seed(seed, "gap", n)),
        )

    # bins over every pool question; each template's cells over its complete questions in the bin
    levels = {m: difficulty_of(data, pool_q, kinds[m]) for m in BIN_TABLES}
    bins: dict[str, dict[str, dict[int, dict[int, tuple[int, float] | None]]]] = {}
    bin_difference: dict[str, dict[str, dict[int, dict[int, Compared | None]]]] = {}
    sizes: dict[str, dict[int, int]] = {}
    for m in BIN_TABLES:
        bin_of = assign_bins(levels[m], n_bins=N_BINS, seed=seed)
        members = {bn: [q for q in pool_q if bin_of[q] == bn] for bn in range(1, N_BINS + 1)}
        sizes[m] = {bn: len(qs) for bn, qs in members.items()}
        bins[m], bin_difference[m] = {}, {}
        for t in cfg.templates:
            bins[m][t], bin_difference[m][t] = {}, {}
            for bn, qs in members.items():
                cells = {b: [q for q in qs if (t, b, q) in plain] for b in budgets}
                bins[m][t][bn] = {
                    b: (len(c), statistics.fmean(plain[(t, b, q)] for q in c)) if c else None for b, c in cells.items()
                }
                bin_difference[m][t][bn] = {
                    b: _compare(
                        [plain[(t, b, q)] for q in c if (base, b, q) in plain],
                        [plain[(base, b, q)] for q in c if (base, b, q) in plain],
                        resamples,
                        _seed(seed, m, t, bn, b),
                    )
                    for b, c in cells.items()
                }
        bin_difference[m].pop(base)

    # the fits: one estimator of best-of-N inside them and on the curve their ratio reads
    views = {m: probe_views(data, kb.probes) for m, kb in kinds.items()}
    draws = {m: len(v) for m, v in views.items()}
    unit = {m: [unit_values(v, pool_q, given=kb.probes, first=k) for v in views[m]] for m, kb in kinds.items()}
    level_draws = {m: [difficulty_of(v, pool_q, kb) for v in views[m]] for m, kb in kinds.items()}
    routed_curve = {  # best-of-N weighted given the probes, averaged over the probe sets (the routed fit's baseline)
        q: _mean_curve([baseline_expected(v, q, curve_budgets, kinds["routed"].probes, k) for v in views["routed"]])
        for q in pool_q
    }
    plan = fit_plan(data)
    fits: dict[str, dict[int, FitOutcome | None]] = {}
    fit_questions: dict[str, dict[int, int]] = {}
    for name, fit in plan.items():
        kb, per_view = kinds[fit.binning], unit[fit.binning]
        fits[name], fit_questions[name] = {}, {}
        curves = routed_curve if kb.probes else base_q
        for b in comparable:
            spend = {t: b - probe_share(cfg.template(t), kb.probes) for t in fit.templates}
            chosen_from = [t for t in fit.templates if cfg.covers(t, spend[t])]  # the baseline always (share 0)
            qs = [q for q in pool_q if all((t, spend[t], q) in u for t in chosen_from for u in per_view)]
            fit_questions[name][b] = len(qs)
            if len(qs) < 2 * fit.n_bins or len(chosen_from) < 1:
                fits[name][b] = None
                continue
            values = np.array([[[u[(t, spend[t], q)] for q in qs] for u in per_view] for t in chosen_from])
            level = np.array([[lv[q] for q in qs] for lv in level_draws[fit.binning]])
            weights = np.vstack(
                [np.ones((1, len(qs)), dtype=np.int64), resample_counts(len(qs), resamples, _seed(seed, name, b))]
            )
            res = fit_cv(
                values, level, weights, n_bins=fit.n_bins, splits=BOOT_SPLITS, point_splits=CV_SPLITS, seed=seed
            )
            curve = np.array([[curves[q][n] for n in curve_budgets] for q in qs])  # (questions, budgets)
            curve_w = weights @ curve / weights.sum(axis=1, keepdims=True)
            ratio = matching_ratio(np.array(curve_budgets), curve_w, res.cv, b)
            at_b = curve_budgets.index(b)
            per_q_base = curve[:, at_b]
            fits[name][b] = FitOutcome(
                n=len(qs),
                optimal=(float(res.cv[0]), *percentile_interval(res.cv[1:])),
                in_sample=res.in_sample,
                baseline=(float(curve_w[0, at_b]), *percentile_interval(curve_w[1:, at_b])),
                ratio=(float(ratio[0]), *percentile_interval(ratio[1:])),
                p=sign_flip_p(res.per_question - per_q_base, resamples, _seed(seed, name, b, "p")),
                chosen={bn + 1: chosen_from[c] for bn, c in enumerate(res.chosen)},
                curve=dict(zip(curve_budgets, map(float, curve_w[0]), strict=True)),
            )

    # the router's tables: fit on the questions complete for every template of the main fits at every comparable
    # budget it runs at
    tables: dict[str, PolicyTable] = {}
    grid = tuple(cfg.grid_templates())
    for m, kb in kinds.items():
        per_view = unit[m]
        qs = [q for q in pool_q if all((t, b, q) in per_view[0] for t in grid for b in comparable if cfg.covers(t, b))]
        if len(qs) < 2 * N_BINS or not comparable:
            continue
        keyed = {(t, b, _draw_key(q, d, draws[m])): v for d, u in enumerate(per_view) for (t, b, q), v in u.items()}
        level_of = {_draw_key(q, d, draws[m]): v for d, lv in enumerate(level_draws[m]) for q, v in lv.items()}
        keys = {q: [_draw_key(q, d, draws[m]) for d in range(draws[m])] for q in qs}
        table = _fit(data, qs, kb, seed, keyed, level_of, grid, N_BINS, keys, comparable)
        done = fits[m]
        table.report["compute_optimal_cv"] = {str(b): o.optimal[0] for b, o in done.items() if o is not None}
        table.report["cv_splits"] = CV_SPLITS
        table.report["efficiency_ratio"] = {
            str(b): (None if math.isinf(o.ratio[0]) else o.ratio[0]) for b, o in done.items() if o is not None
        }
        tables[m] = table

    cost: dict[str, dict[int, dict[str, float | None]]] = {}
    steps: dict[str, dict[int, float | None]] = {}
    distinct: dict[str, dict[int, float | None]] = {}
    for t in cfg.templates:
        cost[t], steps[t], distinct[t] = {}, {}, {}
        for b in budgets:
            rows = [r for q in pool_q if (r := data.rows.get((t, b, q))) is not None]  # none off the template's grid
            if not rows:
                cost[t][b], steps[t][b], distinct[t][b] = {"runs": 0}, None, None
                continue
            distinct[t][b] = statistics.fmean(len(group_answers([c["answer"] for c in r.candidates])) for r in rows)
            measured = [r.seconds for r in rows if not r.reused or r.details.get("seconds_measured")]
            usage = [u for r in rows if (u := r.details.get("usage", {})).get("prompt_tokens") is not None]
            cost[t][b] = {  # seconds and usage: of the runs that measured them (a reused or replayed run did not)
                "runs": len(rows),
                "generations": statistics.fmean(r.generations for r in rows),
                "tokens": statistics.fmean(r.tokens for r in rows),
                "seconds": statistics.fmean(measured) if measured else None,
                "measured": len(measured),
                "prompt_tokens": statistics.fmean(u["prompt_tokens"] for u in usage) if usage else None,
                "requests": statistics.fmean(u.get("requests", 0) for u in usage) if usage else None,
            }
            medians = [
                r.details.get("diagnostics", {}).get("steps_per_candidate", {}).get("median")
                for r in rows
                if r.details.get("diagnostics")
            ]
            medians = [m for m in medians if m is not None]
            steps[t][b] = statistics.median(medians) if medians else None

    checked_q = [q for q in pool_q if q in data.programs]
    rescored, rescored_gap = _rescored(data, checked_q, resamples, seed) if checked_q else ({}, {})

    return StudyAnalysis(
        questions=len(data.questions),
        pool_questions=len(pool_q),
        budgets=budgets,
        comparable=comparable,
        resamples=resamples,
        scoring=k,
        pool_size=cfg.pool_samples,
        accuracy=accuracy,
        difference=difference,
        baseline=baseline,
        headroom=headroom,
        headroom_gap=headroom_gap,
        bins=bins,
        bin_difference=bin_difference,
        bin_sizes=sizes,
        fits=fits,
        fit_questions=fit_questions,
        cost=cost,
        steps=steps,
        distinct=distinct,
        tables=tables,
        binnings=kinds,
        probe_draws=draws,
        long_paths=long_paths(data),
        unsolved=unsolved_by_sampling(data),
        revision_steps=revision_steps(data),
        rescored_questions=len(checked_q),
        rescored=rescored,
        rescored_gap=rescored_gap,
    )


def _tokens(candidate: Mapping[str, Any]) -> int:
    return int(candidate.get("tokens") or 0)


def long_paths(data: StudyData) -> dict[str, int]:
    """Live runs holding a candidate longer than a best-of-N sample may be (``max_tokens``: search caps each step,
    not the path): how many, how many chose an answer that rests on such candidates alone, and how many of those
    are correct."""
    cap, qids = data.config.max_tokens, data.pool_questions
    runs = [
        r
        for t in data.config.live_templates()
        for b in data.config.budgets
        for q in qids
        if (r := data.rows.get((t, b, q))) is not None and not r.reused
    ]
    long = [r for r in runs if any(_tokens(c) > cap for c in r.candidates)]
    resting = [
        r
        for r in long
        if (backing := [c for c in r.candidates if c.get("answer") == r.answer])
        and all(_tokens(c) > cap for c in backing)
    ]
    longest = max((_tokens(c) for r in runs for c in r.candidates), default=0)
    return {"runs": len(runs), "long": len(long), "resting": len(resting),
            "resting_correct": sum(r.correct for r in resting), "longest": longest}  # fmt: skip


def unsolved_by_sampling(data: StudyData) -> dict[str, int]:
    """The questions none of whose pool samples is correct, and how many of their live runs are."""
    qids = [q for q, v in oracle_difficulty(data, data.pool_questions).items() if v == 0]
    runs = [
        r for t in data.config.live_templates() for b in data.config.budgets for q in qids
        if (r := data.rows.get((t, b, q))) is not None
    ]  # fmt: skip
    return {"questions": len(qids), "runs": len(runs), "correct": sum(r.correct for r in runs)}


@dataclass(slots=True)
class ChainSteps:
    """A revisions template's chains at the study's largest budget, attempt by attempt."""

    correct: list[int]  # per attempt position: the chains whose attempt there is correct
    chains: list[int]  # per attempt position: the chains that reached it
    right_to_wrong: int  # revisions that turned a correct attempt into a wrong one
    wrong_to_right: int
    changed: int  # revisions whose answer differs from the attempt before
    revisions: int  # attempts after the first
    lost: int  # chains right at their first attempt and wrong at their last
    gained: int  # chains wrong at their first attempt and right at their last

    @property
    def p_value(self) -> float:
        """The exact two-sided sign test (McNemar's) of first against last attempt on the same chains."""
        n, k = self.lost + self.gained, min(self.lost, self.gained)
        return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def revision_steps(data: StudyData) -> dict[str, ChainSteps]:
    """Whether revising helps, measured as the paper's Figure 6 (left) does: pass@1 at each attempt of the chains
    of every revisions template's runs at the largest budget, and how often a revision changes the answer."""
    out = {}
    for t in data.config.live_templates():
        budget = max(data.config.budgets_of(t))
        if not isinstance(data.config.spec_for(t, budget), RevisionsSpec):
            continue
        steps = ChainSteps([], [], 0, 0, 0, 0, 0, 0)
        for q in data.pool_questions:
            if (row := data.rows.get((t, budget, q))) is None:
                continue
            for attempts in revision_chains(map(stored_candidate, row.candidates)).values():
                right = [grade(data.config.dataset, c["answer"], data.references[q]) for c in attempts]
                for k, ok in enumerate(right):
                    if k == len(steps.chains):
                        steps.correct.append(0)
                        steps.chains.append(0)
                    steps.correct[k] += ok
                    steps.chains[k] += 1
                steps.lost += right[0] and not right[-1]
                steps.gained += right[-1] and not right[0]
                for before, after, was, now in zip(attempts, attempts[1:], right, right[1:], strict=False):
                    steps.revisions += 1
                    steps.right_to_wrong += was and not now
                    steps.wrong_to_right += now and not was
                    steps.changed += not answers_equal(before["answer"], after["answer"])
        out[t] = steps
    return out
