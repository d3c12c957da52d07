"""DVTS without a round barrier: every subtree advances the moment its own step is scored.

DVTS's subtrees never look at each other between the start and the end of the search, so waiting for the slowest
subtree of each round (one LangGraph super-step per round) only idles the server. The ``subtrees`` node runs the
whole search of every subtree inside one node instead: each subtree expands its beam (``width`` samples through
the expand node's own code, :func:`~ttc_graph.nodes.expand.make_expand_node`), scores the children the moment they
arrive (:func:`~ttc_graph.nodes.step_verify.score_beams`) and at once starts its best child's next step, while the
other subtrees generate. The rules are the round engine's (:func:`~ttc_graph.nodes.step_beam._dvts_round`): a
finished best child, or the step limit, ends the subtree with its last children as its candidates (siblings of a
finished best child are ``truncated``, at the limit they are ``max_steps``); a step whose requests all failed is
sampled again. The budget is checked before every step against the spend of all subtrees so far (the same
per-request token cap and timeout a round would get); once it runs out no new step starts, and the live subtrees'
last children go back to the round engine, which ends the search with them as a round-wise DVTS would.

What differs from the round-wise search: step ``r`` of subtree ``g`` is seeded ``seed + 7919 r + g * width`` (a
round compacted the offsets of the subtrees still alive), the verifier is called once per subtree step (not once
per round), and progress comes as one ``ttc.subtree`` event per scored step between the round engine's first and
last ``ttc.round`` events. Each scored step is appended to a durable log (a LangGraph ``@task``, as adaptive
best-of-N logs its samples), so a run resumed after a crash replays the steps that had been scored and requests
only the rest.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph.runtime import Runtime

from ttc_graph.budget import merge_usage, usage_delta
from ttc_graph.nodes.adaptive import _log, _replay
from ttc_graph.nodes.expand import Beam, ExpandTask, assign_slots
from ttc_graph.nodes.step_rounds import by_score, id_key, retire
from ttc_graph.nodes.step_runner import RunnerNode, RunnerParts, StepRunner, SubtreesTask
from ttc_graph.state import Candidate

__all__ = ["SUBTREES", "SubtreesTask", "make_subtrees_node", "subtree_slots"]

SUBTREES = "subtrees"
"""The node's name in the graph (and the ``target`` of the plan entry that starts it)."""


def subtree_slots(group: int, width: int, slots: int) -> set[int]:
    """The server slots subtree ``group`` owns: ``width`` of them, side by side (none past ``slots``)."""
    return {s for s in range(group * width, (group + 1) * width) if s < slots}


