"""A multi-turn chat agent with a best-of-N solver node, a checkpointer and its own context schema.

Each turn of the thread is a fresh best-of-N run (its own samples, usage and answer) that sees the whole
conversation, so a follow-up such as "Add 8 to that." is sent together with the earlier turns. The agent's context
(``user_id``) is its own: the strategy ignores fields it does not own. Progress events of the solver subgraph are
streamed with ``subgraphs=True``. It runs against ``TTC_BASE_URL``/``TTC_MODEL`` if set, otherwise against the
embedded local model:

    .venv/bin/python examples/multi_turn_agent.py "What is 6 * 7?" "Add 8 to that." "Now halve it."
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from ttc_graph import Endpoint, OpenAIEndpoint, create_best_of_n

TURNS = ("What is 6 * 7?", "Add 8 to that.", "Now halve it.")


@dataclass
class UserContext:
    """The agent's own per-run context; ``temperature`` is also a field the solver reads (``TTCContext``)."""

    user_id: str
    temperature: float | None = None


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    answer: str | None
    usage: dict[str, Any]


def build_agent(policy: Endpoint, n: int = 4) -> StateGraph[ChatState, UserContext, ChatState, ChatState]:
    """``START → solve → END``; ``solve`` is a compiled best-of-N graph that reads and appends to ``messages``."""
    solver = create_best_of_n(policy, n=n, selection="majority", max_tokens=256, name="solver").compile()
    agent = StateGraph(ChatState, context_schema=UserContext)
    agent.add_node("solve", solver)
    agent.add_edge(START, "solve")
    agent.add_edge("solve", END)
    return agent


async def converse(
    policy: Endpoint, turns: Sequence[str], *, thread_id: str = "demo", user_id: str = "me", quiet: bool = False
) -> list[dict[str, Any]]:
    """Run ``turns`` one after another on one thread; return each turn's final state."""
    app = build_agent(policy).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": thread_id}}
    outputs: list[dict[str, Any]] = []
    for text in turns:
        final: dict[str, Any] = {}
        stream = app.astream(
            {"messages": [HumanMessage(text)]},
            config,
            context=UserContext(user_id=user_id),
            stream_mode=["custom", "values"],
            subgraphs=True,  # without it the solver subgraph's progress events are not streamed to the parent
        )
        async for namespace, mode, chunk in stream:
            if mode == "custom" and not quiet:
                print(f"  [{chunk['event']}] round {chunk['round']}: {chunk['drawn']} drawn, {chunk['planned']} more")
            elif mode == "values" and not namespace:
                final = chunk
        reply = final["messages"][-1]
        if not quiet:
            print(f"user: {text}")
            print(f"{reply.name}: {str(reply.content).strip()[:400]}")
            print(f"  answer={final.get('answer')!r} usage={reply.usage_metadata}\n")
        outputs.append(final)
    return outputs


if __name__ == "__main__":
    questions = sys.argv[1:] or list(TURNS)
    if os.environ.get("TTC_BASE_URL"):
        endpoint = OpenAIEndpoint(os.environ["TTC_BASE_URL"], os.environ.get("TTC_MODEL", "default"))
        asyncio.run(converse(endpoint, questions))
    else:
        from ttc_graph.local import LocalModelServer

        with LocalModelServer(parallel=4) as server:
            asyncio.run(converse(server.endpoint(), questions))
