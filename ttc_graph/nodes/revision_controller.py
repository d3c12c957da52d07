"""The budget controller of revision chains: start chains, extend them, stop them early, or finish."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime

from ttc_graph.answers import answers_equal
from ttc_graph.budget import remaining
from ttc_graph.nodes.budget_controller import SamplingDefaults, holds_tokens, stop_reason_for
from ttc_graph.nodes.context import run_context
from ttc_graph.nodes.propose import attempt_text
from ttc_graph.nodes.revise import RevisionTask
from ttc_graph.progress import round_event, truncated_count
from ttc_graph.state import Candidate, TTCState

__all__ = ["ChainPlan", "chain_status", "make_revision_controller"]


@dataclass(frozen=True, slots=True)
class ChainPlan:
    """``chains`` parallel chains of up to ``length`` attempts; early stops by score or a repeated answer."""

    chains: int
    length: int
    stop_score: float | None = None
    stop_on_repeat: bool = False


def chain_status(attempts: list[Candidate], plan: ChainPlan) -> str | None:
    """Why a chain is over (``full``, ``confident``, ``repeated``), or None while it should go on."""
    if len(attempts) >= plan.length:
        return "full"
    if not attempts:
        return None
    last = attempts[-1]
    if plan.stop_score is not None and last["score"] is not None and last["score"] >= plan.stop_score:
        return "confident"
    if plan.stop_on_repeat and len(attempts) >= 2 and answers_equal(last["answer"], attempts[-2]["answer"]):
        return "repeated"
    return None


def _failed_attempts(usage: dict[str, Any] | None) -> int:
    by_kind = (usage or {}).get("by_kind", {})
    return sum(by_kind.get(k, {}).get("failed_requests", 0) for k in ("propose", "revise"))


def make_revision_controller(
    plan: ChainPlan, defaults: SamplingDefaults
) -> Callable[[TTCState, Runtime[Any]], Awaitable[dict[str, Any]]]:
    async def control(state: TTCState, runtime: Runtime[Any]) -> dict[str, Any]:
        ctx = run_context(runtime)
        temperature, max_tokens, seed, limit = defaults.resolve(ctx)
        round_ = state.get("round", 0)
        candidates = state.get("candidates", [])
        by_chain: dict[int, list[Candidate]] = {c: [] for c in range(plan.chains)}
        for cand in candidates:
            by_chain.setdefault(int(cand.get("meta", {}).get("chain", 0)), []).append(cand)
        for attempts in by_chain.values():
            attempts.sort(key=lambda c: c.get("meta", {}).get("position", 0))
        status = {c: chain_status(a, plan) for c, a in by_chain.items()}
        open_chains = [c for c, s in status.items() if s is None]
        rem = remaining(limit, state.get("usage"), state.get("started_at"))
        stop: str | None = None
        if rem.seconds <= 0:
            stop = "budget:seconds"  # past the deadline even when every chain is done: its scoring may be cut short
        elif not open_chains:
            stop = "complete"
        elif round_ > 0 and not candidates and state.get("errors"):
            stop = "error"
        elif _failed_attempts(state.get("usage")) >= plan.chains * plan.length:
            stop = "error"  # a failed attempt is retried; n failures mean an endpoint is down, not unlucky
        else:
            stop = stop_reason_for(rem)
        tasks: list[RevisionTask] = []
        if stop is None:
            open_chains = open_chains[: int(min(len(open_chains), rem.generations))]
            cap = rem.max_tokens_each(len(open_chains), max_tokens)
            if cap is not None and cap < 1:
                stop = f"budget:{rem.short_of(len(open_chains))}"
            else:
                timeout = None if math.isinf(rem.seconds) else rem.seconds
                for c in open_chains:
                    position = len(by_chain[c])
                    tasks.append(
                        RevisionTask(
                            question=state["question"],
                            target="propose" if position == 0 else "revise",
                            chain=c,
                            position=position,
                            previous=[attempt_text(a) for a in by_chain[c]],
                            temperature=temperature,
                            max_tokens=cap,
                            seed=None if seed is None else seed + 1009 * c + position,
                            timeout=timeout,
                            hold_tokens=holds_tokens(limit),
                        )
                    )
        runtime.stream_writer(
            round_event(
                round_,
                drawn=sum(len(a) for a in by_chain.values()),
                total=plan.chains * plan.length,
                planned=len(tasks),
                stop=stop,
                usage=state.get("usage"),
                truncated=truncated_count(candidates),
                chains={c: {"attempts": len(a), "status": status[c]} for c, a in by_chain.items()},
            )
        )
        update: dict[str, Any] = {"plan": tasks, "round": round_ + 1 if tasks else round_}
        if stop:
            update["stop_reason"] = stop
        return update

    return control
