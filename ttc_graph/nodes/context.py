"""Reading per-run knobs from LangGraph's runtime context."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from langgraph.runtime import Runtime

from ttc_graph.budget import Budget
from ttc_graph.errors import ConfigurationError
from ttc_graph.state import TTCContext

__all__ = ["run_context"]

_FIELDS = {f.name for f in fields(TTCContext)}


def run_context(runtime: Runtime[Any] | None) -> TTCContext:
    """The run's :class:`TTCContext`, accepting a dataclass, a dict or nothing."""
    ctx = getattr(runtime, "context", None)
    if ctx is None:
        return TTCContext()
    if isinstance(ctx, TTCContext):
        if isinstance(ctx.budget, dict):  # LangGraph builds the dataclass from a dict context itself
            return replace(ctx, budget=Budget(**ctx.budget))
        return ctx
    if isinstance(ctx, dict):
        unknown = set(ctx) - _FIELDS
        if unknown:
            raise ConfigurationError(f"context: unknown field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}")
        data = dict(ctx)
        if isinstance(data.get("budget"), dict):
            data["budget"] = Budget(**data["budget"])
        return TTCContext(**data)
    raise ConfigurationError(f"context: expected TTCContext or dict, got {type(ctx).__name__}")