class _Subtrees(StepRunner):
    """One call of the ``subtrees`` node: the subtrees' loops, their shared ledger and their durable log."""

    def __init__(self, parts: RunnerParts, task: SubtreesTask, runtime: Runtime[Any], delimiter: str) -> None:
        super().__init__(parts, task, runtime)
        self.delimiter = delimiter
        self.logged: dict[tuple[int, int], dict[str, Any]] = {}
        self.entries: list[dict[str, Any]] = []
        self.retired: list[Candidate] = []
        self.live: list[Beam] = []
        self.expanding = 0

    async def step(self, root: ExpandTask, beam: Beam, k: int, r: int) -> dict[str, Any] | None:
        """Sample and score one step of a subtree (its log entry), or None when the budget allows none."""
        g = beam["group"]
        if r == 0:
            task = dict(root)
        else:
            lim = self.limits()
            if lim.stop:
                return None
            seed = None if self.seed is None else self.seed + 7919 * r + g * self.plan.width
            task = {
                **root, "beam": beam, "k": k, "round": r + 1, "seed": seed, "max_tokens": lim.max_tokens,
                "timeout": lim.timeout, "hold_tokens": lim.hold_tokens,
            }  # fmt: skip
            task.pop("slots", None)
            if self.slots:
                busy = set(range(self.slots)) - subtree_slots(g, self.plan.width, self.slots)
                task["slots"] = assign_slots([(beam, k)], self.slots, busy)[0]
        self.expanding += 1
        try:
            out = await self.parts.expand(task)  # type: ignore[arg-type]
            children: list[Beam] = out.get("frontier", [])
            errors = list(out.get("errors", []))
            verify_usage: dict[str, Any] = {}
            if children:
                scored = await self.score(children)
                children, verify_usage = scored.beams, usage_delta("verify", scored.usage)
                errors += scored.errors
        finally:
            self.expanding -= 1
        return {
            "kind": "subtree", "g": g, "r": r, "children": children,
            "usage": merge_usage(out["usage"], verify_usage), "errors": errors,
        }  # fmt: skip

    async def subtree(self, root: ExpandTask) -> None:
        """One subtree's loop: expand, score, follow the best child, until it finishes or the limit is reached."""
        beam, k, g = root["beam"], root["k"], root["beam"]["group"]
        members: list[Beam] = []
        r = 0
        while True:
            entry = self.logged.pop((g, r), None)
            if entry is None:
                entry = await self.step(root, beam, k, r)
                if entry is None:  # the budget ran out: the round engine ends the search with the live children
                    self.live.extend(members)
                    return
                if self.durable:
                    await _log([entry])
            self.apply(entry)
            r += 1
            at_limit = r >= self.plan.max_steps
            if not entry["children"]:  # every request of the step failed: sample the same beam again
                if at_limit:
                    return
                continue
            members = entry["children"]
            best = by_score(members)[0]
            ended = best["finished"] or at_limit
            self.event(entry, best, ended)
            if ended:
                retired = retire(members, self.delimiter)
                if not at_limit:  # a sibling of a finished best child is cut short, not by max_steps
                    retired = [
                        c if c["finish_reason"] == "stop" else {**c, "finish_reason": "truncated"} for c in retired
                    ]
                self.retired.extend(retired)
                return
            beam, k = best, self.plan.width

    def apply(self, entry: dict[str, Any]) -> None:
        self.spent = merge_usage(self.spent, entry["usage"])
        self.entries.append(entry)

    def event(self, entry: dict[str, Any], best: Beam, ended: bool) -> None:
        self.emit(
            {
                "event": "ttc.subtree",
                "group": entry["g"],
                "round": entry["r"] + 1,
                "children": len(entry["children"]),
                "best": best["id"],
                "score": best["score"],
                "steps": len(best["steps"]),
                "ended": ended,
                "expanding": self.expanding,
            }
        )

    async def run(self) -> dict[str, Any]:
        for entry in await _replay() if self.durable else []:
            if entry.get("kind") == "subtree":
                self.logged[(int(entry["g"]), int(entry["r"]))] = entry
        history = self.task.get("history", [])
        loops = [asyncio.ensure_future(self.subtree({**root, "history": history})) for root in self.task["roots"]]
        try:
            await asyncio.gather(*loops)
        except BaseException:  # one subtree failed for good (or the run was cancelled): stop the others, then raise
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            raise
        order = sorted(self.entries, key=lambda e: (e["g"], e["r"]))
        frontier = sorted(self.live, key=lambda b: (b["group"], id_key(b["id"])))
        errors = [e for entry in order for e in entry["errors"]]
        return self.update(frontier, errors, candidates=sorted(self.retired, key=_retired_order))


def _retired_order(cand: Candidate) -> tuple[Any, ...]:
    """The order a round-wise DVTS records its candidates in: by the round they ended in, then subtree, then id."""
    return (cand["round"], int(cand.get("meta", {}).get("group", 0)), id_key(cand["id"]))


def make_subtrees_node(parts: RunnerParts, delimiter: str) -> RunnerNode:
    """The ``subtrees`` node of DVTS (``parts.plan``: its :class:`~ttc_graph.nodes.step_beam.SearchPlan`): every
    subtree's steps, each started as soon as the subtree's last one is scored (see the module docstring). With
    ``parts.slots`` (the endpoint takes slot hints) subtree ``g`` keeps to its own ``width`` slots, so its next step
    finds its prefix where it left it."""

    async def subtrees(task: SubtreesTask, runtime: Runtime[Any]) -> dict[str, Any]:
        return await _Subtrees(parts, task, runtime, delimiter).run()

    return subtrees
