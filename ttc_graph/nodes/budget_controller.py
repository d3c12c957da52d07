"""The budget controller: decides, before every round, whether to loop or stop.

It never plans more than a budget allows: generations are counted before they are asked for, each request's
``max_tokens`` is capped at the token budget's share, and each request's timeout at the seconds left. A run that
hits a limit stops with the best answer found so far.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Send

from ttc_graph.budget import Budget, Remaining, policy_generations, remaining
from ttc_graph.nodes.context import run_context
from ttc_graph.nodes.propose import ProposeTask
from ttc_graph.selection import answer_groups, leader_probability
from ttc_graph.state import TTCContext, TTCState

__all__ = ["AdaptiveStop", "SamplingDefaults", "make_best_of_n_controller", "route_plan", "stop_reason_for"]


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """Sampling settings a strategy was built with; the run's context may override them.

    ``max_tokens=None`` leaves each request's length to the endpoint (its own or the model's default); a token
    budget still caps it at its share.
    """

    temperature: float = 0.7
    max_tokens: int | None = None
    seed: int | None = None
    budget: Budget | None = None

    def resolve(self, ctx: TTCContext) -> tuple[float, int | None, int | None, Budget | None]:
        return (
            self.temperature if ctx.temperature is None else ctx.temperature,
            self.max_tokens if ctx.max_tokens is None else ctx.max_tokens,
            self.seed if ctx.seed is None else ctx.seed,
            ctx.budget or self.budget,
        )


@dataclass(frozen=True, slots=True)
class AdaptiveStop:
    """Sample in rounds of ``round_size`` and stop once the leading answer is decisive.

    Decisive: P(leader's true share > 1/2) >= ``confidence`` under a Beta posterior on the vote counts,
    with at least ``min_samples`` samples drawn.
    """

    round_size: int = 4
    confidence: float = 0.95
    min_samples: int = 4


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
) -> Callable[[TTCState, Runtime[Any]], Awaitable[dict[str, Any]]]:
    """The controller of the best-of-N family: plans the next round of proposals or stops."""

    async def budget(state: TTCState, runtime: Runtime[Any]) -> dict[str, Any]:
        ctx = run_context(runtime)
        temperature, max_tokens, seed, limit = defaults.resolve(ctx)
        usage = state.get("usage")
        rem = remaining(limit, usage, state.get("started_at"))
        drawn = policy_generations(usage)
        round_ = state.get("round", 0)
        candidates = state.get("candidates", [])
        stop = None
        if drawn >= n:
            stop = "complete"
        elif round_ > 0 and len(candidates) == 0 and (state.get("errors") or []):
            stop = "error"
        elif (usage or {}).get("by_kind", {}).get("propose", {}).get("failed_requests", 0) >= n:
            stop = "error"  # as many failures as samples wanted: stop with what there is rather than retry forever
        elif adaptive and drawn >= adaptive.min_samples:
            votes = [g.votes for g in answer_groups(candidates)]
            if leader_probability(votes) >= adaptive.confidence:
                stop = "decisive"
        stop = stop or stop_reason_for(rem)
        k = 0
        if stop is None:
            k = n - drawn if adaptive is None else min(adaptive.round_size, n - drawn)
            k = int(min(k, rem.generations))
            cap = rem.max_tokens_each(k, max_tokens)
            if cap is not None and cap < 1:
                stop = "budget:tokens"
        plan: list[ProposeTask] = []
        if stop is None:
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
                    )
                )
        runtime.stream_writer(
            {
                "event": "ttc.round",
                "round": round_,
                "drawn": drawn,
                "planned": k,
                "candidates": len(candidates),
                "stop": stop,
                "usage": usage or {},
            }
        )
        update: dict[str, Any] = {"plan": plan, "round": round_ + 1 if plan else round_}
        if stop:
            update["stop_reason"] = stop
        return update

    return budget


def route_plan(target: str, done: str) -> Callable[[TTCState], Sequence[Send] | str]:
    """Conditional edge: one ``Send`` per planned task (to the node it names, else ``target``), or on to ``done``.

    Each task carries the conversation before the question (``history``), which the sampling nodes send along.
    """

    def route(state: TTCState) -> Sequence[Send] | str:
        plan = state.get("plan") or []
        history = state.get("history") or []
        return [Send(task.get("target", target), {**task, "history": history}) for task in plan] if plan else done

    return route
