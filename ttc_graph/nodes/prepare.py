"""The entry node: find the question and start the clock."""

from __future__ import annotations

import time
from typing import Any

from langchain_core.messages import HumanMessage

from ttc_graph.errors import ConfigurationError
from ttc_graph.state import TTCState

__all__ = ["prepare_node", "question_of"]


def question_of(state: TTCState) -> tuple[str, bool]:
    """The question and whether it came from ``messages`` (the last human message)."""
    question = state.get("question")
    if isinstance(question, str) and question.strip():
        return question.strip(), False
    for message in reversed(state.get("messages") or []):
        if isinstance(message, HumanMessage):
            text = message.text if isinstance(message.text, str) else str(message.content)
            if text.strip():
                return text.strip(), True
    raise ConfigurationError("question: give a non-empty 'question' or a 'messages' list ending in a human message")


def prepare_node(state: TTCState) -> dict[str, Any]:
    question, from_messages = question_of(state)
    update: dict[str, Any] = {"question": question, "from_messages": from_messages}
    if not state.get("started_at"):
        update["started_at"] = time.time()
    return update
