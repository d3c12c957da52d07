"""OpenTelemetry spans of a run, through the OpenTelemetry API only.

Spans are recorded when the application installs an SDK tracer provider (``trace.set_tracer_provider(...)``); with
none installed the API hands out non-recording spans and every hook here returns at once.

The tree of one run::

    ttc.run <strategy>             (a compiled strategy graph's invoke / stream, ainvoke / astream)
    ├── ttc.round 0                (from one ``ttc.round`` progress event to the next)
    │   ├── chat <model>           (one upstream request; GenAI semantic conventions)
    │   └── chat <model>
    └── ttc.round 1
        └── ...

The run span is current while the graph runs, so LangGraph's node tasks inherit it (each task copies the context
it was started from). A controller's progress event ends the run's open round span and opens the next one
(:func:`note_round`); a request made while a round is open is parented under that round, else under the current
span (the verifier's requests of a round's ``verify`` node fall under the round too). A strategy nested in another
graph opens a run span of its own under the outer one.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = [
    "RequestSpan",
    "context_from_headers",
    "note_round",
    "request_span",
    "run_span",
    "traced_astream",
    "traced_stream",
]

_TRACER_NAME = "ttc_graph"
_OPEN_ROUNDS: dict[int, Span] = {}
"""The open round span of each recording run span (by span id); a run's end closes what is left of it."""


def _tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME)


def _budget_attribute(context: Any) -> str | None:
    budget = context.get("budget") if isinstance(context, Mapping) else getattr(context, "budget", None)
    if budget is None:
        return None
    dump = getattr(budget, "model_dump", None)
    fields = dump(exclude_none=True) if callable(dump) else budget
    return json.dumps(fields, default=str, sort_keys=True)


@contextmanager
def run_span(strategy: str, context: Any = None) -> Iterator[Span]:
    """The span of one run of ``strategy``, current while the run goes (``context``: the run's LangGraph context,
    whose ``budget`` becomes ``ttc.budget``). A non-recording span when no SDK is installed."""
    span = _tracer().start_span(f"ttc.run {strategy}", kind=SpanKind.INTERNAL)
    if not span.is_recording():
        yield span
        return
    span.set_attribute("ttc.strategy", strategy)
    span.set_attribute("gen_ai.operation.name", "invoke_agent")
    budget = _budget_attribute(context)
    if budget:
        span.set_attribute("ttc.budget", budget)
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=True, set_status_on_exception=True):
            yield span
    finally:
        left = _OPEN_ROUNDS.pop(span.get_span_context().span_id, None)
        if left is not None:
            left.end()
        span.end()


def traced_stream(strategy: str, context: Any, chunks: Iterator[Any]) -> Iterator[Any]:
    """``chunks`` (a graph's ``stream``) inside a run span."""
    with run_span(strategy, context):
        yield from chunks


async def traced_astream(strategy: str, context: Any, chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``chunks`` (a graph's ``astream``) inside a run span."""
    with run_span(strategy, context):
        async for chunk in chunks:
            yield chunk


def _usage_attributes(span: Span, usage: Mapping[str, Any]) -> None:
    if not usage:
        return
    span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("prompt_tokens", 0)))
    span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("completion_tokens", 0)))
    if "cost" in usage:
        span.set_attribute("ttc.cost", float(usage["cost"]))


def note_round(event: Mapping[str, Any]) -> None:
    """A controller planned a round (or stopped): end the current run's open round span, open the next one, and
    record the run's progress (``ttc.round``, ``ttc.candidates``, ``ttc.stop_reason``, token usage) on the run."""
    run = trace.get_current_span()
    if not run.is_recording():
        return
    key = run.get_span_context().span_id
    previous = _OPEN_ROUNDS.pop(key, None)
    if previous is not None:
        previous.set_attribute("ttc.drawn_after", int(event.get("drawn", 0)))
        previous.end()
    round_ = int(event.get("round", 0))
    candidates = event.get("candidates")
    run.set_attribute("ttc.round", round_)
    run.set_attribute("ttc.candidates", int(candidates) if isinstance(candidates, int) else int(event["drawn"]))
    _usage_attributes(run, event.get("usage") or {})
    stop = event.get("stop")
    if stop:
        run.set_attribute("ttc.stop_reason", str(stop))
        return
    span = _tracer().start_span(
        f"ttc.round {round_}",
        context=trace.set_span_in_context(run),
        attributes={"ttc.round": round_, "ttc.planned": int(event.get("planned", 0)), "ttc.drawn": event["drawn"]},
    )
    _OPEN_ROUNDS[key] = span


class RequestSpan:
    """The span of one upstream request; :meth:`done` records what it returned."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def done(self, result: Any) -> None:
        """Record a ``GenerationResult``: token usage, cost and the finish reasons of its choices."""
        if not self.span.is_recording():
            return
        usage = result.usage
        self.span.set_attribute("gen_ai.usage.input_tokens", int(usage.prompt_tokens))
        self.span.set_attribute("gen_ai.usage.output_tokens", int(usage.completion_tokens))
        cost = getattr(usage, "cost", None)
        if cost:
            self.span.set_attribute("ttc.cost", float(cost))
        reasons = [str(g.finish_reason or "unknown") for g in result.generations]
        self.span.set_attribute("gen_ai.response.finish_reasons", reasons)


def _request_parent() -> otel_context.Context | None:
    current = trace.get_current_span()
    round_span = _OPEN_ROUNDS.get(current.get_span_context().span_id) if current.is_recording() else None
    return trace.set_span_in_context(round_span) if round_span is not None else None


@contextmanager
def request_span(
    model: str,
    *,
    n: int = 1,
    params: Any = None,
    operation: str = "chat",
    system: str = "openai",
    server: str | None = None,
) -> Iterator[RequestSpan]:
    """The span of one upstream request (a client span named ``{operation} {model}``), under the open round of the
    current run when there is one. ``params``: the request's ``SamplingParams``."""
    parent = _request_parent()
    span = _tracer().start_span(f"{operation} {model}", context=parent, kind=SpanKind.CLIENT)
    if not span.is_recording():
        yield RequestSpan(span)
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
        "gen_ai.request.model": model,
        "gen_ai.request.choice.count": n,
    }
    for name, attr in (("temperature", "temperature"), ("max_tokens", "max_tokens"), ("seed", "seed")):
        value = getattr(params, name, None)
        if value is not None:
            attributes[f"gen_ai.request.{attr}"] = value
    if server:
        attributes["server.address"] = server
    span.set_attributes(attributes)
    with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
        try:
            yield RequestSpan(span)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
            raise


def context_from_headers(headers: Mapping[str, str] | Sequence[tuple[str, str]]) -> contextvars.Context:
    """A copy of the current context continuing the trace of an incoming ``traceparent`` (W3C trace context) header,
    for a task a server starts on a request's behalf: ``asyncio.create_task(coro, context=...)``."""
    carrier = dict(headers)
    ctx = contextvars.copy_context()
    if "traceparent" in {k.lower() for k in carrier}:
        parent = propagate.extract({k.lower(): v for k, v in carrier.items()})
        ctx.run(otel_context.attach, parent)
    return ctx
