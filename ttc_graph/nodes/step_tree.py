"""MCTS without a round barrier: a new leaf is selected the moment an expansion comes back.

MCTS with a virtual loss needs no rounds: the ``n // expansions`` selections a round would make are only a
window of expansions in flight. The ``tree`` node keeps that window inside one node: it selects leaves by UCT with
a virtual loss on each path in flight (:class:`~ttc_graph.nodes.step_mcts._Tree`), expands each through the expand
node's own code (lookahead rollouts included), scores the children the moment they arrive
(:func:`~ttc_graph.nodes.step_verify.score_beams`), lifts that path's virtual loss, backs the values up, and at
once selects the next leaf while the other expansions still generate. The rules are the round-wise MCTS's: at most
``n`` sampled steps per depth (a layer counts the steps in flight), stop once ``n`` paths have finished (the
expansions in flight then finish and join the tree, as the rest of a round would), when no leaf is left to expand,
or at a budget limit (checked before every expansion against all the spend so far, with a round's per-request
token cap and timeout). A run of ``expansions`` failed expansions in a row with none succeeding stops it too.

What differs from the round-wise search: the tree grows in the order expansions arrive (on a real server not
reproducible from the seed alone; with a scripted endpoint it is), expansion ``e`` (counted from 0 in the order
they start) is seeded ``seed + 7919 e`` and its children carry ``round = e + 1``, the verifier is called once per
expansion, and progress comes as one ``ttc.expansion`` event per arrival. Every arrival is appended to a durable
log (a LangGraph ``@task``) in arrival order; a resumed run replays the log in that order, which reproduces the
same selections, and requests only the expansions that had not come back. The tree then goes back to the round
engine, whose next round ends the search.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph.runtime import Runtime

from ttc_graph.budget import merge_usage, usage_delta
from ttc_graph.nodes.adaptive import _log, _replay
from ttc_graph.nodes.expand import Beam, assign_slots, held_paths
from ttc_graph.nodes.step_mcts import ROOT, MCTSPlan, _root, _Tree
from ttc_graph.nodes.step_rounds import id_key
from ttc_graph.nodes.step_runner import RunnerNode, RunnerParts, StepRunner, SubtreesTask

__all__ = ["TREE", "make_tree_node"]

TREE = "tree"
"""The node's name in the graph (and the ``target`` of the plan entry that starts it)."""


