"""Compute-optimal scaling: difficulty bins, the cross-validated policy table, the router graph, FLOPs exchange.

Everything runs on synthetic data with known answers: question pools whose true pass rates sit in five known
bands, strategies whose true accuracy per (bin, budget) is set by hand, and a scripted policy whose samples
say which answer they carry. No model, no network.

The example policy table ``ttc_graph/presets/compute_optimal_table.json`` is built by :func:`build_example_table`
(``calibrate`` on synthetic records); regenerate it from the repository root with

    .venv/bin/python tests/unit/test_compute_optimal.py --write-example-table
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import random
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import StateGraph
from pydantic import ValidationError

from ttc_graph.budget import Budget
from ttc_graph.compute_optimal import (
    TABLE_FORMAT,
    DifficultyBins,
    PolicyTable,
    Record,
    calibrate,
    create_compute_optimal,
    efficiency_ratio,
    fit_bins,
    flops_exchange,
    load_table,
    matching_budget,
    probe_score,
    spec_at_budget,
    strategy_cost,
)
from ttc_graph.compute_optimal.calibration import cv_folds
from ttc_graph.compute_optimal.difficulty import assign_bins, small_bins
from ttc_graph.compute_optimal.router import PROBE_ID
from ttc_graph.errors import ConfigurationError
from ttc_graph.specs import build_graph, load_spec
from ttc_graph.specs.models import BeamSearchSpec, BestOfNSpec, ComputeOptimalSpec, RevisionsSpec
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.verifiers import ConfidenceVerifier

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SPEC = ROOT / "ttc_graph" / "presets" / "compute_optimal.yaml"
EXAMPLE_TABLE = "ttc_graph/presets/compute_optimal_table.json"  # relative to the repository root

BANDS = (0.9, 0.7, 0.5, 0.3, 0.1)  # true pass rates; band k (1-based) is difficulty bin k, 1 = easiest
BUDGETS = (1, 2, 4, 8)
QUESTION = "What is 6 * 7?"


def banded_pool(per_band: int = 10, jitter: float = 0.04, seed: int = 0) -> tuple[dict[str, float], dict[str, int]]:
    """Per-question pass rates jittered within the five bands, and each question's true bin."""
    rng = random.Random(seed)
    rates: dict[str, float] = {}
    truth: dict[str, int] = {}
    for bin_, band in enumerate(BANDS, start=1):
        for j in range(per_band):
            q = f"band{bin_}-q{j:02d}"
            rates[q] = band + rng.uniform(-jitter, jitter)
            truth[q] = bin_
    return rates, truth


# -- 1. difficulty bins ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_bins_puts_each_band_in_its_own_bin_easiest_first(seed: int) -> None:
    rates, truth = banded_pool(seed=seed)
    bins = fit_bins(rates, "pass_rate")
    assert bins.metric == "pass_rate"
    assert bins.n_bins == 5 and len(bins.edges) == 4
    assert list(bins.edges) == sorted(bins.edges)
    assert all(a < b for a, b in itertools.pairwise(bins.edges))
    for q, rate in rates.items():
        assert bins.bin_of(rate) == truth[q], (q, rate, bins.edges)
    # every edge separates two neighbouring bands
    for k, edge in enumerate(bins.edges):
        harder, easier = BANDS[len(BANDS) - 1 - k], BANDS[len(BANDS) - 2 - k]
        assert max(r for r in rates.values() if abs(r - harder) < 0.05) < edge
        assert edge < min(r for r in rates.values() if abs(r - easier) < 0.05)


def test_fit_bins_ignores_input_order_and_accepts_a_sequence() -> None:
    rates, _ = banded_pool()
    values = list(rates.values())
    shuffled = values[:]
    random.Random(3).shuffle(shuffled)
    assert (
        fit_bins(values, "pass_rate").edges
        == fit_bins(shuffled, "pass_rate").edges
        == fit_bins(rates, "pass_rate").edges
    )


def test_bin_of_is_monotone_and_an_edge_goes_to_the_harder_bin() -> None:
    bins = fit_bins(banded_pool()[0], "pass_rate")
    grid = [i / 200 for i in range(-20, 221)]
    assigned = [bins.bin_of(v) for v in grid]
    assert all(a >= b for a, b in itertools.pairwise(assigned)), "higher values must not be harder"
    assert assigned[0] == 5 and assigned[-1] == 1
    assert set(assigned) == {1, 2, 3, 4, 5}
    for edge in bins.edges:
        below, above = math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf)
        assert bins.bin_of(edge) == bins.bin_of(below)
        assert bins.bin_of(edge) == bins.bin_of(above) + 1


def test_fit_bins_hand_computed_edges() -> None:
    # 10 values, 5 bins: cut positions 2, 4, 6, 8 fall between values, so the edges are midpoints
    assert fit_bins([float(v) for v in range(1, 11)], "pass_rate").edges == (2.5, 4.5, 6.5, 8.5)
    # 11 values ranked from the easiest: bins of 3, 2, 2, 2, 2 questions, edges between neighbouring bins
    bins = fit_bins([float(v) for v in range(11)], "pass_rate")
    assert bins.edges == (1.5, 3.5, 5.5, 7.5)
    assert [bins.bin_of(v) for v in range(11)] == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 1]
    # predicted bins keep their probe count
    predicted = fit_bins([v / 10 for v in range(10)], "verifier_score", n_bins=2, probes=3)
    assert (predicted.metric, predicted.probes, predicted.edges) == ("verifier_score", 3, (0.45,))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_five_bins_of_equal_size_on_a_pool_full_of_ties(seed: int) -> None:
    # 60 questions with 8 samples each: pass@1 takes only 9 values; the shared pool's skew (many 0s and 1s)
    rng = random.Random(seed)
    weights = [21, 4, 3, 3, 2, 3, 3, 6, 15]
    rates = {f"q{i:02d}": k / 8 for i, k in enumerate(rng.choices(range(9), weights=weights, k=60))}
    bin_of = assign_bins(rates, n_bins=5, seed=seed)
    assert sorted(collections.Counter(bin_of.values()).items()) == [(b, 12) for b in range(1, 6)]
    # ranks respect the metric: an easier bin never holds a lower pass rate than a harder one
    for q, r in rates.items():
        for q2, r2 in rates.items():
            if bin_of[q] < bin_of[q2]:
                assert r >= r2
    assert assign_bins(rates, n_bins=5, seed=seed) == bin_of  # seeded: reproducible
    assert small_bins(bin_of, 5) == []


