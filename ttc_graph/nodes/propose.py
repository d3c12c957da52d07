"""The propose node: sample full solutions from the policy (one ``Send`` per request chunk)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NotRequired

from typing_extensions import TypedDict

from ttc_graph.answers import extract_answer
from ttc_graph.budget import usage_delta
from ttc_graph.endpoints.base import ChatMessage, Endpoint, Generation, RequestUsage, SamplingParams
from ttc_graph.errors import EndpointError
from ttc_graph.prompts import solve_messages
from ttc_graph.state import Candidate
from ttc_graph.tool_calls import parse_text_tool_calls, validate_tool_calls

__all__ = [
    "NO_TOOL_CALL",
    "ProposeTask",
    "SamplingTask",
    "attempt_text",
    "describe_calls",
    "failure",
    "make_candidate",
    "make_propose_node",
    "task_messages",
    "task_params",
    "task_tools",
]


class SamplingTask(TypedDict):
    """What every sampling task (a ``Send`` payload) carries: the request's settings and the conversation."""

    question: str
    temperature: float | None
    max_tokens: int | None
    seed: int | None
    timeout: float | None
    history: NotRequired[list[ChatMessage]]  # the conversation before the question (added by ``route_plan``)
    followup: NotRequired[list[ChatMessage]]  # the turns after it: an agent's tool calls and results
    tools: NotRequired[list[dict[str, Any]]]  # the run's tools (OpenAI format) and tool_choice
    tool_choice: NotRequired[str | dict[str, Any] | None]
    hold_tokens: NotRequired[bool]  # a token budget is set: a lost answer is charged and re-planned, not retried


class ProposeTask(SamplingTask):
    """What one propose branch must sample."""

    k: int
    round: int
    chunk: int


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


NO_TOOL_CALL = "(no tool call)"
"""The answer of a reply without tool calls and without an extractable answer when the run offered tools: such
replies vote together, as the action of calling nothing (BFCL's irrelevance category, a chat turn)."""


def describe_calls(calls: Sequence[Mapping[str, Any]]) -> str:
    """Tool calls written out as an action's answer: ``name(arg=value, ...)``, parallel calls joined by ``; ``."""
    return "; ".join(
        f"{c['name']}("
        + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in (c.get("args") or {}).items())
        + ")"
        for c in calls
    )


def task_messages(task: Mapping[str, Any], system_prompt: str | None) -> list[ChatMessage]:
    """The messages a sampling task sends: system prompt, prior turns, the question and what followed it."""
    return solve_messages(task["question"], system_prompt, task.get("history") or (), task.get("followup") or ())


def task_tools(task: Mapping[str, Any]) -> dict[str, Any]:
    """The task's ``tools`` / ``tool_choice`` as :class:`SamplingParams` fields (empty without tools)."""
    tools = task.get("tools")
    return {"tools": tuple(tools), "tool_choice": task.get("tool_choice")} if tools else {}


def task_params(task: SamplingTask, logprobs: bool) -> SamplingParams:
    """The sampling parameters of one request of a sampling task (a proposal or a revision attempt)."""
    return SamplingParams(
        temperature=task["temperature"],
        max_tokens=task["max_tokens"],
        seed=task["seed"],
        logprobs=logprobs,
        timeout=task["timeout"],
        retry_lost=not task.get("hold_tokens", False),
        **task_tools(task),
    )


def make_candidate(
    cid: str, gen: Generation, round_: int, tools: Sequence[Mapping[str, Any]] | None = None
) -> Candidate:
    """A candidate from one generation, its final answer extracted (None marks it unparsable).

    Under ``tools`` the candidate is an action when the model called tools: through the API (``gen.tool_calls``)
    or, for a model that writes its calls as text (fenced JSON, ``<tool_call>`` tags), as parsed from its text.
    An action's ``answer`` is its calls written out (``name(arg=value)``); selection groups actions by their calls.
    A reply in words with no extractable answer is :data:`NO_TOOL_CALL`; calls that fail their tool's schema are
    recorded in ``meta["invalid"]``.
    """
    calls = list(gen.tool_calls or ())
    from_text = False
    if tools and not calls:
        calls = parse_text_tool_calls(gen.text, tools)
        from_text = bool(calls)
    answer = describe_calls(calls) if calls else extract_answer(gen.text)
    if tools and answer is None and gen.text.strip():
        answer = NO_TOOL_CALL  # offered tools, the model replied in words: "call nothing" is an action too
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
    meta: dict[str, Any] = {}
    if calls:
        cand["tool_calls"] = calls
        problems = validate_tool_calls(calls, tools) if tools else []
        if problems:  # a schema-invalid action never wins against a valid candidate
            meta["invalid"] = problems
    if from_text:
        meta["calls_from_text"] = True
    if meta:
        cand["meta"] = meta
    return cand


def attempt_text(cand: Candidate) -> str:
    """A candidate as a later prompt shows it: its text, and its tool calls as fenced JSON when it called tools."""
    calls = cand.get("tool_calls") or []
    if not calls:
        return cand["text"]
    shown = "\n".join(
        "```json\n" + json.dumps({"name": c["name"], "arguments": c["args"]}, ensure_ascii=False) + "\n```"
        for c in calls
    )
    return f"{cand['text'].strip()}\n{shown}".strip()


def make_propose_node(
    policy: Endpoint, *, system_prompt: str | None, logprobs: bool = False
) -> Callable[[ProposeTask], Awaitable[dict[str, Any]]]:
    """A node that samples ``task['k']`` solutions; failures are recorded, never lost with the usage."""

    async def propose(task: ProposeTask) -> dict[str, Any]:
        params = task_params(task, logprobs)
        messages = task_messages(task, system_prompt)
        try:
            coro = policy.generate(messages, n=task["k"], params=params)
            result = await (asyncio.wait_for(coro, task["timeout"]) if task["timeout"] else coro)
        except (EndpointError, TimeoutError) as exc:
            where = f"propose round {task['round']} chunk {task['chunk']}"
            failed, reasons = failure(exc, task["k"], task["max_tokens"], where)
            return {"usage": usage_delta("propose", failed), "errors": reasons}
        prefix = f"r{task['round']}-c{task['chunk']}"
        tools = task.get("tools")
        candidates = [
            make_candidate(f"{prefix}-{i}", g, task["round"], tools) for i, g in enumerate(result.generations)
        ]
        update: dict[str, Any] = {
            "candidates": candidates,
            "usage": usage_delta("propose", result.usage, generations=len(candidates)),
        }
        if result.errors:
            update["errors"] = [f"propose {prefix}: {e}" for e in result.errors]
        return update

    return propose
