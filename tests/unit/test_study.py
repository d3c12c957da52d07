"""The study runner: validation before any call, pool reuse, one row per unit, resume after a crash."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ttc_graph.cli import app
from ttc_graph.errors import ConfigurationError
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.store import ResultStore
from ttc_graph.selection import select_revisions
from ttc_graph.strategies.revisions import split_budget
from ttc_graph.study.config import StudyConfig, load_study
from ttc_graph.study.report import ChainSteps
from ttc_graph.study.runner import plan_units, run_study
from ttc_graph.study.status import _rate, study_status
from ttc_graph.testing import FakeCall, ScriptedEndpoint

DELIM = "\n\n"
PROBLEMS = [Problem(str(i), f"What is {i} + {i}?", str(2 * i)) for i in range(3)]


def solve(call: FakeCall, index: int) -> str:
    """Right for even questions, wrong for odd ones; search steps: one working step, then the answer."""
    question = next(m["content"] for m in call.messages if m["role"] == "user" and "What is" in m["content"])
    i = int(question.split()[2])
    answer = 2 * i if i % 2 == 0 else 2 * i + 1
    if call.params is not None and call.params.stop:  # a search step
        return f"So the answer is \\boxed{{{answer}}}." if call.prefix else f"{i} + {i} = {answer}"
    return f"{i} + {i} = {answer}.{DELIM}So the answer is \\boxed{{{answer}}}."


def config(tmp_path: Path, **overrides: Any) -> StudyConfig:
    pool = tmp_path / "pool.jsonl"
    with pool.open("w") as fh:
        for p in PROBLEMS[:2]:  # questions 0 and 1 have stored samples; question 2 must be drawn
            text = f"{p.id} + {p.id} = {p.reference}.{DELIM}So \\boxed{{{p.reference}}}."
            fh.write(json.dumps({"idx": int(p.id), "samples": [{"text": text, "tokens": 9, "mean_lp": -0.1}] * 4}))
            fh.write("\n")
    data: dict[str, Any] = {
        "name": "t",
        "model": "m",
        "budgets": [2, 4],
        "verifier": {"kind": "arithmetic"},
        "pool": {"path": str(pool), "model": "m", "temperature": 0.8, "max_tokens": 512},
        "templates": {
            "bon_weighted": {"kind": "best_of_n", "selection": "weighted"},
            "beam": {"kind": "beam_search", "beam_width": 2},
            "seq": {"kind": "revisions", "chain_length": "full", "selection": "hierarchical"},
        },
    }
    data.update(overrides)
    return StudyConfig.model_validate(data)


async def test_every_unit_runs_once_and_best_of_n_reuses_the_stored_pool(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    policy = ScriptedEndpoint(solve)
    with ResultStore(tmp_path / "s.sqlite") as store:
        report = await run_study(policy, cfg, store, problems=PROBLEMS)
        rows = store.rows("t")
    assert report.failed == 0 and report.finished == 3 * (1 + 2 * 2)
    keys = {(r.strategy, r.budget, r.question_id) for r in rows}
    assert keys == {(t, b, p.id) for t in cfg.templates for b in (2, 4) for p in PROBLEMS}
    by_key = {(r.strategy, r.budget, r.question_id): r for r in rows}
    assert by_key[("bon_weighted", 4, "0")].reused and by_key[("bon_weighted", 4, "0")].details["sources"] == [
        "pool.jsonl"
    ]
    assert by_key[("bon_weighted", 4, "2")].details["sources"] == ["live"]
    # live runs spend their budget, record their ledger and diagnostics
    for b in (2, 4):
        assert by_key[("seq", b, "1")].generations == b
        assert by_key[("beam", b, "0")].details["diagnostics"]["steps_per_candidate"]["median"] == 2
    assert by_key[("beam", 4, "0")].correct and not by_key[("beam", 4, "1")].correct


async def test_best_of_n_draws_only_what_the_stored_pool_lacks(tmp_path: Path) -> None:
    cfg = config(tmp_path, templates={"bon_weighted": {"kind": "best_of_n", "selection": "weighted"}})
    policy = ScriptedEndpoint(solve)
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(policy, cfg, store, problems=PROBLEMS)
        # a pool holds twice the largest budget (pool_size): half scores best-of-N, half bins the question
        assert len(store.pool("t", "2")) == 8 and len(store.pool("t", "0")) == 8
    asked = [str(c.messages) for c in policy.calls]
    assert sum(c.n for c in policy.calls) == 4 + 4 + 8  # questions 0 and 1 topped up, question 2 drawn whole
    assert all("What is" in m for m in asked)


async def test_a_crash_mid_study_keeps_finished_units_and_a_rerun_does_only_the_rest(tmp_path: Path) -> None:
    cfg = config(tmp_path, concurrency=1)
    calls = {"n": 0}

    def crashing(call: FakeCall, index: int) -> str:
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("the process dies")
        return solve(call, index)

    db = tmp_path / "s.sqlite"
    with ResultStore(db) as store, pytest.raises(RuntimeError):
        await run_study(ScriptedEndpoint(crashing), cfg, store, problems=PROBLEMS)
    with ResultStore(db) as store:
        kept = store.done("t")
        assert kept and len(kept) < 3 * 3 * 2
        left = plan_units(PROBLEMS, cfg, kept)
        again = await run_study(ScriptedEndpoint(solve), cfg, store, problems=PROBLEMS)
        assert again.units == len(left) and again.failed == 0
        assert len(store.done("t")) == 3 * 3 * 2


async def test_a_limit_runs_a_chunk_in_plan_order(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with ResultStore(tmp_path / "s.sqlite") as store:
        per_question = len(plan_units(PROBLEMS[:1], cfg, set()))
        report = await run_study(ScriptedEndpoint(solve), cfg, store, problems=PROBLEMS, limit=per_question)
        assert report.finished == per_question  # question by question: the first question whole, its pool included
        assert {q for _, _, q in store.done("t")} == {PROBLEMS[0].id}
        assert len(store.pools("t")) == 1
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=PROBLEMS, limit=1)
        assert {(t, q) for t, _, q in store.done("t") if q != PROBLEMS[0].id} == {("bon_weighted", PROBLEMS[1].id)}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"templates": {"x": {"kind": "best_of_everything"}}}, "templates.x at budget 2: .*unknown kind"),
        (
            {"templates": {"bon_weighted": {"kind": "best_of_n"}, "b": {"kind": "beam_search", "beam_width": 4}}},
            "templates.b at budget 2: .*beam_width: 4 does not divide n=2",
        ),
        ({"templates": {"bon_weighted": {"kind": "best_of_n", "n": 3}}}, "must not set n"),
        ({"baseline": "beam"}, "baseline: 'beam' must name a best_of_n template"),
        ({"budgets": [2, 2]}, "budgets"),
        ({"router_probes": 5}, "router_probes: 5 probes exceed the largest budget"),
        ({"router_probes": 0}, "router_probes"),
        ({"families": {"s": ["bon_weighted", "nope"]}}, r"families.s: unknown templates \['nope'\]"),
        ({"families": {"s": ["beam", "seq"]}}, "families.s: must hold the baseline 'bon_weighted'"),
    ],
)
def test_a_bad_grid_is_refused_before_any_call(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises((ConfigurationError, ValueError), match=f"(?s){message}"):
        config(tmp_path, **overrides)


def test_load_study_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "model": "m", "budgets": [4], "verifier": {}, "templates": {}}))
    with pytest.raises(ConfigurationError, match="templates"):
        load_study(path)


def test_the_shipped_study_config_validates() -> None:
    cfg = load_study(Path(__file__).resolve().parents[2] / "docs" / "study" / "gsm8k-qwen-0.5b.yaml")
    assert cfg.reuses_pool()
    spec = cfg.spec_for("revisions_sequential", 8)
    assert split_budget(spec.n, spec.chain_length) == (1, 8)  # type: ignore[union-attr]
    assert cfg.spec_for("particle_filtering", 8).weighting == "score"  # type: ignore[union-attr]  # as it ran
    follow_up = load_study(Path(__file__).resolve().parents[2] / "docs" / "study" / "particle-weights" / "study.yaml")
    assert follow_up.name == cfg.name and follow_up.budgets == cfg.budgets  # it shares the study's rows
    assert follow_up.templates["particle_filtering"] == cfg.templates["particle_filtering"]
    assert follow_up.spec_for("particle_filtering_logit", 4).weighting == "logit"  # type: ignore[union-attr]
    extension = load_study(Path(__file__).resolve().parents[2] / "docs" / "study" / "extension" / "study.yaml")
    assert extension.name == cfg.name and extension.reuses_pool()  # it shares the study's rows and pools
    assert (extension.questions, extension.budgets, extension.pool_samples) == (200, (4, 8, 16), 32)
    for t in cfg.templates:  # the study's templates as they ran, on its questions and budgets at least
        own = {k: v for k, v in extension.templates[t].items() if k not in ("questions", "budgets")}
        assert own == cfg.templates[t]
        assert extension.questions_of(t) >= cfg.questions and set(extension.budgets_of(t)) >= set(cfg.budgets)
    assert extension.templates["pf_logit"] == follow_up.templates["particle_filtering_logit"]
    assert extension.grid_templates() == [
        "bon_weighted", "majority", "beam_m4", "beam_sqrt", "revisions_sqrt", "pf_logit",
    ]  # fmt: skip
    assert extension.nested_in("revisions_sqrt", 4) == extension.nested_in("revisions_sqrt", 8) == 16
    assert extension.rescore == {"kind": "program", "programs": 4, "temperature": 0.4, "max_tokens": 256}


def many_problems(n: int = 12) -> list[Problem]:
    return [Problem(str(i), f"What is {i} + {i}?", str(2 * i)) for i in range(n)]


async def test_the_report_is_built_from_the_database_alone(tmp_path: Path) -> None:
    from ttc_graph.study.render import render_markdown, write_report
    from ttc_graph.study.report import analyze, load_study_data

    problems = many_problems()
    cfg = config(tmp_path, pool=None)
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=problems)
        data = load_study_data(store, cfg)
    assert data.questions == [p.id for p in problems]
    analysis = analyze(data, resamples=20)
    # the scripted policy is right on even questions only: every template scores 50%, in every bootstrap too
    for t in cfg.templates:
        for b in cfg.budgets:
            n, (value, lo, hi) = analysis.accuracy[t][b]
            assert n == 12 and value == 0.5 and lo <= value <= hi
    assert sorted(analysis.bin_sizes["oracle"].values()) == [2, 2, 2, 3, 3]  # by rank: sizes differ by <= 1
    # paired against the baseline: every template ties it on every question, in every resample
    assert set(analysis.difference) == set(cfg.templates) - {cfg.baseline}
    diffs = [analysis.difference[t][b] for t in analysis.difference for b in cfg.budgets]
    assert all(d.difference == (0.0, 0.0, 0.0) and d.p == 1.0 and d.n == 12 for d in diffs)
    by_bin = analysis.bin_difference["predicted"]
    assert set(by_bin) == set(analysis.difference)  # every template but the baseline, in every bin, at every budget
    cells = [v for per_bin in by_bin.values() for per_b in per_bin.values() for v in per_b.values()]
    assert cells and all(v.difference == (0.0, 0.0, 0.0) for v in cells)
    assert analysis.cost["seq"][4]["generations"] == 4
    # each chain repeats its answer: right on the 6 even questions at every attempt, never changed
    assert analysis.revision_steps == {"seq": ChainSteps([6] * 4, [12] * 4, 0, 0, 0, 36, lost=0, gained=0)}
    text = render_markdown(analysis, cfg)
    assert "| beam | 2 |" in text and "12 questions complete" in text
    assert "| seq | 12 | 50.0 | 50.0 | 50.0 | 50.0 | 36 | 0 | 0 | 0 | 0, 0 (1.00) |" in text
    assert (
        "Paired difference from bon_weighted within each bin" in text
        and "| beam | 4 | +0.0 [+0.0, +0.0] (p=1.000) |" in text
    )
    assert analysis.distinct["seq"] == {2: 1.0, 4: 1.0} and "| seq | 1.00 | 1.00 |" in text
    paths = write_report(analysis, cfg, tmp_path / "out", figures=False)
    assert (tmp_path / "out" / "report.md").read_text() == text
    assert {p.name for p in paths} == {"report.md", "table_oracle.json", "table_predicted.json", "table_routed.json"}
    # the same database gives the same report
    with ResultStore(tmp_path / "s.sqlite") as store:
        assert render_markdown(analyze(load_study_data(store, cfg), resamples=20), cfg) == text


async def test_a_follow_up_config_adds_templates_to_the_database_without_changing_the_study(tmp_path: Path) -> None:
    from ttc_graph.study.render import render_markdown
    from ttc_graph.study.report import analyze, load_study_data

    problems = many_problems()
    cfg = config(tmp_path, pool=None)
    templates = {"bon_weighted": cfg.templates["bon_weighted"], "beam": cfg.templates["beam"],
                 "beam_wide": {"kind": "beam_search", "beam_width": 1}}  # fmt: skip
    follow_up = config(tmp_path, pool=None, templates=templates)
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=problems)
        before = (render_markdown(analyze(load_study_data(store, cfg), resamples=5), cfg),
                  study_status(cfg, store, problems))  # fmt: skip
        report = await run_study(ScriptedEndpoint(solve), follow_up, store, problems=problems)
        assert report.finished == len(problems) * 2  # only the new template's units: the rest are shared rows
        assert {r.strategy for r in store.rows("t")} == {"bon_weighted", "beam", "seq", "beam_wide"}
        after = (render_markdown(analyze(load_study_data(store, cfg), resamples=5), cfg),
                 study_status(cfg, store, problems))  # fmt: skip
        data = load_study_data(store, follow_up)
    assert after == before  # the study reads only its own templates
    assert {t for t, _, _ in data.rows} == {"bon_weighted", "beam", "beam_wide"}
    assert data.questions == [p.id for p in problems]


async def test_the_report_refuses_too_few_complete_questions(tmp_path: Path) -> None:
    from ttc_graph.study.report import analyze, load_study_data

    cfg = config(tmp_path)
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=PROBLEMS)
        with pytest.raises(ValueError, match="3 complete questions"):
            analyze(load_study_data(store, cfg))


def test_the_baseline_curve_is_the_expectation_over_every_subset_of_the_pool(tmp_path: Path) -> None:
    from ttc_graph.study.report import StudyData, baseline_expected

    def sample(answer: int, score: float) -> dict[str, Any]:
        return {"text": f"So the answer is \\boxed{{{answer}}}.", "score": score, "tokens": 9}

    # weighted vote: 5 (0.9 + 0.9) against 7 (0.2 + 0.95); the reference is 5
    pool = [sample(5, 0.9), sample(5, 0.9), sample(7, 0.2), sample(7, 0.95)]
    data = StudyData(config(tmp_path), rows={}, pools={"q": pool}, references={"q": "5"})
    # N=1: pass@1 = 2/4. N=2: of the 6 pairs, {5, 5}, {5, 7@0.2} twice pick 5; {5, 7@0.95} twice and {7, 7} pick
    # 7. N=4: 5 wins 1.8 to 1.15. N=8 is beyond the pool and left out.
    assert baseline_expected(data, "q", (1, 2, 4, 8)) == {1: 0.5, 2: 0.5, 4: 1.0}
    # given the first 3 samples (probes 5@0.9, 5@0.9, 7@0.2): subsets of them below 3, subsets holding them above
    assert baseline_expected(data, "q", (1, 2, 4), given=3) == {1: pytest.approx(2 / 3), 2: 1.0, 4: 1.0}


async def test_the_routed_fit_averages_every_disjoint_set_of_probes_and_its_baseline_sees_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ttc_graph.study.report as report
    from ttc_graph.study.report import analyze, load_study_data

    cfg = config(tmp_path, pool=None, pool_size=16)  # samples 1-8 score, 9-16 bin
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=many_problems())
        data = load_study_data(store, cfg)

    def sample(answer: int, score: float) -> dict[str, Any]:
        return {"text": f"So the answer is \\boxed{{{answer}}}.", "score": score, "tokens": 9}

    for q in data.questions:  # two sets of 4 probes: lucky (samples 1-4 right), unlucky (samples 5-8 wrong)
        right = int(data.references[q])
        data.pools[q] = [sample(right, 0.9)] * 4 + [sample(right + 1, 0.95)] * 4 + [sample(right, 0.5)] * 8
    fitted: list[dict[str, str]] = []
    calibrate = report.calibrate
    monkeypatch.setattr(report, "calibrate", lambda *a, **k: fitted.append(k["groups"]) or calibrate(*a, **k))
    analysis = analyze(data, resamples=5)
    assert analysis.probe_draws == {"oracle": 1, "predicted": 1, "routed": 2}
    # at budget 4 the router can only run best-of-N on its probes: right with the first set, wrong with the
    # second; with the first set alone it would read 1.0
    routed4 = analysis.fits["routed"][4]
    assert routed4 is not None and routed4.optimal[0] == 0.5 and routed4.curve[4] == 0.5
    assert routed4.curve[1] == 0.5  # given the probes: pass@1 of each set, averaged
    assert routed4.ratio[0] == pytest.approx(0.25)  # given the probes, best-of-1 on them matches
    unconditioned = {b: v[0] for b, v in analysis.baseline.items()}  # on the scoring samples 1-8
    assert unconditioned[4] == pytest.approx(17 / 70)  # subsets of 4 with 3 or 4 right samples win the vote
    assert analysis.fits["oracle"][4].curve == pytest.approx(unconditioned)  # type: ignore[union-attr]
    routed = [g for g in fitted if any("|probes 2" in r for r in g)]  # a record per question and set
    assert routed and all(len(g) == 2 * len(data.questions) for g in routed)
    assert all(q == r.split("|")[0] for g in routed for r, q in g.items())  # a question's sets share its fold


def test_probe_views_rotate_each_disjoint_set_of_probes_to_the_front(tmp_path: Path) -> None:
    from ttc_graph.study.report import StudyData, probe_views

    pool = [{"text": str(i)} for i in range(10)]
    cfg = config(tmp_path, pool_size=16)
    data = StudyData(cfg, rows={}, pools={"q": pool}, references={"q": "1"}, questions=["q"])
    assert probe_views(data, 0) == [data]
    views = probe_views(data, 4)  # the 8 scoring samples hold two disjoint sets of 4
    assert [[s["text"] for s in v.pools["q"][:4]] for v in views] == [["0", "1", "2", "3"], ["4", "5", "6", "7"]]
    assert all(sorted(s["text"] for s in v.pools["q"]) == sorted(s["text"] for s in pool) for v in views)


async def test_best_of_n_units_are_expectations_over_the_pool_and_live_units_their_run(tmp_path: Path) -> None:
    from ttc_graph.study.report import load_study_data, unit_values

    cfg = config(tmp_path, pool=None)
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=PROBLEMS[:1])
        data = load_study_data(store, cfg)

    def sample(answer: int, score: float) -> dict[str, Any]:
        return {"text": f"So the answer is \\boxed{{{answer}}}.", "score": score, "tokens": 9}

    # question 0 (reference 0): right, wrong, right, wrong; weighted: 0 (0.9 + 0.9) against 1 (0.95 + 0.2)
    data.pools["0"] = [sample(0, 0.9), sample(1, 0.95), sample(0, 0.9), sample(1, 0.2)]
    plain, given = unit_values(data, ["0"]), unit_values(data, ["0"], given=2)
    assert plain[("bon_weighted", 2, "0")] == pytest.approx(3 / 6)  # pairs {0, 2}, {0, 3}, {2, 3} pick 0
    assert given[("bon_weighted", 2, "0")] == 0.0  # the probes {0, 1}: 1 wins 0.95 to 0.9
    assert plain[("bon_weighted", 4, "0")] == given[("bon_weighted", 4, "0")] == 1.0
    for t in ("beam", "seq"):  # live templates: their recorded run
        for b in (2, 4):
            assert plain[(t, b, "0")] == float(data.template_row(t, b, "0").correct) == 1.0


async def test_a_routed_live_unit_votes_with_the_probes_as_the_router_does(tmp_path: Path) -> None:
    from ttc_graph.study.report import load_study_data, unit_values

    cfg = config(tmp_path, pool=None)
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=PROBLEMS[:1])
        data = load_study_data(store, cfg)
    # every live candidate is right (answer 0) and scored 0.75; the two probes are wrong, 1.9 in all
    assert {c["score"] for r in data.rows.values() for c in r.candidates} == {0.75}
    data.pools["0"] = [{"text": "So the answer is \\boxed{1}.", "score": 0.95, "tokens": 9}] * 4
    plain, given = unit_values(data, ["0"]), unit_values(data, ["0"], given=2)
    assert all(plain[(t, b, "0")] == 1.0 for t in ("beam", "seq") for b in (2, 4))
    # search: every final beam votes; 2 x 0.75 loses to the probes, 4 x 0.75 beats them
    assert (given[("beam", 2, "0")], given[("beam", 4, "0")]) == (0.0, 1.0)
    # hierarchical revisions: one chain, one pick of 0.75, however long the chain
    assert (given[("seq", 2, "0")], given[("seq", 4, "0")]) == (0.0, 0.0)


async def test_oracle_and_predicted_bins_hold_best_of_ns_samples_out(tmp_path: Path) -> None:
    from ttc_graph.study.render import render_markdown
    from ttc_graph.study.report import analyze, binnings, difficulty_of, load_study_data, unit_values

    cfg = config(tmp_path, pool=None)  # budgets 2 and 4: a pool drawn live holds 8 samples
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=many_problems())
        data = load_study_data(store, cfg)

    def sample(answer: int, score: float) -> dict[str, Any]:
        return {"text": f"So the answer is \\boxed{{{answer}}}.", "score": score, "tokens": 9}

    data.pools["0"] = [sample(1, 0.2)] * 4 + [sample(0, 0.9)] * 4  # reference 0: samples 1-4 wrong, 5-8 right
    kinds = binnings(data)
    assert kinds["oracle"].split == kinds["predicted"].split == 4 and kinds["routed"].split == 0
    assert difficulty_of(data, ["0"], kinds["oracle"]) == {"0": 1.0}  # binned on samples 5-8 alone
    assert difficulty_of(data, ["0"], kinds["predicted"]) == {"0": pytest.approx(0.9)}
    assert unit_values(data, ["0"], first=4)[("bon_weighted", 4, "0")] == 0.0  # scored on samples 1-4 alone
    assert unit_values(data, ["0"])[("bon_weighted", 4, "0")] == pytest.approx(69 / 70)  # all 8: 1 subset loses
    analysis = analyze(data, resamples=5)
    sizes, per_bin = analysis.bin_sizes["oracle"], analysis.bins["oracle"]["bon_weighted"]
    binned = sum(sizes[bn] * per_bin[bn][4][1] for bn in sizes) / len(data.questions)
    held = unit_values(data, data.questions, first=4)
    assert binned == pytest.approx(statistics.fmean(held[("bon_weighted", 4, q)] for q in data.questions))
    # one estimator: the overall figure scores best-of-N on the same samples 1-4 as the bins do
    assert binned == pytest.approx(analysis.accuracy["bon_weighted"][4][1][0])
    text = render_markdown(analysis, cfg)
    assert "oracle (pass@1 of pool samples 5-8)" in text and "scores best-of-N on pool samples 1-4" in text


async def test_the_report_counts_long_search_paths_and_what_sampling_never_solved(tmp_path: Path) -> None:
    from dataclasses import replace

    from ttc_graph.study.render import render_markdown
    from ttc_graph.study.report import analyze, load_study_data, long_paths, unsolved_by_sampling

    cfg = config(tmp_path, pool=None)
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=many_problems())
        data = load_study_data(store, cfg)
    assert long_paths(data)["long"] == 0
    beam4, beam2 = data.rows[("beam", 4, "0")], data.rows[("beam", 2, "0")]
    # every path of one run is too long, so its answer rests on them; another run has one long path, not chosen
    data.rows[("beam", 4, "0")] = replace(beam4, candidates=[{**c, "tokens": 513} for c in beam4.candidates])
    data.rows[("beam", 2, "0")] = replace(
        beam2, candidates=[{**beam2.candidates[0], "answer": "7", "tokens": 600}, *beam2.candidates[1:]]
    )
    assert long_paths(data) == {"runs": 12 * 2 * 2, "long": 2, "resting": 1, "resting_correct": 1, "longest": 600}
    # the scripted policy is wrong on odd questions, in every pool sample too
    assert unsolved_by_sampling(data) == {"questions": 6, "runs": 6 * 2 * 2, "correct": 0}
    data.rows[("seq", 4, "1")] = replace(data.rows[("seq", 4, "1")], correct=True)
    assert unsolved_by_sampling(data)["correct"] == 1
    text = render_markdown(analyze(data, resamples=5), cfg)
    assert "2 of 48 live runs hold a candidate longer than 512 tokens (the longest: 600); in 1" in text
    assert "pool samples is correct: 6; the other templates' runs on them are correct in 1 of 24." in text


async def test_family_fits_and_fits_with_fewer_bins(tmp_path: Path) -> None:
    from dataclasses import replace

    from ttc_graph.study.render import render_markdown, write_report
    from ttc_graph.study.report import Fit, analyze, fit_plan, load_study_data

    cfg = config(tmp_path, pool=None, families={"revisions": ["bon_weighted", "seq"]})
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=many_problems())
        data = load_study_data(store, cfg)
    for q in data.questions:  # beam search solves every question; the rest only the even ones
        for b in cfg.budgets:
            data.rows[("beam", b, q)] = replace(data.rows[("beam", b, q)], correct=True)
    plan = fit_plan(data)
    assert plan["predicted:revisions"] == Fit("predicted", ("bon_weighted", "seq"))
    assert plan["oracle:2 bins"] == Fit("oracle", ("bon_weighted", "beam", "seq"), n_bins=2)
    analysis = analyze(data, resamples=5)

    def chosen(fit: str) -> set[str]:
        return {t for o in analysis.fits[fit].values() if o is not None for t in o.chosen.values()}

    def outcome(fit: str, b: int = 4) -> Any:
        return analysis.fits[fit][b]

    assert "beam" in chosen("predicted") and outcome("predicted").optimal[0] > 0.9  # ties: the baseline
    # within a bin, paired against the baseline: the easiest bin holds solved questions only (beam ties best-of-N),
    # the hardest unsolved ones only (beam is right where best-of-N never is)
    beam_by_bin = analysis.bin_difference["oracle"]["beam"]
    assert all(
        beam_by_bin[1][b].difference == (0.0, 0.0, 0.0) and beam_by_bin[5][b].difference == (1.0, 1.0, 1.0)  # type: ignore[union-attr]
        for b in (2, 4)
    )
    assert outcome("predicted").in_sample == 1.0  # chosen and scored on every question
    assert set(outcome("predicted:2 bins").chosen) == {1, 2} and "beam" in chosen("predicted:2 bins")
    for fit in ("oracle:revisions", "predicted:revisions"):
        assert chosen(fit) <= {"bon_weighted", "seq"} and outcome(fit).optimal[0] == 0.5
    text = render_markdown(analysis, cfg)
    assert "## Compute-optimal within each family" in text
    assert "Families: revisions: bon_weighted, seq." in text and "| revisions, predicted | 4 | 12 | 50.0" in text
    assert (
        "## Fewer difficulty bins" in text
        and "| predicted, 2 bins | 4 |" in text
        and "- oracle, 3 bins: bin 1:" in text
    )
    # the figures: a row of bins per binning and a column per budget; a panel of the family fits beside the others
    from matplotlib.image import imread

    write_report(analysis, cfg, tmp_path / "out")
    assert imread(tmp_path / "out" / "bins.png").shape[:2] == (2 * 400, 2 * 500)
    assert imread(tmp_path / "out" / "compute_optimal.png").shape[:2] == (400, 2 * 600)
    assert imread(tmp_path / "out" / "revisions.png").shape[:2] == (400, 600)


# -- ttc study status ------------------------------------------------------------------------------------------


async def test_status_counts_what_is_done_and_prices_the_rest(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with ResultStore(tmp_path / "s.sqlite") as store:
        # questions 0 and 1 whole; of question 2 only its pool (drawn live: it is not in the stored pool)
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=PROBLEMS[:2])
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=PROBLEMS, limit=1)
        status = study_status(cfg, store, PROBLEMS)
        timeline = store.timeline(cfg.name)
    # per question: one pool unit and 2 live templates x 2 budgets
    assert (status.questions, status.complete, status.units, status.units_done) == (3, 2, 15, 11)
    live = [(s, b, t) for _, s, b, t in timeline if s in ("beam", "seq")]
    assert len(live) == 8
    mean = {(s, b): sum(t for s2, b2, t in live if (s2, b2) == (s, b)) / 2 for s, b, _ in live}
    assert status.remaining_tokens == pytest.approx(sum(mean.values()))  # question 2's four live units
    assert status.tokens == sum(t for *_, t in timeline)
    with ResultStore(tmp_path / "s.sqlite") as store:
        assert study_status(cfg, store, PROBLEMS, until=2).until_tokens == 0  # questions 0 and 1 are complete
        upto_all = study_status(cfg, store, PROBLEMS, until=3)
        assert upto_all.until_tokens == pytest.approx(status.remaining_tokens)
        with pytest.raises(ConfigurationError, match="until: 4 questions"):
            study_status(cfg, store, PROBLEMS, until=4)


def test_the_rate_leaves_out_a_pause_between_sessions() -> None:
    # ten units a minute apart at 600 tokens each, then a night's pause, then five more
    times = [60.0 * k for k in range(10)] + [60.0 * 9 + 36_000 + 60.0 * k for k in range(1, 6)]
    timeline = [(t, "beam", 4, 600) for t in times]
    assert _rate(timeline) == pytest.approx(10.0)  # 600 tokens a minute; the pause and its unit left out
    assert _rate(timeline[:2]) is None  # too few units to tell


def test_the_status_command_prints_progress(tmp_path: Path) -> None:
    cfg = config(tmp_path, questions=3)  # the data set's first three questions: their ids are 0, 1 and 2
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    with ResultStore(tmp_path / "study.sqlite") as store:
        asyncio.run(run_study(ScriptedEndpoint(solve), cfg, store, problems=PROBLEMS))
    result = CliRunner().invoke(app, ["study", "status", str(path)])
    assert result.exit_code == 0, result.output
    assert "3 of 3 questions complete; 15 of 15 units" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["study", "status", str(path), "--until", "2"])
    assert result.exit_code == 0, result.output
    assert "left before the first 2 questions are complete: about 0 tokens" in " ".join(result.output.split())


def test_the_status_command_names_a_missing_database(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path).model_dump(mode="json")))
    result = CliRunner().invoke(app, ["study", "status", str(path)])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())


# -- nested revisions: the smaller budgets replayed from the largest's chains -------------------------------------


def revise_answers(call: FakeCall, index: int) -> str:
    """The k-th sample drawn answers k + 1: a chain's attempts answer 1, 2, 3, ... (only one chain runs)."""
    return f"So the answer is \\boxed{{{index + 1}}}."