def test_a_bin_below_half_its_share_is_warned() -> None:
    assert small_bins({"a": 1, "b": 1, "c": 1, "d": 1, "e": 2, "f": 2, "g": 2, "h": 2, "i": 2, "j": 3}, 3) == [
        "difficulty bin 3 holds 1 questions, less than half its share (3.3)"
    ]


def test_calibration_on_ties_reports_equal_bins() -> None:
    rates = {f"q{i:02d}": (0.0 if i < 30 else 1.0) for i in range(60)}
    records = [Record(q, "A", 1, rates[q]) for q in rates]
    table = calibrate(records, rates, {"A": {"kind": "best_of_n", "selection": "majority"}}, metric="pass_rate")
    assert table.report["bin_sizes"] == {str(b): 12 for b in range(1, 6)}
    assert table.report["warnings"] == []


def test_probe_score_is_the_mean_with_unscored_probes_as_zero() -> None:
    assert probe_score([0.5, 1.0]) == 0.75
    assert probe_score([1.0, None]) == 0.5
    with pytest.raises(ConfigurationError, match="probes: no probe scores"):
        probe_score([])


# -- 2. cross-validated calibration ---------------------------------------------------------------------------

# True accuracy of the best strategy per bin at budget 1; each doubling of the budget adds GAIN, the other
# strategy trails by MARGIN. A wins bins 1-3 (the easy ones), B wins bins 4-5.
BEST_AT_1 = {1: 0.62, 2: 0.55, 3: 0.48, 4: 0.40, 5: 0.32}
GAIN, MARGIN = 0.08, 0.15
TRUE_WINNER = {1: "A", 2: "A", 3: "A", 4: "B", 5: "B"}
AB_STRATEGIES: dict[str, dict[str, Any]] = {
    "A": {"kind": "best_of_n", "selection": "majority"},
    "B": {"kind": "revisions", "chain_length": 1, "selection": "majority"},
}


def true_rate(strategy: str, bin_: int, budget: int) -> float:
    best = BEST_AT_1[bin_] + GAIN * math.log2(budget)
    return best if strategy == TRUE_WINNER[bin_] else best - MARGIN


def ab_records(seed: int, draws: int = 64) -> tuple[list[Record], dict[str, float]]:
    """Per-question accuracies drawn (``draws`` Bernoulli trials) from the known rates."""
    rates, truth = banded_pool(seed=seed)
    rng = random.Random(1000 + seed)
    records = [
        Record(q, name, b, sum(rng.random() < true_rate(name, truth[q], b) for _ in range(draws)) / draws)
        for q in sorted(rates)
        for name in AB_STRATEGIES
        for b in BUDGETS
    ]
    return records, rates


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibrated_table_picks_the_truly_best_strategy_per_bin(seed: int) -> None:
    records, rates = ab_records(seed)
    table = calibrate(records, rates, AB_STRATEGIES, metric="pass_rate", baseline="A", seed=seed)
    expected = {str(b): {str(n): TRUE_WINNER[b] for n in BUDGETS} for b in range(1, 6)}
    assert table.table == expected
    assert table.budgets == list(BUDGETS)
    assert table.difficulty == fit_bins(rates, "pass_rate")
    report = table.report
    assert report["questions"] == 50
    assert report["bin_sizes"] == dict.fromkeys(("1", "2", "3", "4", "5"), 10)
    assert set(report["fixed"]) == {"A", "B"}
    # compute-optimal is never (meaningfully) worse than any fixed strategy, and beats both here
    for b in map(str, BUDGETS):
        cv = report["compute_optimal_cv"][b]
        for name, curve in report["fixed"].items():
            assert cv >= curve[b] - 0.01, (b, name, cv, curve[b])
        assert cv > max(curve[b] for curve in report["fixed"].values())
    # per bin, the fixed curves show the planted winner
    for bin_ in map(str, range(1, 6)):
        winner = TRUE_WINNER[int(bin_)]
        loser = "B" if winner == "A" else "A"
        for b in map(str, BUDGETS):
            assert report["fixed_per_bin"][winner][bin_][b] > report["fixed_per_bin"][loser][bin_][b] + 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_efficiency_ratio_against_a_strategy_used_uniformly(seed: int) -> None:
    records, rates = ab_records(seed)
    table = calibrate(records, rates, AB_STRATEGIES, metric="pass_rate", baseline="A", seed=seed)
    report = table.report
    assert report["baseline"] == "A"
    ratio = report["efficiency_ratio"]
    assert set(ratio) == {"1", "2", "4", "8"}
    # A trails by MARGIN on 2 of 5 bins: compute-optimal is ~0.06 ahead, which A makes up in ~2^(0.06/0.08) x
    predicted = 2 ** (2 * MARGIN / 5 / GAIN)
    for b in ("1", "2", "4"):
        assert ratio[b] is not None and ratio[b] > 1.0
        assert predicted / 1.6 < ratio[b] < predicted * 1.6, (b, ratio[b], predicted)
    assert ratio["8"] is None  # A never reaches compute-optimal's accuracy at the largest budget
    # the report is consistent with its own curves
    cv = {int(b): v for b, v in report["compute_optimal_cv"].items()}
    base = {int(b): v for b, v in report["fixed"]["A"].items()}
    assert {str(b): r for b, r in efficiency_ratio(base, cv).items()} == ratio


