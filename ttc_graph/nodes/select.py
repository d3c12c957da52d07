"""The select node: pick the final answer and report it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from langchain_core.messages import AIMessage
from langchain_core.messages.ai import UsageMetadata

from ttc_graph.selection import Selected, Selection, select_answer
from ttc_graph.state import Candidate, TTCState

__all__ = ["NO_ANSWER", "SelectNode", "answer_message", "make_select_node", "usage_metadata"]

NO_ANSWER = "I could not find an answer within the budget."


class SelectNode(Protocol):
    """The select node's signature."""

    def __call__(self, state: TTCState) -> dict[str, Any]: ...


def usage_metadata(usage: Mapping[str, Any] | None) -> UsageMetadata:
    """LangChain usage metadata from a run's ledger: every request's prompt and completion tokens (verifier too)."""
    prompt = int((usage or {}).get("prompt_tokens", 0))
    completion = int((usage or {}).get("completion_tokens", 0))
    return UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)


def answer_message(
    text: str | None, answer: str | None, usage: Mapping[str, Any] | None, name: str | None, **metadata: Any
) -> AIMessage:
    """The reply a strategy appends to ``messages``: the chosen solution, its answer, the run's token usage."""
    return AIMessage(
        content=text if text is not None else NO_ANSWER,
        name=name,
        usage_metadata=usage_metadata(usage),
        response_metadata={"ttc_answer": answer, **metadata},
    )


def make_select_node(
    selection: Selection | Callable[[list[Candidate]], Selected],
    *,
    name: str | None = None,
) -> SelectNode:
    """A node that applies ``selection`` (a rule name or a chooser) and records the wall time in the ledger.

    When the question came from ``messages`` it appends the chosen solution as an ``AIMessage`` named ``name``.
    """

    def select(state: TTCState) -> dict[str, Any]:
        candidates = state.get("candidates", [])
        chosen = selection(candidates) if callable(selection) else select_answer(candidates, selection)
        elapsed = time.time() - state.get("started_at", time.time())
        update: dict[str, Any] = {"answer": chosen.answer, "usage": {"seconds": elapsed}}
        if state.get("from_messages"):
            text = next((c["text"] for c in candidates if c["id"] == chosen.candidate_id), None)
            update["messages"] = [answer_message(text, chosen.answer, state.get("usage"), name)]
        return update

    return select