def test_only_revisions_nest_and_only_when_their_chains_fit(tmp_path: Path) -> None:
    cfg = config(tmp_path, nested_revisions=True)
    assert cfg.nested_in("seq", 2) == 4 and cfg.nested_in("seq", 4) is None
    assert cfg.nested_in("beam", 2) is None and cfg.nested_in("bon_weighted", 2) is None
    assert config(tmp_path).nested_in("seq", 2) is None  # off by default
    # 2 chains of 1 at budget 2 do not fit in 1 chain of 4
    wide = {"kind": "revisions", "chain_length": 1, "selection": "majority"}
    assert config(tmp_path, nested_revisions=True, templates={"bon_weighted": {"kind": "best_of_n"}, "w": wide})
    seq = {"kind": "revisions", "chain_length": "full"}
    cfg = config(
        tmp_path, nested_revisions=True, templates={"bon_weighted": {"kind": "best_of_n"}, "w": wide, "seq": seq}
    )
    assert cfg.nested_in("w", 2) == 4  # 2 chains of 1 fit in 4 chains of 1


async def test_a_nested_budget_is_replayed_from_the_largest_run_without_a_model_call(tmp_path: Path) -> None:
    cfg = config(tmp_path, nested_revisions=True, pool_size=4, templates={
        "bon_weighted": {"kind": "best_of_n", "selection": "weighted"},
        "seq": {"kind": "revisions", "chain_length": "full", "selection": "majority"}})  # fmt: skip
    policy = ScriptedEndpoint(revise_answers)
    with ResultStore(tmp_path / "s.sqlite") as store:
        report = await run_study(policy, cfg, store, problems=PROBLEMS[:1])
        rows = {(r.strategy, r.budget): r for r in store.rows("t")}
    assert len([c for c in policy.calls if c.params is None or not c.params.stop]) == 4  # one chain of 4
    assert report.finished == 2 and report.failed == 0  # the pool and seq b=4; seq b=2 came with it
    full, half = rows[("seq", 4)], rows[("seq", 2)]
    assert [c["answer"] for c in full.candidates] == ["1", "2", "3", "4"]
    assert [c["id"] for c in half.candidates] == ["ch0-a0", "ch0-a1"]  # the chain's first two attempts
    assert half.reused and half.details["derived_from"] == 4 and half.generations == 2
    assert half.tokens == sum(c["tokens"] for c in full.candidates[:2])
    attempts = [
        {**c, "parsable": True, "scored": c["score"] is not None, "meta": {"chain": 0, "position": k}}
        for k, c in enumerate(full.candidates[:2])
    ]
    assert half.answer == select_revisions(attempts, "majority").answer  # type: ignore[arg-type]
    assert half.correct == (half.answer == "0")


