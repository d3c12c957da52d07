"""Graph state shared by every strategy, and its reducers."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from ttc_graph.budget import Budget, merge_usage

__all__ = [
    "Candidate",
    "TTCContext",
    "TTCInput",
    "TTCOutput",
    "TTCState",
    "upsert_candidates",
]


class Candidate(TypedDict):
    """One sampled solution and what is known about it."""

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
    """Give ``question`` or a ``messages`` list whose last human message is the question."""

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


class TTCState(TypedDict, total=False):
    question: str
    messages: Annotated[list[AnyMessage], add_messages]
    from_messages: bool
    candidates: Annotated[list[Candidate], upsert_candidates]
    frontier: Annotated[list[Any], upsert_candidates]
    usage: Annotated[dict[str, Any], merge_usage]
    errors: Annotated[list[str], operator.add]
    round: int
    plan: list[dict[str, Any]]
    started_at: float
    answer: str | None
    stop_reason: str


@dataclass(slots=True)
class TTCContext:
    """Per-run knobs (LangGraph ``context``): one compiled graph serves many requests.

    Unset fields fall back to the values the strategy was built with.
    """

    budget: Budget | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
