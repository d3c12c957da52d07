"""A concurrency limit that holds across threads and event loops.

An ``asyncio.Semaphore`` belongs to one event loop, so an endpoint used from several (``graph.invoke`` in worker
threads, a notebook beside ``langgraph dev``) would allow its limit once per loop. :class:`SharedLimit` counts
holders under a thread lock and wakes a waiter on the waiter's own loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from types import TracebackType

__all__ = ["SharedLimit"]


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SharedLimit:
    """At most ``limit`` holders at once over every thread and event loop, served first come, first served.

    ``async with limit:`` holds a place; ``held`` is the number held now and ``peak`` the most held at once.
    """

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit: must be an integer >= 1, got {limit!r}")
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    def __repr__(self) -> str:
        return f"SharedLimit(limit={self.limit}, held={self.held}, waiting={len(self._waiters)})"

    def _take(self) -> None:
        self.held += 1
        self.peak = max(self.peak, self.held)

    async def acquire(self) -> None:
        """Wait for a place (a cancelled wait takes none, or gives back the one it was handed)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.held < self.limit and not self._waiters:
                self._take()
                return
            entry = (loop, loop.create_future())
            self._waiters.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            with self._lock:
                handed = entry not in self._waiters
                if not handed:
                    self._waiters.remove(entry)
            if handed:
                self.release()
            raise

    def release(self) -> None:
        """Give a place back: to the first waiter still reachable, else to the pool."""
        with self._lock:
            while self._waiters:
                loop, future = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(_grant, future)  # the place passes to it: ``held`` stays
                except RuntimeError:  # its loop is closed: nobody will wait there any more
                    continue
                return
            self.held -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