def answer_by_attempt(call: FakeCall, index: int) -> str:
    """A chain's k-th attempt answers k (it sees k - 1 earlier answers); every other sample answers 1."""
    earlier = sum(len(re.findall(r"\\boxed\{\d+\}", m["content"])) for m in call.messages if m["role"] != "system")
    return f"So the answer is \\boxed{{{earlier + 1}}}."


async def test_revision_steps_count_each_attempt_and_what_each_revision_did(tmp_path: Path) -> None:
    from ttc_graph.study.report import load_study_data, revision_steps

    cfg = config(tmp_path, pool=None, templates={
        "bon_weighted": {"kind": "best_of_n", "selection": "weighted"},
        "seq": {"kind": "revisions", "chain_length": "full", "selection": "hierarchical"}})  # fmt: skip
    problems = [PROBLEMS[1], Problem("5", "What is 0.5 + 0.5?", "1")]  # references 2 and 1
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(answer_by_attempt), cfg, store, problems=problems)
        data = load_study_data(store, cfg)
    assert [c["answer"] for c in data.template_row("seq", 4, "1").candidates] == ["1", "2", "3", "4"]
    # reference 2: wrong, right, wrong, wrong; reference 1: right, wrong, wrong, wrong. Every revision changes
    # the answer; two break a right one, one fixes a wrong one; one chain starts right and ends wrong
    expected = ChainSteps([1, 1, 0, 0], [2, 2, 2, 2], right_to_wrong=2, wrong_to_right=1, changed=6, revisions=6,
                          lost=1, gained=0)  # fmt: skip
    assert revision_steps(data) == {"seq": expected}


