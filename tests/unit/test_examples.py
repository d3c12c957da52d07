"""The runnable examples build and run (on a scripted policy here; on the real model in the README's demo)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from langchain_core.messages import AIMessage, HumanMessage

from ttc_graph.testing import FakeCall, ScriptedEndpoint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # type hints of its state are resolved through the module
    spec.loader.exec_module(module)
    return module


async def test_agent_subgraph_routes_math_to_best_of_n() -> None:
    example = load("agent_subgraph")
    policy = ScriptedEndpoint(["12 * 7 = 84, so \\boxed{84}", "\\boxed{84}", "\\boxed{74}"], native_n=False)
    app = example.build_agent(policy).compile()
    out = await app.ainvoke({"messages": [HumanMessage("What is 12 * 7?")]})
    assert out["answer"] == "84"
    assert out["usage"]["generations"] == 8
    assert isinstance(out["messages"][-1], AIMessage) and "84" in str(out["messages"][-1].content)


async def test_agent_subgraph_chats_without_sampling_for_other_questions() -> None:
    example = load("agent_subgraph")
    policy = ScriptedEndpoint(["Hello there."])
    out = await example.build_agent(policy).compile().ainvoke({"messages": [HumanMessage("Say hello")]})
    assert out["messages"][-1].content == "Hello there."
    assert len(policy.calls) == 1 and not out.get("usage")


async def test_multi_turn_agent_answers_each_turn_with_the_conversation() -> None:
    example = load("multi_turn_agent")
    answers = {"What is 6 * 7?": "42", "Add 8 to that.": "50", "Now halve it.": "25"}

    def respond(call: FakeCall, index: int) -> str:
        return f"So \\boxed{{{answers[call.messages[-1]['content']]}}}"

    policy = ScriptedEndpoint(respond, native_n=False)
    outs = await example.converse(policy, example.TURNS, quiet=True)
    assert [o["answer"] for o in outs] == ["42", "50", "25"]
    assert [len(o["messages"]) for o in outs] == [2, 4, 6]
    assert all(o["usage"]["generations"] == 4 for o in outs)  # each turn its own run, not a running total
    last = policy.calls[-1].messages
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    reply = outs[-1]["messages"][-1]
    assert reply.name == "solver" and reply.usage_metadata["output_tokens"] == outs[-1]["usage"]["completion_tokens"]
