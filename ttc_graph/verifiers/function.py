"""Plain Python callables as verifiers."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ttc_graph.errors import ConfigurationError, VerifierError
from ttc_graph.verifiers.base import Score, VerificationResult, Verifier, VerifyItem, check_unit_interval
from ttc_graph.verifiers.deadline import check_timeout

__all__ = ["SYNC_VERIFIER_THREADS", "FunctionVerifier", "VerifierLike", "as_verifier", "in_verifier_pool"]

SYNC_VERIFIER_THREADS = 8
"""Worker threads shared by every sync verifier function: calls beyond that wait for a free one."""
_POOL = ThreadPoolExecutor(max_workers=SYNC_VERIFIER_THREADS, thread_name_prefix="ttc-verifier")

ScoreFn = Callable[[str, str], float] | Callable[[str, str], Awaitable[float]]
VerifierLike = Verifier | ScoreFn


async def in_verifier_pool(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the shared pool of sync verifier threads: a caller that stops waiting (a deadline) leaves
    the call to finish there, without holding up the event loop or its shutdown."""
    return await asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)


class FunctionVerifier(Verifier):
    """Wraps ``fn(question, solution_text) -> float`` (sync or async), e.g. a reference-answer checker.

    Sync functions run concurrently in a bounded pool of :data:`SYNC_VERIFIER_THREADS` threads, so a run can stop
    waiting for one at its deadline or at ``timeout`` (seconds per call); ``threaded=False`` runs them inline on
    the event loop instead (fast functions only: an inline call cannot be abandoned).
    """

    granularity = "outcome"

    def __init__(
        self, fn: ScoreFn, *, threaded: bool = True, name: str | None = None, timeout: float | None = None
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(f"verifier: expected a callable (question, solution) -> float, got {fn!r}")
        self.fn = fn
        self.threaded = threaded
        self.timeout = check_timeout(timeout, "verifier: timeout")
        self._name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            type(fn).__call__ if not inspect.isfunction(fn) else None
        )

    @property
    def name(self) -> str:
        return self._name

    async def _one(self, item: VerifyItem) -> Score:
        try:
            if self._is_async:
                raw = await self.fn(item.question, item.text)  # type: ignore[misc]
            elif self.threaded:
                raw = await in_verifier_pool(self.fn, item.question, item.text)
            else:
                raw = self.fn(item.question, item.text)
                if inspect.isawaitable(raw):
                    raw = await raw
            return Score(check_unit_interval(raw, f"verifier {self._name}"))  # type: ignore[arg-type]
        except VerifierError as exc:
            return Score(None, error=str(exc))
        except Exception as exc:
            return Score(None, error=f"verifier {self._name} raised {type(exc).__name__}: {exc}")

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        return VerificationResult(list(await asyncio.gather(*(self._one(i) for i in items))))


def as_verifier(obj: VerifierLike | None) -> Verifier | None:
    """A :class:`Verifier` from a verifier, a plain callable, or None."""
    if obj is None or isinstance(obj, Verifier):
        return obj
    if callable(obj):
        return FunctionVerifier(obj)
    raise ConfigurationError(f"verifier: expected a Verifier or a callable, got {type(obj).__name__}")
