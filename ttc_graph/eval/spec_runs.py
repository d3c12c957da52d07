"""Run one strategy spec over a labelled data set, each finished question saved at once (resumable).

A spec run is a :class:`~ttc_graph.eval.dataset_driver.DatasetJob` whose units are the questions not yet stored
for (``run``, ``strategy``, ``budget``): here its graph answers them; on a runner
(:func:`~ttc_graph.eval.spec_units.run_spec_on`) the spec travels as data and the graph is built where the model is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ttc_graph.errors import TTCError
from ttc_graph.eval.dataset_driver import Key, UnitEvent, drive, graded_row
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.store import ResultRow, ResultStore
from ttc_graph.scale.units import UnitOutcome, UnitRequest, UnitRunner

__all__ = ["SpecRun", "run_graph_over_dataset", "run_spec_job"]


@dataclass(frozen=True, slots=True)
class _Question:
    problem: Problem
    strategy: str

    @property
    def question_id(self) -> str:
        return self.problem.id

    @property
    def label(self) -> str:
        return f"q{self.problem.id} {self.strategy}"


@dataclass(slots=True)
class SpecRun:
    """A spec run as a job: ``graph`` answers each question here; ``spec`` (its JSON) is what a runner receives."""

    strategy: str
    budget: int
    problems: Sequence[Problem]
    dataset: str
    run: str
    graph: Any = None
    spec: dict[str, Any] | None = None
    concurrency: int = 2

    @property
    def settings(self) -> None:
        return None

    def plan(self, store: ResultStore, done: set[Key]) -> tuple[list[_Question], int]:
        todo = [_Question(p, self.strategy) for p in self.problems if (self.strategy, self.budget, p.id) not in done]
        return todo, len(self.problems) - len(todo)

    def request(self, unit: _Question, store: ResultStore, done: set[Key]) -> UnitRequest:
        config = {"spec": self.spec, "strategy": self.strategy, "budget": self.budget, "dataset": self.dataset,
                  "run": self.run}  # fmt: skip
        return UnitRequest("spec", unit.label, config, asdict(unit.problem))

    async def run_here(self, unit: _Question, store: ResultStore, done: set[Key]) -> UnitOutcome:
        return await self.answer(unit.problem)

    async def answer(self, problem: Problem) -> UnitOutcome:
        """The graph's answer to ``problem``, graded; a row's ``generations`` and ``tokens`` are the policy's (its
        samples and their completion tokens), as in a sweep."""
        t0 = time.perf_counter()
        out = await self.graph.ainvoke({"question": problem.question})
        seconds = time.perf_counter() - t0
        candidates = [{k: c.get(k) for k in ("id", "answer", "score", "tokens")} for c in out.get("candidates", [])]
        where = {"run": self.run, "strategy": self.strategy, "budget": self.budget, "dataset": self.dataset}
        details = {"usage": out.get("usage", {})}
        row = graded_row(out, problem, seconds=seconds, candidates=candidates, details=details, strict=False, **where)
        return UnitOutcome([row], generations=row.generations, tokens=row.tokens)


async def run_spec_job(
    job: SpecRun,
    store: ResultStore,
    *,
    runner: UnitRunner | None = None,
    on_done: Callable[[ResultRow], None] | None = None,
) -> list[ResultRow]:
    """Answer every question of ``job`` not yet in ``store`` (here, or on ``runner``); all rows of the slice come
    back. A question that fails is left for a rerun and raised as a :class:`TTCError` once the others finished."""

    def progress(event: UnitEvent) -> None:
        for row in event.rows:
            if on_done:
                on_done(row)

    report = await drive(job, store, runner=runner, progress=progress)
    if report.failures:
        raise TTCError(f"{report.failed} question(s) failed, rerun to retry: {'; '.join(report.failures[:3])}")
    wanted = {p.id for p in job.problems}
    rows = store.rows(job.run)
    return [r for r in rows if r.strategy == job.strategy and r.budget == job.budget and r.question_id in wanted]


async def run_graph_over_dataset(
    graph: Any,
    *,
    strategy: str,
    budget: int,
    problems: Sequence[Problem],
    dataset: str,
    store: ResultStore,
    run: str,
    concurrency: int = 2,
    on_done: Callable[[ResultRow], None] | None = None,
) -> list[ResultRow]:
    """Answer every problem not yet in ``store`` for (``run``, ``strategy``, ``budget``) with ``graph``, at most
    ``concurrency`` at once; return all rows of the slice."""
    job = SpecRun(strategy, budget, problems, dataset, run, graph=graph, concurrency=max(1, concurrency))
    return await run_spec_job(job, store, on_done=on_done)
