"""Work for one HTTP request that stops when its client goes away."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from starlette.requests import Request

__all__ = ["until_disconnect"]

T = TypeVar("T")


async def until_disconnect(
    request: Request, work: Callable[[], Awaitable[T]], *, reraise: tuple[type[Exception], ...] = ()
) -> T | None:
    """``await work()``, or None when the client disconnects first (``work`` is then cancelled).

    An exception of a ``reraise`` type comes out as itself; any other comes out of the task group that watches the
    client, in its exception group.
    """
    result: T | None = None
    failure: Exception | None = None
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            result = await work()
        except reraise as exc:
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result
