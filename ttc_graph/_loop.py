"""One long-lived background event loop that serves every sync call into async code.

``graph.invoke`` runs async nodes here: the calling thread submits the coroutine and waits. The loop lives as long
as the process, so clients bound to it (an endpoint's HTTP connection pool) stay usable from one call to the next,
and since it has its own thread a sync call works from any thread, repeatedly, and inside a running event loop
(Jupyter). The caller's context variables (LangChain's run config, LangGraph's runtime) travel with the coroutine:
``call_soon_threadsafe`` copies the caller's context and the task inherits it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from ttc_graph.errors import TTCError

__all__ = ["PerLoop", "background_loop", "run_sync", "serving_sync_call"]

T = TypeVar("T")
_SYNC_WORKERS = 64  # threads for blocking calls made on behalf of sync callers (a chat model's sync client)
_sync_call: ContextVar[bool] = ContextVar("ttc_graph_sync_call", default=False)

_lock = threading.Lock()
_state: tuple[int, asyncio.AbstractEventLoop, threading.Thread] | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's background loop, started on first use (and again after a fork)."""
    global _state
    with _lock:
        if _state is not None:
            pid, loop, thread = _state
            if pid == os.getpid() and thread.is_alive() and not loop.is_closed():
                return loop
        loop = asyncio.new_event_loop()
        loop.set_default_executor(ThreadPoolExecutor(_SYNC_WORKERS, thread_name_prefix="ttc-graph-sync"))
        thread = threading.Thread(target=loop.run_forever, name="ttc-graph-loop", daemon=True)
        thread.start()
        _state = (os.getpid(), loop, thread)
        return loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop and wait for its result in the calling thread."""
    loop = background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise TTCError("a sync graph call from inside ttc_graph's own event loop would deadlock; use ainvoke there")
    token = _sync_call.set(True)  # the task copies this context: its code can tell it serves a sync caller
    try:
        future = asyncio.run_coroutine_threadsafe(coro, loop)
    finally:
        _sync_call.reset(token)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # KeyboardInterrupt or an abandoned call: do not leave the coroutine running
        raise


def serving_sync_call() -> bool:
    """Whether the running code serves a sync caller (``graph.invoke``) through :func:`run_sync`.

    A LangChain chat model is then driven through its sync API: its async client binds to the first event loop
    that uses it, which should stay the caller's own.
    """
    return _sync_call.get()


async def _close_at_shutdown(value: T, close: Callable[[T], Awaitable[None]]) -> AsyncIterator[None]:
    """Suspended for the loop's lifetime; ``loop.shutdown_asyncgens()`` (``asyncio.run`` ends with it) resumes it
    inside the loop, still running, to close ``value``."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # best effort: a broken connection must not fail the loop's shutdown
            await close(value)


class PerLoop(Generic[T]):
    """One value per event loop (an HTTP client, a semaphore), made by ``factory`` on first use in that loop.

    Async clients and semaphores bind to the loop that first uses them; keeping one per loop lets an endpoint serve
    the caller's loop under ``ainvoke`` and the background loop under ``invoke`` at once. Values of closed loops
    are dropped. With ``close``, a value is closed inside its loop when the loop shuts down (the end of
    ``asyncio.run``), so its HTTP connections never outlive the loop and print "Event loop is closed".
    """

    def __init__(self, factory: Callable[[], T], close: Callable[[T], Awaitable[None]] | None = None) -> None:
        self._factory = factory
        self._close = close
        self._values: dict[int, tuple[asyncio.AbstractEventLoop, T, Any]] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        """The running loop's value."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._values.get(id(loop))
            if entry is None or entry[0] is not loop:
                for key, (old, _, _) in list(self._values.items()):
                    if old.is_closed():
                        del self._values[key]
                value = self._factory()
                guard: Any = None
                if self._close is not None:  # the loop tracks the generator weakly: the entry keeps it alive
                    agen = _close_at_shutdown(value, self._close)
                    guard = (agen, asyncio.ensure_future(agen.__anext__()))
                entry = (loop, value, guard)
                self._values[id(loop)] = entry
            return entry[1]

    def pop_all(self) -> list[tuple[asyncio.AbstractEventLoop, T]]:
        """Forget every loop's value and return them with their loops (to close them now)."""
        with self._lock:
            entries = list(self._values.values())
            self._values.clear()
        return [(loop, value) for loop, value, _ in entries]  # a guard left behind closes again: close is idempotent


@atexit.register
def _shutdown() -> None:
    with _lock:
        state = _state
    if state is None or state[0] != os.getpid():
        return
    _, loop, thread = state
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2.0)
