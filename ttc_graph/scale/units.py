"""Units that run away from the driver: the request that goes out (data only) and the outcome that comes back.

A sweep or a study hands a unit to a :class:`UnitRunner` instead of running it in place; the runner sends a
:class:`UnitRequest` to wherever the model is (a Ray actor next to a model server) and returns a :class:`UnitOutcome`
that the driver writes to its SQLite store, once. Where the unit runs, :func:`execute` runs the same code as the local
path against a private in-memory store seeded with the driver's stored pool, and reads back what it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError

if TYPE_CHECKING:  # the results store imports the eval package, which imports this module
    from ttc_graph.eval.store import ResultRow, ResultStore

__all__ = ["UnitOutcome", "UnitRequest", "UnitRunner", "execute", "scratch_store", "take_outcome"]


@dataclass(frozen=True, slots=True)
class UnitRequest:
    """One unit as plain data (a config validated again where it runs; never a graph or a client).

    ``kind`` says whose code runs it: a sweep's, a study's or a spec run's (``ttc run SPEC --dataset``).
    ``strategy`` is the sweep strategy's name or the study template (None: the question's best-of-N pool); ``index``
    is the question's position in the study (its seeds); ``pool`` the question's stored samples and ``done`` its
    finished ``(strategy, budget, question_id)`` keys, as the driver's store holds them.
    """

    kind: Literal["sweep", "study", "spec"]
    label: str
    config: dict[str, Any]
    problem: dict[str, str]
    strategy: str | None = None
    budget: int = 0
    index: int = 0
    pool: list[dict[str, Any]] = field(default_factory=list)
    done: list[tuple[str, int, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UnitOutcome:
    """What a unit produced: rows and the question's pool to write (in one transaction), or why it failed.

    A failed unit may still carry rows and a pool (a pool that drew fewer samples than asked keeps what it drew).
    ``generations``/``tokens`` are what the unit drew (progress); ``requests``, ``policy_generations`` and
    ``verifier_requests`` are what reached the endpoints.
    """

    rows: list[ResultRow] = field(default_factory=list)
    pool: list[dict[str, Any]] | None = None
    generations: int = 0
    tokens: int = 0
    requests: int = 0
    policy_generations: int = 0
    verifier_requests: int = 0
    error: str | None = None


class UnitRunner(Protocol):
    """Runs units elsewhere; ``slots`` is how many units the driver keeps in flight."""

    @property
    def slots(self) -> int: ...

    async def run(self, request: UnitRequest) -> UnitOutcome: ...


def scratch_store(run: str, question_id: str, pool: list[dict[str, Any]]) -> ResultStore:
    """An in-memory results store holding the driver's stored pool of one question."""
    from ttc_graph.eval.store import ResultStore

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


async def execute(policy: Endpoint, request: UnitRequest) -> UnitOutcome:
    """Run ``request`` with ``policy`` where this is called (a Ray actor or task) and return its outcome."""
    if request.kind == "sweep":
        from ttc_graph.eval.sweep import execute_unit
    elif request.kind == "study":
        from ttc_graph.study.runner import execute_unit
    elif request.kind == "spec":
        from ttc_graph.scale.spec_units import execute_spec_unit as execute_unit
    else:
        raise ConfigurationError(f"unit {request.label!r}: unknown kind {request.kind!r}")
    return await execute_unit(policy, request)
