"""Best-of-N over agent runs against the real local llama.cpp server: a react agent with the calculator tool.

The chain is ``graph → ChatOpenAI → metering proxy → llama.cpp``: the proxy counts what the server answered, and the
strategy's ledger, built from the runs' LangChain callbacks, must equal it. The model is tiny (SmolLM2-135M): the
test checks the plumbing (three isolated runs, tool results from the calculator, the ledger), not whether it can
multiply.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from ttc_graph.agents import calculate, calculator, create_agent_best_of_n
from ttc_graph.agents.calculator import CalculatorError
from ttc_graph.local import LocalModelServer
from ttc_graph.server.metering import Meter, MeteringProxy, serve_in_thread

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # create_react_agent's move to langchain.agents (not a dependency here)
    from langgraph.prebuilt import create_react_agent

TASK = "Use the calculator tool to compute 17 * 23, then reply with the result."


@pytest.fixture(scope="module")
def metered(local_server: LocalModelServer) -> Iterator[tuple[str, Meter]]:
    proxy = MeteringProxy(local_server.server_root)
    with serve_in_thread(proxy.app) as url:
        yield f"{url}/v1", proxy.meter


def test_three_react_runs_with_a_calculator_are_metered_exactly(
    local_server: LocalModelServer, metered: tuple[str, Meter]
) -> None:
    base_url, meter = metered
    model = ChatOpenAI(
        base_url=base_url,
        api_key="local",
        model=local_server.model_name,
        max_tokens=64,
        temperature=0.8,
        max_retries=0,
        timeout=120,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = create_react_agent(model, [calculator])
    transcripts: list[list[AnyMessage]] = []

    def used_the_calculator(messages: list[AnyMessage]) -> float:
        transcripts.append(messages)
        return 1.0 if any(isinstance(m, ToolMessage) for m in messages) else 0.0

    graph = create_agent_best_of_n(agent, used_the_calculator, n=3, max_concurrency=3).compile()
    before = meter.snapshot()
    events: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    # each run may call the tool a few times; the recursion limit bounds a model that never stops calling it
    config: dict[str, Any] = {"recursion_limit": 12}
    for mode, chunk in graph.stream({"messages": [HumanMessage(TASK)]}, config, stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(chunk)
        else:
            out = chunk
    spent = meter.since(before)

    runs = out["candidates"]
    assert len(runs) == 3 and sorted(e["run"] for e in events if e["event"] == "ttc.run") == [0, 1, 2]
    finished = [r for r in runs if r["error"] is None]
    assert finished, out["errors"]  # the plumbing works end to end for at least one run
    assert out["stop_reason"] == "complete"

    # the ledger equals what the server answered through the proxy: every request, prompt and completion token
    usage = out["usage"]
    assert usage["generations"] == 3
    assert spent["uncounted"] == 0
    assert usage["requests"] == spent["answered"] > 0
    assert usage["failed_requests"] == spent["requests"] - spent["answered"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (spent["prompt_tokens"], spent["completion_tokens"])
    assert usage["completion_tokens"] == sum(r["tokens"] for r in runs)

    # runs are isolated: each finished run's transcript starts from the one task and holds only its own tool calls
    assert len(transcripts) == len(finished)
    for messages in transcripts:
        assert isinstance(messages[0], HumanMessage) and messages[0].content == TASK
        assert sum(isinstance(m, HumanMessage) for m in messages) == 1
        results = [m for m in messages if isinstance(m, ToolMessage)]
        args = {c["id"]: c["args"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
        assert {m.tool_call_id for m in results} <= set(args)
        for result in results:  # the calculator's value, or an error reported to the model (never an exception)
            expression = args[result.tool_call_id].get("expression")
            try:
                expected = calculate(expression) if isinstance(expression, str) else None
            except CalculatorError:
                expected = None
            assert result.content == expected or result.status == "error" or str(result.content).startswith("Error")

    # the parent conversation gets the task once and the winner's own messages
    winner = out["diagnostics"]["winner"]
    assert winner in {r["id"] for r in finished}
    assert [type(m) for m in out["messages"][:1]] == [HumanMessage]
    assert sum(isinstance(m, HumanMessage) for m in out["messages"]) == 1
    assert isinstance(out["messages"][-1], AIMessage)
