"""A best-of-N graph as a subgraph node of a larger LangGraph app.

The parent graph routes math questions to a best-of-8 majority-vote subgraph and everything else to a plain
single call. It runs against ``TTC_BASE_URL``/``TTC_MODEL`` if set, otherwise against the embedded local model:

    .venv/bin/python examples/agent_subgraph.py "What is 12 * 7?"
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from ttc_graph import Endpoint, OpenAIEndpoint, create_best_of_n


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    answer: str | None
    usage: dict


def build_agent(policy: Endpoint) -> StateGraph:
    solver = create_best_of_n(policy, None, n=8, selection="majority", max_tokens=256).compile()

    async def chat(state: AgentState) -> dict:
        question = state["messages"][-1].content
        result = await policy.generate([{"role": "user", "content": str(question)}])
        return {"messages": [AIMessage(result.generations[0].text)]}

    def route(state: AgentState) -> str:
        text = str(state["messages"][-1].content)
        return "solve" if any(ch.isdigit() for ch in text) else "chat"

    agent = StateGraph(AgentState)
    agent.add_node("solve", solver)  # the compiled best-of-N graph is a node; it reads and writes `messages`
    agent.add_node("chat", chat)
    agent.add_conditional_edges(START, route, ["solve", "chat"])
    agent.add_edge("solve", END)
    agent.add_edge("chat", END)
    return agent


async def main(question: str, policy: Endpoint) -> None:
    app = build_agent(policy).compile()
    out = await app.ainvoke({"messages": [HumanMessage(question)]})
    print("reply:", out["messages"][-1].content.strip()[:500])
    print("answer:", out.get("answer"))
    print("usage:", {k: v for k, v in (out.get("usage") or {}).items() if k != "by_kind"})


if __name__ == "__main__":
    q = sys.argv[1] if len(sys.argv) > 1 else "What is 12 * 7?"
    if os.environ.get("TTC_BASE_URL"):
        asyncio.run(main(q, OpenAIEndpoint(os.environ["TTC_BASE_URL"], os.environ.get("TTC_MODEL", "default"))))
    else:
        from ttc_graph.local import LocalModelServer

        with LocalModelServer(parallel=4) as server:
            asyncio.run(main(q, server.endpoint()))
