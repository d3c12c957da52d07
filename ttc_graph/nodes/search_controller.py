"""Verify and control nodes of step-level search (beam search, lookahead, DVTS)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from ttc_graph.budget import remaining, usage_delta
from ttc_graph.errors import BudgetError
from ttc_graph.nodes.budget_controller import SamplingDefaults, stop_reason_for
from ttc_graph.nodes.context import run_context
from ttc_graph.nodes.expand import Beam, ExpandTask
from ttc_graph.nodes.verify import verify_or_unscored
from ttc_graph.state import Candidate, TTCState
from ttc_graph.verifiers.base import Aggregation, Verifier, VerifyItem, aggregate

__all__ = ["SearchPlan", "beam_to_candidate", "make_search_controller", "make_search_verify_node"]


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """The shape of a search: ``n`` beams, ``width`` expansions per kept beam, ``groups`` independent subtrees.

    Beam search: one group, keep the top ``n // width`` each round. DVTS: ``n // width`` groups, keep each
    group's best. Generations charged, as in the paper: ``n * (lookahead + 1)``.
    """

    n: int
    width: int
    groups: int
    keep_per_group: int
    lookahead: int
    max_steps: int

    @property
    def generations(self) -> int:
        return self.n * (self.lookahead + 1)


def beam_to_candidate(beam: Beam, delimiter: str) -> Candidate:
    return Candidate(
        id=beam["id"],
        text=delimiter.join(beam["steps"]),
        answer=beam["answer"],
        parsable=beam["answer"] is not None,
        score=beam["score"],
        step_scores=beam["step_scores"],
        scored=beam["scored"],
        tokens=beam["tokens"],
        round=beam["round"],
        finish_reason=None,
        meta={"steps": len(beam["steps"]), "group": beam["group"]},
    )


def make_search_verify_node(
    verifier: Verifier, aggregation: Aggregation
) -> Callable[[TTCState], Awaitable[dict[str, Any]]]:
    """Score every unscored beam of the frontier (with its lookahead rollout appended, if any)."""

    async def verify(state: TTCState) -> dict[str, Any]:
        pending: list[Beam] = [b for b in state.get("frontier", []) if not b["scored"]]  # type: ignore[typeddict-item]
        if not pending:
            return {}
        items = [
            VerifyItem(
                state["question"],
                tuple(b["steps"] + b.get("rollout", [])),
                tuple(b["token_logprobs"] + b.get("rollout_logprobs", [])) if "token_logprobs" in b else None,
            )
            for b in pending
        ]
        result = await verify_or_unscored(verifier, items)
        updated: list[Beam] = []
        errors: list[str] = []
        for beam, score in zip(pending, result.scores, strict=True):
            value = score.value
            if score.step_scores:
                value = aggregate(score.step_scores, aggregation)
            updated.append(
                {**beam, "score": value, "step_scores": list(score.step_scores or []) or None, "scored": True}
            )
            if score.error:
                errors.append(f"verify {beam['id']}: {score.error}")
        update: dict[str, Any] = {"frontier": updated, "usage": usage_delta("verify", result.usage)}
        if errors:
            update["errors"] = errors
        return update

    return verify


def _rank(beams: Sequence[Beam]) -> list[Beam]:
    # Unscored beams rank last; ties keep their order (the sort is stable).
    return sorted(beams, key=lambda b: -(b["score"] if b["score"] is not None else -math.inf))


def make_search_controller(
    plan: SearchPlan, defaults: SamplingDefaults, delimiter: str
) -> Callable[[TTCState, Runtime[Any]], Awaitable[dict[str, Any]]]:
    """Budget controller of search: retire finished beams, keep the best, plan the next expansions or stop."""

    async def control(state: TTCState, runtime: Runtime[Any]) -> dict[str, Any]:
        ctx = run_context(runtime)
        temperature, max_tokens, seed, limit = defaults.resolve(ctx)
        round_ = state.get("round", 0)
        update: dict[str, Any] = {}
        if round_ == 0 and limit and limit.generations is not None and limit.generations < plan.generations:
            raise BudgetError(
                f"budget: this search costs {plan.generations} generations (n={plan.n}, lookahead={plan.lookahead})"
                f" but the budget allows {limit.generations}"
            )
        frontier: list[Beam] = list(state.get("frontier", []))  # type: ignore[arg-type]
        done = [b for b in frontier if b["finished"] or round_ >= plan.max_steps]
        active = [b for b in frontier if not (b["finished"] or round_ >= plan.max_steps)]
        finished_before = len(state.get("candidates", []))
        if done:
            update["candidates"] = [beam_to_candidate(b, delimiter) for b in done]
        rem = remaining(limit, state.get("usage"), state.get("started_at"))
        stop: str | None = None
        if round_ > 0 and finished_before + len(done) >= plan.n:
            stop = "complete"
        elif round_ >= plan.max_steps:
            stop = "max_steps"
        elif round_ > 0 and not active:
            stop = "complete" if (finished_before + len(done)) else "error"
        else:
            # Generations are charged up front (round 0); later rounds must still see tokens and seconds run out.
            stop = stop_reason_for(rem if round_ == 0 else replace(rem, generations=math.inf))
        tasks: list[ExpandTask] = []
        if stop is None:
            cap = rem.max_tokens_each(plan.n * (plan.lookahead + 1), max_tokens)
            if cap is not None and cap < 1:
                stop = "budget:tokens"
            else:
                timeout = None if math.isinf(rem.seconds) else rem.seconds
                offset = 0  # a task of k samples owns seeds [seed, seed + k): endpoints that fan out use them all
                for beam, k in _expansions(plan, frontier, round_):
                    tasks.append(
                        ExpandTask(
                            question=state["question"],
                            beam=beam,
                            k=k,
                            round=round_ + 1,
                            temperature=temperature,
                            max_tokens=cap,
                            seed=None if seed is None else seed + 7919 * round_ + offset,
                            timeout=timeout,
                        )
                    )
                    offset += k
        if stop and stop.startswith("budget:") and active:  # cut short by the budget: keep the live beams, as
            live = [beam_to_candidate(b, delimiter) for b in active]  # max_steps does, rather than drop them
            update["candidates"] = [*update.get("candidates", []), *live]
        if stop is None and not tasks:
            stop = "complete"  # every subtree's best child has finished
        if round_ == 0 and tasks:
            update["usage"] = usage_delta("propose", generations=plan.generations)
        runtime.stream_writer(
            {
                "event": "ttc.round",
                "round": round_,
                "beams": [
                    {"id": b["id"], "score": b["score"], "steps": len(b["steps"]), "last": b["steps"][-1][:80]}
                    for b in _rank(active)
                ],
                "finished": finished_before + len(done),
                "planned": sum(t["k"] for t in tasks),
                "stop": stop,
                "usage": state.get("usage") or {},
            }
        )
        update["frontier"] = Overwrite([])
        update["plan"] = tasks
        update["round"] = round_ + 1 if tasks else round_
        if stop:
            update["stop_reason"] = stop
        return update

    return control


def _expansions(plan: SearchPlan, frontier: list[Beam], round_: int) -> list[tuple[Beam, int]]:
    """Which beams to expand and how many children each gets.

    Beam search keeps the top ``n / width`` unfinished beams. A DVTS subtree follows its best child, and is
    over once that child has finished.
    """
    if round_ == 0:
        per_root = plan.n // plan.groups
        return [
            (
                Beam(
                    id=f"g{g}",
                    group=g,
                    steps=[],
                    score=None,
                    step_scores=None,
                    scored=True,
                    finished=False,
                    answer=None,
                    tokens=0,
                    round=0,
                ),
                per_root,
            )
            for g in range(plan.groups)
        ]
    out: list[tuple[Beam, int]] = []
    for g in range(plan.groups):
        members = [b for b in frontier if b["group"] == g]
        if plan.groups > 1:
            ranked = _rank(members)[: plan.keep_per_group]
            out.extend((b, plan.width) for b in ranked if not b["finished"])
        else:
            out.extend((b, plan.width) for b in _rank([b for b in members if not b["finished"]])[: plan.keep_per_group])
    return out
