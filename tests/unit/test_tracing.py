"""OpenTelemetry spans of a run: one run span, a span per round under it, a span per upstream request under its round,
with GenAI semantic-convention attributes; nothing recorded when no SDK tracer provider is installed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from ttc_graph import Budget, TTCContext, create_beam_search
from ttc_graph import tracing as ttc_tracing
from ttc_graph.testing import FakeCall, ScriptedEndpoint

QUESTION = "What is 6 * 7?"


def _reset_global_provider() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider installed globally, as an application does, exporting to memory."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    yield spans
    provider.shutdown()
    _reset_global_provider()


def step_policy(call: FakeCall, index: int) -> str:
    """Two steps per solution, the second states the answer."""
    done = (call.prefix or "").count("\n\n")
    return "Step: multiply. \\boxed{42}" if done >= 1 else f"Step: think {index}."


def beam_search() -> Any:
    endpoint = ScriptedEndpoint(step_policy)
    return create_beam_search(endpoint, lambda question, text: 0.5, n=4, beam_width=2).compile(), endpoint


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


async def test_beam_search_span_tree(exporter: InMemorySpanExporter) -> None:
    graph, endpoint = beam_search()
    budget = Budget(generations=64)
    out = await graph.ainvoke({"question": QUESTION}, context=TTCContext(budget=budget))
    assert out["answer"] == "42"
    spans = exporter.get_finished_spans()

    (run,) = by_name(spans, "ttc.run")
    assert run.name == "ttc.run beam_search"
    assert run.parent is None
    attrs = run.attributes or {}
    assert attrs["ttc.strategy"] == "beam_search"
    assert json.loads(str(attrs["ttc.budget"])) == {"generations": 64}
    assert attrs["ttc.stop_reason"] == out["stop_reason"] == "complete"
    assert attrs["gen_ai.usage.input_tokens"] == out["usage"]["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == out["usage"]["completion_tokens"]
    assert isinstance(attrs["ttc.candidates"], int)

    rounds = by_name(spans, "ttc.round")
    assert len(rounds) >= 2  # one per expansion
    run_id = run.context.span_id
    assert all(r.parent is not None and r.parent.span_id == run_id for r in rounds)
    assert [r.attributes["ttc.round"] for r in sorted(rounds, key=lambda r: r.start_time)] == list(  # type: ignore[index]
        range(len(rounds))
    )

    requests = by_name(spans, "chat ")
    assert len(requests) == len(endpoint.calls)  # one span per upstream request
    round_ids = {r.context.span_id for r in rounds}
    assert all(r.parent is not None and r.parent.span_id in round_ids for r in requests)
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}
    first = requests[0].attributes or {}
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.request.model"] == "scripted"
    assert first["gen_ai.system"] == "scripted"
    assert first["gen_ai.response.finish_reasons"] == ("stop",) * int(first["gen_ai.request.choice.count"])
    output_tokens = [int((r.attributes or {})["gen_ai.usage.output_tokens"]) for r in requests]
    assert sum(output_tokens) == out["usage"]["completion_tokens"]
    assert all(r.kind == trace.SpanKind.CLIENT for r in requests)
    assert not ttc_tracing._OPEN_ROUNDS  # every round span was ended


def test_sync_invoke_is_traced_too(exporter: InMemorySpanExporter) -> None:
    graph, endpoint = beam_search()
    graph.invoke({"question": QUESTION})
    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "ttc.run")
    requests = by_name(spans, "chat ")
    assert len(requests) == len(endpoint.calls)
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}


async def test_a_run_continues_the_callers_trace(exporter: InMemorySpanExporter) -> None:
    graph, _ = beam_search()
    with trace.get_tracer("app").start_as_current_span("request") as outer:
        await graph.ainvoke({"question": QUESTION})
    (run,) = by_name(exporter.get_finished_spans(), "ttc.run")
    assert run.parent is not None and run.parent.span_id == outer.get_span_context().span_id


def test_context_from_headers_continues_a_traceparent(exporter: InMemorySpanExporter) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ctx = ttc_tracing.context_from_headers({"TraceParent": parent})
    span = ctx.run(lambda: trace.get_current_span().get_span_context())
    assert format(span.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert not trace.get_current_span().get_span_context().is_valid  # the caller's context is untouched


async def test_nothing_is_recorded_without_an_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    _reset_global_provider()
    started: list[Any] = []
    real = ttc_tracing._tracer

    class Spy:
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            span = real().start_span(*args, **kwargs)
            started.append(span)
            return span

    monkeypatch.setattr(ttc_tracing, "_tracer", Spy)
    graph, endpoint = beam_search()
    out = await graph.ainvoke({"question": QUESTION})
    assert out["answer"] == "42"
    assert len(started) == 1 + len(endpoint.calls)  # the run and its requests asked; no round span was opened
    assert not any(s.is_recording() for s in started)
    assert not ttc_tracing._OPEN_ROUNDS


async def test_ttc_serve_continues_an_incoming_traceparent(exporter: InMemorySpanExporter) -> None:
    from tests.unit.test_server import chat, make

    h = make()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    resp = await h.client.post("/v1/chat/completions", json=chat(), headers=headers)
    assert resp.status_code == 200, resp.text
    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "ttc.run")
    assert format(run.context.trace_id, "032x") == trace_id
    assert run.parent is not None and format(run.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert len(by_name(spans, "chat ")) == len(h.policy.calls)