def test_the_sign_test_of_first_against_last_attempt() -> None:
    assert ChainSteps([], [], 0, 0, 0, 0, lost=5, gained=1).p_value == pytest.approx(14 / 64)  # 2 * 7 / 2**6
    assert ChainSteps([], [], 0, 0, 0, 0, lost=6, gained=0).p_value == pytest.approx(2 / 64)
    assert ChainSteps([], [], 0, 0, 0, 0, lost=3, gained=3).p_value == 1.0
    assert ChainSteps([], [], 0, 0, 0, 0, 0, 0).p_value == 1.0  # no discordant chain: no evidence either way


async def test_a_nested_budget_missing_beside_a_stored_source_is_replayed_on_rerun(tmp_path: Path) -> None:
    plain = config(tmp_path, templates={
        "bon_weighted": {"kind": "best_of_n", "selection": "weighted"},
        "seq": {"kind": "revisions", "chain_length": "full", "selection": "majority"}})  # fmt: skip
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(revise_answers), plain, store, problems=PROBLEMS[:1])
        store._db.execute("DELETE FROM runs WHERE strategy = 'seq' AND budget = 2")  # as if it had never run
        store._db.commit()
        nested = plain.model_copy(update={"nested_revisions": True})
        units = plan_units(PROBLEMS[:1], nested, store.done("t"))
        assert [(u.template, u.budget) for u in units] == [("seq", 2)]
        policy = ScriptedEndpoint(revise_answers)
        await run_study(policy, nested, store, problems=PROBLEMS[:1])
        assert not policy.calls
        assert ("seq", 2, "0") in store.done("t")