def test_cross_validation_scores_each_fold_with_the_other_folds_choice() -> None:
    # A wins on one fold and B on the other: chosen in-sample, either looks good; scored on the held-out fold,
    # each fold's choice is the wrong one. Reproduce calibrate's (stratified) fold split to plant this.
    questions = [f"q{i:02d}" for i in range(20)]
    difficulty = {q: (i % 10) / 10 + 0.05 for i, q in enumerate(questions)}
    fold0, _ = cv_folds(questions, assign_bins(difficulty, n_bins=2, seed=5), {}, seed=5)
    records = []
    for q in questions:
        a, b = (0.9, 0.1) if q in fold0 else (0.2, 0.8)
        records += [Record(q, "A", 4, a), Record(q, "B", 4, b)]
    table = calibrate(records, difficulty, AB_STRATEGIES, metric="pass_rate", n_bins=2, seed=5)
    # trained on fold 1 (B) and scored on fold 0 (0.1); trained on fold 0 (A) and scored on fold 1 (0.2)
    assert table.report["compute_optimal_cv"]["4"] == pytest.approx(0.15)
    assert table.report["fixed"] == {"A": {"4": pytest.approx(0.55)}, "B": {"4": pytest.approx(0.45)}}
    # the final table is chosen on all the data, and scored on it, looks better than any held-out fold saw
    assert table.table == {"1": {"4": "A"}, "2": {"4": "A"}}
    assert table.report["compute_optimal_in_sample"] == {"4": pytest.approx(0.55)}


@pytest.mark.parametrize("seed", range(20))
def test_folds_are_stratified_by_bin_and_keep_groups_together(seed: int) -> None:
    # a bootstrap resample: 30 draws of 20 questions, copies named "q07#3"; the copies of one question must
    # share a fold, or a question is trained on and scored on at once
    rng = random.Random(seed)
    draws = [f"q{rng.randrange(20):02d}" for _ in range(30)]
    copies = {f"{q}#{i}": q for i, q in enumerate(draws)}
    difficulty = {c: int(q[1:]) / 20 for c, q in copies.items()}
    bin_of = assign_bins(difficulty, n_bins=5, seed=seed)
    folds = cv_folds(sorted(copies), bin_of, copies, seed=seed)
    assert sorted(folds[0] + folds[1]) == sorted(copies)
    assert not {copies[c] for c in folds[0]} & {copies[c] for c in folds[1]}
    groups = {q: min(bin_of[c] for c in copies if copies[c] == q) for q in set(draws)}
    for bin_ in range(1, 6):
        per_fold = [len({copies[c] for c in fold if groups[copies[c]] == bin_}) for fold in folds]
        assert abs(per_fold[0] - per_fold[1]) <= 1, (bin_, per_fold)


def test_repeated_cross_validation_averages_the_splits() -> None:
    records, rates = ab_records(0)
    single = [
        calibrate(records, rates, AB_STRATEGIES, metric="pass_rate", seed=s).report["compute_optimal_cv"]
        for s in range(10)
    ]
    repeated = calibrate(records, rates, AB_STRATEGIES, metric="pass_rate", seed=0, cv_repeats=10)
    for b, value in repeated.report["compute_optimal_cv"].items():
        assert value == pytest.approx(statistics.fmean(s[b] for s in single))
    with pytest.raises(ConfigurationError, match="cv_repeats"):
        calibrate(records, rates, AB_STRATEGIES, metric="pass_rate", cv_repeats=0)


def test_ties_go_to_the_baseline() -> None:
    questions = [f"q{i:02d}" for i in range(10)]
    difficulty = {q: i / 10 for i, q in enumerate(questions)}
    records = [Record(q, name, 4, 0.5) for q in questions for name in ("A", "B")]
    assert set(calibrate(records, difficulty, AB_STRATEGIES, metric="pass_rate").table["1"].values()) == {"A"}
    table = calibrate(records, difficulty, AB_STRATEGIES, metric="pass_rate", baseline="B")
    assert {name for row in table.table.values() for name in row.values()} == {"B"}


def test_calibrate_on_predicted_difficulty_keeps_the_probe_count() -> None:
    records, rates = ab_records(0)
    table = calibrate(records, rates, AB_STRATEGIES, metric="verifier_score", probes=4)
    assert (table.difficulty.metric, table.difficulty.probes) == ("verifier_score", 4)
    assert "efficiency_ratio" not in table.report


CURVE = {1: 0.4, 2: 0.5, 4: 0.6, 8: 0.7}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (0.5, 2.0),  # exact hit
        (0.7, 8.0),  # exact hit at the last budget
        (0.4, 1.0),  # reached at the smallest budget
        (0.3, 1.0),  # already exceeded at the smallest budget
        (0.55, 2**1.5),  # halfway between 2 and 4 in log2 space, not 3
        (0.625, 2**2.25),  # a quarter of the way from 4 to 8 in log2 space
    ],
)
def test_matching_budget_hand_computed(target: float, expected: float) -> None:
    assert matching_budget(CURVE, target) == pytest.approx(expected)


def test_matching_budget_never_and_unsorted() -> None:
    assert matching_budget(CURVE, 0.71) is None
    assert matching_budget({}, 0.1) is None
    assert matching_budget({8: 0.7, 1: 0.4, 4: 0.6, 2: 0.5}, 0.55) == pytest.approx(2**1.5)


