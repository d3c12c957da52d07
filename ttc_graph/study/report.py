"""The study's report, from its database alone: accuracy per template and budget, per difficulty bin, the
compute-optimal curves against best-of-N weighted with efficiency ratios, bootstrap intervals over questions,
cost per question, and the fitted policy tables. No model call."""

from __future__ import annotations

import functools
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttc_graph.answers import answers_equal, extract_answer, group_answers
from ttc_graph.compute_optimal.calibration import Record, calibrate, efficiency_ratio
from ttc_graph.compute_optimal.difficulty import DifficultyMetric, assign_bins
from ttc_graph.compute_optimal.table import PolicyTable
from ttc_graph.eval.grading import grade
from ttc_graph.eval.replay import Method, PoolQuestion, Sample, exact_question
from ttc_graph.eval.store import ResultRow, ResultStore
from ttc_graph.selection import revision_chains, select_pooled
from ttc_graph.specs.models import RevisionsSpec
from ttc_graph.study.config import StudyConfig
from ttc_graph.study.runner import sample_candidate, stored_candidate

__all__ = [
    "BASELINE_BUDGETS",
    "BIN_TABLES",
    "CV_REPEATS",
    "Binning",
    "ChainSteps",
    "Fit",
    "StudyAnalysis",
    "StudyData",
    "analyze",
    "baseline_expected",
    "binnings",
    "bins_fit",
    "family_fit",
    "fit_plan",
    "load_study_data",
    "long_paths",
    "probe_views",
    "revision_steps",
    "unit_values",
    "unsolved_by_sampling",
]

BASELINE_BUDGETS = (1, 2, 4, 8, 16)  # best-of-N weighted from each question's pool: the baseline's dense curve
N_BINS = 5
FEWER_BINS = (2, 3)  # the report's fits with fewer bins
CV_REPEATS = 10  # random two-fold splits averaged per fit
BIN_TABLES = ("oracle", "predicted")  # the binnings the report breaks accuracy down by, and fits families on


@dataclass(frozen=True, slots=True)
class Binning:
    """How a fit estimates each question's difficulty.

    ``pass_rate``: pass@1 over the question's pool (oracle: needs the labels). ``verifier_score``: the mean
    verifier score of its pool samples; uncharged, as the paper does (``probes`` 0), or of the first ``probes``
    only, charged to every budget as the router charges them (a routable table).

    ``split`` > 0 holds the first ``split`` pool samples out of the difficulty estimate and values best-of-N on
    them alone, so that a question's bin and best-of-N's score on it are independent draws. Binned and scored on
    the same 16 samples, best-of-N would score exactly 0 in a bin of pass@1 0 and too well in the easiest bin, by
    construction (the paper's pools of 2,048 samples make that overlap negligible; 16 do not).
    """

    metric: DifficultyMetric
    probes: int = 0
    split: int = 0


def binnings(data: StudyData) -> dict[str, Binning]:
    """The report's three fits: oracle, predicted (offline, as the paper; binned on the pool samples beyond the
    largest budget when every pool has some) and routed (probes charged; best-of-N reuses them, as the router
    does)."""
    cfg = data.config
    largest = max(cfg.budgets)
    split = largest if all(len(data.pools[q]) > largest for q in data.questions) else 0
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
    """Every compute-optimal fit of the report, by name. One per binning over every template (named as the
    binning); one per family and bin table (``"predicted:search"``), as the paper fits search and revisions
    apart; and one per bin table with fewer bins (``"predicted:2 bins"``): with few questions a bin's choice
    rests on few of them, and fewer bins trade resolution in difficulty for less noise in the choice."""
    every = tuple(data.config.templates)
    plan = {m: Fit(m, every) for m in binnings(data)}
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
    questions: list[str] = field(default_factory=list)  # complete: every template x budget, and a pool

    def template_row(self, name: str, budget: int, qid: str) -> ResultRow:
        return self.rows[(name, budget, qid)]

    def rotated(self, offset: int) -> StudyData:
        """The same study with every pool rotated to start at its sample ``offset``: the first samples, which a
        routed fit takes for the router's probes, are then another set of the pool's samples."""
        pools = {q: samples[offset:] + samples[:offset] for q, samples in self.pools.items()}
        return StudyData(self.config, self.rows, pools, self.references, self.questions)