# -- one run for two templates whose specs coincide at a budget (beam search M = 2 and M = √N at N = 4) ----------


def same_at_4(tmp_path: Path) -> StudyConfig:
    return config(tmp_path, templates={
        "bon_weighted": {"kind": "best_of_n", "selection": "weighted"},
        "beam": {"kind": "beam_search", "beam_width": 2},
        "beam_sqrt": {"kind": "beam_search", "beam_width": "sqrt"},  # √4 = 2: beam at 4; √2 -> 1 at 2
        "seq": {"kind": "revisions", "chain_length": "full", "selection": "hierarchical"}})  # fmt: skip


def test_a_template_with_the_same_spec_as_an_earlier_one_at_a_budget_is_that_run(tmp_path: Path) -> None:
    cfg = same_at_4(tmp_path)
    assert cfg.same_as("beam_sqrt", 4) == "beam" and cfg.source_of("beam_sqrt", 4) == ("beam", 4)
    assert cfg.same_as("beam_sqrt", 2) is None and cfg.same_as("beam", 4) is None  # the earlier one runs
    assert cfg.same_as("seq", 4) is None and cfg.same_as("bon_weighted", 4) is None
    extension = load_study(Path(__file__).parents[2] / "docs/study/extension/study.yaml")
    assert extension.source_of("beam_sqrt", 16) == ("beam_m4", 16)
    assert extension.source_of("beam_sqrt", 8) is None and extension.source_of("beam_m4", 16) is None


