"""Verification of steps in step-wise search: score new prefixes in one call, and the verify node around it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph.runtime import Runtime

from ttc_graph.budget import Budget, merge_usage, usage_delta
from ttc_graph.nodes.expand import Beam, ExpandTask
from ttc_graph.nodes.verify import state_deadline, verify_or_unscored
from ttc_graph.state import TTCState
from ttc_graph.usage import RequestUsage
from ttc_graph.verifiers.base import Aggregation, Verifier, VerifyItem, aggregate

__all__ = ["ScoredBeams", "make_scored_expand_node", "make_step_verify_node", "score_beams"]


@dataclass(slots=True)
class ScoredBeams:
    """What :func:`score_beams` returns: the beams with their scores, the verifier's usage and its errors."""

    beams: list[Beam]
    usage: RequestUsage
    errors: list[str] = field(default_factory=list)


async def score_beams(
    verifier: Verifier,
    aggregation: Aggregation,
    question: str,
    beams: Sequence[Beam],
    *,
    deadline: float | None = None,
) -> ScoredBeams:
    """Score ``beams`` in one verifier call: each prefix (its lookahead rollout appended, if any) is scored, and a
    beam's score is the ``aggregation`` of its step scores when the verifier gives them, else the verifier's value.

    How a step is verified is decided here alone, so every step search scores its prefixes the same way. Scoring
    ends at ``deadline`` (a monotonic time; :func:`~ttc_graph.nodes.verify.verify_or_unscored`).
    """
    items = [
        VerifyItem(
            question,
            tuple(b.get("rollout") or b["steps"]),
            tuple(b["token_logprobs"] + b.get("rollout_logprobs", [])) if "token_logprobs" in b else None,
        )
        for b in beams
    ]
    result = await verify_or_unscored(verifier, items, deadline=deadline)
    scored = ScoredBeams([], result.usage)
    for beam, score in zip(beams, result.scores, strict=True):
        value = aggregate(score.step_scores, aggregation) if score.step_scores else score.value
        scored.beams.append(
            {**beam, "score": value, "step_scores": list(score.step_scores or []) or None, "scored": True}
        )
        if score.error:
            scored.errors.append(f"verify {beam['id']}: {score.error}")
    return scored


def make_step_verify_node(
    verifier: Verifier, aggregation: Aggregation, *, budget: Budget | None = None
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The verify node: :func:`score_beams` over every unscored beam of the frontier, ending at the run's deadline
    (the seconds budget of the run's context, else ``budget``)."""

    async def verify(state: TTCState, runtime: Runtime[Any]) -> dict[str, Any]:
        pending: list[Beam] = [b for b in state.get("frontier", []) if not b["scored"]]  # type: ignore[typeddict-item]
        if not pending:
            return {}
        deadline = state_deadline(state, runtime, budget)
        scored = await score_beams(verifier, aggregation, state["question"], pending, deadline=deadline)
        update: dict[str, Any] = {"frontier": scored.beams, "usage": usage_delta("verify", scored.usage)}
        if scored.errors:
            update["errors"] = scored.errors
        return update

    return verify


def make_scored_expand_node(
    expand: Callable[[ExpandTask], Awaitable[dict[str, Any]]],
    verifier: Verifier,
    aggregation: Aggregation,
    *,
    budget: Budget | None = None,
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The ``expand`` node with its children scored as soon as they arrive (:func:`score_beams`, ending at the
    run's deadline): a model verifier scores one beam's children while the round's other requests still generate,
    and the verify node after the round finds nothing left to score."""

    async def expand_and_score(task: ExpandTask, runtime: Runtime[Any]) -> dict[str, Any]:
        out = await expand(task)
        children: list[Beam] = out.get("frontier", [])
        if not children:
            return out
        deadline = state_deadline({"started_at": task.get("started_at")}, runtime, budget)
        scored = await score_beams(verifier, aggregation, task["question"], children, deadline=deadline)
        usage = merge_usage(out["usage"], usage_delta("verify", scored.usage))
        update = {**out, "frontier": scored.beams, "usage": usage}
        if scored.errors:
            update["errors"] = [*out.get("errors", []), *scored.errors]
        return update

    return expand_and_score
