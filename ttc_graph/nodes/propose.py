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

__all__ = ["ProposeTask", "failure", "make_candidate", "make_propose_node"]


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
    hold_tokens: NotRequired[bool]  # a token budget is set: a lost answer is charged and re-planned, not retried


def failure(exc: Exception, k: int, max_tokens: int | None, where: str) -> tuple[RequestUsage, list[str]]:
    """What a call of ``k`` samples that raised ``exc`` cost, and one message per failed request.

    An :class:`EndpointError` carries its usage (every failed request, answers lost); a timeout of the node itself
    (the seconds budget) cancelled ``k`` requests in flight, each of which may have generated ``max_tokens``.
    """
    if isinstance(exc, EndpointError):
        usage = exc.usage or RequestUsage(failed_requests=1)
        messages = exc.errors if len(exc.errors) > 1 else [str(exc)]
    else:
        usage = RequestUsage(failed_requests=k, unconfirmed_tokens=k * (max_tokens or 0))
        messages = [f"timed out with {k} request(s) in flight (the budget's seconds ran out)"]
    return usage, [f"{where}: {m or type(exc).__name__}" for m in messages]


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
            retry_lost=not task.get("hold_tokens", False),
        )
        messages = solve_messages(task["question"], system_prompt, task.get("history") or ())
        try:
            coro = policy.generate(messages, n=task["k"], params=params)
            result = await (asyncio.wait_for(coro, task["timeout"]) if task["timeout"] else coro)
        except (EndpointError, TimeoutError) as exc:
            where = f"propose round {task['round']} chunk {task['chunk']}"
            failed, reasons = failure(exc, task["k"], task["max_tokens"], where)
            return {"usage": usage_delta("propose", failed), "errors": reasons}
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
