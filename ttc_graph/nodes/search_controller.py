"""Verify and control nodes of step-level search (beam search, lookahead, DVTS)."""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from ttc_graph.answers import extract_answer
from ttc_graph.budget import remaining, usage_delta
from ttc_graph.errors import BudgetError
from ttc_graph.nodes.budget_controller import SamplingDefaults, holds_tokens, stop_reason_for
from ttc_graph.nodes.context import run_context
from ttc_graph.nodes.expand import Beam, ExpandTask
from ttc_graph.nodes.verify import verify_or_unscored
from ttc_graph.state import Candidate, TTCState
from ttc_graph.verifiers.base import Aggregation, Verifier, VerifyItem, aggregate

__all__ = [
    "SearchPlan",
    "beam_to_candidate",
    "make_search_controller",
    "make_search_verify_node",
    "step_warnings",
    "steps_distribution",
]

logger = logging.getLogger("ttc_graph.search")


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """The shape of a search: ``n`` beams, ``width`` expansions per kept beam, ``groups`` independent subtrees.

    Beam search: one group, keep the top ``n // width`` unfinished beams each round, stop once ``n`` beams have
    finished, select over the top ``n`` finished. DVTS (``diverse``): ``n // width`` groups, each following its
    best child until that child finishes. Generations charged, as in the paper: ``n * (lookahead + 1)``.
    """

    n: int
    width: int
    groups: int
    keep_per_group: int
    lookahead: int
    max_steps: int
    diverse: bool = False

    @property
    def generations(self) -> int:
        return self.n * (self.lookahead + 1)


def beam_to_candidate(beam: Beam, delimiter: str, finish_reason: str | None = None) -> Candidate:
    """A finished (or, at a limit, live) beam as a candidate; ``meta.steps`` is its number of steps."""
    reason = finish_reason or ("stop" if beam["finished"] else "truncated")
    text = delimiter.join(beam["steps"])
    answer = beam["answer"] if beam["finished"] else extract_answer(text, strict=True)
    return Candidate(
        id=beam["id"],
        text=text,
        answer=answer,
        parsable=answer is not None,
        score=beam["score"],
        step_scores=beam["step_scores"],
        scored=beam["scored"],
        tokens=beam["tokens"],
        round=beam["round"],
        finish_reason=reason,
        meta={"steps": len(beam["steps"]), "group": beam["group"], "partial": bool(beam.get("partial"))},
    )


def steps_distribution(candidates: Sequence[Candidate]) -> dict[str, Any]:
    """How many steps the candidates have: a histogram, min, median and max."""
    counts = sorted(int(c.get("meta", {}).get("steps", 0)) for c in candidates)
    if not counts:
        return {"histogram": {}, "min": None, "median": None, "max": None}
    histogram: dict[str, int] = {}
    for k in counts:
        histogram[str(k)] = histogram.get(str(k), 0) + 1
    return {"histogram": histogram, "min": counts[0], "median": statistics.median(counts), "max": counts[-1]}


def step_warnings(distribution: dict[str, Any], delimiter: str) -> list[str]:
    """A warning when the median candidate has a single step: the model never wrote the step delimiter."""
    if distribution["median"] is not None and distribution["median"] <= 1:
        return [
            f"search: the median candidate has {distribution['median']:g} step(s); the model rarely writes the step"
            f" delimiter {delimiter!r}, so this search behaves like best-of-N over whole solutions"
        ]
    return []


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
                tuple(b.get("rollout") or b["steps"]),
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


def _final_pool(plan: SearchPlan, pool: Sequence[Candidate]) -> list[Candidate]:
    """Beam search selects over the top ``n`` finished beams by score (DVTS pools are at most ``n`` already)."""
    ranked = sorted(pool, key=lambda c: -(c["score"] if c["score"] is not None else -math.inf))
    return ranked[: plan.n]


