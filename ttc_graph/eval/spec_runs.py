"""Run one strategy spec over a labelled data set, each finished question saved at once (resumable).

A spec run is a :class:`~ttc_graph.eval.dataset_driver.DatasetJob` whose units are the questions not yet stored
for (``run``, ``strategy``, ``budget``): here its graph answers them; on a runner the spec travels as data and the
graph is built where the model is (:mod:`ttc_graph.eval.spec_units`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import TTCError
from ttc_graph.eval.dataset_driver import DatasetUnit, Key, UnitEvent, drive, graded_row, outcome_of
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.store import ResultRow, ResultStore
from ttc_graph.scale.units import UnitOutcome, UnitRequest, UnitRunner, register_executor
from ttc_graph.specs.build import build_graph
from ttc_graph.specs.io import parse_spec

if TYPE_CHECKING:
    from ttc_graph.specs.models import StrategySpec

__all__ = ["SpecRun", "execute_spec_unit", "run_graph_over_dataset"]


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

    def plan(self, store: ResultStore, done: set[Key]) -> tuple[list[DatasetUnit], int]:
        todo = [
            DatasetUnit(p, 0, self.strategy, self.budget)
            for p in self.problems
            if (self.strategy, self.budget, p.id) not in done
        ]
        return todo, len(self.problems) - len(todo)

    def request(self, unit: DatasetUnit, store: ResultStore, done: set[Key]) -> UnitRequest:
        config = {"spec": self.spec, "strategy": self.strategy, "budget": self.budget, "dataset": self.dataset,
                  "run": self.run}  # fmt: skip
        return UnitRequest("spec", unit.label, config, asdict(unit.problem))

    async def run_here(self, unit: DatasetUnit, store: ResultStore, done: set[Key]) -> UnitOutcome:
        return await self.answer(unit.problem)

    async def answer(self, problem: Problem) -> UnitOutcome:
        """The graph's answer to ``problem``, graded; a row's ``generations`` and ``tokens`` are the policy's (its
        samples and their completion tokens), as in a sweep."""
        t0 = time.perf_counter()
        out = await self.graph.ainvoke({"question": problem.question})
        seconds = time.perf_counter() - t0
        candidates = [{k: c.get(k) for k in ("id", "answer", "score", "tokens")} for c in out.get("candidates", [])]
        row = graded_row(
            out, problem, run=self.run, strategy=self.strategy, budget=self.budget, dataset=self.dataset,
            seconds=seconds, candidates=candidates, details={"usage": out.get("usage", {})}, strict=False,
        )  # fmt: skip
        return UnitOutcome([row], generations=row.generations, tokens=row.tokens)


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
    runner: UnitRunner | None = None,
    spec: StrategySpec | None = None,
) -> list[ResultRow]:
    """Answer every problem not yet in ``store`` for (``run``, ``strategy``, ``budget``) with ``graph``, at most
    ``concurrency`` at once, or on ``runner`` (``runner.slots`` at a time; ``spec`` builds the graph there); all
    rows of the slice come back. A question that fails is left for a rerun and raised as a :class:`TTCError` once
    the others finished."""

    def progress(event: UnitEvent) -> None:
        for row in event.rows:
            if on_done:
                on_done(row)

    data = None if spec is None else spec.model_dump(mode="json")
    job = SpecRun(strategy, budget, problems, dataset, run, graph, data, max(1, concurrency))
    report = await drive(job, store, runner=runner, progress=progress)
    if report.failures:
        raise TTCError(f"{report.failed} question(s) failed, rerun to retry: {'; '.join(report.failures[:3])}")
    wanted = {p.id for p in problems}
    return [r for r in store.rows(run) if r.strategy == strategy and r.budget == budget and r.question_id in wanted]


async def execute_spec_unit(policy: Endpoint, request: UnitRequest) -> UnitOutcome:
    """One question of a spec run, answered by :class:`SpecRun` (the local code) with the spec's graph built here on
    ``policy``; the row comes back for the driver to write."""
    cfg = request.config
    graph = build_graph(parse_spec(cfg["spec"], cfg["strategy"]), policy=policy).compile()
    job = SpecRun(cfg["strategy"], cfg["budget"], [], cfg["dataset"], cfg["run"], graph)
    return await outcome_of(job.answer(Problem(**request.problem)))


register_executor("spec", execute_spec_unit)