class _TreeRun(StepRunner):
    """One call of the ``tree`` node: the window of expansions, the tree, the ledger and the durable log."""

    plan: MCTSPlan

    def __init__(self, parts: RunnerParts, task: SubtreesTask, runtime: Runtime[Any]) -> None:
        super().__init__(parts, task, runtime)
        self.tree = _Tree(self.plan, {ROOT: _root()})
        self.errors: list[str] = []
        self.started = 0  # expansions started (their index e)
        self.failures = 0  # failed expansions in a row
        self.stopping = False
        self.in_flight: dict[int, tuple[str, asyncio.Future[dict[str, Any]] | None]] = {}  # e -> (leaf, request)
        self.slot_of: dict[int, list[int | None]] = {}

    def finished(self) -> int:
        return sum(1 for b in self.tree.nodes.values() if b["finished"])

    def busy_slots(self) -> set[int]:
        return {s for row in self.slot_of.values() for s in row if s is not None}

    async def request(self, e: int, leaf: Beam, k: int, lim: Any) -> dict[str, Any]:
        """Expand ``leaf`` by ``k`` children and score them: the log entry of expansion ``e``."""
        root = self.task["roots"][0]
        task: dict[str, Any] = {
            **root, "beam": leaf, "k": k, "round": e + 1, "max_tokens": lim.max_tokens, "timeout": lim.timeout,
            "hold_tokens": lim.hold_tokens, "seed": None if self.seed is None else self.seed + 7919 * e,
            "history": self.task.get("history", []),
        }  # fmt: skip
        task.pop("slots", None)
        if e in self.slot_of:
            task["slots"] = self.slot_of[e]
        out = await self.parts.expand(task)  # type: ignore[arg-type]
        children: list[Beam] = out.get("frontier", [])
        errors = list(out.get("errors", []))
        usage = out["usage"]
        if children:
            scored = await self.score(children)
            children, errors = scored.beams, errors + scored.errors
            usage = merge_usage(usage, usage_delta("verify", scored.usage))
        return {"kind": "expansion", "e": e, "leaf": leaf["id"], "children": children, "usage": usage, "errors": errors}

    def fill(self, logged: dict[int, dict[str, Any]]) -> None:
        """Select leaves until the window is full, the search stops or none is left (logged ones are replayed)."""
        while not self.stopping and len(self.in_flight) < self.plan.parallel:
            if self.finished() >= self.plan.n or self.failures >= self.plan.parallel:
                self.stopping = True
                return
            e = self.started
            lim = None
            if e not in logged:
                lim = self.limits()
                if lim.stop:
                    self.stopping = True
                    return
            choice = self.tree.select()
            if choice is None:
                return
            leaf, k = choice
            self.started += 1
            if e in logged and logged[e]["leaf"] != leaf["id"]:  # the log no longer matches: request from here on
                logged.clear()
            if self.slots:
                held = held_paths(self.tree.nodes.values())  # nodes in the order they arrived: a slot's last path wins
                self.slot_of[e] = assign_slots([(leaf, k)], self.slots, self.busy_slots(), held)[0]
            future = None if e in logged else asyncio.ensure_future(self.request(e, leaf, k, lim))
            self.in_flight[e] = (leaf["id"], future)

    def arrive(self, entry: dict[str, Any]) -> None:
        e = int(entry["e"])
        self.in_flight.pop(e, None)
        self.slot_of.pop(e, None)
        self.spent = merge_usage(self.spent, entry["usage"])
        self.errors.extend(entry["errors"])
        children = [c for c in entry["children"] if c["id"] not in self.tree.nodes]
        self.tree.arrive(entry["leaf"], children)
        self.failures = 0 if children else self.failures + 1
        self.emit(
            {
                "event": "ttc.expansion",
                "index": e,
                "leaf": entry["leaf"],
                "children": len(children),
                "scores": [c["score"] for c in children],
                "finished": self.finished(),
                "nodes": len(self.tree.nodes) - 1,
                "in_flight": len(self.in_flight),
            }
        )

    async def run(self) -> dict[str, Any]:
        replayed = [e for e in (await _replay() if self.durable else []) if e.get("kind") == "expansion"]
        logged = {int(e["e"]): e for e in replayed}
        try:
            while True:
                self.fill(logged)
                if not self.in_flight:
                    break
                if replayed:
                    e = int(replayed[0]["e"])
                    if e in self.in_flight and self.in_flight[e][1] is None:
                        self.arrive(replayed.pop(0))  # the logged arrivals, in the order they came
                        continue
                    replayed.clear()  # the log no longer matches the selections: request from here on
                    logged.clear()
                for e, (leaf_id, fut) in list(self.in_flight.items()):
                    if fut is None:  # selected for a replay that no longer applies: request it now
                        k = self.tree.paths[leaf_id][2]
                        request = self.request(e, self.tree.nodes[leaf_id], k, self.limits())
                        self.in_flight[e] = (leaf_id, asyncio.ensure_future(request))
                futures = {fut: e for e, (_, fut) in self.in_flight.items() if fut is not None}
                done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: futures[f]):
                    entry = fut.result()
                    if self.durable:
                        await _log([entry])
                    self.arrive(entry)
        except BaseException:  # a failure for good (or a cancelled run): stop what is in flight, then raise
            pending = [fut for _, fut in self.in_flight.values() if fut is not None]
            for fut in pending:
                fut.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        nodes = self.tree.nodes
        return self.update([nodes[i] for i in sorted(nodes, key=id_key)], self.errors)


def make_tree_node(parts: RunnerParts) -> RunnerNode:
    """The ``tree`` node of MCTS (``parts.plan``: its :class:`~ttc_graph.nodes.step_mcts.MCTSPlan`): a window of
    ``plan.parallel`` expansions, a new leaf selected the moment one comes back (see the module docstring). With
    ``parts.slots`` (the endpoint takes slot hints) a leaf's first child runs on the leaf's slot, its siblings on
    slots not in use."""

    async def tree(task: SubtreesTask, runtime: Runtime[Any]) -> dict[str, Any]:
        return await _TreeRun(parts, task, runtime).run()

    return tree
