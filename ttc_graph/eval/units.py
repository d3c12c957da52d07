"""A unit's private results store: seeded with the driver's stored pool where the unit runs, read back after it."""

from __future__ import annotations

from typing import Any

from ttc_graph.eval.store import ResultStore
from ttc_graph.scale.units import UnitOutcome, UnitRequest

__all__ = ["scratch_store", "take_outcome"]


def scratch_store(run: str, question_id: str, pool: list[dict[str, Any]]) -> ResultStore:
    """An in-memory results store holding the driver's stored pool of one question."""
    store = ResultStore(":memory:")
    if pool:
        store.save([], pool=(run, question_id, pool))
    return store


def take_outcome(store: ResultStore, run: str, request: UnitRequest, **counts: Any) -> UnitOutcome:
    """The rows and the (changed) pool a unit wrote into ``store``, closing it."""
    try:
        rows = store.rows(run)
        pools = store.pools(run) if request.strategy is None else {}
    finally:
        store.close()
    pool = pools.get(request.problem["id"])  # written by the unit, or the seed it left as it was
    return UnitOutcome(
        rows=rows, pool=None if pool is None or (request.pool and pool == request.pool) else pool, **counts
    )
