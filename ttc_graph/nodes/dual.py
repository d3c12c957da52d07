"""Graph nodes that run natively under both ``ainvoke`` and ``invoke``, on public LangChain / LangGraph APIs."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langgraph.runtime import get_runtime

from ttc_graph._loop import run_sync
from ttc_graph.errors import TTCError

__all__ = ["DualNode", "dual"]


class DualNode(Runnable[Any, Any]):
    """A node function ``f(input[, runtime][, config])`` as a Runnable with a native sync and async path.

    Under ``ainvoke`` an async ``f`` is awaited in the caller's loop. Under ``invoke`` an ``io`` node's coroutine
    runs on ttc_graph's one background event loop (:mod:`ttc_graph._loop`) while LangGraph's worker thread waits,
    so it works from any thread, repeatedly, and inside a running loop, and clients bound to that loop are
    reused. A node without I/O (``io=False``, e.g. a budget controller) never suspends: both paths step it to
    completion in place, with no loop and no thread hop. A plain ``def`` node is called directly either way.

    ``runtime`` comes from :func:`langgraph.runtime.get_runtime` and ``config`` is the node's run config; the
    run's context (LangChain's child config, so model calls nest under the node) travels with the coroutine.
    """

    def __init__(self, func: Callable[..., Any], *, name: str | None = None, io: bool = True) -> None:
        params = inspect.signature(func).parameters
        self.func = func
        self.io = io
        self.name: str = name or getattr(func, "__name__", None) or "node"
        self._is_async = inspect.iscoroutinefunction(func)
        self._wants_runtime = "runtime" in params
        self._wants_config = "config" in params

    def _call(self, input: Any, config: RunnableConfig) -> Any:
        kwargs: dict[str, Any] = {}
        if self._wants_runtime:
            kwargs["runtime"] = get_runtime()
        if self._wants_config:
            kwargs["config"] = config
        return self.func(input, **kwargs)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        out = self._call(input, ensure_config(config))
        if not self._is_async:
            return out
        return run_sync(out) if self.io else _step_to_completion(out, self.name)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        out = self._call(input, ensure_config(config))
        return await out if self._is_async else out


def _step_to_completion(coro: Coroutine[Any, Any, Any], name: str) -> Any:
    """The result of a coroutine that never suspends, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise TTCError(f"node {name!r} is registered with io=False but it awaited I/O; register it with io=True")


def dual(func: Callable[..., Any], name: str | None = None, *, io: bool = True) -> DualNode:
    """A node that serves both ``graph.invoke`` / ``stream`` and ``ainvoke`` / ``astream`` (see :class:`DualNode`).

    ``io=False`` marks a coroutine function that does no I/O (a budget controller): it runs in place under both.
    """
    return DualNode(func, name=name, io=io)
