"""The one driver of runs over a data set: plan the units, run them (here or on a runner), store each, report.

A sweep, a study and a spec run (``ttc run SPEC --dataset``) are each a :class:`DatasetJob`: it says which units
are left and how one unit runs (its rows and its question's pool come back as a
:class:`~ttc_graph.scale.units.UnitOutcome`, never written by the unit). The driver owns the rest: the run's
settings checked against the store, skipping what is done, the units in flight (the job's ``concurrency`` here, a
runner's ``slots`` elsewhere), writing each outcome in one transaction as it comes back (the single writer), the
counts, and a :class:`UnitEvent` per unit. A unit that fails with a :class:`TTCError` is reported and left for a
rerun; any other exception (or cancellation) stops the run, keeping what finished. A ``stop`` event set while it
runs drains it: no unit starts after it, the units in flight finish and are stored, the rest are left for a rerun.
A ``deadline`` drains it by the clock: a unit starts only if it is expected to finish by then (the longest wall time
of its strategy and budget's latest units in the store, or of the latest timed pool draws for a pool, so that few
overrun it; a kind never timed starts while the deadline is ahead), the next one in plan order that fits when the
first does not.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from ttc_graph.budget import policy_generations, policy_tokens
from ttc_graph.errors import TTCError
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.grading import grade
from ttc_graph.eval.store import ResultRow, ResultStore
from ttc_graph.scale.units import UnitOutcome, UnitRequest, UnitRunner

__all__ = [
    "DatasetJob",
    "DatasetReport",
    "DatasetUnit",
    "Key",
    "UnitEvent",
    "drive",
    "graded_row",
    "keys_of",
    "measured_pool_seconds",
    "measured_seconds",
    "outcome_of",
]

RECENT_UNITS = 10
"""Live rows of a (strategy, budget) whose wall times say how long the next one takes (:func:`measured_seconds`)."""

Key = tuple[str, int, str]
"""A finished ``(strategy, budget, question_id)`` of a run."""


@dataclass(frozen=True, slots=True)
class DatasetUnit:
    """One unit: a question's best-of-N pool (``strategy`` None: every best-of-N strategy and budget of it, from one
    set of draws) or one (``strategy``, ``budget``) run of it; ``index`` is the question's place in the run (seeds)."""

    problem: Problem
    index: int = 0
    strategy: str | None = None
    budget: int = 0

    @property
    def question_id(self) -> str:
        return self.problem.id

    @property
    def label(self) -> str:
        what = "best-of-N pool" if self.strategy is None else f"{self.strategy} b={self.budget}"
        return f"q{self.problem.id} {what}"


UnitT = TypeVar("UnitT", bound=DatasetUnit)


class DatasetJob(Protocol[UnitT]):
    """What a sweep, a study or a spec run supplies to :func:`drive`.

    ``run`` names the run in the store, ``settings`` what a resumed run must keep (None: not checked), and
    ``concurrency`` how many units run at once in this process. ``plan`` returns the units left, in run order, and
    how many units are already finished; ``run_here`` runs a unit in this process (reading, never writing,
    ``store``); ``request`` is the unit as data for a runner (None: it runs here even with a runner).
    """

    run: str
    concurrency: int

    @property
    def settings(self) -> Mapping[str, Any] | None: ...

    def plan(self, store: ResultStore, done: set[Key]) -> tuple[Sequence[UnitT], int]: ...

    async def run_here(self, unit: UnitT, store: ResultStore, done: set[Key]) -> UnitOutcome: ...

    def request(self, unit: UnitT, store: ResultStore, done: set[Key]) -> UnitRequest | None: ...


@dataclass(frozen=True, slots=True)
class UnitEvent:
    """Progress: ``plan`` (``total`` units to run, ``skipped`` already finished), then ``done`` or ``failed`` per
    unit with what it drew (``generations``, ``tokens``) and the ``rows`` it stored, or why it failed
    (``message``)."""

    kind: Literal["plan", "done", "failed"]
    label: str = ""
    total: int = 0
    skipped: int = 0
    generations: int = 0
    tokens: int = 0
    message: str = ""
    rows: tuple[ResultRow, ...] = ()


