"""The propose node: sample full solutions from the policy (one ``Send`` per request chunk)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NotRequired

from typing_extensions import TypedDict

from ttc_graph.answers import extract_answer
from ttc_graph.budget import usage_delta
from ttc_graph.endpoints.base import ChatMessage, Endpoint, Generation, RequestUsage, SamplingParams
from ttc_graph.errors import EndpointError
from ttc_graph.prompts import solve_messages
from ttc_graph.state import Candidate

__all__ = ["ProposeTask", "make_candidate", "make_propose_node"]


class ProposeTask(TypedDict):
    """What one propose branch must sample (the ``Send`` payload)."""

    question: str
    k: int
    round: int
    chunk: int
    temperature: float | None
    max_tokens: int | None
    seed: int | None
    timeout: float | None
    history: NotRequired[list[ChatMessage]]  # the conversation before the question (added by ``route_plan``)


def make_candidate(cid: str, gen: Generation, round_: int) -> Candidate:
    """A candidate from one generation, its final answer extracted (None marks it unparsable)."""
    answer = extract_answer(gen.text)
    cand: Candidate = {
        "id": cid,
        "text": gen.text,
        "answer": answer,
        "parsable": answer is not None,
        "score": None,
        "step_scores": None,
        "scored": False,
        "tokens": gen.tokens,
        "round": round_,
        "finish_reason": gen.finish_reason,
    }
    if gen.token_logprobs is not None:
        cand["token_logprobs"] = list(gen.token_logprobs)
    return cand


def make_propose_node(
    policy: Endpoint, *, system_prompt: str | None, logprobs: bool = False
) -> Callable[[ProposeTask], Awaitable[dict[str, Any]]]:
    """A node that samples ``task['k']`` solutions; failures are recorded, never lost with the usage."""

    async def propose(task: ProposeTask) -> dict[str, Any]:
        params = SamplingParams(
            temperature=task["temperature"],
            max_tokens=task["max_tokens"],
            seed=task["seed"],
            logprobs=logprobs,
            timeout=task["timeout"],
        )
        messages = solve_messages(task["question"], system_prompt, task.get("history") or ())
        try:
            coro = policy.generate(messages, n=task["k"], params=params)
            result = await (asyncio.wait_for(coro, task["timeout"]) if task["timeout"] else coro)
        except (EndpointError, TimeoutError) as exc:
            failed = RequestUsage(failed_requests=1)
            reason = f"propose round {task['round']} chunk {task['chunk']}: {exc or type(exc).__name__}"
            return {"usage": usage_delta("propose", failed), "errors": [reason]}
        prefix = f"r{task['round']}-c{task['chunk']}"
        candidates = [make_candidate(f"{prefix}-{i}", g, task["round"]) for i, g in enumerate(result.generations)]
        update: dict[str, Any] = {
            "candidates": candidates,
            "usage": usage_delta("propose", result.usage, generations=len(candidates)),
        }
        if result.errors:
            update["errors"] = [f"propose {prefix}: {e}" for e in result.errors]
        return update

    return propose