def probe_views(data: StudyData, probes: int) -> list[StudyData]:
    """The views a fit with ``probes`` router probes averages over: the data itself when it takes none, else one
    per disjoint set of ``probes`` pool samples (samples 1-4, 5-8, ... of every complete question's pool), each
    rotated to come first. Any such set is as likely a draw of the router's probes; one alone would let its luck
    set the routed figures."""
    if not probes:
        return [data]
    draws = min(len(data.pools[q]) for q in data.questions) // probes if data.questions else 1
    return [data.rotated(d * probes) for d in range(max(draws, 1))]


def load_study_data(store: ResultStore, config: StudyConfig) -> StudyData:
    """The rows of ``config``'s templates and budgets (a database may hold other templates run under the same
    name and settings, for another config's view) and the pools."""
    kept = [r for r in store.rows(config.name) if config.covers(r.strategy, r.budget)]
    rows = {(r.strategy, r.budget, r.question_id): r for r in kept}
    pools = store.pools(config.name)
    references = {r.question_id: str(r.reference) for r in rows.values()}
    complete = [
        q
        for q in sorted(references, key=lambda q: (len(q), q))
        if q in pools and all((t, b, q) in rows for t in config.templates for b in config.budgets)
    ]
    return StudyData(config, rows, pools, references, complete)


def _sample_correct(data: StudyData, qid: str, sample: dict[str, Any]) -> bool:
    return grade(data.config.dataset, extract_answer(sample["text"]), data.references[qid])


def oracle_difficulty(data: StudyData, qids: Sequence[str], start: int = 0) -> dict[str, float]:
    """pass@1 of each question over its pool samples from ``start`` on (needs the labels)."""
    return {q: statistics.fmean(_sample_correct(data, q, s) for s in data.pools[q][start:]) for q in qids}


def predicted_difficulty(data: StudyData, qids: Sequence[str], probes: int = 0, start: int = 0) -> dict[str, float]:
    """The mean verifier score of each question's pool samples from ``start`` on, or of its first ``probes``
    (needs no labels; unscored count as 0). The first samples are the router's probes: best-of-N at budget B
    reuses them."""
    chosen = slice(0, probes) if probes else slice(start, None)
    return {q: statistics.fmean(float(s.get("score") or 0.0) for s in data.pools[q][chosen]) for q in qids}


def difficulty_of(data: StudyData, qids: Sequence[str], binning: Binning) -> dict[str, float]:
    if binning.metric == "pass_rate":
        return oracle_difficulty(data, qids, binning.split)
    return predicted_difficulty(data, qids, binning.probes, binning.split)


def pool_question(data: StudyData, qid: str, first: int | None = None) -> PoolQuestion:
    """A question's pool samples (its ``first`` only, if given), answered and graded, for exact subset
    expectations."""
    cands = [sample_candidate(i, s) for i, s in enumerate(data.pools[qid][:first])]
    samples = tuple(
        Sample(c["answer"], c["score"], grade(data.config.dataset, c["answer"], data.references[qid]), c["tokens"])
        for c in cands
    )
    return PoolQuestion(qid, samples)


def _selection(data: StudyData, template: str) -> Method | None:
    """How a best-of-N template selects (None: not best-of-N, its live runs are its records)."""
    spec = data.config.templates[template]
    return spec.get("selection", "weighted") if spec.get("kind") == "best_of_n" else None


@functools.lru_cache(maxsize=16384)
def _expected(question: PoolQuestion, budget: int, how: Method, given: int = 0) -> float:
    """:func:`exact_question`, remembered: the baseline curve and the best-of-N units share their subsets."""
    return exact_question(question, budget, how, given=given)


def baseline_expected(data: StudyData, qid: str, budgets: Sequence[int], given: int = 0) -> dict[int, float]:
    """Best-of-N weighted's expected correctness on a question at each budget: the mean over every subset of
    that many of its pool samples (the paper's subsampling; one prefix is a single noisy draw).

    With ``given`` > 0, the expectation given the first ``given`` samples (the router's probes): over the subsets
    of them below ``given``, over the subsets that hold them from ``given`` on. It is the baseline a routed fit
    is compared with, since the router draws the same first samples: the luck of the probes then cancels."""
    question = pool_question(data, qid)
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
    probes = {q: [sample_candidate(i, s) for i, s in enumerate(data.pools[q][:given])] for q in set(qids)}
    for t in data.config.templates:
        how = _selection(data, t)
        for b in data.config.budgets:
            spec = data.config.spec_for(t, b) if given else None
            chains = spec.selection if isinstance(spec, RevisionsSpec) else None
            for q in set(qids):
                row = data.template_row(t, b, q)
                if how is not None and b <= pools[q].n:
                    out[(t, b, q)] = _expected(pools[q], b, how, min(given, b))
                elif given:  # the router's answer: best-of-N weighted over its probes and the run's finalists
                    chosen = select_pooled(probes[q], [stored_candidate(c) for c in row.candidates], chains)
                    out[(t, b, q)] = float(grade(data.config.dataset, chosen.answer, data.references[q]))
                else:
                    out[(t, b, q)] = float(row.correct)
    return out