@dataclass(slots=True)
class DatasetReport:
    """What one call did. ``generations``/``tokens`` are what the units drew, failed units included; ``requests``,
    ``policy_generations`` and ``verifier_requests`` what reached the endpoints (counted by jobs that count them).
    ``not_started``: units left unstarted because the run was asked to stop (``drive``'s ``stop``) or none of them
    would have finished by its ``deadline``."""

    units: int = 0
    skipped: int = 0
    finished: int = 0
    failed: int = 0
    rows_written: int = 0
    rows_before: int = 0
    generations: int = 0
    tokens: int = 0
    requests: int = 0
    policy_generations: int = 0
    verifier_requests: int = 0
    seconds: float = 0.0
    not_started: int = 0
    failures: list[str] = field(default_factory=list)


def measured_seconds(
    rows: Iterable[ResultRow],
    recent: int = RECENT_UNITS,
    statistic: Callable[[Sequence[float]], float] = statistics.fmean,
) -> dict[tuple[str, int], float]:
    """Each (strategy, budget)'s ``statistic`` (the mean; ``max`` for a bound) of the wall seconds of its latest
    ``recent`` live rows (not reused, timed), in the store's order: how long such a unit takes now, beside the others
    in flight."""
    seen: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        if not r.reused and r.seconds > 0:
            seen[(r.strategy, r.budget)].append(r.seconds)
    return {key: statistic(times[-recent:]) for key, times in seen.items()}


def measured_pool_seconds(
    pools: Iterable[Sequence[Mapping[str, Any]]],
    recent: int = RECENT_UNITS,
    statistic: Callable[[Sequence[float]], float] = max,
) -> float | None:
    """The ``statistic`` (the longest; ``statistics.fmean`` for the mean) of the wall seconds of the latest ``recent``
    timed pool draws, ``pools`` in the store's order (None: none timed). A draw stores its wall time shared among its
    samples (each sample's ``seconds``), so a pool's timed samples add up to the draws that made it; samples read from
    a pool file carry no time."""
    walls = [math.fsum(s.get("seconds") or 0.0 for s in samples) for samples in pools]
    timed = [w for w in walls if w > 0]
    return statistic(timed[-recent:]) if timed else None


async def outcome_of(unit: Awaitable[UnitOutcome]) -> UnitOutcome:
    """``unit``'s outcome, a :class:`TTCError` it raises becoming the outcome's ``error`` (as a runner returns it)."""
    try:
        return await unit
    except TTCError as exc:
        return UnitOutcome(error=str(exc))


