"""``ttc run SPEC --dataset`` on a runner: what each replica serves, and the run with its questions sent as units."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ttc_graph.eval.spec_runs import run_graph_over_dataset
from ttc_graph.scale.replicas import EmbeddedServerSpec
from ttc_graph.scale.units import UnitRunner
from ttc_graph.specs.models import LocalEndpointSpec, OpenAIEndpointSpec

if TYPE_CHECKING:
    from ttc_graph.eval.store import ResultRow
    from ttc_graph.specs.models import StrategySpec

__all__ = ["replica_of", "run_spec_on"]


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


async def run_spec_on(runner: UnitRunner, spec: StrategySpec, **options: Any) -> list[ResultRow]:
    """:func:`~ttc_graph.eval.spec_runs.run_graph_over_dataset` on ``runner`` (same ``options``): every question not
    yet in the store is one unit, ``runner.slots`` at a time, each written here as it returns."""
    return await run_graph_over_dataset(None, runner=runner, spec=spec, **options)
