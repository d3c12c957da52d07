"""Operations against the real llama.cpp server: a run's spans match its ledger, and a dollar budget holds."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from ttc_graph import Budget, Price, create_best_of_n
from ttc_graph.endpoints import OpenAIEndpoint

PRICE = Price(input=1_000, output=100_000)  # $0.001 a prompt token, $0.1 a completion token
QUESTION = "What is 3 + 4? Answer with \\boxed{}."


def _reset() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset()
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    _reset()


async def test_request_spans_add_up_to_the_ledger(endpoint: OpenAIEndpoint, spans: InMemorySpanExporter) -> None:
    graph = create_best_of_n(endpoint, n=4, selection="majority", max_tokens=48).compile()
    out = await graph.ainvoke({"question": QUESTION})
    finished = spans.get_finished_spans()
    (run,) = [s for s in finished if s.name.startswith("ttc.run")]
    requests = [s for s in finished if s.name.startswith(("chat ", "text_completion "))]
    usage = out["usage"]
    assert len(requests) == usage["requests"]
    assert sum(int(s.attributes["gen_ai.usage.output_tokens"]) for s in requests) == usage["completion_tokens"]
    assert sum(int(s.attributes["gen_ai.usage.input_tokens"]) for s in requests) == usage["prompt_tokens"]
    assert all(s.attributes["gen_ai.request.model"] == endpoint.model for s in requests)
    assert all(s.context.trace_id == run.context.trace_id for s in finished)
    assert run.attributes["ttc.stop_reason"] == out["stop_reason"]


async def test_a_dollar_budget_holds_on_a_real_server(endpoint: OpenAIEndpoint) -> None:
    endpoint.price = PRICE
    budget = Budget(dollars=20.0, price=PRICE)
    graph = create_best_of_n(endpoint, n=16, selection="majority", max_tokens=64, budget=budget).compile()
    out = await graph.ainvoke({"question": QUESTION})
    usage = out["usage"]
    assert usage["cost"] == pytest.approx(PRICE.cost(usage["prompt_tokens"], usage["completion_tokens"]))
    assert usage["completion_tokens"] * PRICE.output / 1e6 <= budget.dollars  # planned before each request
    assert usage["generations"] >= 1