def test_efficiency_ratio_hand_computed() -> None:
    optimal = {1: 0.5, 2: 0.55, 4: 0.7, 8: 0.75}
    ratio = efficiency_ratio(CURVE, optimal)
    assert ratio[1] == pytest.approx(2.0)  # the baseline needs budget 2 to match budget 1
    assert ratio[2] == pytest.approx(2**1.5 / 2)
    assert ratio[4] == pytest.approx(2.0)
    assert ratio[8] is None


# -- 3. the router --------------------------------------------------------------------------------------------

ROUTER_STRATEGIES: dict[str, dict[str, Any]] = {
    "weighted": {"kind": "best_of_n", "selection": "weighted", "verifier": {"kind": "confidence"}},
    "majority": {"kind": "best_of_n", "selection": "majority"},
    "revisions": {
        "kind": "revisions",
        "chain_length": 2,
        "selection": "hierarchical",
        "stop_on_repeat": False,
        "verifier": {"kind": "confidence"},
    },
    "beam": {"kind": "beam_search", "beam_width": 2, "verifier": {"kind": "confidence"}},
    "naive": {"kind": "best_of_n", "selection": "naive", "verifier": {"kind": "confidence"}},
}
# budget 4: each bin its own strategy; budget 8: a different arrangement
ROUTES = {
    "4": {"1": "weighted", "2": "majority", "3": "revisions", "4": "beam", "5": "naive"},
    "8": {"1": "majority", "2": "weighted", "3": "naive", "4": "revisions", "5": "beam"},
}
EDGES = (0.2, 0.4, 0.6, 0.8)
LEVEL = {1: 0.9, 2: 0.7, 3: 0.5, 4: 0.3, 5: 0.1}  # a verifier score in the middle of each bin
PROBES = 2
# the candidate ids each kind of subgraph gives its samples
SUBGRAPH_IDS = {
    "best_of_n": re.compile(r"^r\d+-c\d+-\d+$"),
    "revisions": re.compile(r"^ch\d+-a\d+$"),
    "beam_search": re.compile(r"^g\d+\.\d+$"),
}


def router_table(**overrides: Any) -> PolicyTable:
    data: dict[str, Any] = {
        "difficulty": DifficultyBins(metric="verifier_score", edges=EDGES, probes=PROBES),
        "budgets": [4, 8],
        "strategies": ROUTER_STRATEGIES,
        "table": {bin_: {budget: ROUTES[budget][bin_] for budget in ROUTES} for bin_ in ROUTES["4"]},
    }
    return PolicyTable(**{**data, **overrides})


def numbered(call: FakeCall, index: int) -> str:
    """The index-th sample overall: its own text, a boxed answer that is the index itself."""
    return f"Sample {index}.\n\nSo the answer is \\boxed{{{index}}}"


def constant(score: float) -> Any:
    def verifier(question: str, text: str) -> float:
        return score

    return verifier


async def route_once(bin_: int, budget: int = 4) -> tuple[dict[str, Any], ScriptedEndpoint]:
    policy = ScriptedEndpoint(numbered)
    graph = create_compute_optimal(
        policy, constant(LEVEL[bin_]), router_table(), budget=Budget(generations=budget)
    ).compile()
    return await graph.ainvoke({"question": QUESTION}), policy


@pytest.mark.parametrize("budget", [4, 8])
@pytest.mark.parametrize("bin_", [1, 2, 3, 4, 5])
async def test_router_follows_the_table(bin_: int, budget: int) -> None:
    table = router_table()
    out, policy = await route_once(bin_, budget)
    name = table.table[str(bin_)][str(budget)]
    kind = ROUTER_STRATEGIES[name]["kind"]
    assert out["difficulty_bin"] == bin_
    assert out["difficulty_score"] == pytest.approx(LEVEL[bin_])
    assert out["route"] == name
    assert out["stop_reason"] == "complete"
    assert not out.get("errors")

    ids = [c["id"] for c in out["candidates"]]
    probes = [i for i in ids if i.startswith("probe-")]
    assert probes == [f"probe-{i}" for i in range(PROBES)]
    ran = [i for i in ids if not i.startswith("probe-")]
    assert ran, "the routed strategy drew no samples"
    assert all(SUBGRAPH_IDS[kind].match(i) for i in ran), (kind, ran)  # only the routed strategy ran
    # the probe went first, sampling the table's number of probes, without logprobs for a plain callable
    assert policy.calls[0].n == PROBES and policy.calls[0].params is not None
    assert policy.calls[0].params.logprobs is False

    usage = out["usage"]
    drawn = sum(call.n for call in policy.calls)
    assert usage["generations"] == drawn == len(ids)
    if kind == "best_of_n":  # the probes are the first of its n samples
        assert usage["generations"] == budget
        assert len(ran) == budget - PROBES
        assert out["answer"] in {c["answer"] for c in out["candidates"]}
    else:  # other routes run at the budget left after the probes: the total never exceeds the budget
        assert usage["generations"] == budget
        assert len(ran) == budget - PROBES


async def test_revisions_route_costs_the_budget_with_its_probes() -> None:
    out, _ = await route_once(3, 4)
    assert out["route"] == "revisions"
    by_kind = out["usage"]["by_kind"]
    # 2 probes + the first attempt of 1 chain of length 2 (budget 4 - 2 probes), then its 1 revision
    assert (by_kind["propose"]["generations"], by_kind["revise"]["generations"]) == (PROBES + 1, 1)
    assert out["usage"]["generations"] == 4
    chains = sorted(c["id"] for c in out["candidates"] if c["id"].startswith("ch"))
    assert chains == ["ch0-a0", "ch0-a1"]


