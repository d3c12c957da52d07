"""``ttc run SPEC --dataset`` on a runner: each question is a unit, the spec travels as data, the driver writes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.eval.dataset_driver import outcome_of
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
    """One question of a spec run, answered by :class:`~ttc_graph.eval.spec_runs.SpecRun` (the local code) with the
    spec's graph built here on ``policy``; the row comes back for the driver to write."""
    from ttc_graph.eval.datasets import Problem
    from ttc_graph.eval.spec_runs import SpecRun
    from ttc_graph.specs import build_graph, parse_spec

    cfg = request.config
    graph = build_graph(parse_spec(cfg["spec"], cfg["strategy"]), policy=policy).compile()
    job = SpecRun(cfg["strategy"], cfg["budget"], [], cfg["dataset"], cfg["run"], graph=graph)
    return await outcome_of(job.answer(Problem(**request.problem)))


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
    from ttc_graph.eval.spec_runs import SpecRun, run_spec_job

    job = SpecRun(strategy, budget, problems, dataset, run, spec=spec.model_dump(mode="json"))
    return await run_spec_job(job, store, runner=runner, on_done=on_done)


register_executor("spec", execute_spec_unit)