async def test_the_same_spec_runs_once_and_both_templates_get_its_row(tmp_path: Path) -> None:
    cfg = same_at_4(tmp_path)
    units = plan_units(PROBLEMS[:1], cfg, set())
    assert [(u.template, u.budget) for u in units if u.template and "beam" in u.template] == [
        ("beam", 2), ("beam", 4), ("beam_sqrt", 2)]  # fmt: skip
    policy = ScriptedEndpoint(solve)
    with ResultStore(tmp_path / "s.sqlite") as store:
        report = await run_study(policy, cfg, store, problems=PROBLEMS[:1])
        rows = {(r.strategy, r.budget): r for r in store.rows("t")}
        assert report.failed == 0 and not plan_units(PROBLEMS[:1], cfg, store.done("t"))
    one, same = rows[("beam", 4)], rows[("beam_sqrt", 4)]
    assert not one.reused and same.reused and same.details["same_as"] == "beam"
    assert (same.answer, same.correct, same.generations, same.tokens, same.candidates) == (
        one.answer, one.correct, one.generations, one.tokens, one.candidates)  # fmt: skip


async def test_a_same_spec_row_missing_beside_its_stored_source_is_replayed_without_a_model_call(
    tmp_path: Path,
) -> None:
    cfg = same_at_4(tmp_path)
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=PROBLEMS[:1])
        store._db.execute("DELETE FROM runs WHERE strategy = 'beam_sqrt' AND budget = 4")  # as if it had never run
        store._db.commit()
        assert [(u.template, u.budget) for u in plan_units(PROBLEMS[:1], cfg, store.done("t"))] == [("beam_sqrt", 4)]
        policy = ScriptedEndpoint(solve)
        await run_study(policy, cfg, store, problems=PROBLEMS[:1])
        assert not policy.calls and ("beam_sqrt", 4, "0") in store.done("t")


async def test_the_report_counts_only_the_runs_that_measured_their_seconds(tmp_path: Path) -> None:
    from ttc_graph.study.render import render_markdown
    from ttc_graph.study.report import analyze, load_study_data

    cfg = config(tmp_path, pool=None, nested_revisions=True)
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=many_problems())
        analysis = analyze(load_study_data(store, cfg), resamples=5)
    assert analysis.cost["seq"][2]["seconds"] is None and analysis.cost["seq"][2]["measured"] == 0  # replayed
    assert analysis.cost["seq"][4]["measured"] == 12 and analysis.cost["seq"][2]["generations"] == 2
    with ResultStore(tmp_path / "s.sqlite") as store:
        live = [r for r in store.rows("t") if r.strategy == "seq" and r.budget == 4]
    assert analysis.cost["seq"][4]["prompt_tokens"] == pytest.approx(
        statistics.fmean(r.details["usage"]["prompt_tokens"] for r in live)
    )
    assert analysis.cost["seq"][4]["requests"] == 4  # a chain of 4: one request per attempt
    assert analysis.cost["seq"][2]["prompt_tokens"] is None  # replayed: no request of its own
    assert analysis.cost["bon_weighted"][2]["prompt_tokens"] is None  # the sample pool records no prompts
    text = render_markdown(analysis, cfg)
    assert "| seq | 2 | 12 | 2.0 |" in text and "not measured (reused)" in text
    assert "oracle (pass@1 of pool samples 5-8)" in text and "scores best-of-N on pool samples 1-4" in text
    assert re.search(r"^\| seq \| 2 \| 12 \| 2\.0 \| \d+ \| — \| — \| not measured \(reused\) \|", text, re.M)
    assert re.search(r"^\| seq \| 4 \| 12 \| 4\.0 \| \d+ \| \d+ \| 4\.0 \| \d", text, re.M)


def test_a_chunk_starts_its_longest_units_first(tmp_path: Path) -> None:
    from ttc_graph.eval.store import ResultRow
    from ttc_graph.study.runner import StudyUnit, longest_first

    cfg = config(tmp_path, nested_revisions=True)

    def row(strategy: str, budget: int, qid: str, seconds: float, reused: bool = False) -> ResultRow:
        return ResultRow("t", strategy, budget, qid, "gsm8k", "1", "1", True, budget, 10, seconds, "complete", [],
                         reused=reused)  # fmt: skip

    rows = [row("beam", 2, "0", 100.0), row("beam", 2, "1", 300.0), row("seq", 4, "0", 900.0),
            row("seq", 2, "0", 5000.0),  # a live run from before nesting was on
            row("bon_weighted", 4, "0", 0.0, reused=True)]  # fmt: skip
    p = PROBLEMS[2]
    units = [StudyUnit(p, 2), StudyUnit(p, 2, "beam", 2), StudyUnit(p, 2, "seq", 2), StudyUnit(p, 2, "seq", 4),
             StudyUnit(p, 2, "beam", 4)]  # fmt: skip
    ordered = [(u.template, u.budget) for u in longest_first(cfg, units, rows)]
    # never measured first; then by mean seconds (beam b=2: 200 s); the pool draw and the replayed run last
    assert ordered == [("beam", 4), ("seq", 4), ("beam", 2), (None, 0), ("seq", 2)]


def test_a_run_without_a_unit_limit_reorders_its_plan_window_by_window(tmp_path: Path) -> None:
    from ttc_graph.eval.store import ResultRow
    from ttc_graph.study.runner import StudyUnit, longest_first

    cfg = config(tmp_path)
    rows = [ResultRow("t", "beam", 4, "0", "gsm8k", "1", "1", True, 4, 10, 900.0, "complete", []),
            ResultRow("t", "beam", 2, "0", "gsm8k", "1", "1", True, 2, 10, 100.0, "complete", [])]  # fmt: skip
    units = [StudyUnit(PROBLEMS[i], i, "beam", b) for i in (0, 1, 2) for b in (2, 4)]
    ordered = [(u.index, u.budget) for u in longest_first(cfg, units, rows, window=2)]
    assert ordered == [(0, 4), (0, 2), (1, 4), (1, 2), (2, 4), (2, 2)]  # each question's long run first, in order
    whole = [(u.index, u.budget) for u in longest_first(cfg, units, rows)]
    assert whole == [(0, 4), (1, 4), (2, 4), (0, 2), (1, 2), (2, 2)]  # the long kind across every question first


