"""The select node: pick the final answer and report it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage

from ttc_graph.selection import Selected, Selection, select_answer
from ttc_graph.state import Candidate, TTCState

__all__ = ["make_select_node"]


def make_select_node(
    selection: Selection | Callable[[list[Candidate]], Selected],
) -> Callable[[TTCState], dict[str, Any]]:
    """A node that applies ``selection`` (a rule name or a chooser) and records the wall time in the ledger."""

    def select(state: TTCState) -> dict[str, Any]:
        candidates = state.get("candidates", [])
        chosen = selection(candidates) if callable(selection) else select_answer(candidates, selection)
        elapsed = time.time() - state.get("started_at", time.time())
        update: dict[str, Any] = {"answer": chosen.answer, "usage": {"seconds": elapsed}}
        if state.get("from_messages"):
            text = next((c["text"] for c in candidates if c["id"] == chosen.candidate_id), None)
            content = text if text is not None else "I could not find an answer within the budget."
            update["messages"] = [AIMessage(content=content, response_metadata={"ttc_answer": chosen.answer})]
        return update

    return select
