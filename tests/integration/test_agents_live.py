"""Agents against a real llama.cpp server: a ``TestTimeChatModel`` as a ReAct agent's model, and ``ttc serve`` with
tools on a preset, through the official openai client.

The embedded default model (SmolLM2-135M) never calls a tool, so these tests run the benchmark model
(Qwen2.5-Coder-0.5B, which writes its calls as JSON text that llama.cpp does not turn into ``tool_calls``): the
model the text parser exists for. Its GGUF comes from ``TTC_BENCH_GGUF`` or from this repository's CI scripts
(``../shared/models/fetch-bench-model.sh``). Every request goes through a metering proxy that counts what the server
generated.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langgraph.prebuilt import create_react_agent

from ttc_graph.agents import TestTimeChatModel, calculator
from ttc_graph.endpoints import OpenAIEndpoint
from ttc_graph.local import LocalModelServer
from ttc_graph.server import Limits, ServeConfig, Upstream, create_app, load_presets
from ttc_graph.server.metering import Meter, MeteringProxy, serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
CALL = "Call the calculator tool with the expression to compute."
ANSWER = (
    "You can call a calculator tool. Example:\n"
    "user: What is 2 + 3 * 4?\n"
    'assistant: <tool_call>{"name": "calculator", "arguments": {"expression": "2 + 3 * 4"}}</tool_call>\n'
    "user: <tool_response>14</tool_response>\n"
    "assistant: The answer is 14.\n\n"
    "After a tool response, always reply 'The answer is N.' and never call the tool again."
)


def prompt(state: dict[str, Any]) -> list[BaseMessage]:
    """The system prompt for the step at hand: a 0.5B model follows one instruction, not a plan of two."""
    messages: list[BaseMessage] = state["messages"]
    system = ANSWER if isinstance(messages[-1], ToolMessage) else CALL
    return [SystemMessage(system), *messages]


QUESTION = "What is 123 * 45 + 6?"


def bench_gguf() -> Path:
    if os.environ.get("TTC_BENCH_GGUF"):
        return Path(os.environ["TTC_BENCH_GGUF"])
    script = ROOT.parent / "shared" / "models" / "fetch-bench-model.sh"
    if not script.is_file():
        pytest.skip("no benchmark model: set TTC_BENCH_GGUF to a tool-calling GGUF (the embedded model calls no tools)")
    cache = Path(os.environ.get("TTC_CACHE_DIR", Path.home() / ".cache" / "ttc_graph")) / "models"
    out = subprocess.run([str(script), str(cache)], capture_output=True, text=True, check=True, timeout=600)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class Bench:
    base_url: str  # the metering proxy's /v1
    model: str
    meter: Meter


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    with LocalModelServer(bench_gguf(), parallel=4, ctx_size=4 * 4096, threads=2) as server:
        proxy = MeteringProxy(server.server_root)
        with serve_in_thread(proxy.app) as url:
            yield Bench(f"{url}/v1", server.model_name, proxy.meter)


def policy(bench: Bench) -> OpenAIEndpoint:
    return OpenAIEndpoint(bench.base_url, bench.model, max_tokens=96, timeout=300)


class Steps(BaseCallbackHandler):
    """The message of every chat model call in a run, kept or not."""

    def __init__(self) -> None:
        self.messages: list[AIMessage] = []

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        generation = response.generations[0][0]
        assert isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage)
        self.messages.append(generation.message)


def test_a_react_agent_with_a_test_time_model_calls_the_tool_then_answers(bench: Bench) -> None:
    """Tool call, tool result, final answer, each step one voted assistant message.

    The agent's prompt depends on the step (LangGraph's callable prompt): this 0.5B model follows one instruction at
    a time. Measured on this conversation at temperature 0.7: told to call the tool, it calls it in 15 of 16 samples
    but after the result calls it again in 8 of 8; given a worked example, 30 of 32 samples answer after the result
    but 0 of 8 call the tool first. At the test's temperature 0.4 both steps went right in 16 of 16 samples. The
    model's callbacks count every step's spend.
    """
    model = TestTimeChatModel(model=policy(bench), n=3, selection="majority", temperature=0.4)
    agent = create_react_agent(model, [calculator], prompt=prompt)
    spend = Steps()
    before = bench.meter.snapshot()
    out = agent.invoke({"messages": [HumanMessage(QUESTION)]}, {"recursion_limit": 8, "callbacks": [spend]})
    served = bench.meter.since(before)
    messages = out["messages"]
    kinds = [type(m).__name__ for m in messages]
    assert kinds[:3] == ["HumanMessage", "AIMessage", "ToolMessage"], kinds
    call = messages[1].tool_calls[0]
    assert call["name"] == "calculator"
    assert isinstance(messages[2], ToolMessage) and messages[2].content == "5541"
    final = messages[-1]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"], kinds
    assert isinstance(final, AIMessage) and not final.tool_calls and "5541" in str(final.content), final
    steps = spend.messages
    assert [m.id for m in steps] == [messages[1].id, final.id]
    # one assistant message per step, not one per sample: each step drew exactly n = 3 samples, and the server saw
    # exactly the requests the steps report (the first also carries the endpoint's one-off probe of `n`)
    assert [m.response_metadata["ttc"]["usage"]["generations"] for m in steps] == [3] * len(steps)
    reported = [m.response_metadata["ttc"]["usage"]["requests"] for m in steps]
    assert served["requests"] == served["answered"] == sum(reported)
    assert all(r == 3 for r in reported[1:]) and reported[0] in (3, 4)
    assert sum(m.usage_metadata["output_tokens"] for m in steps) == served["completion_tokens"]
    assert sum(m.usage_metadata["input_tokens"] for m in steps) == served["prompt_tokens"]
    assert all(len(m.response_metadata["ttc"]["candidates"]) == 3 for m in steps)


@pytest.fixture(scope="module")
def serve(bench: Bench) -> Iterator[str]:
    upstream = Upstream(bench.base_url, bench.model, api_key="local", timeout=300.0)
    app = create_app(ServeConfig(load_presets(), (), Limits(generations=16, seconds=300.0)), upstream)
    with serve_in_thread(app) as url:
        yield f"{url}/v1"


TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_ttc_serve_answers_a_tools_request_with_voted_tool_calls(bench: Bench, serve: str, stream: bool) -> None:
    client = openai.OpenAI(base_url=serve, api_key="-", max_retries=0, timeout=600)
    kwargs: Any = {
        "model": f"best_of_n_majority/{bench.model}",
        "messages": [{"role": "user", "content": "What is the weather in Paris right now?"}],
        "tools": TOOLS,
        "max_tokens": 64,
    }
    before = bench.meter.snapshot()
    if stream:
        chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
        name, arguments, finish, usage = "", "", None, None
        for ch in chunks:
            if ch.usage is not None:
                usage = ch.usage
            if ch.choices:
                for part in ch.choices[0].delta.tool_calls or []:
                    name += part.function.name or "" if part.function else ""
                    arguments += part.function.arguments or "" if part.function else ""
                finish = ch.choices[0].finish_reason or finish
    else:
        reply = client.chat.completions.create(**kwargs)
        calls = reply.choices[0].message.tool_calls or []
        assert len(calls) == 1
        name, arguments, finish, usage = calls[0].function.name, calls[0].function.arguments, None, reply.usage
        finish = reply.choices[0].finish_reason
    served = bench.meter.since(before)
    assert finish == "tool_calls"
    assert name == "get_weather"
    assert json.loads(arguments)["city"].lower() == "paris"
    assert usage is not None and usage.completion_tokens == served["completion_tokens"]
    assert served["requests"] == 4  # the preset's best-of-4