@pytest.mark.parametrize("budget", [4, 8])
@pytest.mark.parametrize("bin_", [1, 2, 3, 4, 5])
async def test_router_totals_stay_within_the_budget(bin_: int, budget: int) -> None:
    out, policy = await route_once(bin_, budget)
    assert out["usage"]["generations"] == sum(call.n for call in policy.calls) <= budget


def test_a_table_whose_route_cannot_run_after_the_probes_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"a budget of 2 leaves 0 generations after 2 probes"):
        router_table(budgets=[2], table={b: {"2": "revisions"} for b in ("1", "2", "3", "4", "5")})


async def test_one_graph_routes_each_bin_to_its_own_strategy() -> None:
    questions = {bin_: f"Question of bin {bin_}?" for bin_ in LEVEL}

    def by_question(question: str, text: str) -> float:
        return next(LEVEL[b] for b, q in questions.items() if q == question)

    table = router_table()
    graph = create_compute_optimal(
        ScriptedEndpoint(numbered), by_question, table, budget=Budget(generations=4)
    ).compile()
    routes = {}
    for bin_, question in questions.items():
        out = await graph.ainvoke({"question": question})
        assert out["difficulty_bin"] == bin_
        routes[bin_] = out["route"]
    assert routes == {b: table.table[str(b)]["4"] for b in LEVEL}
    assert len(set(routes.values())) == 5


async def test_best_of_n_route_selects_over_the_probes_too() -> None:
    # The probes answer 11 (score 0.9 each, weight 1.8); the two samples best-of-N adds answer 5 (0.85 each,
    # weight 1.7). Weighted selection over all four picks 11; over the route's own samples it would pick 5.
    def respond(call: FakeCall, index: int) -> str:
        return f"Attempt {index}. \\boxed{{{11 if index < PROBES else 5}}}"

    def score(question: str, text: str) -> float:
        return 0.9 if "boxed{11}" in text else 0.85

    policy = ScriptedEndpoint(respond)
    out = (
        await create_compute_optimal(policy, score, router_table(), budget=Budget(generations=4))
        .compile()
        .ainvoke({"question": QUESTION})
    )
    assert (out["difficulty_bin"], out["route"]) == (1, "weighted")
    assert out["answer"] == "11"
    assert sorted(c["answer"] for c in out["candidates"]) == ["11", "11", "5", "5"]
    assert out["usage"]["generations"] == 4
    assert [call.n for call in policy.calls] == [PROBES, 4 - PROBES]


async def test_probe_score_on_an_edge_routes_to_the_harder_bin() -> None:
    # probe scores 0.5 and 1.0: mean 0.75, then 0.6 and 1.0: mean 0.8, exactly the edge between bins 1 and 2
    for first, expected in ((0.5, 2), (0.6, 2), (0.7, 1)):

        def score(question: str, text: str, first: float = first) -> float:
            return first if "Sample 0." in text else 1.0

        out = (
            await create_compute_optimal(
                ScriptedEndpoint(numbered), score, router_table(), budget=Budget(generations=4)
            )
            .compile()
            .ainvoke({"question": QUESTION})
        )
        assert out["difficulty_bin"] == expected, (first, out["difficulty_score"])


async def test_router_asks_for_logprobs_when_its_verifier_needs_them() -> None:
    policy = ScriptedEndpoint(numbered)
    graph = create_compute_optimal(
        policy, ConfidenceVerifier(), router_table(), budget=Budget(generations=4), probe_max_tokens=32
    )
    out = await graph.compile().ainvoke({"question": QUESTION})
    probe = policy.calls[0]
    assert probe.n == PROBES and probe.params is not None
    assert probe.params.logprobs is True and probe.params.max_tokens == 32
    # the scripted policy returns no logprobs: the probes go unscored, count as 0 and land in the hardest bin
    assert out["difficulty_score"] == 0.0 and out["difficulty_bin"] == 5
    assert out["route"] == "naive"
    assert any("probe-0" in e and "log-probabilities" in e for e in out["errors"])


async def test_router_answers_a_chat_with_the_route_in_the_message() -> None:
    graph = create_compute_optimal(
        ScriptedEndpoint(numbered), constant(0.7), router_table(), budget=Budget(generations=4)
    ).compile()
    out = await graph.ainvoke({"messages": [HumanMessage(QUESTION)]})
    assert out["route"] == "majority"
    last = out["messages"][-1]
    assert isinstance(last, AIMessage)
    assert last.response_metadata["ttc_route"] == "majority"
    assert last.response_metadata["ttc_answer"] == out["answer"]


async def test_a_failed_probe_is_charged_and_reported() -> None:
    policy = ScriptedEndpoint(numbered, fail_every=1)
    out = (
        await create_compute_optimal(policy, constant(0.9), router_table(), budget=Budget(generations=4))
        .compile()
        .ainvoke({"question": QUESTION})
    )
    assert out["stop_reason"] == "error"
    assert out["answer"] is None
    assert any(e.startswith("probe: ") for e in out["errors"])
    assert out["usage"]["failed_requests"] == 1
    assert out["usage"]["generations"] == 0
    assert len(policy.calls) == 1  # no strategy ran after the failed probe


def test_router_graph_has_one_node_per_route() -> None:
    nodes = set(
        create_compute_optimal(
            ScriptedEndpoint(numbered), constant(0.5), router_table(), budget=Budget(generations=4)
        ).nodes
    )
    assert nodes == {"prepare", "probe", "finish"} | {f"run_{n}" for n in ROUTES["4"].values()}
    # a best-of-N route whose n the probes already cover needs no subgraph
    table = router_table(budgets=[2], table={str(b): {"2": "weighted"} for b in range(1, 6)})
    assert set(
        create_compute_optimal(ScriptedEndpoint(numbered), constant(0.5), table, budget=Budget(generations=2)).nodes
    ) == {
        "prepare",
        "probe",
        "finish",
    }


