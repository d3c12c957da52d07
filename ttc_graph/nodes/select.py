"""The select node: pick the final answer and report it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from langchain_core.messages import AIMessage, ToolCall
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
    text: str | None,
    answer: str | None,
    usage: Mapping[str, Any] | None,
    name: str | None,
    tool_calls: Sequence[ToolCall] = (),
    **metadata: Any,
) -> AIMessage:
    """The reply a strategy appends to ``messages``: the chosen solution (with its tool calls when it is an
    action), its answer, the run's token usage."""
    return AIMessage(
        content=text if text is not None else ("" if tool_calls else NO_ANSWER),
        name=name,
        tool_calls=list(tool_calls),
        usage_metadata=usage_metadata(usage),
        response_metadata={"ttc_answer": answer, **metadata},
    )


def make_select_node(
    selection: Selection | Callable[[list[Candidate]], Selected],
    *,
    name: str | None = None,
) -> SelectNode:
    """A node that applies ``selection`` (a rule name or a chooser) and records the wall time in the ledger.

    Samples cut off by the length limit do not vote under a rule name (:data:`ttc_graph.selection.TRUNCATED`); their
    count goes to ``diagnostics["truncated"]``, and ``diagnostics["warnings"]`` names ``max_tokens`` when they are
    the majority (a warning, not an error: the run itself did not fail). A chooser such as
    ``lambda c: select_answer(c, "majority", truncated="vote")`` keeps them voting.

    When the question came from ``messages`` it appends the chosen solution as an ``AIMessage`` named ``name``.
    """

    def select(state: TTCState) -> dict[str, Any]:
        candidates = state.get("candidates", [])
        chosen = selection(candidates) if callable(selection) else select_answer(candidates, selection)
        elapsed = time.time() - state.get("started_at", time.time())
        cand = next((c for c in candidates if c["id"] == chosen.candidate_id), None)
        answer = cand["answer"] if chosen.is_action and cand is not None else chosen.answer  # calls written out
        update: dict[str, Any] = {"answer": answer, "usage": {"seconds": elapsed}}
        if state.get("from_messages"):
            text = cand["text"] if cand is not None else None
            calls = (cand.get("tool_calls") or []) if cand is not None else []
            if calls and cand is not None and cand.get("meta", {}).get("calls_from_text"):
                text = ""  # calls parsed from the text: the reply carries them as calls, not twice
            metadata = {"ttc_invalid": list(chosen.invalid)} if chosen.invalid else {}
            update["messages"] = [answer_message(text, answer, state.get("usage"), name, calls, **metadata)]
        cut = sum(1 for c in candidates if c.get("finish_reason") == "length")
        if cut:
            diagnostics = {**(state.get("diagnostics") or {}), "truncated": cut}
            if cut * 2 > len(candidates):
                warning = f"{cut} of {len(candidates)} samples stopped at max_tokens and do not vote; raise max_tokens"
                diagnostics["warnings"] = [*diagnostics.get("warnings", []), warning]
            update["diagnostics"] = diagnostics
        return update

    return select
