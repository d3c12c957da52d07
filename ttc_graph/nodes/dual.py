"""Nodes that serve both ``invoke`` and ``ainvoke``."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from langgraph._internal._runnable import RunnableCallable

__all__ = ["dual"]


def dual(afunc: Callable[..., Awaitable[Any]], name: str | None = None) -> RunnableCallable:
    """An async node that also runs under the sync API (``graph.invoke`` / ``stream``).

    A sync call runs the coroutine to completion on a private event loop in LangGraph's worker thread; endpoints
    keep one client per event loop, so nothing is shared across loops.
    """
    params = inspect.signature(afunc).parameters

    if "runtime" in params:

        @functools.wraps(afunc)
        def func(state: Any, runtime: Any) -> Any:
            return asyncio.run(afunc(state, runtime))

    else:

        @functools.wraps(afunc)
        def func(state: Any) -> Any:  # type: ignore[misc]
            return asyncio.run(afunc(state))

    return RunnableCallable(func, afunc, name=name or getattr(afunc, "__name__", None))
