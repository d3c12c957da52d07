"""Reading per-run knobs from LangGraph's runtime context, whatever graph the strategy runs under."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, get_args

from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.runtime import Runtime
from pydantic import ValidationError

from ttc_graph.budget import Budget
from ttc_graph.errors import ConfigurationError
from ttc_graph.state import History, TTCContext

__all__ = ["context_fields", "run_context"]

_MISSING = object()
_HISTORY: tuple[str, ...] = get_args(History)


def context_fields() -> tuple[str, ...]:
    """The context fields a strategy owns (the fields of :class:`TTCContext`)."""
    return tuple(f.name for f in fields(TTCContext))


def _budget(value: Any) -> Budget:
    if isinstance(value, Budget):
        return value
    if isinstance(value, Mapping):
        try:
            return Budget(**value)
        except (TypeError, ValidationError) as exc:
            raise ConfigurationError(f"context.budget: invalid budget {dict(value)!r}: {exc}") from exc
    raise ConfigurationError(f"context.budget: expected a Budget or a dict, got {type(value).__name__} {value!r}")


def _number(name: str, *, integer: bool, minimum: float) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            kind = "an integer" if integer else "a number"
            raise ConfigurationError(f"context.{name}: expected {kind}, got {type(value).__name__} {value!r}")
        if value < minimum:
            raise ConfigurationError(f"context.{name}: must be >= {minimum:g}, got {value!r}")
        return value

    return check


def _history(value: Any) -> History:
    if value not in _HISTORY:
        raise ConfigurationError(f"context.history: expected one of {', '.join(map(repr, _HISTORY))}, got {value!r}")
    return value  # type: ignore[no-any-return]


def _tools(value: Any) -> list[dict[str, Any]]:
    """OpenAI-format tool specs; LangChain tools, pydantic models and functions are converted."""
    if not isinstance(value, list | tuple):
        raise ConfigurationError(f"context.tools: expected a list of tools, got {type(value).__name__}")
    try:
        return [dict(t) if isinstance(t, Mapping) and "function" in t else convert_to_openai_tool(t) for t in value]
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"context.tools: {exc}") from exc


def _tool_choice(value: Any) -> str | dict[str, Any]:
    if (isinstance(value, str) and value) or isinstance(value, Mapping):
        return value if isinstance(value, str) else dict(value)
    raise ConfigurationError(f"context.tool_choice: expected a string or a dict, got {type(value).__name__} {value!r}")


def _extra(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"context.extra: expected a dict, got {type(value).__name__} {value!r}")
    return dict(value)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "budget": _budget,
    "temperature": _number("temperature", integer=False, minimum=0),
    "max_tokens": _number("max_tokens", integer=True, minimum=1),
    "seed": _number("seed", integer=True, minimum=-(2**63)),
    "history": _history,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "extra": _extra,
}


def run_context(runtime: Runtime[Any] | None) -> TTCContext:
    """The run's knobs as a checked :class:`TTCContext`.

    The context may be a :class:`TTCContext`, a dict, or a parent graph's own context (a dataclass, a pydantic
    model, any object with attributes): the fields :class:`TTCContext` defines are read and checked, every other
    field is ignored, so a strategy nests under any parent graph. A field of the wrong type is a
    :class:`~ttc_graph.errors.ConfigurationError` naming it.
    """
    ctx = getattr(runtime, "context", None)
    if ctx is None:
        return TTCContext()
    values: dict[str, Any] = {}
    for name in context_fields():
        value = ctx.get(name, _MISSING) if isinstance(ctx, Mapping) else getattr(ctx, name, _MISSING)
        if value is _MISSING or value is None:
            continue
        values[name] = _CHECKS[name](value)
    return TTCContext(**values)
