"""Verifier calls bounded in time: by the verifier's own per-call ``timeout`` and by the run's deadline.

Every place a run scores solutions goes through :func:`verify_within`. A call that outlasts its bound is
cancelled (an async verifier) or abandoned to its worker thread (a sync function in the bounded pool of
:mod:`ttc_graph.verifiers.function`), and its items come back unscored with the reason, so the run goes on and
keeps the samples it already paid for.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ttc_graph.budget import Budget
from ttc_graph.errors import ConfigurationError
from ttc_graph.verifiers.base import Score, VerificationResult, Verifier, VerifyItem

__all__ = ["POLL_SECONDS", "check_timeout", "run_deadline", "run_until", "unscored", "verify_within"]

T = TypeVar("T")

POLL_SECONDS = 0.1
"""How often a waiting call re-reads the clock: a deadline holds to within this much."""


def check_timeout(value: object, what: str = "timeout") -> float | None:
    """``value`` as a per-call timeout in seconds: None (no limit) or a finite number > 0 (not a bool)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{what}: expected a finite number of seconds > 0 or None, got {value!r}")
    return float(value)


def run_deadline(budget: Budget | None, started_at: float | None) -> float | None:
    """The ``time.time()`` at which a run started at ``started_at`` runs out of its seconds budget, or None."""
    if budget is None or budget.seconds is None or started_at is None:
        return None
    return started_at + budget.seconds


def unscored(items: Sequence[VerifyItem], reason: str) -> VerificationResult:
    """Every item unscored, for ``reason``."""
    return VerificationResult([Score(None, error=reason) for _ in items])


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so an abandoned call's failure is not reported as never retrieved


async def run_until(make: Callable[[], Awaitable[T]], end: float) -> tuple[bool, T | None]:
    """``(True, await make())``, or ``(False, None)`` when ``end`` (a ``time.time()`` value) passes first: the call
    is then cancelled (a sync function in a worker thread is left to finish there). Past ``end`` already, ``make``
    is not called."""
    if end - time.time() <= 0:
        return False, None
    task = asyncio.ensure_future(make())
    try:
        while True:
            left = end - time.time()
            if left <= 0:
                task.cancel()
                task.add_done_callback(_ignore_outcome)
                return False, None
            done, _ = await asyncio.wait({task}, timeout=min(left, POLL_SECONDS))
            if done:
                return True, task.result()
    except asyncio.CancelledError:
        task.cancel()
        raise


async def verify_within(
    verifier: Verifier, items: Sequence[VerifyItem], *, deadline: float | None = None
) -> VerificationResult:
    """``verifier.verify(items)`` ended by the earlier of ``deadline`` (a ``time.time()`` value, the run's) and the
    verifier's own ``timeout``; a call past it comes back unscored, saying which bound it hit."""
    timeout = check_timeout(getattr(verifier, "timeout", None), f"verifier {verifier.name}: timeout")
    start = time.time()
    ends: list[tuple[float, str]] = []
    if deadline is not None:
        ends.append((deadline, "the run's seconds budget ran out"))
    if timeout is not None:
        ends.append((start + timeout, f"timed out after {timeout:g}s"))
    if not ends:
        return await verifier.verify(items)
    end, why = min(ends)
    if end - start <= 0:
        return unscored(items, f"verifier {verifier.name}: not called, {why}")
    finished, result = await run_until(lambda: verifier.verify(items), end)
    return result if finished and result is not None else unscored(items, f"verifier {verifier.name}: {why}")
