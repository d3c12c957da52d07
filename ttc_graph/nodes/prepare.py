"""The entry node: find the question and the conversation, reset the per-run state, start the clock."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, get_args

from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from ttc_graph.errors import ConfigurationError
from ttc_graph.messages import ChatMessage
from ttc_graph.nodes.context import run_context
from ttc_graph.prompts import chat_history, message_text
from ttc_graph.state import History, TTCState

__all__ = ["Asked", "PrepareNode", "make_prepare_node", "prepare_node", "question_of", "resolve_question"]

RESET_TO_NONE = ("answer", "stop_reason", "diagnostics")
"""Per-run fields without a reducer that a run may leave unset: cleared when a previous run set them."""


@dataclass(frozen=True, slots=True)
class Asked:
    """What a run answers: the question, whether it is a human message of ``messages``, and the prior turns."""

    question: str
    from_messages: bool
    history: list[ChatMessage]
    last_human_id: str | None
    followup: list[ChatMessage] = field(default_factory=list)


class PrepareNode(Protocol):
    """The prepare node's signature (a LangGraph node that takes the run's ``runtime``)."""

    def __call__(self, state: TTCState, *, runtime: Runtime[Any]) -> dict[str, Any]: ...


def _last_human(messages: Sequence[AnyMessage]) -> tuple[int, HumanMessage] | None:
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, HumanMessage) and message_text(message).strip():
            return i, message
    return None


def resolve_question(state: TTCState, history: History = "all") -> Asked:
    """The question of this run and the conversation before it.

    On a thread the state keeps the previous run's ``question``; a human message added since the previous run
    (``asked`` records what it saw) wins over that stale question, a new ``question`` wins over everything, as on a
    fresh state. The question used for answer extraction and verifiers is always that text alone.
    """
    messages: list[AnyMessage] = list(state.get("messages") or [])
    raw = state.get("question")
    question = raw.strip() if isinstance(raw, str) else ""
    previous = state.get("asked") or {}
    human = _last_human(messages)
    human_id = (human[1].id or message_text(human[1]).strip()) if human else None
    question_is_new = bool(question) and question != previous.get("question")
    human_is_new = human is not None and human_id != previous.get("message_id")
    asked_again = human is not None and not human_is_new and bool(state.get("from_messages"))  # a re-run
    if question_is_new or (question and not human_is_new and not asked_again):
        before = messages
        if human and message_text(human[1]).strip() == question:
            before = messages[: human[0]]  # the question is that human message (e.g. a router's sub-run)
        turns = chat_history(before) if history == "all" else []
        return Asked(question, False, turns, human_id)
    if human is None:
        if messages:
            raise ConfigurationError("question: the 'messages' list has no human message with text to answer")
        raise ConfigurationError("question: give a non-empty 'question' or a 'messages' list ending in a human message")
    index, message = human
    turns = chat_history(messages[:index]) if history == "all" else []
    # what came after the question (an agent's tool calls and their results) is part of the turn being answered
    return Asked(message_text(message).strip(), True, turns, human_id, chat_history(messages[index + 1 :]))


def question_of(state: TTCState) -> tuple[str, bool]:
    """The question and whether it came from ``messages`` (the last human message)."""
    asked = resolve_question(state)
    return asked.question, asked.from_messages


def make_prepare_node(history: History = "all", reset: Iterable[str] = (), *, takes_tools: bool = True) -> PrepareNode:
    """The entry node. It resets every per-run field, so each run on a thread starts fresh, and finds the question.

    ``history`` (the run's context may override it): ``all`` sends the prior human and AI turns of ``messages`` to
    the model, ``last`` only the question. ``reset`` names extra per-run fields to clear (a router's route).
    ``takes_tools=False`` (step-wise search, which samples reasoning steps, not actions) refuses a run whose context
    offers tools, with a :class:`ConfigurationError`.
    """
    if history not in get_args(History):
        raise ConfigurationError(f"history: expected 'all' or 'last', got {history!r}")
    extra = tuple(reset)

    def prepare(state: TTCState, runtime: Runtime[Any]) -> dict[str, Any]:
        ctx = run_context(runtime)
        if ctx.tools and not takes_tools:
            raise ConfigurationError(
                "tools: step-wise search samples reasoning steps, not actions; use best-of-N or revisions for a"
                " turn that may call tools"
            )
        asked = resolve_question(state, ctx.history or history)
        update: dict[str, Any] = {
            "question": asked.question,
            "from_messages": asked.from_messages,
            "history": asked.history,
            "followup": asked.followup,
            "tools": ctx.tools,
            "tool_choice": ctx.tool_choice,
            "asked": {"question": asked.question, "message_id": asked.last_human_id},
            "candidates": Overwrite([]),
            "frontier": Overwrite([]),
            "usage": Overwrite({}),
            "errors": Overwrite([]),
            "round": 0,
            "plan": [],
            "started_at": time.time(),
            "run_key": uuid.uuid4().hex[:12],
        }
        for key in (*RESET_TO_NONE, *extra):
            if state.get(key) is not None:
                update[key] = None
        return update

    return prepare


prepare_node = make_prepare_node()
