"""Graph state shared by every strategy, and its reducers."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AnyMessage, ToolCall
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from ttc_graph.budget import Budget, merge_usage
from ttc_graph.errors import ConfigurationError
from ttc_graph.messages import ChatMessage

__all__ = [
    "Candidate",
    "History",
    "TTCContext",
    "TTCInput",
    "TTCOutput",
    "TTCState",
    "upsert_candidates",
]


History = Literal["all", "last"]
"""What of a message list reaches the model: ``all`` prior human and AI turns, or only the ``last`` question."""


class Candidate(TypedDict):
    """One sampled solution and what is known about it.

    ``tokens`` is the completion tokens of this candidate's own text (for a search beam: of all its steps), never
    prompt or verifier tokens; the run's totals are in ``usage``. A candidate with a non-empty ``tool_calls`` is an
    action (see :mod:`ttc_graph.tool_calls`); without, a final answer (``answer``).
    """

    id: str
    text: str
    answer: str | None
    parsable: bool
    score: float | None
    step_scores: list[float] | None
    scored: bool
    tokens: int | None
    round: int
    finish_reason: str | None
    token_logprobs: NotRequired[list[float] | None]
    meta: NotRequired[dict[str, Any]]
    tool_calls: NotRequired[list[ToolCall]]


def upsert_candidates(left: list[Candidate] | None, right: list[Candidate] | None) -> list[Candidate]:
    """Reducer: candidates whose id is already present are replaced in place, new ones appended."""
    if not right:
        return list(left or [])
    out = list(left or [])
    where = {c["id"]: i for i, c in enumerate(out)}
    for cand in right:
        i = where.get(cand["id"])
        if i is None:
            where[cand["id"]] = len(out)
            out.append(cand)
        else:
            out[i] = cand
    return out


class TTCInput(TypedDict, total=False):
    """Give ``question`` or a ``messages`` list whose last human message is the question.

    With ``messages`` the earlier human and AI turns are sent to the model too (unless ``history="last"``) and the
    answer is appended as an ``AIMessage``.
    """

    question: str
    messages: list[AnyMessage]


class TTCOutput(TypedDict, total=False):
    question: str
    messages: Annotated[list[AnyMessage], add_messages]
    answer: str | None
    candidates: list[Candidate]
    usage: dict[str, Any]
    stop_reason: str
    errors: list[str]
    diagnostics: dict[str, Any]


class TTCState(TypedDict, total=False):
    """The graph state. ``prepare`` resets every per-run field, so each run on a thread starts fresh."""

    question: str
    messages: Annotated[list[AnyMessage], add_messages]
    from_messages: bool
    history: list[ChatMessage]
    followup: list[ChatMessage]
    tools: list[dict[str, Any]] | None
    tool_choice: str | dict[str, Any] | None
    asked: dict[str, str | None]
    candidates: Annotated[list[Candidate], upsert_candidates]
    frontier: Annotated[list[Any], upsert_candidates]
    usage: Annotated[dict[str, Any], merge_usage]
    errors: Annotated[list[str], operator.add]
    round: int
    plan: list[dict[str, Any]]
    started_at: float
    run_key: str  # a random key of this run: a step search leases server slots under it
    answer: str | None
    stop_reason: str | None
    diagnostics: dict[str, Any] | None


@dataclass(slots=True, init=False)
class TTCContext:
    """Per-run knobs (LangGraph ``context``): one compiled graph serves many requests.

    Unset fields fall back to the values the strategy was built with. A strategy nested under a parent graph reads
    these fields from the parent's context object (any dataclass, pydantic model, dict or object with attributes)
    and ignores the fields it does not own. A dict given to the strategy's own graph becomes a ``TTCContext``
    (LangGraph converts it), so a field it does not know there (a typo such as ``temprature``) is a
    :class:`~ttc_graph.errors.ConfigurationError` naming it, not a ``TypeError`` from inside LangGraph.
    """

    budget: Budget | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    history: History | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        budget: Budget | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        history: History | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            names = ", ".join(f.name for f in fields(TTCContext))
            raise ConfigurationError(
                f"context.{next(iter(unknown))}: unknown field; a strategy's context has {names}"
                " (put anything else in 'extra')"
            )
        self.budget = budget
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.history = history
        self.tools = tools
        self.tool_choice = tool_choice
        self.extra = {} if extra is None else extra
