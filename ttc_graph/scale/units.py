"""Units that run away from the driver: the request that goes out (data only) and the outcome that comes back.

A sweep or a study hands a unit to a :class:`UnitRunner` instead of running it in place; the runner sends a
:class:`UnitRequest` to wherever the model is (a Ray actor next to a model server) and returns a :class:`UnitOutcome`
that the driver (:mod:`ttc_graph.eval.dataset_driver`) writes to its SQLite store, once. Where the unit runs,
:func:`execute` runs the executor registered for the unit's kind: the same code as the local path, given the
question's stored pool and finished keys as data, returning what it would write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError

if TYPE_CHECKING:  # eval imports this package, never the other way
    from ttc_graph.eval.store import ResultRow

__all__ = [
    "EXECUTORS",
    "UnitExecutor",
    "UnitOutcome",
    "UnitRequest",
    "UnitRunner",
    "execute",
    "executor_for",
    "register_executor",
]


@dataclass(frozen=True, slots=True)
class UnitRequest:
    """One unit as plain data (a config validated again where it runs; never a graph or a client).

    ``kind`` says whose code runs it (the executor registered for it): a sweep's, a study's or a spec run's
    (``ttc run SPEC --dataset``).
    ``strategy`` is the sweep strategy's name or the study template (None: the question's best-of-N pool); ``index``
    is the question's position in the study (its seeds); ``pool`` the question's stored samples and ``done`` its
    finished ``(strategy, budget, question_id)`` keys, as the driver's store holds them.
    """

    kind: str
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


UnitExecutor = Callable[[Endpoint, "UnitRequest"], Awaitable["UnitOutcome"]]
"""Runs one unit where it is sent (``await executor(policy, request)``)."""

EXECUTORS: dict[str, UnitExecutor] = {}
"""The executor of each unit kind, registered by the package whose code runs it: ``sweep`` by
:mod:`ttc_graph.eval.sweep`, ``spec`` by :mod:`ttc_graph.eval.spec_runs`, ``study`` by
:mod:`ttc_graph.study.runner` (this package imports none of them: they import it)."""


def register_executor(kind: str, executor: UnitExecutor) -> None:
    """Run units of ``kind`` with ``executor`` (a module-level function: it travels to Ray workers by reference)."""
    EXECUTORS[kind] = executor


def executor_for(kind: str, executors: Mapping[str, UnitExecutor] | None = None) -> UnitExecutor:
    """The executor of ``kind`` in ``executors`` (what a driver sent along), else in this process's registry."""
    found = (executors or {}).get(kind) or EXECUTORS.get(kind)
    if found is None:
        known = ", ".join(sorted({*EXECUTORS, *(executors or {})})) or "none registered"
        raise ConfigurationError(f"unit kind {kind!r}: no executor registered ({known})")
    return found


async def execute(
    policy: Endpoint, request: UnitRequest, executors: Mapping[str, UnitExecutor] | None = None
) -> UnitOutcome:
    """Run ``request`` with ``policy`` where this is called (a Ray actor or task) and return its outcome."""
    return await executor_for(request.kind, executors)(policy, request)
