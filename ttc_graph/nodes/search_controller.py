"""The selections of beam search (lookahead search included) and DVTS, run by the step round engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime

from ttc_graph.nodes.budget_controller import SamplingDefaults
from ttc_graph.nodes.expand import Beam
from ttc_graph.nodes.step_rounds import (
    StepRound,
    beam_to_candidate,
    by_score,
    make_step_controller,
    steps_distribution,
)
from ttc_graph.nodes.step_verify import make_step_verify_node
from ttc_graph.state import Candidate, TTCState

__all__ = ["SearchPlan", "make_search_controller", "make_search_verify_node"]

make_search_verify_node = make_step_verify_node
"""The verify node of every step-wise search (kept under its first name)."""


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """The selection of beam search and DVTS: ``n`` beams, ``width`` expansions per kept beam, ``groups`` subtrees.

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

    def describe(self) -> str:
        return f"{'DVTS' if self.diverse else 'beam search'} (n={self.n}, lookahead={self.lookahead})"

    def begin(self, state: TTCState, round_: int, seed: int | None, delimiter: str) -> StepRound:
        return _SearchRound(self, state, round_, delimiter)


class _SearchRound(StepRound):
    """Retire the finished beams, then keep the best (per subtree for DVTS) and expand each ``width`` times."""

    def __init__(self, plan: SearchPlan, state: TTCState, round_: int, delimiter: str) -> None:
        self.plan, self.delimiter = plan, delimiter
        self.frontier_: list[Beam] = list(state.get("frontier", []))  # type: ignore[arg-type]
        at_limit = round_ >= plan.max_steps
        self.ending: list[Beam]
        self.live: list[Beam]
        if round_ == 0:
            self.ending, self.chosen, self.live = [], _roots(plan), []
        elif plan.diverse:
            self.ending, self.chosen, self.live = _dvts_round(plan, state, self.frontier_, at_limit)
        else:
            self.ending = [b for b in self.frontier_ if b["finished"] or at_limit]
            self.live = by_score([b for b in self.frontier_ if not (b["finished"] or at_limit)])[: plan.keep_per_group]
            self.chosen = [(b, plan.width) for b in self.live]
        self.retired = [beam_to_candidate(b, delimiter, None if b["finished"] else "max_steps") for b in self.ending]
        if plan.diverse and not at_limit:  # a sibling of a finished best child is cut short, not max_steps
            self.retired = [
                c if c["finish_reason"] == "stop" else {**c, "finish_reason": "truncated"} for c in self.retired
            ]
        self.pool: list[Candidate] = [*state.get("candidates", []), *self.retired]
        self.done = len(self.pool)
        if at_limit:
            self.stop = "max_steps" if any(not b["finished"] for b in self.ending) else "complete"
        elif round_ > 0 and not plan.diverse and len(self.pool) >= plan.n:
            self.stop = "complete"
        elif round_ > 0 and not self.chosen:
            self.stop = "complete" if self.pool else "error"

    def expansions(self) -> list[tuple[Beam, int]]:
        return self.chosen

    def final(self, stop: str) -> tuple[list[Candidate], dict[str, Any]]:
        if stop.startswith("budget:"):  # cut short by the budget: keep the live beams, as max_steps does
            retiring = {b["id"] for b in self.ending}
            self.pool += [beam_to_candidate(b, self.delimiter, stop) for b in self.frontier_ if b["id"] not in retiring]
        final = self.pool if self.plan.diverse else by_score(self.pool)[: self.plan.n]  # the top n finished
        return final, {"finished": sum(1 for c in self.pool if c["finish_reason"] == "stop")}

    def event(self) -> dict[str, Any]:
        return {
            "beams": [
                {"id": b["id"], "score": b["score"], "steps": len(b["steps"]), "last": b["steps"][-1][:80]}
                for b in by_score([b for b in self.frontier_ if not b["finished"]])
            ],
            "steps_per_beam": steps_distribution(
                [beam_to_candidate(b, self.delimiter) for b in self.live] or self.retired
            ),
            "finished": self.done,
        }


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
        best = by_score(members)[0]
        if best["finished"] or at_limit:  # the subtree ends: its last expansion's children are its candidates
            ending.extend(members)
        else:
            expansions.append((best, plan.width))
            live.append(best)
    return ending, expansions, live


def _roots(plan: SearchPlan) -> list[tuple[Beam, int]]:
    """Round 0: each group (one for beam search) samples its share of the ``n`` first steps."""
    per_root = plan.n // plan.groups
    return [
        (
            Beam(
                id=f"g{g}", group=g, steps=[], score=None, step_scores=None, scored=True, finished=False, answer=None,
                tokens=0, round=0,
            ),
            per_root,
        )
        for g in range(plan.groups)
    ]  # fmt: skip


def make_search_controller(
    plan: SearchPlan, defaults: SamplingDefaults, delimiter: str
) -> Callable[[TTCState, Runtime[Any]], Awaitable[dict[str, Any]]]:
    """The budget controller of beam search or DVTS: the step round engine with ``plan``'s selection."""
    return make_step_controller(plan, defaults, delimiter)
