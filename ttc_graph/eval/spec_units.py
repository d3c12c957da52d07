"""``ttc run SPEC --dataset`` on a runner: each question is a unit, the spec travels as data, the driver writes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.eval.units import scratch_store, take_outcome
from ttc_graph.scale.replicas import EmbeddedServerSpec
from ttc_graph.scale.units import UnitOutcome, UnitRequest, UnitRunner, register_executor
from ttc_graph.specs.models import LocalEndpointSpec, OpenAIEndpointSpec

if TYPE_CHECKING:
    from ttc_graph.eval.datasets import Problem
    from ttc_graph.eval.store import ResultRow, ResultStore
    from ttc_graph.specs.models import StrategySpec

__all__ = ["execute_spec_unit", "replica_of", "run_spec_on"]


def replica_of(spec: StrategySpec) -> OpenAIEndpointSpec | EmbeddedServerSpec:
    """What each replica serves for ``spec``'s policy: its URL, or its embedded model (``env``: ``TTC_BASE_URL``,
    else the embedded model)."""
    policy = spec.policy
    if isinstance(policy, OpenAIEndpointSpec):
        return policy
    if isinstance(policy, LocalEndpointSpec):
        return EmbeddedServerSpec(model=policy.model, parallel=policy.parallel)
    url = os.environ.get("TTC_BASE_URL")
    if url:
        return OpenAIEndpointSpec(base_url=url, model=os.environ.get("TTC_MODEL", "default"), api_key_env="TTC_API_KEY")
    return EmbeddedServerSpec(model=os.environ.get("TTC_LOCAL_MODEL") or None)


async def execute_spec_unit(policy: Endpoint, request: UnitRequest) -> UnitOutcome:
    """One question of a spec run, with :func:`~ttc_graph.eval.spec_runs.run_graph_over_dataset` (the local code) on
    the spec's graph built here with ``policy``; the row comes back for the driver to write."""
    from ttc_graph.eval.datasets import Problem
    from ttc_graph.eval.spec_runs import run_graph_over_dataset
    from ttc_graph.specs import build_graph, parse_spec

    cfg = request.config
    graph = build_graph(parse_spec(cfg["spec"], cfg["strategy"]), policy=policy).compile()
    store = scratch_store(cfg["run"], request.problem["id"], [])
    await run_graph_over_dataset(
        graph, strategy=cfg["strategy"], budget=cfg["budget"], problems=[Problem(**request.problem)],
        dataset=cfg["dataset"], store=store, run=cfg["run"], concurrency=1,
    )  # fmt: skip
    return take_outcome(store, cfg["run"], request)


async def run_spec_on(
    runner: UnitRunner,
    spec: StrategySpec,
    *,
    strategy: str,
    budget: int,
    problems: Sequence[Problem],
    dataset: str,
    store: ResultStore,
    run: str,
    on_done: Callable[[ResultRow], None] | None = None,
) -> list[ResultRow]:
    """:func:`~ttc_graph.eval.spec_runs.run_graph_over_dataset` on ``runner``: every question not yet in ``store``
    is one unit, ``runner.slots`` at a time, each written here as it returns; all rows of the slice come back."""
    done = {qid for s, b, qid in store.done(run) if s == strategy and b == budget}
    config: dict[str, Any] = {
        "spec": spec.model_dump(mode="json"), "strategy": strategy, "budget": budget, "dataset": dataset, "run": run,
    }  # fmt: skip
    slots = asyncio.Semaphore(max(1, runner.slots))

    async def one(problem: Problem) -> None:
        async with slots:
            outcome = await runner.run(UnitRequest("spec", f"q{problem.id} {strategy}", config, asdict(problem)))
        store.save(outcome.rows)
        for row in outcome.rows:
            if on_done:
                on_done(row)

    await asyncio.gather(*(one(p) for p in problems if p.id not in done))
    wanted = {p.id for p in problems}
    return [r for r in store.rows(run) if r.strategy == strategy and r.budget == budget and r.question_id in wanted]


register_executor("spec", execute_spec_unit)