# -- 4. the table as JSON -------------------------------------------------------------------------------------


def test_table_json_round_trip(tmp_path: Path) -> None:
    table = router_table()
    path = table.save(tmp_path / "nested" / "table.json")
    assert path.is_file()
    assert load_table(path) == table
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "format": ')  # indented, format first
    assert text.endswith("}\n")
    data = json.loads(text)
    assert data["format"] == TABLE_FORMAT == "ttc_graph.compute_optimal/1"
    assert data["table"]["3"]["4"] == "revisions"


def test_a_calibrated_table_round_trips_with_its_report(tmp_path: Path) -> None:
    records, rates = ab_records(0)
    table = calibrate(records, rates, AB_STRATEGIES, metric="pass_rate", baseline="A")
    again = load_table(table.save(tmp_path / "t.json"))
    assert again == table
    assert again.report["efficiency_ratio"]["8"] is None


def test_choose_fills_n_from_the_budget() -> None:
    table = router_table()
    name, spec = table.choose(4, 8)
    # a route other than best-of-N runs at the budget minus the probes (best-of-N reuses them)
    assert name == "revisions" and isinstance(spec, RevisionsSpec) and spec.n == 8 - PROBES and spec.chain_length == 2
    name, spec = table.choose(1, 4)
    assert name == "weighted" and isinstance(spec, BestOfNSpec) and spec.n == 4


def test_spec_at_budget_counts_lookahead_steps() -> None:
    look = {"kind": "beam_search", "beam_width": 2, "lookahead": 1, "verifier": {"kind": "confidence"}}
    assert strategy_cost(look) == 2 and strategy_cost({"kind": "best_of_n"}) == 1
    spec = spec_at_budget(look, 8)
    assert isinstance(spec, BeamSearchSpec) and spec.n == 4
    with pytest.raises(ConfigurationError, match=r"budget 5 is not a multiple of its cost per beam \(2\)"):
        spec_at_budget(look, 5)


# -- 5. bad input ---------------------------------------------------------------------------------------------


def table_data(**overrides: Any) -> dict[str, Any]:
    data = json.loads(router_table().model_dump_json())
    data.update(overrides)
    return data


def load_error(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_table(path)
    message = str(info.value)
    assert message.startswith(f"table: {path}"), message
    return message


def test_a_template_that_does_not_validate_at_a_budget(tmp_path: Path) -> None:
    strategies = {
        **ROUTER_STRATEGIES,
        "beam": {"kind": "beam_search", "beam_width": 3, "verifier": {"kind": "confidence"}},
    }
    message = load_error(tmp_path, table_data(strategies=strategies))
    assert "table.4.4" in message and "strategies.beam" in message
    assert "beam_width: 3 does not divide n=2" in message  # budget 4 minus 2 probes


def test_a_template_of_unknown_kind(tmp_path: Path) -> None:
    strategies = {**ROUTER_STRATEGIES, "naive": {"kind": "best_of_everything"}}
    message = load_error(tmp_path, table_data(strategies=strategies))
    assert "strategies.naive" in message and "kind" in message and "'best_of_everything'" in message


def test_a_table_missing_a_bin(tmp_path: Path) -> None:
    data = table_data()
    del data["table"]["3"]
    message = load_error(tmp_path, data)
    assert "table: needs bins ['1', '2', '3', '4', '5'], has ['1', '2', '4', '5']" in message


def test_a_bin_missing_a_budget(tmp_path: Path) -> None:
    data = table_data()
    del data["table"]["3"]["8"]
    message = load_error(tmp_path, data)
    assert "table.3: needs budgets [4, 8], has ['4']" in message


def test_a_template_that_sets_n(tmp_path: Path) -> None:
    strategies = {**ROUTER_STRATEGIES, "majority": {"kind": "best_of_n", "selection": "majority", "n": 4}}
    message = load_error(tmp_path, table_data(strategies=strategies))
    assert "strategies.majority: a template must not set n" in message


def test_a_wrong_format_string(tmp_path: Path) -> None:
    message = load_error(tmp_path, table_data(format="ttc_graph.compute_optimal/0"))
    assert "format: expected 'ttc_graph.compute_optimal/1', got 'ttc_graph.compute_optimal/0'" in message


def test_a_table_naming_an_unknown_strategy(tmp_path: Path) -> None:
    data = table_data()
    data["table"]["2"]["4"] = "dvts"
    message = load_error(tmp_path, data)
    assert "table.2.4: unknown strategy 'dvts'" in message


def test_a_table_missing_a_field_or_not_json(tmp_path: Path) -> None:
    data = table_data()
    del data["difficulty"]
    assert "difficulty: Field required" in load_error(tmp_path, data)
    assert "is not JSON" in load_error(tmp_path, "{not json")
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_table(tmp_path / "missing.json")


def test_bins_must_ascend_and_the_router_needs_probes() -> None:
    with pytest.raises(ValidationError, match="edges: must be ascending"):
        DifficultyBins(metric="pass_rate", edges=(0.6, 0.4))
    # predicted bins estimated offline (a study's pools) are a valid table, but not a routable one
    offline = router_table(difficulty=DifficultyBins(metric="verifier_score", edges=EDGES, probes=0))
    with pytest.raises(ConfigurationError, match=r"table: its difficulty was estimated offline \(probes: 0\)"):
        create_compute_optimal(ScriptedEndpoint(numbered), constant(0.5), offline, budget=Budget(generations=4))


def test_a_budget_the_table_does_not_cover() -> None:
    table = router_table()
    with pytest.raises(ConfigurationError, match=r"budget: 3 is not covered by the table \(covered: \[4, 8\]\)"):
        table.choose(1, 3)
    with pytest.raises(ConfigurationError, match=r"budget: 3 is not covered by the table \(covered: \[4, 8\]\)"):
        create_compute_optimal(ScriptedEndpoint(numbered), constant(0.5), table, budget=Budget(generations=3))
    with pytest.raises(ConfigurationError, match=r"table: no bin 6; bins are 1\.\.5"):
        table.choose(6, 4)


def test_a_calibration_set_too_small_for_the_bins() -> None:
    six = {f"q{i}": i / 6 for i in range(6)}
    expected = r"calibration set: 6 questions cannot fill 5 bins with at least 2 each; need 10 or more"
    with pytest.raises(ConfigurationError, match=expected):
        fit_bins(six, "pass_rate")
    records = [Record(q, name, 4, 0.5) for q in six for name in AB_STRATEGIES]
    with pytest.raises(ConfigurationError, match=expected):
        calibrate(records, six, AB_STRATEGIES, metric="pass_rate")
    with pytest.raises(ConfigurationError, match="n_bins: must be >= 2"):
        fit_bins(six, "pass_rate", n_bins=1)


def test_records_naming_an_unknown_strategy() -> None:
    records, rates = ab_records(0)
    records.append(Record("band1-q00", "C", 1, 1.0))
    with pytest.raises(ConfigurationError, match=r"records: unknown strategies \['C'\]"):
        calibrate(records, rates, AB_STRATEGIES, metric="pass_rate")


def test_a_baseline_without_results() -> None:
    records, rates = ab_records(0)
    records = [r for r in records if not (r.strategy == "B" and r.question == "band1-q00")]
    with pytest.raises(ConfigurationError, match=r"baseline: 'B' has no results at every budget"):
        calibrate(records, rates, AB_STRATEGIES, metric="pass_rate", baseline="B")


def test_the_router_rejects_an_oracle_table_and_a_missing_verifier() -> None:
    records, rates = ab_records(0)
    oracle = calibrate(records, rates, AB_STRATEGIES, metric="pass_rate")
    with pytest.raises(ConfigurationError, match="table: its bins are oracle pass rates"):
        create_compute_optimal(ScriptedEndpoint(numbered), constant(0.5), oracle, budget=Budget(generations=4))
    with pytest.raises(ConfigurationError, match="verifier: the router needs a verifier"):
        create_compute_optimal(ScriptedEndpoint(numbered), None, router_table(), budget=Budget(generations=4))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="policy: expected an endpoint"):
        create_compute_optimal(object(), constant(0.5), router_table(), budget=Budget(generations=4))  # type: ignore[arg-type]