def _dvts_round(
    plan: SearchPlan, state: TTCState, frontier: list[Beam], at_limit: bool
) -> tuple[list[Beam], list[tuple[Beam, int]], list[Beam]]:
    """DVTS: per live subtree, a finished best child ends it (its siblings are its other candidates, as in
    search-and-learn, so the pool holds ``n``) or the best child is expanded again.

    Returns (beams ending their subtree now, expansions, live bests). A subtree whose expansion failed has no
    children this round: its parent is expanded again rather than dropped.
    """
    done_groups = {int(c.get("meta", {}).get("group", -1)) for c in state.get("candidates", [])}
    by_group: dict[int, list[Beam]] = {}
    for beam in frontier:
        by_group.setdefault(beam["group"], []).append(beam)
    parents = {t["beam"]["group"]: t for t in (state.get("plan") or []) if "beam" in t}
    ending: list[Beam] = []
    expansions: list[tuple[Beam, int]] = []
    live: list[Beam] = []
    for g in range(plan.groups):
        if g in done_groups:
            continue
        members = by_group.get(g)
        if not members:
            if g in parents:
                expansions.append((parents[g]["beam"], parents[g]["k"]))
            continue
        best = _rank(members)[0]
        if best["finished"] or at_limit:  # the subtree ends: its last expansion's children are its candidates
            ending.extend(members)
        else:
            expansions.append((best, plan.width))
            live.append(best)
    return ending, expansions, live


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
        previous: list[Candidate] = list(state.get("candidates", []))
        at_limit = round_ >= plan.max_steps
        if round_ == 0:
            ending, expansions, live = [], _roots(plan), []
        elif plan.diverse:
            ending, expansions, live = _dvts_round(plan, state, frontier, at_limit)
        else:
            ending = [b for b in frontier if b["finished"] or at_limit]
            live = _rank([b for b in frontier if not (b["finished"] or at_limit)])[: plan.keep_per_group]
            expansions = [(b, plan.width) for b in live]
        finished = [beam_to_candidate(b, delimiter, None if b["finished"] else "max_steps") for b in ending]
        if plan.diverse and not at_limit:  # a sibling of a finished best child is cut short, not max_steps
            finished = [c if c["finish_reason"] == "stop" else {**c, "finish_reason": "truncated"} for c in finished]
        pool = [*previous, *finished]
        retired = len(pool)
        rem = remaining(limit, state.get("usage"), state.get("started_at"))
        stop: str | None = None
        if at_limit:
            stop = "max_steps" if any(not b["finished"] for b in ending) else "complete"
        elif round_ > 0 and not plan.diverse and len(pool) >= plan.n:
            stop = "complete"
        elif round_ > 0 and not expansions:
            stop = "complete" if pool else "error"
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
                for beam, k in expansions:
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
                            hold_tokens=holds_tokens(limit),
                        )
                    )
                    offset += k
        if stop and stop.startswith("budget:"):  # cut short by the budget: keep the live beams, as max_steps does
            retiring = {b["id"] for b in ending}
            pool += [beam_to_candidate(b, delimiter, stop) for b in frontier if b["id"] not in retiring]
        if stop:
            final = pool if plan.diverse else _final_pool(plan, pool)
            distribution = steps_distribution(final)
            warnings = step_warnings(distribution, delimiter)
            for warning in warnings:
                logger.warning(warning)
            update["candidates"] = Overwrite(final)
            update["diagnostics"] = {
                "steps_per_candidate": distribution,
                "finished": sum(1 for c in pool if c["finish_reason"] == "stop"),
                "warnings": warnings,
            }
        elif finished:
            update["candidates"] = finished
        if round_ == 0 and tasks:
            update["usage"] = usage_delta("propose", generations=plan.generations)
        runtime.stream_writer(
            {
                "event": "ttc.round",
                "round": round_,
                "beams": [
                    {"id": b["id"], "score": b["score"], "steps": len(b["steps"]), "last": b["steps"][-1][:80]}
                    for b in _rank([b for b in frontier if not b["finished"]])
                ],
                "steps_per_beam": steps_distribution([beam_to_candidate(b, delimiter) for b in live] or finished),
                "finished": retired,
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


def _roots(plan: SearchPlan) -> list[tuple[Beam, int]]:
    """Round 0: each group (one for beam search) samples its share of the ``n`` first steps."""
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
