"""Sweeps over a scripted endpoint: sample reuse, resume after a crash or a cancel, failures and bad input."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest

from ttc_graph.endpoints.base import ChatMessage, GenerationResult, SamplingParams
from ttc_graph.errors import ConfigurationError
from ttc_graph.eval import Problem, ResultStore, SweepConfig, SweepEvent, parse_strategy, pending, run_sweep, summarize
from ttc_graph.testing import FakeCall, ScriptedEndpoint

QUESTIONS = 6
PROBLEMS = [Problem(str(i), f"What is {i} + {i}?", str(2 * i)) for i in range(QUESTIONS)]
STRATEGIES = ["best_of_n:majority", "best_of_n:weighted"]


def solve(call: FakeCall, index: int) -> str:
    """Right three times out of four: the question's number doubled, else a wrong answer."""
    i = int(call.messages[-1]["content"].split()[2])
    return f"Adding. \\boxed{{{2 * i if index % 4 else 2 * i + 1}}}"


class FirstWrong:
    """Per question, the first sample drawn is wrong and the later ones right."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, call: FakeCall, index: int) -> str:
        question = call.messages[-1]["content"]
        i = int(question.split()[2])
        k = self.seen[question] = self.seen.get(question, 0) + 1
        return f"Adding. \\boxed{{{2 * i + 1 if k == 1 else 2 * i}}}"


class LogprobEndpoint:
    """A scripted endpoint whose generations carry token logprobs (confident when the answer is right)."""

    def __init__(self, inner: ScriptedEndpoint) -> None:
        self.inner = inner
        self.native_n = inner.native_n

    @property
    def name(self) -> str:
        return "scripted+logprobs"

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        result = await self.inner.generate(messages, n=n, params=params, prefix=prefix)
        i = int(messages[-1]["content"].split()[2])
        result.generations = [
            dataclasses.replace(g, token_logprobs=(-0.05,) * 4 if f"{{{2 * i}}}" in g.text else (-2.0,) * 4)
            for g in result.generations
        ]
        return result


def drawn(fake: ScriptedEndpoint) -> int:
    return sum(c.n for c in fake.calls)


def fake(**kwargs: object) -> ScriptedEndpoint:
    return ScriptedEndpoint(solve, native_n=False, **kwargs)  # type: ignore[arg-type]


def config(run: str = "r", budgets: str = "1,2,4", strategies: Sequence[str] = STRATEGIES, **kw: object) -> SweepConfig:
    return SweepConfig.make(run, "gsm8k", strategies, budgets, concurrency=1, max_tokens=64, **kw)  # type: ignore[arg-type]


@pytest.fixture()
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(tmp_path / "results" / "eval.sqlite")


async def test_sample_reuse_draws_the_largest_budget_once(store: ResultStore) -> None:
    policy = fake()
    report = await run_sweep(LogprobEndpoint(policy), PROBLEMS, config(), store)
    assert drawn(policy) == 4 * QUESTIONS  # not 1 + 2 + 4 = 7 per question
    assert report.generations == 4 * QUESTIONS and report.requests == 4 * QUESTIONS
    rows = store.rows("r")
    assert len(rows) == QUESTIONS * len(STRATEGIES) * 3 == report.rows_written
    assert {(r.strategy, r.budget) for r in rows} == {
        (s, b) for s in ("best_of_n:majority", "best_of_n:weighted:confidence") for b in (1, 2, 4)
    }
    assert all(r.reused and r.generations == r.budget and r.stop_reason == "complete" for r in rows)
    pools = store.pools("r")
    assert len(pools) == QUESTIONS and all(len(s) == 4 for s in pools.values())
    for r in rows:  # every budget is a prefix of the same draws
        pool = pools[r.question_id]
        assert [c["answer"] for c in r.candidates] == [s["answer"] for s in pool[: r.budget]]
        assert r.tokens == sum(s["tokens"] for s in pool[: r.budget])


async def test_weighted_uses_the_confidence_scores(store: ResultStore) -> None:
    # sample 0 of each question is wrong; with b=2 majority keeps it (tie), weighted picks the confident one
    policy = LogprobEndpoint(ScriptedEndpoint(FirstWrong(), native_n=False))
    await run_sweep(policy, PROBLEMS[:2], config(budgets="1,2"), store)
    by_key = {(r.strategy, r.budget, r.question_id): r for r in store.rows("r")}
    for q in ("0", "1"):
        assert by_key[("best_of_n:majority", 2, q)].correct is False
        assert by_key[("best_of_n:weighted:confidence", 2, q)].correct is True
        scores = [c["score"] for c in by_key[("best_of_n:weighted:confidence", 2, q)].candidates]
        assert scores[1] > scores[0]


async def test_killed_sweep_resumes_without_redoing_questions(store: ResultStore) -> None:
    killed_after = 3

    def crashing(call: FakeCall, index: int) -> str:
        if index >= 4 * killed_after:
            raise RuntimeError("killed")
        return solve(call, index)

    first = ScriptedEndpoint(crashing, native_n=False)
    with pytest.raises(RuntimeError, match="killed"):
        await run_sweep(LogprobEndpoint(first), PROBLEMS, config(), store)
    done_questions = {r.question_id for r in store.rows("r")}
    assert done_questions == {"0", "1", "2"}
    assert pending(PROBLEMS, config(), store) == (QUESTIONS - killed_after, killed_after)

    second = fake()
    report = await run_sweep(LogprobEndpoint(second), PROBLEMS, config(), store)
    assert drawn(second) == 4 * (QUESTIONS - killed_after)  # finished questions are not redone
    assert report.skipped_units == killed_after and report.finished_units == QUESTIONS - killed_after
    assert len(store.rows("r")) == QUESTIONS * len(STRATEGIES) * 3
    assert {r.question_id for r in store.rows("r")} == {p.id for p in PROBLEMS}

    third = fake()
    again = await run_sweep(LogprobEndpoint(third), PROBLEMS, config(), store)
    assert drawn(third) == 0 and again.finished_units == 0 and again.skipped_units == QUESTIONS


async def test_cancelled_sweep_resumes(store: ResultStore) -> None:
    finished: list[str] = []
    first = fake(delay=0.01)
    task: asyncio.Task[object]

    def progress(event: SweepEvent) -> None:
        if event.kind == "done":
            finished.append(event.label)
            if len(finished) == 2:
                task.cancel()

    task = asyncio.create_task(run_sweep(LogprobEndpoint(first), PROBLEMS, config(), store, progress=progress))
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = {r.question_id for r in store.rows("r")}
    assert stored == {"0", "1"}

    second = fake()
    await run_sweep(LogprobEndpoint(second), PROBLEMS, config(), store)
    assert drawn(second) == 4 * (QUESTIONS - 2)
    assert len(store.rows("r")) == QUESTIONS * len(STRATEGIES) * 3


async def test_larger_budget_extends_the_stored_pool(store: ResultStore) -> None:
    first = fake()
    await run_sweep(LogprobEndpoint(first), PROBLEMS, config(budgets="1,2"), store)
    assert drawn(first) == 2 * QUESTIONS
    second = fake()
    report = await run_sweep(LogprobEndpoint(second), PROBLEMS, config(budgets="1,2,4"), store)
    assert drawn(second) == 2 * QUESTIONS  # only the two missing samples per question
    assert report.rows_written == QUESTIONS * len(STRATEGIES)  # only the b=4 rows are new
    assert all(len(s) == 4 for s in store.pools("r").values())


async def test_other_families_run_per_budget(store: ResultStore) -> None:
    policy = fake()
    cfg = config(strategies=["revisions:majority"], budgets="1,2")
    report = await run_sweep(policy, PROBLEMS[:2], cfg, store)
    assert drawn(policy) == 2 * (1 + 2) == report.generations
    rows = store.rows("r")
    assert len(rows) == 4 and not any(r.reused for r in rows)
    assert {r.generations for r in rows} == {1, 2}
    again = fake()
    await run_sweep(again, PROBLEMS[:2], cfg, store)
    assert drawn(again) == 0


async def test_failed_questions_are_reported_and_retried(store: ResultStore) -> None:
    broken = fake(fail_every=1)
    report = await run_sweep(broken, PROBLEMS[:3], config(strategies=["best_of_n:majority"]), store)
    assert report.failed_units == 3 and report.rows_written == 0 and len(report.failures) == 3
    assert store.rows("r") == []
    healthy = fake()
    report = await run_sweep(healthy, PROBLEMS[:3], config(strategies=["best_of_n:majority"]), store)
    assert report.failed_units == 0 and len(store.rows("r")) == 9


async def test_changed_sampling_settings_are_refused_before_any_call(store: ResultStore) -> None:
    await run_sweep(fake(), PROBLEMS[:1], config(strategies=["best_of_n:majority"]), store)
    policy = fake()
    changed = SweepConfig.make("r", "gsm8k", ["best_of_n:majority"], "1,2,4", max_tokens=99)
    with pytest.raises(ConfigurationError, match="max_tokens=64"):
        await run_sweep(policy, PROBLEMS[:1], changed, store)
    assert policy.calls == []


async def test_empty_or_duplicate_problems(store: ResultStore) -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        await run_sweep(fake(), [], config(), store)
    with pytest.raises(ConfigurationError, match="unique"):
        await run_sweep(fake(), [PROBLEMS[0], PROBLEMS[0]], config(), store)


def test_summary_has_wilson_intervals(store: ResultStore) -> None:
    asyncio.run(run_sweep(LogprobEndpoint(fake()), PROBLEMS, config(), store))
    curves = summarize(store.rows("r"))
    assert len(curves) == 6
    for c in curves:
        assert c.questions == QUESTIONS and 0.0 <= c.low <= c.accuracy <= c.high <= 1.0
        assert c.generations == c.budget


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("best_of_m:majority", "unknown family"),
        ("best_of_n:best", "unknown selection"),
        ("best_of_n:weighted:none", "needs a verifier"),
        ("best_of_n:weighted:oracle", "unknown verifier"),
        ("beam_search:4:confidence", "process verifier"),
        ("beam_search:0", "beam width"),
        ("revisions:hierarchical:confidence", "logprobs"),
        ("best_of_n:majority:judge:x", "expected"),
    ],
)
def test_bad_strategy_specs(spec: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse_strategy(spec)


def test_strategy_names() -> None:
    assert parse_strategy("best_of_n:weighted").name == "best_of_n:weighted:confidence"
    assert parse_strategy("best_of_n:majority:confidence").name == "best_of_n:majority"
    assert parse_strategy("best_of_n:naive", default_verifier="judge").name == "best_of_n:naive:judge"
    assert parse_strategy("beam_search").name == "beam_search:sqrt:judge"
    assert parse_strategy("revisions").name == "revisions:majority"


def test_config_validates_graphs_up_front() -> None:
    with pytest.raises(ConfigurationError, match="beam_width"):
        SweepConfig.make("r", "gsm8k", ["beam_search:4"], "2")
    with pytest.raises(ConfigurationError, match="run"):
        SweepConfig.make(" ", "gsm8k", ["best_of_n:majority"], "2")
    with pytest.raises(ConfigurationError, match="concurrency"):
        SweepConfig.make("r", "gsm8k", ["best_of_n:majority"], "2", concurrency=0)
