"""The verify node: score every candidate not yet scored, in one batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langgraph.runtime import Runtime

from ttc_graph.answers import split_steps
from ttc_graph.budget import Budget, usage_delta
from ttc_graph.errors import EndpointError, VerifierError
from ttc_graph.nodes.context import run_context
from ttc_graph.nodes.propose import attempt_text
from ttc_graph.state import Candidate, TTCState
from ttc_graph.verifiers.base import Score, VerificationResult, Verifier, VerifyItem
from ttc_graph.verifiers.deadline import run_deadline, verify_within

__all__ = ["make_verify_node", "state_deadline", "verify_candidates", "verify_or_unscored"]


async def verify_or_unscored(
    verifier: Verifier, items: list[VerifyItem], *, deadline: float | None = None
) -> VerificationResult:
    """``verifier.verify(items)`` bounded by ``deadline`` and the verifier's ``timeout``
    (:func:`~ttc_graph.verifiers.deadline.verify_within`); a batch that fails or outlasts its bound comes back
    unscored, so the run goes on."""
    try:
        return await verify_within(verifier, items, deadline=deadline)
    except (VerifierError, EndpointError) as exc:
        return VerificationResult([Score(None, error=f"{type(exc).__name__}: {exc}") for _ in items])


def state_deadline(state: Mapping[str, Any], runtime: Runtime[Any] | None, budget: Budget | None) -> float | None:
    """The run's deadline: its start plus the seconds budget of its context, else ``budget`` (the strategy's)."""
    return run_deadline(run_context(runtime).budget or budget, state.get("started_at"))


async def verify_candidates(
    verifier: Verifier,
    question: str,
    candidates: list[Candidate],
    step_delimiter: str = "\n\n",
    talk: Mapping[str, Any] | None = None,
    *,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Scores for ``candidates`` as a state update (candidates upserted, usage charged to ``verify``).

    ``talk`` (the run's ``history``, ``followup`` and ``tools``) goes to the verifier with each item, so a verifier
    can judge an agent's proposed action in its conversation; past ``deadline`` (``time.time()``) the candidates
    stay unscored."""
    if not candidates:
        return {}
    talk = talk or {}
    asked = ({"role": "user", "content": question},)
    conversation = (*tuple(talk.get("history") or ()), *asked, *tuple(talk.get("followup") or ()))
    tools = tuple(talk.get("tools") or ())
    items = []
    for c in candidates:
        text = attempt_text(c)
        steps = tuple(split_steps(text, step_delimiter)) or (text,)
        lps = c.get("token_logprobs")
        calls = tuple(dict(call) for call in c.get("tool_calls") or ())
        items.append(VerifyItem(question, steps, tuple(lps) if lps else None, conversation, tools, calls))
    result = await verify_or_unscored(verifier, items, deadline=deadline)
    updated: list[Candidate] = []
    errors: list[str] = []
    for cand, score in zip(candidates, result.scores, strict=True):
        new: dict[str, Any] = dict(cand)
        new["score"] = score.value
        new["step_scores"] = list(score.step_scores) if score.step_scores else None
        new["scored"] = score.value is not None
        if score.error:
            new["meta"] = {**new.get("meta", {}), "verify_error": score.error}
            errors.append(f"verify {cand['id']}: {score.error}")
        updated.append(new)  # type: ignore[arg-type]
    update: dict[str, Any] = {"candidates": updated, "usage": usage_delta("verify", result.usage)}
    if errors:
        update["errors"] = errors
    return update


def make_verify_node(
    verifier: Verifier | None, *, step_delimiter: str = "\n\n", budget: Budget | None = None
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """A node that scores the new candidates, within the run's deadline (the seconds budget of the run's context,
    else ``budget``); with no verifier it does nothing."""

    async def verify(state: TTCState, runtime: Runtime[Any]) -> dict[str, Any]:
        if verifier is None:
            return {}
        pending = [
            c for c in state.get("candidates", []) if not c["scored"] and "verify_error" not in c.get("meta", {})
        ]
        deadline = state_deadline(state, runtime, budget)
        return await verify_candidates(verifier, state["question"], pending, step_delimiter, state, deadline=deadline)

    return verify
