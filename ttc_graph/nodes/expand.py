"""The step-level propose node of search: extend one beam by k next steps, with optional lookahead rollouts."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, NotRequired

from typing_extensions import TypedDict

from ttc_graph.answers import extract_answer
from ttc_graph.budget import usage_delta
from ttc_graph.endpoints.base import Endpoint, GenerationResult, RequestUsage, SamplingParams
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.prompts import solve_messages

__all__ = ["Beam", "ExpandTask", "check_can_continue", "make_expand_node", "prefix_text", "step_finishes"]


class Beam(TypedDict):
    """A partial solution in a search: its steps so far and its verifier score."""

    id: str
    group: int
    steps: list[str]
    score: float | None
    step_scores: list[float] | None
    scored: bool
    finished: bool
    answer: str | None
    tokens: int
    round: int
    rollout: NotRequired[list[str]]
    token_logprobs: NotRequired[list[float]]
    rollout_logprobs: NotRequired[list[float]]


class ExpandTask(TypedDict):
    question: str
    beam: Beam
    k: int
    round: int
    temperature: float
    max_tokens: int | None
    seed: int | None
    timeout: float | None


def prefix_text(steps: list[str], delimiter: str) -> str:
    """The partial assistant answer a continuation starts from (ends with the delimiter)."""
    return delimiter.join(steps) + delimiter if steps else ""


def step_finishes(step: str, finish_reason: str | None) -> bool:
    """A step ends its solution when it states a final answer, is empty, or was cut off by the token limit."""
    return not step.strip() or extract_answer(step) is not None or finish_reason == "length"


def check_can_continue(policy: object) -> None:
    """Fail before any request if ``policy`` has no way to continue a partial answer."""
    mode = getattr(policy, "continuation", "auto")
    generate = getattr(policy, "generate", None)
    if mode in (None, "none") or generate is None or "prefix" not in inspect.signature(generate).parameters:
        raise ConfigurationError(
            f"policy: {type(policy).__name__} cannot continue a partial solution (it needs generate(..., prefix=...)"
            " via text completions, assistant prefill or the next-step prompt)"
        )


def make_expand_node(
    policy: Endpoint, *, system_prompt: str | None, delimiter: str, lookahead: int, logprobs: bool = False
) -> Callable[[ExpandTask], Awaitable[dict[str, Any]]]:
    """A node that samples ``k`` next steps of one beam, each optionally scored after a greedy rollout.

    With ``logprobs`` (for a confidence verifier) every beam carries the token log-probabilities of its steps.
    """
    stop = (delimiter,)

    async def step(question: str, steps: list[str], n: int, params: SamplingParams) -> GenerationResult:
        prefix = prefix_text(steps, delimiter)
        return await policy.generate(solve_messages(question, system_prompt), n=n, params=params, prefix=prefix or None)

    async def rollout(task: ExpandTask, steps: list[str], spent: RequestUsage) -> tuple[list[str], list[float]]:
        params = SamplingParams(
            temperature=0.0, max_tokens=task["max_tokens"], stop=stop, timeout=task["timeout"], logprobs=logprobs
        )
        extra: list[str] = []
        lps: list[float] = []
        for _ in range(lookahead):
            try:
                result = await step(task["question"], steps + extra, 1, params)
            except EndpointError:  # a failed rollout shortens the lookahead; the child itself is kept
                spent.failed_requests += 1
                break
            spent.add(result.usage)
            gen = result.generations[0]
            extra.append(gen.text.strip())
            lps.extend(gen.token_logprobs or ())
            if step_finishes(gen.text, gen.finish_reason):
                break
        return extra, lps

    async def expand(task: ExpandTask) -> dict[str, Any]:
        beam = task["beam"]
        params = SamplingParams(
            temperature=task["temperature"],
            max_tokens=task["max_tokens"],
            stop=stop,
            seed=task["seed"],
            timeout=task["timeout"],
            logprobs=logprobs,
        )
        spent = RequestUsage()
        try:
            result = await step(task["question"], beam["steps"], task["k"], params)
            spent.add(result.usage)
            children: list[Beam] = []
            for i, gen in enumerate(result.generations):
                text = gen.text.strip()
                children.append(
                    Beam(
                        id=f"{beam['id']}.{i}",
                        group=beam["group"],
                        steps=[*beam["steps"], text],
                        score=None,
                        step_scores=None,
                        scored=False,
                        finished=step_finishes(gen.text, gen.finish_reason),
                        answer=extract_answer(text),
                        tokens=beam["tokens"] + (gen.tokens or 0),
                        round=task["round"],
                    )
                )
                if logprobs:
                    children[-1]["token_logprobs"] = [*beam.get("token_logprobs", []), *(gen.token_logprobs or ())]
            if lookahead:
                open_ = [c for c in children if not c["finished"]]
                rollouts = await asyncio.gather(*(rollout(task, c["steps"], spent) for c in open_))
                for child, (extra, lps) in zip(open_, rollouts, strict=True):
                    child["rollout"] = extra
                    if logprobs:
                        child["rollout_logprobs"] = lps
        except (EndpointError, TimeoutError) as exc:
            spent.failed_requests += 1
            return {"usage": usage_delta("propose", spent), "errors": [f"expand {beam['id']}: {exc}"]}
        return {"frontier": children, "usage": usage_delta("propose", spent)}

    return expand