@dataclass(slots=True)
class StudyAnalysis:
    """Every figure of the report; intervals are bootstrap 95% percentile intervals over questions."""

    questions: int
    budgets: tuple[int, ...]
    accuracy: dict[str, dict[int, tuple[float, float, float]]]
    difference: dict[str, dict[int, tuple[float, float, float]]]  # template - baseline, paired over questions
    baseline: dict[int, tuple[float, float, float]]
    compared: dict[str, dict[int, float]]  # fit -> the baseline curve its ratio is measured on (routed: given probes)
    bins: dict[str, dict[str, dict[int, dict[int, float]]]]  # binning -> template -> bin -> budget -> accuracy
    bin_difference: dict[str, dict[str, dict[int, dict[int, tuple[float, float, float]]]]]  # as bins, minus baseline
    bin_sizes: dict[str, dict[int, int]]
    optimal: dict[str, dict[int, tuple[float, float, float]]]  # fit (fit_plan) -> budget -> (cv accuracy, low, high)
    in_sample: dict[str, dict[int, float]]  # fit -> budget -> accuracy of its choices on the questions it chose on
    ratio: dict[str, dict[int, tuple[float | None, float | None, float | None]]]
    chosen: dict[str, dict[str, dict[str, str]]]  # fit -> bin -> budget -> template (fit on every question)
    cost: dict[str, dict[int, dict[str, float | None]]]
    steps: dict[str, dict[int, float | None]]
    distinct: dict[str, dict[int, float]]  # template -> budget -> mean distinct final answers per run
    tables: dict[str, PolicyTable]  # by fit
    binnings: dict[str, Binning]  # how each fit binned: oracle and predicted hold the first ``split`` samples out
    probe_draws: dict[str, int]  # by binning: the disjoint probe sets of the pool a fit averages over (1: none)
    pool_size: int  # the smallest pool of a complete question
    long_paths: dict[str, int]  # see long_paths
    unsolved: dict[str, int]  # see unsolved_by_sampling
    revision_steps: dict[str, ChainSteps]  # see revision_steps


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
) -> PolicyTable:
    """The cross-validated table on ``qids`` (duplicates allowed: a bootstrap resample) from ``values`` and each
    question's difficulty ``level`` under ``binning`` in ``n_bins`` bins, choosing among ``templates``.
    ``draws`` maps a question to the keys of ``values`` and ``level`` it stands for (itself by default; one per
    probe set for a routed fit): each is a record, and a question's records share a fold."""
    keys = {f"{key}#{i}": (key, q) for i, q in enumerate(qids) for key in (draws[q] if draws else (q,))}
    difficulty = {r: level[key] for r, (key, _) in keys.items()}
    budgets = data.config.budgets
    records = [Record(r, t, b, values[(t, b, key)]) for r, (key, _) in keys.items() for t in templates for b in budgets]
    table = calibrate(
        records,
        difficulty,
        {name: data.config.template(name) for name in templates},
        metric=binning.metric,
        n_bins=n_bins,
        probes=binning.probes,
        baseline=data.config.baseline,
        seed=seed,
        cv_repeats=CV_REPEATS,
        groups={r: q for r, (_, q) in keys.items()},  # a question's copies in a resample and probe draws share a fold
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


def _interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% percentile interval: as many resamples cut off below as above."""
    ordered = sorted(values)
    cut = int(0.025 * len(ordered))
    return ordered[cut], ordered[len(ordered) - 1 - cut]


def _paired(differences: Sequence[float], resamples: int, rng: random.Random) -> tuple[float, float, float]:
    """The mean of per-question differences with its 95% bootstrap interval over those questions."""
    means = [statistics.fmean(rng.choices(differences, k=len(differences))) for _ in range(resamples)]
    return (statistics.fmean(differences), *_interval(means))


def _tokens(candidate: Mapping[str, Any]) -> int:
    return int(candidate.get("tokens") or 0)


def long_paths(data: StudyData) -> dict[str, int]:
    """Live runs holding a candidate longer than a best-of-N sample may be (``max_tokens``: search caps each step,
    not the path): how many, how many chose an answer that rests on such candidates alone, and how many of those
    are correct."""
    cap, qids = data.config.max_tokens, data.questions
    runs = [
        r
        for t in data.config.live_templates()
        for b in data.config.budgets
        for q in qids
        if not (r := data.template_row(t, b, q)).reused
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
    qids = [q for q, v in oracle_difficulty(data, data.questions).items() if v == 0]
    runs = [data.template_row(t, b, q) for t in data.config.live_templates() for b in data.config.budgets for q in qids]
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
    budget, out = max(data.config.budgets), {}
    for t in data.config.live_templates():
        if not isinstance(data.config.spec_for(t, budget), RevisionsSpec):
            continue
        steps = ChainSteps([], [], 0, 0, 0, 0, 0, 0)
        for q in data.questions:
            for attempts in revision_chains(map(stored_candidate, data.template_row(t, budget, q).candidates)).values():
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


def analyze(data: StudyData, *, resamples: int = 200, seed: int = 0) -> StudyAnalysis:
    """Every figure of the report from the complete questions of ``data``."""
    cfg, qids = data.config, data.questions
    if len(qids) < 2 * N_BINS:
        raise ValueError(f"study: {len(qids)} complete questions; the analysis needs at least {2 * N_BINS}")
    budgets = cfg.budgets

    kinds = binnings(data)
    plain = unit_values(data, qids)
    views = {m: probe_views(data, k.probes) for m, k in kinds.items()}  # a routed fit: one per set of probes
    draws = {m: {q: [_draw_key(q, d, len(v)) for d in range(len(v))] for q in qids} for m, v in views.items()}
    values: dict[str, dict[tuple[str, int, str], float]] = {}
    levels: dict[str, dict[str, float]] = {}  # once: every bootstrap fit reuses them and the values
    for m, k in kinds.items():
        values[m], levels[m] = {}, {}
        for d, view in enumerate(views[m]):
            units = unit_values(view, qids, given=k.probes, first=k.split or None)
            values[m] |= {(t, b, _draw_key(q, d, len(views[m]))): v for (t, b, q), v in units.items()}
            levels[m] |= {_draw_key(q, d, len(views[m])): v for q, v in difficulty_of(view, qids, k).items()}

    def accuracy_of(sample: Sequence[str]) -> dict[str, dict[int, float]]:
        return {t: {b: statistics.fmean(plain[(t, b, q)] for q in sample) for b in budgets} for t in cfg.templates}

    plan = fit_plan(data)
    given = {name: kinds[f.binning].probes for name, f in plan.items()}  # a routed fit's baseline sees its probes
    expected = {  # given probes: the mean over the probe sets the routed fit averages over
        g: {q: _mean_curve([baseline_expected(v, q, BASELINE_BUDGETS, g) for v in probe_views(data, g)]) for q in qids}
        for g in {0, *given.values()}
    }
    curve = [b for b in BASELINE_BUDGETS if all(b in expected[0][q] for q in qids)]

    def baselines_of(sample: Sequence[str]) -> dict[int, dict[int, float]]:
        return {g: {b: statistics.fmean(per_q[q][b] for q in sample) for b in curve} for g, per_q in expected.items()}

    point = accuracy_of(qids)
    bases = baselines_of(qids)
    base = bases[0]

    def fit(name: str, sample: Sequence[str], fit_seed: int) -> PolicyTable:
        m, templates, n_bins = plan[name].binning, plan[name].templates, plan[name].n_bins
        return _fit(data, sample, kinds[m], fit_seed, values[m], levels[m], templates, n_bins, draws[m])

    fits = {name: fit(name, qids, seed) for name in plan}
    optimal_point = {m: {int(b): v for b, v in fits[m].report["compute_optimal_cv"].items()} for m in fits}
    ratio_point = {m: efficiency_ratio(bases[given[m]], optimal_point[m]) for m in fits}

    rng = random.Random(seed)
    boot_acc: dict[str, dict[int, list[float]]] = {t: {b: [] for b in budgets} for t in cfg.templates}
    boot_diff: dict[str, dict[int, list[float]]] = {t: {b: [] for b in budgets} for t in cfg.templates}
    boot_base: dict[int, list[float]] = {b: [] for b in curve}
    boot_opt: dict[str, dict[int, list[float]]] = {m: {b: [] for b in budgets} for m in fits}
    boot_ratio: dict[str, dict[int, list[float]]] = {m: {b: [] for b in budgets} for m in fits}
    for k in range(resamples):
        sample = [rng.choice(qids) for _ in qids]
        acc = accuracy_of(sample)
        b_curves = baselines_of(sample)
        b_curve = b_curves[0]
        for t in cfg.templates:
            for b in budgets:
                boot_acc[t][b].append(acc[t][b])
                boot_diff[t][b].append(acc[t][b] - acc[cfg.baseline][b])
        for b in curve:
            boot_base[b].append(b_curve[b])
        for m in fits:
            cv = fit(m, sample, seed + k + 1).report["compute_optimal_cv"]
            opt = {int(b): v for b, v in cv.items()}
            for b in budgets:
                boot_opt[m][b].append(opt[b])
                r = efficiency_ratio(b_curves[given[m]], {b: opt[b]})[b]
                boot_ratio[m][b].append(float("inf") if r is None else r)

    def with_ci(value: float, values: Sequence[float]) -> tuple[float, float, float]:
        return (value, *_interval(values))

    ratio: dict[str, dict[int, tuple[float | None, float | None, float | None]]] = {}
    for m in fits:
        ratio[m] = {}
        for b in budgets:
            lo, hi = _interval(boot_ratio[m][b])
            ratio[m][b] = (
                ratio_point[m][b],
                None if lo == float("inf") else lo,
                None if hi == float("inf") else hi,
            )

    bins: dict[str, dict[str, dict[int, dict[int, float]]]] = {}
    bin_difference: dict[str, dict[str, dict[int, dict[int, tuple[float, float, float]]]]] = {}
    sizes: dict[str, dict[int, int]] = {}
    for m in BIN_TABLES:
        bin_of = assign_bins(levels[m], n_bins=N_BINS, seed=seed)
        members = {bn: [q for q in qids if bin_of[q] == bn] for bn in range(1, N_BINS + 1)}
        sizes[m] = {bn: len(qs) for bn, qs in members.items()}
        binned = values[m]  # best-of-N on the samples the bins did not use
        bins[m] = {
            t: {bn: {b: statistics.fmean(binned[(t, b, q)] for q in qs) for b in budgets} for bn, qs in members.items()}
            for t in cfg.templates
        }
        bin_difference[m] = {
            t: {
                bn: {
                    b: _paired(
                        [binned[(t, b, q)] - binned[(cfg.baseline, b, q)] for q in qs], resamples, random.Random(seed)
                    )
                    for b in budgets
                }
                for bn, qs in members.items()
            }
            for t in cfg.templates
            if t != cfg.baseline
        }

    cost: dict[str, dict[int, dict[str, float | None]]] = {}
    steps: dict[str, dict[int, float | None]] = {}
    distinct: dict[str, dict[int, float]] = {}
    for t in cfg.templates:
        cost[t], steps[t], distinct[t] = {}, {}, {}
        for b in budgets:
            rows = [data.template_row(t, b, q) for q in qids]
            distinct[t][b] = statistics.fmean(len(group_answers([c["answer"] for c in r.candidates])) for r in rows)
            measured = [r.seconds for r in rows if not r.reused or r.details.get("seconds_measured")]
            usage = [u for r in rows if (u := r.details.get("usage", {})).get("prompt_tokens") is not None]
            cost[t][b] = {  # seconds and usage: of the runs that measured them (a reused or replayed run did not)
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

    return StudyAnalysis(
        questions=len(qids),
        budgets=budgets,
        accuracy={t: {b: with_ci(point[t][b], boot_acc[t][b]) for b in budgets} for t in cfg.templates},
        difference={
            t: {b: with_ci(point[t][b] - point[cfg.baseline][b], boot_diff[t][b]) for b in budgets}
            for t in cfg.templates
            if t != cfg.baseline
        },
        baseline={b: with_ci(base[b], boot_base[b]) for b in curve},
        compared={m: bases[given[m]] for m in fits},
        bins=bins,
        bin_difference=bin_difference,
        bin_sizes=sizes,
        optimal={m: {b: with_ci(optimal_point[m][b], boot_opt[m][b]) for b in budgets} for m in fits},
        in_sample={m: {int(b): v for b, v in fits[m].report["compute_optimal_in_sample"].items()} for m in fits},
        ratio=ratio,
        chosen={m: fits[m].table for m in fits},
        cost=cost,
        steps=steps,
        distinct=distinct,
        tables=fits,
        binnings=kinds,
        probe_draws={m: len(v) for m, v in views.items()},
        pool_size=min(len(data.pools[q]) for q in qids),
        long_paths=long_paths(data),
        unsolved=unsolved_by_sampling(data),
        revision_steps=revision_steps(data),
    )
