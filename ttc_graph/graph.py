"""The builder every strategy factory returns: a ``StateGraph`` that compiles under the strategy's name."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langgraph.cache.base import BaseCache
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from langgraph.types import All, Checkpointer
from langgraph.typing import ContextT, InputT, OutputT, StateT
from typing_extensions import TypedDict

from ttc_graph.errors import ConfigurationError
from ttc_graph.state import TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.tracing import traced_astream, traced_stream

__all__ = ["CompiledStrategyGraph", "StrategyGraph", "schema_fields", "strategy_graph"]


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


def schema_fields(schema: type[Any]) -> dict[str, Any]:
    """The fields of a state or context schema and their annotations: a ``TypedDict``'s keys, a dataclass's or a
    pydantic model's fields, else the annotations along its classes."""
    try:
        hints = typing.get_type_hints(schema, include_extras=True)
    except Exception:  # an annotation that does not resolve: compare the names alone
        hints = {k: v for klass in reversed(schema.__mro__) for k, v in getattr(klass, "__annotations__", {}).items()}
    if dataclasses.is_dataclass(schema):
        return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(schema)}
    model_fields = getattr(schema, "model_fields", None)
    if isinstance(model_fields, dict):
        return {name: hints.get(name, info.annotation) for name, info in model_fields.items()}
    return hints


def _check_extends(kind: str, schema: object, base: type[Any]) -> dict[str, Any]:
    """The fields ``schema`` adds to ``base``, or a :class:`ConfigurationError` naming the fields of ``base`` it
    lacks or redeclares with another type (a reducer dropped, say)."""
    if not isinstance(schema, type):
        raise ConfigurationError(f"{kind}: expected a class extending {base.__name__}, got {schema!r}")
    have, need = schema_fields(schema), schema_fields(base)
    missing = sorted(set(need) - set(have))
    if missing:
        raise ConfigurationError(
            f"{kind}: {schema.__name__} lacks the fields {', '.join(missing)} the graph needs; extend"
            f" {base.__name__} (class {schema.__name__}({base.__name__}, total=False): ...)"
        )
    changed = sorted(k for k, v in need.items() if have[k] != v)
    if changed:
        raise ConfigurationError(
            f"{kind}: {schema.__name__} redeclares {', '.join(changed)} of {base.__name__} with another type;"
            " keep the graph's fields as they are and add your own"
        )
    return {k: v for k, v in have.items() if k not in need}


def _with_keys(name: str, schema: type[Any], extra: dict[str, Any]) -> type[Any]:
    """``schema`` (a ``TypedDict``) with the keys ``extra`` as well, all optional."""
    return TypedDict(name, {**schema_fields(schema), **extra}, total=False)  # type: ignore[operator]


def strategy_graph(
    name: str,
    state_schema: type[Any] | None = None,
    context_schema: type[Any] | None = None,
    *,
    state: type[Any] = TTCState,
    input: type[Any] = TTCInput,
    output: type[Any] = TTCOutput,
) -> StrategyGraph[Any, Any, Any, Any]:
    """The empty graph of a strategy named ``name``, its state ``state`` (with ``input`` and ``output``: the strategy's
    own) and its context
    :class:`~ttc_graph.state.TTCContext`, or the caller's extensions of them.

    A ``state_schema`` must keep every field of ``state`` as it is (a ``TypedDict`` extending it does); the keys
    it adds are also keys of the graph's input and output, so they pass through a run, and through the strategy run
    as a subgraph of the caller's own graph. A ``context_schema`` must have every field of ``TTCContext`` (a
    dataclass extending it does). Anything else is a :class:`ConfigurationError` naming the fields at fault.
    """
    extra = {} if state_schema is None else _check_extends("state_schema", state_schema, state)
    if context_schema is not None:
        _check_extends("context_schema", context_schema, TTCContext)
    if state_schema is not None and extra:  # the caller's keys flow in and out
        input, output = (_with_keys(f"{state_schema.__name__}{s.__name__}", s, extra) for s in (input, output))
    return StrategyGraph(
        state_schema or state,
        context_schema=context_schema or TTCContext,
        input_schema=input,
        output_schema=output,
        name=name,
    )
