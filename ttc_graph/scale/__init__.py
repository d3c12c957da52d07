"""Scale-out: sweeps and studies on a Ray cluster (the driver stays the single writer), durable runs on Postgres.

Ray and the Postgres drivers are optional (``pip install 'ttc-graph[ray]'``, ``'ttc-graph[postgres]'``) and are
imported only when used. See ``docs/scaling.md`` for the layout on many machines.
"""

from ttc_graph.scale.durable import (
    CheckpointStoreError,
    default_thread,
    postgres_checkpointer,
    run_durable,
    solve_durable,
)
from ttc_graph.scale.ray_runner import AUTO, LOCAL, ClusterError, RayUnits, check_address, connect_ray
from ttc_graph.scale.replicas import EmbeddedServerSpec, ReplicaSpec, open_replica, parse_replica
from ttc_graph.scale.units import UnitOutcome, UnitRequest, UnitRunner, execute

__all__ = [
    "AUTO",
    "LOCAL",
    "CheckpointStoreError",
    "ClusterError",
    "EmbeddedServerSpec",
    "RayUnits",
    "ReplicaSpec",
    "UnitOutcome",
    "UnitRequest",
    "UnitRunner",
    "check_address",
    "connect_ray",
    "default_thread",
    "execute",
    "open_replica",
    "parse_replica",
    "postgres_checkpointer",
    "run_durable",
    "solve_durable",
]
