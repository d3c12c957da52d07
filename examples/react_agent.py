"""A ReAct agent whose model is a ``TestTimeChatModel``: every step samples several replies and takes the action
most of them chose (a tool call, by its name and arguments, or a final answer).

It runs against ``TTC_BASE_URL``/``TTC_MODEL`` if set, otherwise against the embedded local model (which is too
small to do arithmetic well; the point is the plumbing: one message per step, the step's whole spend in its usage):

    .venv/bin/python examples/react_agent.py "What is 123 * 45 + 6?"
"""

from __future__ import annotations

import os
import sys
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from ttc_graph import Endpoint, OpenAIEndpoint
from ttc_graph.agents import TestTimeChatModel
from ttc_graph.agents.calculator import calculator

SYSTEM = (
    "You solve arithmetic questions. Call the calculator tool with the expression to compute, then state the"
    " result in one sentence."
)


def build_agent(policy: Endpoint, n: int = 4) -> Any:
    """The agent: LangChain's ``create_agent`` with a test-time model voting over each step's action."""
    model = TestTimeChatModel(model=policy, n=n, selection="majority", max_tokens=256)
    return create_agent(model, tools=[calculator], system_prompt=SYSTEM)


def main(question: str, policy: Endpoint) -> None:
    out = build_agent(policy).invoke({"messages": [HumanMessage(question)]}, {"recursion_limit": 12})
    for message in out["messages"]:
        calls = getattr(message, "tool_calls", None)
        shown = f" calls {[(c['name'], c['args']) for c in calls]}" if calls else ""
        print(f"{type(message).__name__}: {str(message.content).strip()[:200]}{shown}")
        usage = getattr(message, "usage_metadata", None)
        if usage:
            print(f"    (this step: {usage['input_tokens']} prompt + {usage['output_tokens']} completion tokens)")


if __name__ == "__main__":
    q = sys.argv[1] if len(sys.argv) > 1 else "What is 123 * 45 + 6?"
    if os.environ.get("TTC_BASE_URL"):
        main(q, OpenAIEndpoint(os.environ["TTC_BASE_URL"], os.environ.get("TTC_MODEL", "default")))
    else:
        from ttc_graph.local import LocalModelServer

        with LocalModelServer(parallel=4) as server:
            main(q, server.endpoint())