# -- 6. FLOPs exchange ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "pretrain", "inference", "scale", "ratio", "k"),
    [
        (1e9, 2e12, 5e11, 4.0, 0.25, 40.0),  # little inference: k = 4 + 3*3/0.25
        (1e9, 2e12, 2e13, 4.0, 10.0, 4.9),  # much inference: k = 4 + 3*3/10
        (7e9, 1e12, 1e12, 14.0, 1.0, 53.0),  # R = 1: k = 14 + 3*13
        (1e9, 1e12, 3e11, 1.0, 0.3, 1.0),  # same size: nothing to exchange
    ],
)
def test_flops_exchange_hand_computed(
    params: float, pretrain: float, inference: float, scale: float, ratio: float, k: float
) -> None:
    ex = flops_exchange(params, pretrain, inference, scale)
    assert ex.pretrain_flops == pytest.approx(6 * params * pretrain)
    assert ex.inference_flops == pytest.approx(2 * params * inference)
    assert ex.ratio == pytest.approx(ratio)
    assert ex.larger_total_flops == pytest.approx(6 * scale * params * pretrain + 2 * scale * params * inference)
    assert ex.test_time_multiplier == pytest.approx(k)
    # the small model spending k times its inference compute matches the larger model's total FLOPs
    total = 6 * params * pretrain + 2 * params * inference * ex.test_time_multiplier
    assert total == pytest.approx(ex.larger_total_flops, rel=1e-12)


def test_flops_exchange_first_row_in_numbers() -> None:
    ex = flops_exchange(1e9, 2e12, 5e11, 4.0)
    assert ex.pretrain_flops == pytest.approx(1.2e22)
    assert ex.inference_flops == pytest.approx(1e21)
    assert ex.larger_total_flops == pytest.approx(5.2e22)


@pytest.mark.parametrize(
    "args", [(0, 1e12, 1e11, 2.0), (1e9, 0, 1e11, 2.0), (1e9, 1e12, -1, 2.0), (1e9, 1e12, 1e11, 0.5)]
)
def test_flops_exchange_rejects_bad_input(args: tuple[float, float, float, float]) -> None:
    with pytest.raises(ConfigurationError, match="flops: params and token counts must be > 0 and scale >= 1"):
        flops_exchange(*args)


# -- 7. the example spec and its table ------------------------------------------------------------------------

EXAMPLE_STRATEGIES: dict[str, dict[str, Any]] = {
    "bon_weighted": {
        "kind": "best_of_n",
        "selection": "weighted",
        "verifier": {"kind": "confidence"},
        "max_tokens": 96,
    },
    "majority": {"kind": "best_of_n", "selection": "majority", "max_tokens": 96},
    "revisions": {"kind": "revisions", "chain_length": "sqrt", "selection": "majority", "max_tokens": 96},
}
EXAMPLE_BUDGETS = (2, 4, 6, 8)


def example_rate(strategy: str, difficulty: float, budget: int) -> float:
    """Synthetic truth: best-of-N weighted wins the hard questions, majority the middle, revisions the easy."""
    gain = math.log2(budget)
    if strategy == "revisions":
        rate = -0.30 + 1.2 * difficulty + 0.06 * gain
    elif strategy == "majority":
        rate = 0.20 + 0.6 * difficulty + 0.04 * gain
    else:
        rate = 0.50 + 0.05 * gain
    return min(1.0, max(0.0, rate))