@pytest.mark.parametrize("pool_size", [16, 32])
async def test_a_policy_that_always_picks_best_of_n_reads_exactly_1x_at_every_budget(
    tmp_path: Path, pool_size: int
) -> None:
    """One estimator of best-of-N per comparison: the first half of each pool (samples 1-8 of 16, 1-16 of 32) scores
    it (in the fits and on the curve the ratio reads), the second half bins it, and they differ here (the first half
    lucky, the second mostly wrong): scored on one set and matched on another, an always-best-of-N policy would not
    read 1x."""
    from dataclasses import replace

    from ttc_graph.study.render import render_markdown
    from ttc_graph.study.report import analyze, baseline_expected, load_study_data

    cfg = config(tmp_path, pool=None, pool_size=pool_size, families={"revisions": ["bon_weighted", "seq"]})
    half = pool_size // 2
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=many_problems())
        data = load_study_data(store, cfg)

    def sample(answer: int, score: float) -> dict[str, Any]:
        return {"text": f"So the answer is \\boxed{{{answer}}}.", "score": score, "tokens": 9}

    for i, q in enumerate(data.questions):
        right = int(data.references[q])
        lucky = [sample(right, 0.7)] * 2 + [sample(right + 1 + k, 0.6) for k in range(half - 2)]  # rises with N
        binned = [sample(right, 0.5)] * (i % 4) + [sample(right + 100, 0.5)] * (half - i % 4)  # mostly wrong
        data.pools[q] = lucky + binned
        for t in ("beam", "seq"):  # every live run wrong: every fit always picks best-of-N
            for b in cfg.budgets:
                data.rows[(t, b, q)] = replace(data.rows[(t, b, q)], correct=False)
    analysis = analyze(data, resamples=200)
    assert set(analysis.fits) >= {"oracle", "predicted", "routed", "predicted:revisions", "oracle:2 bins"}
    for fit, per_budget in analysis.fits.items():
        for b in cfg.budgets:
            o = per_budget[b]
            assert o is not None and o.n == 12
            assert set(o.chosen.values()) == {"bon_weighted"}
            assert o.ratio == (1.0, 1.0, 1.0), (fit, b)  # the point and every resample
            assert o.optimal[0] == pytest.approx(o.baseline[0]) and o.p == 1.0
    # the two halves differ: best-of-N on the whole pool is another estimate than on its first half
    whole = statistics.fmean(baseline_expected(data, q, [4])[4] for q in data.questions)
    assert whole < analysis.baseline[4][0] - 0.1
    binned_by = f"| predicted (mean verifier score of pool samples {half + 1}-{pool_size}) | 4 | 12 |"
    assert binned_by in render_markdown(analysis, cfg)


# -- a trimmed grid: per-template questions and budgets -------------------------------------------------------


def trimmed(tmp_path: Path, **overrides: Any) -> StudyConfig:
    """``seq`` on the first 6 questions at budget 2 only; ``bon_weighted`` and ``beam`` on the whole grid."""
    templates = {
        "bon_weighted": {"kind": "best_of_n", "selection": "weighted"},
        "beam": {"kind": "beam_search", "beam_width": 2},
        "seq": {"kind": "revisions", "chain_length": "full", "selection": "hierarchical", "questions": 6,
                "budgets": [2]},
    }  # fmt: skip
    return config(tmp_path, **{"pool": None, "questions": 12, "templates": templates, **overrides})


@pytest.mark.parametrize(
    ("seq", "message"),
    [
        ({"budgets": [8]}, r"templates.seq.budgets: must be distinct budgets of the study's \[2, 4\]"),
        ({"budgets": [2, 2]}, "templates.seq.budgets"),
        ({"budgets": []}, "templates.seq.budgets"),
        ({"questions": 13}, r"templates.seq.questions: must be an integer in 1..12"),
        ({"questions": 0}, "templates.seq.questions"),
        ({"questions": True}, "templates.seq.questions"),
    ],
)
def test_a_templates_own_questions_and_budgets_are_validated(tmp_path: Path, seq: dict[str, Any], message: str) -> None:
    templates = {"bon_weighted": {"kind": "best_of_n"}, "seq": {"kind": "revisions", "chain_length": "full", **seq}}
    with pytest.raises(ValueError, match=message):
        config(tmp_path, questions=12, templates=templates)


def test_a_trimmed_grid_names_each_templates_part(tmp_path: Path) -> None:
    cfg = trimmed(tmp_path)
    assert cfg.trimmed() and not config(tmp_path).trimmed()
    assert (cfg.budgets_of("seq"), cfg.questions_of("seq")) == ((2,), 6)
    assert (cfg.budgets_of("beam"), cfg.questions_of("beam")) == ((2, 4), 12)
    assert cfg.grid_templates() == ["bon_weighted", "beam"]
    assert "questions" not in cfg.template("seq") and "budgets" not in cfg.template("seq")  # not spec fields
    assert cfg.spec_for("seq", 2).n == 2
    assert cfg.covers("seq", 2, 5) and not cfg.covers("seq", 2, 6) and not cfg.covers("seq", 4)
    # revisions nest in the template's own largest budget: with only budget 2, nothing is replayed
    nested = trimmed(tmp_path, nested_revisions=True)
    assert nested.nested_in("seq", 2) is None


def test_the_plan_runs_question_by_question_each_pool_then_each_templates_own_grid(tmp_path: Path) -> None:
    cfg = trimmed(tmp_path)
    problems = many_problems()
    units = plan_units(problems, cfg, set(), {})
    plan = [(u.index, u.template, u.budget) for u in units]
    assert plan[:8] == [
        (0, None, 0),
        (0, "beam", 2),
        (0, "beam", 4),
        (0, "seq", 2),
        (1, None, 0),
        (1, "beam", 2),
        (1, "beam", 4),
        (1, "seq", 2),
    ]
    assert [u.label for u in units if u.template is None] == [f"q{i} best-of-N pool" for i in range(12)]
    assert [i for i, _, _ in plan] == sorted(i for i, _, _ in plan)  # a stopped run holds whole questions
    live = [(i, t, b) for i, t, b in plan if t is not None]
    assert {(t, b) for i, t, b in live if i >= 6} == {("beam", 2), ("beam", 4)}  # seq only on its 6 questions
    assert len(live) == 12 * 2 + 6
    # a pool is planned again while it holds fewer samples than pool_size, even with its rows stored
    done = {("bon_weighted", b, p.id) for b in (2, 4) for p in problems}
    short = {p.id: 8 for p in problems} | {"3": 4}
    assert [u.index for u in plan_units(problems, cfg, done, short) if u.template is None] == [3]
    assert not [u for u in plan_units(problems, cfg, done, {p.id: 8 for p in problems}) if u.template is None]


class Seeded:
    """Pool samples that name their seed, as a server draws sample ``i`` of a request seeded ``s`` with seed
    ``s + i`` (the OpenAI-compatible endpoint's fan-out): a repeated seed gives a repeated sample."""

    def __init__(self) -> None:
        self.starts: dict[int, int] = {}

    def __call__(self, call: FakeCall, index: int) -> str:
        start = self.starts.setdefault(id(call), index)
        assert call.params is not None and call.params.seed is not None
        seed = call.params.seed + index - start
        return f"seed {seed}.{DELIM}So the answer is \\boxed{{{seed}}}."


async def test_a_pool_grows_from_16_to_32_samples_keeping_its_first_16_and_drawing_new_seeds(tmp_path: Path) -> None:
    from ttc_graph.study.report import load_study_data

    templates = {"bon_weighted": {"kind": "best_of_n", "selection": "weighted"}}
    small = config(tmp_path, pool=None, pool_size=16, templates=templates)
    large = config(tmp_path, pool=None, pool_size=32, templates=templates)
    with ResultStore(tmp_path / "s.sqlite") as store:
        await run_study(ScriptedEndpoint(Seeded()), small, store, problems=PROBLEMS)
        first = {p.id: store.pool("t", p.id) for p in PROBLEMS}
        assert plan_units(PROBLEMS, large, store.done("t"), {q: len(s) for q, s in first.items()}) != []
        policy = ScriptedEndpoint(Seeded())
        report = await run_study(policy, large, store, problems=PROBLEMS)
        assert report.finished == 3 and report.failed == 0
        assert sum(c.n for c in policy.calls) == 3 * 16  # 16 more per question, nothing redrawn
        seeds = {int(first[p.id][0]["text"].split()[1].rstrip(".")) for p in PROBLEMS}
        assert {c.params.seed for c in policy.calls} == {s + 16 for s in seeds}  # type: ignore[union-attr]
        for p in PROBLEMS:
            grown = store.pool("t", p.id)
            assert len(grown) == 32 and grown[:16] == first[p.id]
            texts = [s["text"] for s in grown]
            assert len(set(texts)) == 32, "an extension repeated a sample"
        # a pool drawn whole holds the same samples as one drawn in two parts
        with ResultStore(tmp_path / "whole.sqlite") as whole:
            await run_study(ScriptedEndpoint(Seeded()), large, whole, problems=PROBLEMS)
            assert [s["text"] for s in whole.pool("t", "2")] == [s["text"] for s in store.pool("t", "2")]
        assert await run_study(ScriptedEndpoint(Seeded()), large, store, problems=PROBLEMS) is not None
        assert plan_units(PROBLEMS, large, store.done("t"), {p.id: 32 for p in PROBLEMS}) == []
        # the 16-sample config still reads its 16: a pool extended for another config leaves its report as it was
        assert {len(s) for s in load_study_data(store, small).pools.values()} == {16}


