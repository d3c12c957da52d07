"""The policies of beam search (lookahead search included) and DVTS, run by the step round engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime

from ttc_graph.nodes.budget_controller import SamplingDefaults
from ttc_graph.nodes.expand import Beam, root_beam
from ttc_graph.nodes.step_rounds import (
    PolicyCost,
    StepRound,
    beam_to_candidate,
    by_score,
    limit_stop,
    make_step_controller,
    retire,
    split_frontier,
    steps_of,
)
from ttc_graph.nodes.step_verify import make_step_verify_node
from ttc_graph.state import Candidate, TTCState

__all__ = ["SearchPlan", "make_search_controller", "make_search_verify_node"]

make_search_verify_node = make_step_verify_node
"""The verify node of every step-wise search (kept under its first name)."""


@dataclass(frozen=True, slots=True)
class SearchPlan(PolicyCost):
    """The policy of beam search and DVTS: ``n`` beams, ``width`` expansions per kept beam, ``groups`` subtrees.

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
    asynchronous: bool = False

    @property
    def label(self) -> str:
        return "DVTS" if self.diverse else "beam search"

    @property
    def runner(self) -> str | None:
        """The node that runs the search without rounds, when ``asynchronous``: DVTS's ``subtrees``
        (:mod:`~ttc_graph.nodes.step_subtrees`)."""
        return "subtrees" if self.diverse and self.asynchronous else None

    def begin(self, state: TTCState, round_: int, seed: int | None, delimiter: str) -> StepRound:
        return (_DVTSRound if self.diverse else _BeamRound)(self, state, round_, delimiter)


class _BeamRound(StepRound):
    """Retire the finished beams, keep the top ``n // width`` live ones and expand each ``width`` times."""

    def __init__(self, plan: SearchPlan, state: TTCState, round_: int, delimiter: str) -> None:
        self.plan, self.delimiter, self.state = plan, delimiter, state
        self.frontier_: list[Beam] = list(state.get("frontier", []))  # type: ignore[arg-type]
        at_limit = round_ >= plan.max_steps
        self.ending: list[Beam] = []
        self.live: list[Beam] = []
        self.chosen = _roots(plan)
        if round_ > 0:
            self.ending, self.chosen, self.live = self.choose(at_limit)
        self.retired = self.retire(at_limit)
        self.pool: list[Candidate] = [*state.get("candidates", []), *self.retired]
        self.done = len(self.pool)
        if at_limit:
            self.stop = limit_stop(self.ending)
        elif round_ > 0:
            self.stop = self.stops_early()

    def choose(self, at_limit: bool) -> tuple[list[Beam], list[tuple[Beam, int]], list[Beam]]:
        """``(ending beams, expansions, live beams kept)`` of a round after the first."""
        ending, live = split_frontier(self.frontier_, at_limit)
        kept = by_score(live)[: self.plan.keep_per_group]
        return ending, [(b, self.plan.width) for b in kept], kept

    def retire(self, at_limit: bool) -> list[Candidate]:
        """The candidates the ending beams become."""
        return retire(self.ending, self.delimiter)

    def stops_early(self) -> str | None:
        """Before the step limit: done once ``n`` beams have finished, or when none is left to expand."""
        if len(self.pool) >= self.plan.n:
            return "complete"
        if not self.chosen:
            return "complete" if self.pool else "error"
        return None

    def expansions(self) -> list[tuple[Beam, int]]:
        return self.chosen

    def final(self, stop: str) -> tuple[list[Candidate], dict[str, Any]]:
        if stop.startswith("budget:"):  # cut short by the budget: keep the live beams, as max_steps does
            retiring = {b["id"] for b in self.ending}
            self.pool += [beam_to_candidate(b, self.delimiter, stop) for b in self.frontier_ if b["id"] not in retiring]
        return self.candidates(), {"finished": sum(1 for c in self.pool if c["finish_reason"] == "stop")}

    def candidates(self) -> list[Candidate]:
        """The final pool: the top ``n`` by score."""
        return by_score(self.pool)[: self.plan.n]

    def event(self) -> dict[str, Any]:
        return {
            "beams": [
                {"id": b["id"], "score": b["score"], "steps": len(b["steps"]), "last": b["steps"][-1][:80]}
                for b in by_score([b for b in self.frontier_ if not b["finished"]])
            ],
            "steps_per_beam": steps_of(self.live, self.delimiter, self.retired),
            "finished": self.done,
        }


class _DVTSRound(_BeamRound):
    """Per subtree: a finished best child ends it (with its siblings), else the best child is expanded again."""

    def choose(self, at_limit: bool) -> tuple[list[Beam], list[tuple[Beam, int]], list[Beam]]:
        return _dvts_round(self.plan, self.state, self.frontier_, at_limit)

    def retire(self, at_limit: bool) -> list[Candidate]:
        retired = retire(self.ending, self.delimiter)
        if at_limit:
            return retired
        # a sibling of a finished best child is cut short, not by max_steps
        return [c if c["finish_reason"] == "stop" else {**c, "finish_reason": "truncated"} for c in retired]

    def stops_early(self) -> str | None:
        """Once no subtree is left to expand (each ends when its best child finishes or at the step limit; the
        ``subtrees`` node ends them all before this round sees them, so a subtree cut at the limit says so)."""
        if self.chosen:
            return None
        if not self.pool:
            return "error"
        return "max_steps" if any(c["finish_reason"] == "max_steps" for c in self.pool) else "complete"

    def candidates(self) -> list[Candidate]:
        """The final pool: every subtree's last children."""
        return self.pool


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
    return [(root_beam(f"g{g}", g), plan.n // plan.groups) for g in range(plan.groups)]


def make_search_controller(
    plan: SearchPlan, defaults: SamplingDefaults, delimiter: str
) -> Callable[[TTCState, Runtime[Any]], Awaitable[dict[str, Any]]]:
    """The budget controller of beam search or DVTS: the step round engine with ``plan``'s policy."""
    return make_step_controller(plan, defaults, delimiter)
