"""The revise node: a new attempt of a revision chain, with its latest previous attempts in context."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ttc_graph.budget import NodeKind, usage_delta
from ttc_graph.endpoints.base import ChatMessage, Endpoint
from ttc_graph.errors import EndpointError
from ttc_graph.nodes.propose import SamplingTask, failure, make_candidate, task_params
from ttc_graph.prompts import solve_messages

__all__ = ["REVISION_WINDOW", "RevisionTask", "make_attempt_node", "revision_messages"]

REVISION_WINDOW = 4
"""Previous attempts a revision sees (the paper's context window)."""

REVISE_PROMPT = (
    "Here are previous attempts at this problem, oldest first. They may contain mistakes.\n\n{attempts}\n\n"
    "Check them carefully, then write a corrected, complete solution. Reason step by step and put your final "
    "answer within \\boxed{{}}."
)


class RevisionTask(SamplingTask):
    """What one attempt of one chain must draw."""

    target: str
    chain: int
    position: int
    previous: list[str]


def revision_messages(
    question: str,
    previous: list[str],
    system_prompt: str | None,
    history: Sequence[ChatMessage] = (),
    followup: Sequence[ChatMessage] = (),
) -> list[ChatMessage]:
    """The prompt of a revision: prior turns, the question, what followed it, then at most the 4 latest previous
    attempts, in order (an attempt that called tools is shown with its calls)."""
    window = previous[-REVISION_WINDOW:]
    if not window:
        return solve_messages(question, system_prompt, history, followup)
    shown = "\n\n".join(f"Attempt {i + 1}:\n{text.strip()}" for i, text in enumerate(window))
    request = REVISE_PROMPT.format(attempts=shown)
    if followup:  # the question is answered further on: ask for the revision after the last turn
        return solve_messages(question, system_prompt, history, [*followup, {"role": "user", "content": request}])
    return solve_messages(f"{question}\n\n{request}", system_prompt, history)


def make_attempt_node(
    policy: Endpoint, kind: NodeKind, *, system_prompt: str | None, logprobs: bool = False
) -> Callable[[RevisionTask], Awaitable[dict[str, Any]]]:
    """A node that draws one attempt of one chain (a first attempt for ``propose``, a revision for ``revise``)."""

    async def attempt(task: RevisionTask) -> dict[str, Any]:
        params = task_params(task, logprobs)
        messages = revision_messages(
            task["question"], task["previous"], system_prompt, task.get("history") or (), task.get("followup") or ()
        )
        try:
            coro = policy.generate(messages, n=1, params=params)
            result = await (asyncio.wait_for(coro, task["timeout"]) if task["timeout"] else coro)
        except (EndpointError, TimeoutError) as exc:
            where = f"{kind} chain {task['chain']} attempt {task['position']}"
            failed, reasons = failure(exc, 1, task["max_tokens"], where)
            return {"usage": usage_delta(kind, failed), "errors": reasons}
        gen = result.generations[0]
        cand = make_candidate(f"ch{task['chain']}-a{task['position']}", gen, task["position"], task.get("tools"))
        cand["meta"] = {**cand.get("meta", {}), "chain": task["chain"], "position": task["position"]}
        return {"candidates": [cand], "usage": usage_delta(kind, result.usage, generations=1)}

    return attempt