async def test_the_report_on_a_trimmed_grid_pairs_each_comparison_on_its_common_questions(tmp_path: Path) -> None:
    from ttc_graph.study.render import render_markdown
    from ttc_graph.study.report import FULL_GRID, analyze, family_fit, load_study_data

    cfg = trimmed(tmp_path)
    everywhere = trimmed(tmp_path, templates={**cfg.templates, "seq": {"kind": "revisions", "chain_length": "full"}})
    problems = many_problems()
    with ResultStore(tmp_path / "s.sqlite") as store:
        report = await run_study(ScriptedEndpoint(solve), cfg, store, problems=problems)
        assert report.finished == 12 + 12 * 2 + 6
        data = load_study_data(store, cfg)
        assert data.questions == [p.id for p in problems]  # complete: seq is not needed beyond its 6
        # rows another config ran beyond seq's questions and budgets stay out of this config's report
        await run_study(ScriptedEndpoint(solve), everywhere, store, problems=problems)
        assert load_study_data(store, cfg).rows.keys() == data.rows.keys()
    assert {(t, b) for t, b, q in data.rows if t == "seq"} == {("seq", 2)}
    analysis = analyze(data, resamples=20)
    assert analysis.accuracy["seq"][2][0] == 6 and analysis.accuracy["seq"][4] is None
    assert analysis.accuracy["beam"][4][0] == 12
    assert analysis.difference["seq"][2].n == 6 and analysis.difference["seq"][4] is None
    assert analysis.difference["beam"][2].n == 12
    # the fits named by their bins choose among the templates on every question; the full grid's on fewer
    assert analysis.fit_questions["oracle"] == {2: 12, 4: 12}
    full = family_fit("oracle", FULL_GRID)
    assert analysis.fit_questions[full] == {2: 6, 4: 12}  # at 4 seq does not run: the others on all 12
    assert analysis.fits[full][2] is None and analysis.fits[full][4] is not None
    assert set(analysis.tables) == {"oracle", "predicted", "routed"}
    text = render_markdown(analysis, cfg)
    assert "A trimmed grid (bon_weighted: 12 questions at budgets 2, 4; beam: 12 questions" in text
    assert "seq: 6 questions at budgets 2)" in text and "12 questions complete" in text
    assert "| seq | 50.0 [" in text and "(n=6)" in text
    assert "| seq | 4 |" not in text  # no bin rows off the template's grid
    assert "the routed fit there can choose only best-of-N" not in text  # 4 probes: no budget above them
    one_probe = render_markdown(analysis, trimmed(tmp_path, router_probes=1))
    assert "At budget 2 (it would need runs at 1), 4 (it would need runs at 3) no other template ran" in one_probe
    # seq's chains are read at its own largest budget, and the table says so
    assert analysis.revision_steps["seq"].chains == [6, 6]
    assert "attempt by attempt (each template's largest budget)" in text and "| seq (budget 2) | 6 |" in text


def programs_too(call: FakeCall, index: int) -> str:
    """:func:`solve`, and a program printing the right answer when asked for one."""
    if any("Python programmer" in m["content"] for m in call.messages if m["role"] == "system"):
        question = next(m["content"] for m in call.messages if m["role"] == "user")
        i = int(question.split()[2])
        return f"```python\nprint({2 * i})\n```"
    return solve(call, index)


async def test_rescore_stores_each_pool_questions_programs_once_and_the_report_scores_best_of_n_with_them(
    tmp_path: Path,
) -> None:
    from ttc_graph.study.render import render_markdown
    from ttc_graph.study.report import analyze, load_study_data
    from ttc_graph.study.rescore import rescore_key, rescore_study, stored_programs

    cfg = config(tmp_path, pool=None, rescore={"kind": "program", "programs": 2, "temperature": 0.4})
    problems = many_problems()
    with ResultStore(tmp_path / "s.sqlite") as store:
        assert store.checks("t", rescore_key(cfg)) == {}  # nothing stored, and reading made no table
        await run_study(ScriptedEndpoint(solve), cfg, store, problems=problems)
        policy = ScriptedEndpoint(programs_too)
        first = await rescore_study(policy, cfg, store, problems, limit=5)
        assert (first.stored, first.failed) == (5, 0)
        assert all(c.n == 2 and c.params.temperature == 0.4 for c in policy.calls)  # type: ignore[union-attr]
        rest = await rescore_study(ScriptedEndpoint(programs_too), cfg, store, problems)
        assert (rest.stored, rest.skipped) == (7, 5)  # resumed: the first 5 are not asked again
        programs = stored_programs(store, cfg)
        assert programs["3"] == ("6", "6")
        data = load_study_data(store, cfg)
    analysis = analyze(data, resamples=20)
    assert analysis.rescored_questions == 12 and set(analysis.rescored) == {1, 2, 4}
    # every sample of a question gives its one answer: right on even questions, whatever the verifier
    assert all(row[k][0] == 0.5 for row in analysis.rescored.values() for k in ("study", "checked"))
    text = render_markdown(analysis, cfg)
    assert "## The program-checked verifier" in text and "of the 12 pool questions rescored so far" in text
    assert "## The program-checked verifier" not in render_markdown(analysis, config(tmp_path, pool=None))


def test_a_rescore_verifier_must_be_a_program_verifier(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"(?s)rescore.*must be a program verifier"):
        config(tmp_path, rescore={"kind": "arithmetic"})
    with pytest.raises(ValueError, match="programs"):
        config(tmp_path, rescore={"kind": "program", "programs": 0})


def test_the_rescore_command_stores_programs_and_refuses_a_config_without_rescore(tmp_path: Path) -> None:
    from ttc_graph.cli import StaticRuntime
    from ttc_graph.study.rescore import stored_programs

    data = {"name": "t", "model": "m", "budgets": [4], "questions": 3, "verifier": {"kind": "arithmetic"},
            "templates": {"bon_weighted": {"kind": "best_of_n"}}}  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    db = tmp_path / "s.sqlite"
    ResultStore(db).close()
    runner = CliRunner()
    runtime = StaticRuntime(ScriptedEndpoint(["```python\nprint(7)\n```"]))
    result = runner.invoke(app, ["study", "rescore", str(path), "--db", str(db)], obj=runtime)
    assert result.exit_code != 0 and "names no rescore verifier" in " ".join(result.output.split())
    path.write_text(yaml.safe_dump({**data, "rescore": {"kind": "program", "programs": 2}}))
    with ResultStore(db) as store:
        store.save([], pool=("t", "0", [{"text": "So \\boxed{0}.", "tokens": 3}]))
    result = runner.invoke(app, ["study", "rescore", str(path), "--db", str(db)], obj=runtime)
    assert result.exit_code == 0, result.output
    assert "1 question(s) stored" in result.output  # only questions with a pool
    with ResultStore(db) as store:
        assert stored_programs(store, load_study(path)) == {"0": ("7", "7")}
