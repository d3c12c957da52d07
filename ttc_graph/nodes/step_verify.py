"""The verify node of step-wise search: score every new beam of the frontier, in one batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.runtime import Runtime

from ttc_graph.budget import Budget, usage_delta
from ttc_graph.nodes.expand import Beam
from ttc_graph.nodes.verify import state_deadline, verify_or_unscored
from ttc_graph.state import TTCState
from ttc_graph.verifiers.base import Aggregation, Verifier, VerifyItem, aggregate

__all__ = ["make_step_verify_node"]


def make_step_verify_node(
    verifier: Verifier, aggregation: Aggregation, *, budget: Budget | None = None
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Score every unscored beam of the frontier (its lookahead rollout appended, if any); a beam's score is the
    ``aggregation`` of its step scores when the verifier gives them, else the verifier's value. Scoring ends at
    the run's deadline (the seconds budget of the run's context, else ``budget``)."""

    async def verify(state: TTCState, runtime: Runtime[Any]) -> dict[str, Any]:
        pending: list[Beam] = [b for b in state.get("frontier", []) if not b["scored"]]  # type: ignore[typeddict-item]
        if not pending:
            return {}
        items = [
            VerifyItem(
                state["question"],
                tuple(b.get("rollout") or b["steps"]),
                tuple(b["token_logprobs"] + b.get("rollout_logprobs", [])) if "token_logprobs" in b else None,
            )
            for b in pending
        ]
        result = await verify_or_unscored(verifier, items, deadline=state_deadline(state, runtime, budget))
        updated: list[Beam] = []
        errors: list[str] = []
        for beam, score in zip(pending, result.scores, strict=True):
            value = score.value
            if score.step_scores:
                value = aggregate(score.step_scores, aggregation)
            updated.append(
                {**beam, "score": value, "step_scores": list(score.step_scores or []) or None, "scored": True}
            )
            if score.error:
                errors.append(f"verify {beam['id']}: {score.error}")
        update: dict[str, Any] = {"frontier": updated, "usage": usage_delta("verify", result.usage)}
        if errors:
            update["errors"] = errors
        return update

    return verify
