"""The step-level propose node of search: extend one beam by k next steps, with optional lookahead rollouts."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NotRequired

from typing_extensions import TypedDict

from ttc_graph.answers import extract_answer
from ttc_graph.budget import usage_delta
from ttc_graph.endpoints.base import ChatMessage, Endpoint, GenerationResult, RequestUsage, SamplingParams
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.nodes.propose import failure
from ttc_graph.prompts import solve_messages

__all__ = [
    "Beam",
    "ExpandTask",
    "StepOutcome",
    "assign_slots",
    "check_can_continue",
    "endpoint_slots",
    "extend_steps",
    "held_paths",
    "make_expand_node",
    "prefix_text",
    "root_beam",
    "shared_prefix",
    "step_finishes",
]


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
    partial: NotRequired[bool]
    rollout: NotRequired[list[str]]  # the whole path after a lookahead rollout (the child's steps, then more)
    token_logprobs: NotRequired[list[float]]
    rollout_logprobs: NotRequired[list[float]]
    slot: NotRequired[int | None]  # the server slot its last step ran on (set only when the endpoint takes hints)


def root_beam(beam_id: str, group: int = 0) -> Beam:
    """The empty solution a search expands first (``beam_id`` prefixes the ids of its descendants)."""
    return Beam(
        id=beam_id, group=group, steps=[], score=None, step_scores=None, scored=True, finished=False, answer=None,
        tokens=0, round=0,
    )  # fmt: skip


class ExpandTask(TypedDict):
    question: str
    beam: Beam
    k: int
    round: int
    temperature: float
    max_tokens: int | None
    seed: int | None
    timeout: float | None
    history: NotRequired[list[ChatMessage]]  # the conversation before the question (added by ``route_plan``)
    hold_tokens: NotRequired[bool]  # a token budget is set: a lost answer is charged and re-planned, not retried
    slots: NotRequired[list[int | None]]  # the server slot of each of the k samples (see :func:`assign_slots`)
    started_at: NotRequired[float | None]  # when the run started (its seconds budget's deadline counts from here)
    slot_owner: NotRequired[str | None]  # whose numbers ``slots`` are (the run's key; the endpoint leases them)


def prefix_text(steps: list[str], delimiter: str, partial: bool = False) -> str:
    """The partial assistant answer a continuation starts from.

    It ends with the delimiter, so the model writes the next step, unless the last step is ``partial`` (cut off
    by the token limit): then the model continues that step where it stopped.
    """
    if not steps:
        return ""
    return delimiter.join(steps) + ("" if partial else delimiter)


def step_finishes(step: str, finish_reason: str | None) -> bool:
    """A complete step ends its solution when it states a final answer (explicitly) or is empty.

    A step cut off by the token limit (``finish_reason == "length"``) never ends the solution: it is partial.
    """
    if finish_reason == "length":
        return False
    return not step.strip() or extract_answer(step, strict=True) is not None


class StepOutcome(TypedDict):
    """A path after one more piece of text: its steps, whether the last is partial, whether it is finished."""

    steps: list[str]
    partial: bool
    finished: bool


def extend_steps(steps: list[str], partial: bool, text: str, finish_reason: str | None) -> StepOutcome:
    """Append one sampled piece to a path: a new step, or the continuation of a partial last step."""
    cut = finish_reason == "length"
    if partial and steps:
        merged = steps[-1] + text
        new_steps = [*steps[:-1], merged if cut else merged.strip()]
        step = merged
    else:
        new_steps = [*steps, text.lstrip() if cut else text.strip()]
        step = text
    return StepOutcome(steps=new_steps, partial=cut, finished=step_finishes(step, finish_reason))


def endpoint_slots(policy: object) -> int | None:
    """How many server slots ``policy`` takes hints for (its ``slots``), or None when it takes none."""
    slots = getattr(policy, "slots", None)
    return slots if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0 else None


def held_paths(beams: Iterable[Beam]) -> dict[int, list[str]]:
    """What each server slot's KV cache holds, as far as ``beams`` (in the order they were generated) tell: the
    steps of the last beam generated on it."""
    return {b["slot"]: b["steps"] for b in beams if b.get("slot") is not None}  # type: ignore[misc]


def shared_prefix(path: Sequence[str], held: Sequence[str] | None) -> int:
    """Characters of ``path``'s leading steps that ``held`` (a slot's path) shares: the prompt the slot need not
    evaluate again."""
    if not held:
        return 0
    shared = 0
    for mine, theirs in zip(path, held, strict=False):
        if mine != theirs:
            break
        shared += len(mine) + 1
    return shared


def assign_slots(
    expansions: Sequence[tuple[Beam, int]],
    slots: int,
    busy: Iterable[int] = (),
    held: Mapping[int, Sequence[str]] | None = None,
) -> list[list[int | None]]:
    """The server slot of every sample of ``expansions`` (a beam and its number of children), ``slots`` in all.

    Prefix affinity: a beam's first child runs on its parent's slot (whose KV cache holds the parent's prefix, so
    the server evaluates only the new tokens). Its siblings take the free slot whose ``held`` path (what each slot
    last generated, :func:`held_paths`) shares the longest prefix with the parent's, such as a pruned sibling's,
    lowest first among equals; ``busy`` slots (running other work) are not given out. Past the free slots a sample
    gets None (the server's choice), so no two samples planned together ever queue on one slot.
    """
    taken = set(busy)
    held = held or {}
    out: list[list[int | None]] = [[None] * k for _, k in expansions]
    for i, (beam, k) in enumerate(expansions):
        slot = beam.get("slot")
        if k > 0 and slot is not None and 0 <= slot < slots and slot not in taken:
            out[i][0] = slot
            taken.add(slot)
    for (beam, _), row in zip(expansions, out, strict=True):
        for j, slot in enumerate(row):
            free = [s for s in range(slots) if s not in taken]
            if slot is None and free:
                row[j] = max(free, key=lambda s: (shared_prefix(beam["steps"], held.get(s)), -s))
                taken.add(row[j])  # type: ignore[arg-type]
    return out


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

    async def step(
        task: ExpandTask, steps: list[str], partial: bool, n: int, params: SamplingParams
    ) -> GenerationResult:
        prefix = prefix_text(steps, delimiter, partial)
        messages = solve_messages(task["question"], system_prompt, task.get("history") or ())
        return await policy.generate(messages, n=n, params=params, prefix=prefix or None)

    async def rollout(
        task: ExpandTask, child: Beam, spent: RequestUsage, errors: list[str]
    ) -> tuple[list[str], list[float]]:
        """The child's path after up to ``lookahead`` more steps at temperature 0 (what the verifier scores)."""
        params = SamplingParams(
            temperature=0.0,
            max_tokens=task["max_tokens"],
            stop=stop,
            timeout=task["timeout"],
            logprobs=logprobs,
            retry_lost=not task.get("hold_tokens", False),
            slots=(child["slot"],) if child.get("slot") is not None else None,
            slot_owner=task.get("slot_owner"),
        )
        path = StepOutcome(steps=list(child["steps"]), partial=bool(child.get("partial")), finished=False)
        lps: list[float] = []
        for _ in range(lookahead):
            try:
                result = await step(task, path["steps"], path["partial"], 1, params)
            except EndpointError as exc:  # a failed rollout shortens the lookahead; the child itself is kept
                failed, reasons = failure(exc, 1, task["max_tokens"], f"rollout of {child['id']}")
                spent.add(failed)
                errors.extend(reasons)
                break
            spent.add(result.usage)
            gen = result.generations[0]
            path = extend_steps(path["steps"], path["partial"], gen.text, gen.finish_reason)
            lps.extend(gen.token_logprobs or ())
            if path["finished"]:
                break
        return path["steps"], lps

    async def expand(task: ExpandTask) -> dict[str, Any]:
        beam = task["beam"]
        params = SamplingParams(
            temperature=task["temperature"],
            max_tokens=task["max_tokens"],
            stop=stop,
            seed=task["seed"],
            timeout=task["timeout"],
            logprobs=logprobs,
            retry_lost=not task.get("hold_tokens", False),
            slots=tuple(task["slots"]) if task.get("slots") else None,
            slot_owner=task.get("slot_owner"),
        )
        spent = RequestUsage()
        errors: list[str] = []
        partial = bool(beam.get("partial"))
        try:
            result = await step(task, beam["steps"], partial, task["k"], params)
            spent.add(result.usage)
            errors.extend(f"expand {beam['id']}: {e}" for e in result.errors)  # the children that failed
            children: list[Beam] = []
            for i, gen in enumerate(result.generations):
                path = extend_steps(beam["steps"], partial, gen.text, gen.finish_reason)
                children.append(
                    Beam(
                        id=f"{beam['id']}.{i}",
                        group=beam["group"],
                        steps=path["steps"],
                        score=None,
                        step_scores=None,
                        scored=False,
                        finished=path["finished"],
                        answer=extract_answer(delimiter.join(path["steps"])) if path["finished"] else None,
                        tokens=beam["tokens"] + (gen.tokens or 0),
                        round=task["round"],
                        partial=path["partial"],
                    )
                )
                if logprobs:
                    children[-1]["token_logprobs"] = [*beam.get("token_logprobs", []), *(gen.token_logprobs or ())]
                if task.get("slots"):  # where the server ran it if it says (llamacpp_n), else where it was sent
                    slots = task["slots"]
                    planned = slots[i] if i < len(slots) else None
                    children[-1]["slot"] = gen.slot if gen.slot is not None else planned
            if lookahead:
                open_ = [c for c in children if not c["finished"]]
                rollouts = await asyncio.gather(*(rollout(task, c, spent, errors) for c in open_))
                for child, (extra, lps) in zip(open_, rollouts, strict=True):
                    child["rollout"] = extra
                    if logprobs:
                        child["rollout_logprobs"] = lps
        except (EndpointError, TimeoutError) as exc:
            failed, reasons = failure(exc, task["k"], task["max_tokens"], f"expand {beam['id']}")
            spent.add(failed)
            return {"usage": usage_delta("propose", spent), "errors": [*errors, *reasons]}
        update: dict[str, Any] = {"frontier": children, "usage": usage_delta("propose", spent)}
        if errors:
            update["errors"] = errors
        return update

    return expand