def build_example_table(seed: int = 2024, questions: int = 60, draws: int = 32) -> PolicyTable:
    """The example table: ``calibrate`` on synthetic records (mean confidence of 2 probes as the difficulty)."""
    rng = random.Random(seed)
    difficulty = {f"synthetic-{i:03d}": round(rng.uniform(0.35, 0.95), 3) for i in range(questions)}
    records = [
        Record(q, name, b, sum(rng.random() < example_rate(name, d, b) for _ in range(draws)) / draws)
        for q, d in difficulty.items()
        for name in EXAMPLE_STRATEGIES
        for b in EXAMPLE_BUDGETS
    ]
    table = calibrate(
        records, difficulty, EXAMPLE_STRATEGIES, metric="verifier_score", probes=2, baseline="majority", seed=seed
    )
    table.report["synthetic"] = (
        "every figure in this report comes from synthetic records (tests/unit/test_compute_optimal.py"
        " build_example_table), not from a model; docs/results.md has the measured study"
    )
    return table


def test_the_example_table_is_what_calibrate_builds() -> None:
    shipped = load_table(ROOT / EXAMPLE_TABLE)
    assert shipped == build_example_table(), (
        "regenerate: python tests/unit/test_compute_optimal.py --write-example-table"
    )
    assert shipped.difficulty.metric == "verifier_score" and shipped.difficulty.probes == 2
    assert len(set(shipped.table[b]["4"] for b in shipped.table)) > 1, "the example should route bins differently"


def test_the_example_spec_validates_and_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # the spec names its table relative to itself, so any working directory works
    spec = load_spec(ROOT / EXAMPLE_SPEC)
    assert isinstance(spec, ComputeOptimalSpec)
    assert Path(spec.table) == (ROOT / EXAMPLE_TABLE).resolve()
    assert spec.verifier.kind == "confidence"
    assert spec.name
    table = load_table(spec.table)
    assert spec.budget.generations in table.budgets
    graph = build_graph(spec, policy=ScriptedEndpoint(numbered))
    assert isinstance(graph, StateGraph)
    assert {"prepare", "probe", "finish"} <= set(graph.nodes)


async def test_the_example_spec_runs_on_a_scripted_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    spec = load_spec(EXAMPLE_SPEC)
    assert isinstance(spec, ComputeOptimalSpec)
    policy = ScriptedEndpoint(["Add.\n\nSo 6 * 7 = 42. \\boxed{42}"])
    out = await build_graph(spec, policy=policy).compile().ainvoke({"question": QUESTION})
    table = load_table(spec.table)
    assert out["route"] == table.table[str(out["difficulty_bin"])][str(spec.budget.generations)]
    assert out["answer"] == "42"
    assert policy.calls[0].params is not None and policy.calls[0].params.logprobs is True  # confidence verifier


def test_the_example_spec_rejects_a_budget_its_table_does_not_cover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    spec = load_spec(EXAMPLE_SPEC).model_copy(update={"budget": Budget(generations=3)})
    with pytest.raises(ConfigurationError, match=r"budget.generations: 3 is not covered by .*\[2, 4, 6, 8\]"):
        build_graph(spec, policy=ScriptedEndpoint(numbered))


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-example-table"]:
        sys.exit(f"usage: {sys.argv[0]} --write-example-table")
    print(f"wrote {build_example_table().save(ROOT / EXAMPLE_TABLE)}")


@pytest.mark.parametrize(
    ("recorded", "given", "expected"),
    [
        ({}, {}, (0.7, None)),  # a table without probe settings: 0.7 and the endpoint's max_tokens
        ({"temperature": 0.8, "max_tokens": 512}, {}, (0.8, 512)),  # the settings the bins were fitted on
        ({"temperature": 0.8, "max_tokens": 512}, {"probe_temperature": 0.3, "probe_max_tokens": 64}, (0.3, 64)),
    ],
)
async def test_probes_are_sampled_as_the_table_was_fitted(
    recorded: dict[str, Any], given: dict[str, Any], expected: tuple[float, int | None]
) -> None:
    difficulty = DifficultyBins(metric="verifier_score", edges=EDGES, probes=PROBES, **recorded)
    policy = ScriptedEndpoint(numbered)
    graph = create_compute_optimal(
        policy, constant(LEVEL[1]), router_table(difficulty=difficulty), budget=Budget(generations=4), **given
    )
    await graph.compile().ainvoke({"question": QUESTION})
    probe = policy.calls[0].params
    assert probe is not None and (probe.temperature, probe.max_tokens) == expected


def probes_agree(call: FakeCall, index: int) -> str:
    """The probes (the first samples drawn) all answer 7; every later sample its own index."""
    return "So the answer is \\boxed{7}" if index < PROBES else numbered(call, index)


@pytest.mark.parametrize("fail_every", [None, 2])
async def test_a_route_other_than_best_of_n_votes_with_the_probes(fail_every: int | None) -> None:
    policy = ScriptedEndpoint(probes_agree, fail_every=fail_every)
    graph = create_compute_optimal(policy, constant(LEVEL[3]), router_table(), budget=Budget(generations=4)).compile()
    out = await graph.ainvoke({"question": QUESTION})
    assert out["route"] == "revisions"
    ran = [c for c in out["candidates"] if not c["id"].startswith(PROBE_ID)]
    if fail_every is None:  # one chain of 2 whose answers differ: its pick weighs one score, the probes two
        assert [c["answer"] for c in ran] == ["2", "3"]
    else:  # the route's first request failed: the probes paid for still answer
        assert out["errors"] and len(ran) < 2
    assert out["answer"] == "7"
