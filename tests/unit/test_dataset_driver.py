"""The one dataset driver with a toy job: skip what is done, run the rest, store each outcome, count and report;
and the one pool-sample schema: stored samples read and written back as each kind wrote them."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ttc_graph.errors import TTCError
from ttc_graph.eval.dataset_driver import (
    DatasetReport,
    DatasetUnit,
    UnitEvent,
    drive,
    measured_pool_seconds,
    measured_seconds,
)
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.pool_samples import PoolSample, pool_candidate, read_pool, write_pool
from ttc_graph.eval.store import ResultRow, ResultStore
from ttc_graph.scale.units import UnitOutcome, UnitRequest
from ttc_graph.selection import select_answer, subset_picks


@dataclass(frozen=True)
class Unit:
    question_id: str

    @property
    def label(self) -> str:
        return f"q{self.question_id}"


def row(qid: str) -> ResultRow:
    return ResultRow("r", "toy", 1, qid, "gsm8k", "2", "2", True, 1, 5, 0.0, "complete", [])


@dataclass
class Toy:
    """Units q0..q4; q3 fails (a TTCError here, an error outcome from a runner) after storing its pool."""

    run: str = "r"
    concurrency: int = 2
    running: int = 0
    most: int = 0
    requests: list[str] = field(default_factory=list)

    @property
    def settings(self) -> dict[str, int]:
        return {"seed": 1}

    def plan(self, store: ResultStore, done: set[tuple[str, int, str]]) -> tuple[list[Unit], int]:
        units = [Unit(str(i)) for i in range(5) if ("toy", 1, str(i)) not in done]
        return units, 5 - len(units)

    async def run_here(self, unit: Unit, store: ResultStore, done: set[tuple[str, int, str]]) -> UnitOutcome:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        if unit.question_id == "3":
            raise TTCError("scripted outage")
        return UnitOutcome([row(unit.question_id)], pool=[{"answer": "2"}], generations=2, tokens=10)

    def request(self, unit: Unit, store: ResultStore, done: set[tuple[str, int, str]]) -> UnitRequest | None:
        if unit.question_id == "0":
            return None  # runs here even with a runner
        self.requests.append(unit.label)
        return UnitRequest("toy", unit.label, {}, {"id": unit.question_id})


class Runner:
    slots = 3

    async def run(self, request: UnitRequest) -> UnitOutcome:
        sent = pickle.loads(pickle.dumps(request))
        qid = sent.problem["id"]
        if qid == "3":
            return UnitOutcome(pool=[{"answer": None}], generations=1, error="scripted outage")
        return UnitOutcome([row(qid)], generations=2, tokens=10)


@pytest.mark.parametrize("elsewhere", [False, True])
async def test_the_driver_skips_runs_stores_and_reports(tmp_path: Path, elsewhere: bool) -> None:
    events: list[UnitEvent] = []
    job = Toy()
    runner = Runner() if elsewhere else None
    with ResultStore(tmp_path / "toy.sqlite") as store:
        store.save([row("1")])
        report = await drive(job, store, runner=runner, progress=events.append)
        assert store.done("r") == {("toy", 1, q) for q in ("0", "1", "2", "4")}
        assert ("3" in store.pools("r")) is elsewhere  # a failed unit's pool is written with it
        again = await drive(job, store, runner=runner)
    assert isinstance(report, DatasetReport)
    assert (report.units, report.skipped, report.finished, report.failed) == (4, 1, 3, 1)
    assert (report.rows_before, report.rows_written, report.tokens) == (1, 3, 30)
    assert report.failures == ["q3: scripted outage"]
    assert events[0] == UnitEvent("plan", total=4, skipped=1)
    assert sorted(e.label for e in events if e.kind == "done") == ["q0", "q2", "q4"]
    assert [e.rows[0].question_id for e in events if e.label == "q2"] == ["2"]
    assert [e.message for e in events if e.kind == "failed"] == ["scripted outage"]
    assert (again.units, again.skipped) == (1, 4)  # only the failed unit is left
    if elsewhere:
        assert "q0" not in job.requests and len(job.requests) == 4
    else:
        assert job.most == 2  # the job's concurrency


async def test_a_stop_drains_the_run_the_units_in_flight_finish_and_are_stored(tmp_path: Path) -> None:
    """Stop set while q0 and q1 run (two at a time): both finish and are stored, q2-q4 never start; a rerun
    does the rest."""
    stop = threading.Event()
    started: list[str] = []

    class Stopping(Toy):
        async def run_here(self, unit: Unit, store: ResultStore, done: set[tuple[str, int, str]]) -> UnitOutcome:
            started.append(unit.question_id)
            if len(started) == 2:
                stop.set()  # as a signal handler does, while two units are in flight
            await asyncio.sleep(0.01)
            return UnitOutcome([row(unit.question_id)], generations=1, tokens=5)

    with ResultStore(tmp_path / "toy.sqlite") as store:
        report = await drive(Stopping(), store, stop=stop)
        assert started == ["0", "1"] and store.done("r") == {("toy", 1, "0"), ("toy", 1, "1")}
        assert (report.finished, report.not_started, report.rows_written) == (2, 3, 2)
        rest = await drive(Stopping(), store)
    assert (rest.skipped, rest.finished, rest.not_started) == (2, 3, 0)


def timed(strategy: str, qid: str, seconds: float, reused: bool = False) -> ResultRow:
    return ResultRow("r", strategy, 1, qid, "gsm8k", "2", "2", True, 1, 5, seconds, "complete", [], reused=reused)


def test_measured_seconds_are_the_mean_of_each_kinds_latest_live_units() -> None:
    rows = [timed("long", str(i), 10_000.0) for i in range(5)] + [timed("long", str(i), 100.0) for i in range(5, 15)]
    rows += [timed("short", "0", 2.0), timed("short", "1", 4.0), timed("short", "2", 0.0),  # untimed
             timed("short", "3", 500.0, reused=True)]  # fmt: skip
    assert measured_seconds(rows) == {("long", 1): 100.0, ("short", 1): 3.0}  # the latest 10 of "long"
    assert measured_seconds(rows, statistic=max) == {("long", 1): 100.0, ("short", 1): 4.0}


@dataclass
class Timed(Toy):
    """Units of kinds whose stored rows took 1,000 s ("long"), 1 s ("short"), none yet ("new"), and a pool draw."""

    started: list[str] = field(default_factory=list)

    def plan(self, store: ResultStore, done: set[tuple[str, int, str]]) -> tuple[list[DatasetUnit], int]:
        kinds = [("long", 1), ("short", 1), (None, 0), ("new", 1)]
        return [DatasetUnit(Problem(f"{i}", "?", "2"), i, s, b) for i, (s, b) in enumerate(kinds)], 0

    async def run_here(self, unit: Unit, store: ResultStore, done: set[tuple[str, int, str]]) -> UnitOutcome:
        self.started.append(unit.label)
        return UnitOutcome([], generations=1, tokens=5)


async def test_a_deadline_starts_only_units_expected_to_finish_by_it(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "toy.sqlite") as store:
        store.save([timed("long", "9", 1000.0), timed("short", "9", 1.0)])
        ahead = Timed()
        report = await drive(ahead, store, deadline=time.time() + 300)  # the long kind's 1,000 s would end past it
        assert sorted(ahead.started) == ["q1 short b=1", "q2 best-of-N pool", "q3 new b=1"]
        assert (report.finished, report.not_started) == (3, 1)
        past = Timed()
        report = await drive(past, store, deadline=time.time() - 1)
        assert past.started == [] and (report.finished, report.not_started) == (0, 4)
        unbounded = Timed()
        assert (await drive(unbounded, store)).finished == 4 and unbounded.started[0] == "q0 long b=1"


async def test_a_deadline_bounds_a_unit_by_its_kinds_longest_recent_time(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "toy.sqlite") as store:
        # "short" units took 1 s, but one of its latest 10 took 400 s: its mean (40.9 s) fits in 300 s, its longest not
        store.save([timed("short", str(i), 1.0) for i in range(9)] + [timed("short", "9", 400.0)])
        store.save([timed("long", "9", 10.0)])
        bounded = Timed()
        report = await drive(bounded, store, deadline=time.time() + 300)
        assert sorted(bounded.started) == ["q0 long b=1", "q2 best-of-N pool", "q3 new b=1"]
        assert report.not_started == 1


def drawn(seconds: float, k: int, filed: int = 0) -> list[dict[str, object]]:
    """A pool of ``filed`` samples read from a pool file (untimed), then ``k`` drawn live in ``seconds``."""
    return [{"text": "4"}] * filed + [{"text": "4", "seconds": seconds / k, "source": "live"}] * k


def test_measured_pool_seconds_add_up_each_draws_samples() -> None:
    pools = [drawn(900.0, 32), drawn(300.0, 16, filed=16), [{"text": "4"}] * 16]  # the last: read from a file
    assert measured_pool_seconds(pools) == pytest.approx(900.0)
    assert measured_pool_seconds(pools, statistic=min) == pytest.approx(300.0)
    assert measured_pool_seconds(pools[1:], recent=1) == pytest.approx(300.0)  # the latest timed draw only
    assert measured_pool_seconds([[{"text": "4"}]]) is None


async def test_a_deadline_bounds_a_pool_draw_by_the_longest_recent_draw(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "toy.sqlite") as store:
        store.save([timed("long", "9", 10.0), timed("short", "9", 1.0)])
        store.save([], pool=("r", "8", drawn(200.0, 32)))
        fits = Timed()
        await drive(fits, store, deadline=time.time() + 300)
        assert "q2 best-of-N pool" in fits.started
        store.save([], pool=("r", "9", drawn(400.0, 16, filed=16)))  # a later draw took 400 s: it would end past
        bounded = Timed()
        report = await drive(bounded, store, deadline=time.time() + 300)
        assert sorted(bounded.started) == ["q0 long b=1", "q1 short b=1", "q3 new b=1"]
        assert report.not_started == 1


def test_stop_by_reads_a_clock_time_today_or_an_iso_date_and_time() -> None:
    import datetime

    from ttc_graph.cli.common import stop_instant
    from ttc_graph.errors import ConfigurationError

    utc = datetime.UTC
    now = datetime.datetime(2026, 12, 7, 18, 0, tzinfo=utc)
    assert stop_instant("19:30", now) == datetime.datetime(2026, 12, 7, 19, 30, tzinfo=utc).timestamp()
    assert stop_instant("09:00", now) == datetime.datetime(2026, 12, 8, 9, 0, tzinfo=utc).timestamp()  # today's passed
    assert stop_instant("2026-12-08T01:15+00:00", now) == datetime.datetime(2026, 12, 8, 1, 15, tzinfo=utc).timestamp()
    assert stop_instant(None, now) is None
    with pytest.raises(ConfigurationError, match="stop-by: 'soon' is neither"):
        stop_instant("soon", now)


def test_the_first_signal_asks_a_run_to_drain_the_second_stops_it() -> None:
    from ttc_graph.cli.common import drain_on_signal

    before = signal.getsignal(signal.SIGTERM)
    with drain_on_signal() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.is_set()  # nothing raised: the units in flight go on
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_study_sample_reads_its_answer_from_its_text_and_keeps_its_keys() -> None:
    stored = {"text": "So the answer is \\boxed{12}.", "tokens": 9, "mean_lp": -0.25, "source": "pool.jsonl"}
    (sample,) = read_pool([stored])
    assert sample.answer == "12" and sample.score is None
    cand = pool_candidate(0, stored)
    assert (cand["id"], cand["answer"], cand["token_logprobs"], cand["finish_reason"]) == ("s0", "12", [-0.25], None)
    assert write_pool([sample.with_score(0.5)]) == [{**stored, "answer": "12", "score": 0.5}]
    assert read_pool(write_pool([sample])) == [sample]


def test_a_sweep_sample_keeps_its_stored_answer_and_scores_per_verifier() -> None:
    stored = {"text": "cut off at 12", "answer": None, "tokens": 3, "finish_reason": "length", "correct": False,
              "seconds": 0.1, "scores": {"confidence": 0.7}, "token_logprobs": [-0.1, -0.2]}  # fmt: skip
    (sample,) = read_pool([stored])
    assert sample.answer is None and sample.scored_by("confidence") == 0.7 and sample.scored_by("judge") is None
    assert write_pool([sample]) == [stored]
    scored = sample.with_score(0.2, "judge")
    assert scored.scores == {"confidence": 0.7, "judge": 0.2} and sample.scores == {"confidence": 0.7}
    cand = pool_candidate(4, scored, "judge")
    assert (cand["id"], cand["score"], cand["token_logprobs"], cand["parsable"]) == ("s4", 0.2, [-0.1, -0.2], False)


def test_subset_picks_are_select_answers() -> None:
    import itertools

    import numpy as np

    samples = [PoolSample(a, s) for a, s in [("7", 0.1), ("3", 0.6), ("7", 0.1), ("9", 0.95), ("3", 0.6), (None, None)]]
    groups = {"7": 0, "3": 1, "9": 2}
    for how in ("majority", "weighted", "naive"):
        for b in (1, 2, 3, 6):
            subsets = np.array(list(itertools.combinations(range(len(samples)), b)))
            picks = subset_picks(
                [groups.get(s.answer or "") for s in samples], [s.score for s in samples], subsets, how
            )
            for subset, pick in zip(subsets, picks, strict=True):
                chosen = select_answer([pool_candidate(i, samples[i]) for i in subset], how).candidate_id  # type: ignore[arg-type]
                assert (None if pick < 0 else f"s{pick}") == chosen
