"""A per-task hook every upstream request passes: admitted before it is sent, told its outcome after.

A caller that bounds what a run may send (``ttc serve``'s run allowance) installs a :class:`RequestGate` with
:func:`install_gate` in the task that runs the graph; every request an endpoint sends from that task or the
tasks it starts (a strategy's nodes) calls :func:`gate_admit` first and :func:`gate_settle` after. Without a gate
both do nothing.
"""

from __future__ import annotations

import contextvars
from typing import Protocol

from ttc_graph.usage import RequestUsage

__all__ = ["RequestGate", "current_gate", "gate_admit", "gate_settle", "install_gate"]


class RequestGate(Protocol):
    async def admit(self, requests: int) -> None:
        """Wait until ``requests`` may be sent, or raise an :class:`~ttc_graph.errors.EndpointError` to refuse."""

    def settle(self, usage: RequestUsage | None, error: BaseException | None = None) -> None:
        """Record what an admitted request cost, and how it failed if it did."""


_GATE: contextvars.ContextVar[RequestGate | None] = contextvars.ContextVar("ttc_request_gate", default=None)


def install_gate(gate: RequestGate | None) -> None:
    """Make ``gate`` admit every request of the current task and of the tasks it starts."""
    _GATE.set(gate)


def current_gate() -> RequestGate | None:
    return _GATE.get()


async def gate_admit(requests: int = 1) -> RequestGate | None:
    """Admit ``requests`` through the current gate (it may wait or raise); the gate to settle them with."""
    gate = _GATE.get()
    if gate is not None:
        await gate.admit(requests)
    return gate


def gate_settle(gate: RequestGate | None, usage: RequestUsage | None, error: BaseException | None = None) -> None:
    if gate is not None:
        gate.settle(usage, error)
