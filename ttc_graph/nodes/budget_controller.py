"""The budget controller: decides, before every round, whether to loop or stop.

It never plans more than a budget allows: generations are counted before they are asked for, each request's
``max_tokens`` is capped at the token budget's share, and each request's timeout at the seconds left. A run that
hits a limit stops with the best answer found so far.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Send

from ttc_graph.budget import Budget, Remaining, policy_generations, remaining
from ttc_graph.defaults import DEFAULT_TEMPERATURE
from ttc_graph.endpoints.base import check_number
from ttc_graph.errors import ConfigurationError
from ttc_graph.nodes.adaptive import AdaptiveStop, SampleTask, decisive
from ttc_graph.nodes.context import run_context
from ttc_graph.nodes.propose import ProposeTask
from ttc_graph.progress import round_event, truncated_count
from ttc_graph.selection import answer_groups
from ttc_graph.state import TTCContext, TTCState

__all__ = [
    "MAX_ROUND_SAMPLES",
    "AdaptiveStop",
    "SamplingDefaults",
    "conversation_of",
    "holds_tokens",
    "make_best_of_n_controller",
    "route_plan",
    "stop_reason_for",
]

MAX_ROUND_SAMPLES = 256
"""Samples best-of-N plans per round at most: a larger ``n`` runs in rounds, so what is in flight stays bounded."""


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """Sampling settings a strategy was built with; the run's context may override them.

    ``max_tokens=None`` leaves each request's length to the endpoint (its own or the model's default); a token
    budget still caps it at its share.
    """

    temperature: float = DEFAULT_TEMPERATURE
    max_tokens: int | None = None
    seed: int | None = None
    budget: Budget | None = None

    def __post_init__(self) -> None:
        check_number("temperature", self.temperature, integer=False, minimum=0)
        if self.max_tokens is not None:
            check_number("max_tokens", self.max_tokens, integer=True, minimum=1)
        if self.seed is not None:
            check_number("seed", self.seed, integer=True, minimum=-(2**63))
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise ConfigurationError(f"budget: expected a Budget, got {type(self.budget).__name__} {self.budget!r}")

    def resolve(self, ctx: TTCContext) -> tuple[float, int | None, int | None, Budget | None]:
        return (
            self.temperature if ctx.temperature is None else ctx.temperature,
            self.max_tokens if ctx.max_tokens is None else ctx.max_tokens,
            self.seed if ctx.seed is None else ctx.seed,
            ctx.budget or self.budget,
        )


def holds_tokens(limit: Budget | None) -> bool:
    """Whether a run has a token (or dollar) budget: its requests then give up on a lost answer (charged at its
    ``max_tokens``) rather than retry it, and the controller re-plans from what is left."""
    return limit is not None and (limit.tokens is not None or limit.dollars is not None)


def stop_reason_for(rem: Remaining) -> str | None:
    axis = rem.exhausted
    return f"budget:{axis}" if axis else None


def _chunks(k: int, batch: int) -> list[int]:
    return [min(batch, k - i) for i in range(0, k, batch)]


def make_best_of_n_controller(
    *,
    n: int,
    defaults: SamplingDefaults,
    adaptive: AdaptiveStop | None,
    batch: int,
    window: int | None = None,
) -> Callable[[TTCState, Runtime[Any]], Awaitable[dict[str, Any]]]:
    """The controller of the best-of-N family: plans the next round of proposals or stops.

    With ``window`` it plans one windowed sampling task (:class:`SampleTask`) that keeps that many requests in
    flight and applies ``adaptive``'s rule on every arrival (:mod:`ttc_graph.nodes.adaptive`); the controller
    re-plans only what failed.
    """

    async def budget(state: TTCState, runtime: Runtime[Any]) -> dict[str, Any]:
        ctx = run_context(runtime)
        temperature, max_tokens, seed, limit = defaults.resolve(ctx)
        usage = state.get("usage")
        rem = remaining(limit, usage, state.get("started_at"))
        drawn = policy_generations(usage)
        round_ = state.get("round", 0)
        candidates = state.get("candidates", [])
        stop = None
        if rem.seconds <= 0:
            stop = "budget:seconds"  # past the deadline even when all samples are in: their scoring may be cut short
        elif drawn >= n:
            stop = "complete"
        elif round_ > 0 and len(candidates) == 0 and (state.get("errors") or []):
            stop = "error"
        elif (usage or {}).get("by_kind", {}).get("propose", {}).get("failed_requests", 0) >= n:
            stop = "error"  # as many failures as samples wanted: stop with what there is rather than retry forever
        elif state.get("stop_reason") == "decisive" or (
            adaptive and decisive([g.votes for g in answer_groups(candidates)], drawn, n, adaptive)
        ):
            stop = "decisive"
        stop = stop or stop_reason_for(rem)
        k = 0
        if stop is None:
            k = n - drawn
            k = int(min(k, rem.generations))
            cap = rem.max_tokens_each(k, max_tokens)
            if cap is not None and cap < 1:
                stop = f"budget:{rem.short_of(k)}"
            k = min(k, MAX_ROUND_SAMPLES)  # after the cap: a larger n runs in rounds, each sample keeping its share
        plan: list[ProposeTask | SampleTask] = []
        if stop is None and window:
            timeout = None if math.isinf(rem.seconds) else rem.seconds
            plan.append(
                SampleTask(
                    question=state["question"],
                    k=k,
                    n=n,
                    drawn=drawn,
                    prior_answers=[c["answer"] for c in candidates],
                    window=min(window, k),
                    round=round_ + 1,
                    temperature=temperature,
                    max_tokens=cap,
                    seed=None if seed is None else seed + 1000 * round_,
                    timeout=timeout,
                    deadline=None if timeout is None else time.time() + timeout,
                    hold_tokens=holds_tokens(limit),
                )
            )
        elif stop is None:
            timeout = None if math.isinf(rem.seconds) else rem.seconds
            for chunk, size in enumerate(_chunks(k, batch)):
                chunk_seed = None if seed is None else seed + 1000 * round_ + chunk * batch
                plan.append(
                    ProposeTask(
                        question=state["question"],
                        k=size,
                        round=round_ + 1,
                        chunk=chunk,
                        temperature=temperature,
                        max_tokens=cap,
                        seed=chunk_seed,
                        timeout=timeout,
                        hold_tokens=holds_tokens(limit),
                    )
                )
        runtime.stream_writer(
            round_event(
                round_,
                drawn=drawn,
                total=n,
                planned=k,
                stop=stop,
                usage=usage,
                truncated=truncated_count(candidates),
                candidates=len(candidates),
            )
        )
        update: dict[str, Any] = {"plan": plan, "round": round_ + 1 if plan else round_}
        if stop:
            update["stop_reason"] = stop
        return update

    return budget


def conversation_of(state: Mapping[str, Any]) -> dict[str, Any]:
    """What every sampling task of a run sends besides its question: the turns around it and the run's tools."""
    talk: dict[str, Any] = {"history": state.get("history") or []}
    if state.get("followup"):
        talk["followup"] = state["followup"]
    if state.get("tools"):
        talk["tools"] = state["tools"]
        talk["tool_choice"] = state.get("tool_choice")
    return talk


def route_plan(target: str, done: str) -> Callable[[TTCState], Sequence[Send] | str]:
    """Conditional edge: one ``Send`` per planned task (to the node it names, else ``target``), or on to ``done``.

    Each task carries the conversation (``history`` before the question, ``followup`` after it) and the run's
    ``tools`` / ``tool_choice``, which the sampling nodes send along.
    """

    def route(state: TTCState) -> Sequence[Send] | str:
        plan = state.get("plan") or []
        if not plan:
            return done
        talk = conversation_of(state)
        return [Send(task.get("target", target), {**task, **talk}) for task in plan]

    return route
