"""The builder every strategy factory returns: a ``StateGraph`` that compiles under the strategy's name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langgraph.cache.base import BaseCache
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from langgraph.types import All, Checkpointer
from langgraph.typing import ContextT, InputT, OutputT, StateT

from ttc_graph.tracing import traced_astream, traced_stream

__all__ = ["CompiledStrategyGraph", "StrategyGraph"]


class StrategyGraph(StateGraph[StateT, ContextT, InputT, OutputT]):
    """An uncompiled strategy graph. ``compile()`` names the compiled graph after the strategy unless told
    otherwise, so traces, callbacks and ``langgraph dev`` show ``best_of_n`` (not ``LangGraph``) as the root run.
    """

    strategy_name: str

    def __init__(
        self,
        state_schema: type[StateT],
        context_schema: type[ContextT] | None = None,
        *,
        input_schema: type[InputT] | None = None,
        output_schema: type[OutputT] | None = None,
        name: str,
    ) -> None:
        super().__init__(state_schema, context_schema, input_schema=input_schema, output_schema=output_schema)
        self.strategy_name = name

    def compile(
        self,
        checkpointer: Checkpointer = None,
        *,
        cache: BaseCache[Any] | None = None,
        store: BaseStore | None = None,
        interrupt_before: All | list[str] | None = None,
        interrupt_after: All | list[str] | None = None,
        debug: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ) -> CompiledStateGraph[StateT, ContextT, InputT, OutputT]:
        """``StateGraph.compile`` with ``name`` defaulting to the strategy's name."""
        compiled = super().compile(
            checkpointer,
            cache=cache,
            store=store,
            interrupt_before=interrupt_before,
            interrupt_after=interrupt_after,
            debug=debug,
            name=name or self.strategy_name,
            **kwargs,
        )
        compiled.__class__ = CompiledStrategyGraph  # the same graph, its runs traced
        return compiled


class CompiledStrategyGraph(CompiledStateGraph[StateT, ContextT, InputT, OutputT]):
    """A compiled strategy graph whose every run (``invoke`` / ``stream`` and their async forms) is one OpenTelemetry
    span, ``ttc.run <strategy>`` (:mod:`ttc_graph.tracing`); without an SDK tracer provider it is a plain graph."""

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:  # type: ignore[override]
        return traced_stream(self.name, kwargs.get("context"), super().stream(*args, **kwargs))

    def astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        return traced_astream(self.name, kwargs.get("context"), super().astream(*args, **kwargs))