class _Driver(Generic[UnitT]):
    def __init__(
        self,
        job: DatasetJob[UnitT],
        store: ResultStore,
        runner: UnitRunner | None,
        progress: Callable[[UnitEvent], None],
        report: DatasetReport,
        stop: threading.Event | None = None,
        deadline: float | None = None,
    ) -> None:
        self.job, self.store, self.runner, self.progress, self.report = job, store, runner, progress, report
        self.stop = stop or threading.Event()
        self.deadline = deadline
        self.expected: dict[tuple[str | None, int], float] = {}  # a pool's key: (None, 0), as its unit's

    async def run(self) -> DatasetReport:
        t0 = time.monotonic()
        job, report = self.job, self.report
        if job.settings is not None:
            self.store.check_run(job.run, job.settings)
        done = self.store.done(job.run)
        report.rows_before = len(done)
        units, report.skipped = job.plan(self.store, done)
        report.units = len(units)
        self.progress(UnitEvent("plan", total=len(units), skipped=report.skipped))
        if self.deadline is not None:
            # the longest of each kind's latest 10: in the study's record (814 units) 34% of units ran longer than
            # their kind's latest mean, 6% longer than this
            self.expected = {k: s for k, s in measured_seconds(self.store.rows(job.run), statistic=max).items()}
            if (pool := measured_pool_seconds(self.store.pools(job.run).values())) is not None:
                self.expected[(None, 0)] = pool
        pending = list(units)

        async def worker() -> None:
            while (unit := self.take(pending)) is not None:
                await self.run_unit(unit, done)

        slots = job.concurrency if self.runner is None else self.runner.slots
        workers = [asyncio.create_task(worker()) for _ in range(min(max(1, slots), max(1, len(units))))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            report.seconds = time.monotonic() - t0
        report.not_started = len(pending)  # drained: left for a rerun
        return report

    def take(self, pending: list[UnitT]) -> UnitT | None:
        """The next unit to start (None: none may start now, nor later): the first in plan order, or with a
        deadline the first expected to finish by it."""
        if self.stop.is_set() or not pending:
            return None
        if self.deadline is None:
            return pending.pop(0)
        now = time.time()
        for i, unit in enumerate(pending):
            need = self.expected.get((unit.strategy, unit.budget), 0.0)
            if now + need <= self.deadline:
                return pending.pop(i)
        return None

    async def run_unit(self, unit: UnitT, done: set[Key]) -> None:
        request = None if self.runner is None else self.job.request(unit, self.store, done)
        if request is not None and self.runner is not None:
            outcome = await self.runner.run(request)
        else:
            outcome = await outcome_of(self.job.run_here(unit, self.store, done))
        pool = None if outcome.pool is None else (self.job.run, unit.question_id, outcome.pool)
        report = self.report
        report.rows_written += self.store.save(outcome.rows, pool=pool)
        report.generations += outcome.generations
        report.tokens += outcome.tokens
        report.requests += outcome.requests
        report.policy_generations += outcome.policy_generations
        report.verifier_requests += outcome.verifier_requests
        drawn, tokens = outcome.generations, outcome.tokens
        if outcome.error is not None:
            report.failed += 1
            report.failures.append(f"{unit.label}: {outcome.error}")
            self.progress(UnitEvent("failed", unit.label, generations=drawn, tokens=tokens, message=outcome.error))
            return
        report.finished += 1
        self.progress(UnitEvent("done", unit.label, generations=drawn, tokens=tokens, rows=tuple(outcome.rows)))


async def drive(
    job: DatasetJob[UnitT],
    store: ResultStore,
    *,
    runner: UnitRunner | None = None,
    progress: Callable[[UnitEvent], None] | None = None,
    report: DatasetReport | None = None,
    stop: threading.Event | None = None,
    deadline: float | None = None,
) -> DatasetReport:
    """Run every unit ``job`` plans that is not finished in ``store``, writing each outcome as it comes back; the
    counts go to ``report`` (a job's own subclass, say), which comes back.

    ``runner`` (e.g. :class:`ttc_graph.scale.RayUnits`) runs the units elsewhere, ``runner.slots`` at a time, with
    its own endpoints; this call stays the single writer of ``store``. Once ``stop`` is set (from a signal handler,
    another thread, or a task), no further unit starts: the ones in flight finish and are stored, and the report
    counts the rest as ``not_started``. ``deadline`` (a :func:`time.time` instant) starts only units expected to
    finish by then (by the longest time of their kind's latest units: see the module docstring); the rest are counted
    the same way.
    """
    driver = _Driver(job, store, runner, progress or (lambda event: None), report or DatasetReport(), stop, deadline)
    return await driver.run()


def graded_row(
    out: Mapping[str, Any],
    problem: Problem,
    *,
    run: str,
    strategy: str,
    budget: int,
    dataset: str,
    seconds: float,
    candidates: list[dict[str, Any]],
    details: dict[str, Any] | None = None,
    strict: bool = True,
) -> ResultRow:
    """A graph run's final state ``out`` as a row: its answer graded against ``problem``'s reference, the policy's
    generations and completion tokens read from its usage ledger. ``strict``: a run that produced no candidate
    because every request failed raises a :class:`TTCError` (the unit fails and is left for a rerun)."""
    if strict and not out.get("candidates") and out.get("stop_reason") == "error":
        raise TTCError("; ".join((out.get("errors") or ["every request failed"])[:2]))
    usage, answer, reference = out.get("usage") or {}, out.get("answer"), problem.reference
    return ResultRow(
        run, strategy, budget, problem.id, dataset, answer, reference, grade(dataset, answer, reference),
        policy_generations(usage), policy_tokens(usage), seconds, out.get("stop_reason"), candidates,
        details=details or {},
    )  # fmt: skip


def keys_of(done: Collection[Key], question_id: str) -> list[Key]:
    """The finished keys of one question (what a unit request carries)."""
    return [k for k in done if k[2] == question_id]
