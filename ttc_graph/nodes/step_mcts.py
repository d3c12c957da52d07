"""The policy of Monte Carlo tree search over steps: back up the new nodes' values and select leaves by UCT (the
round engine plans their expansion or stops).

The tree lives in the state's ``frontier`` (one entry per node, ids ``r``, ``r.0``, ``r.0.2``, ...: a node's parent
and depth are read from its id) and is rewritten whole by the controller each round, so a checkpoint holds it.

- **Select.** From the root, descend to the child of highest UCT, ``Q + c * sqrt(ln N_parent / N_child)``, among
  the children whose subtree still has an expandable leaf (``Q`` = the mean of the values backed up through the
  child, ``c`` = ``exploration``; ties go to the lower id), until a leaf. A round runs ``n // expansions`` such
  selections (at least one) with a virtual loss (a visit of value 0 along each chosen path), so they differ.
- **Expand.** A chosen leaf gets ``expansions`` next steps in one request (fewer if its depth's layer has less room).
- **Evaluate.** The verifier scores each child's prefix (with ``lookahead=k``, after a greedy rollout of up to ``k``
  more steps, as lookahead search does); an unscored child is never selected nor backed up.
- **Back up.** Each child's value counts one visit for itself and for every ancestor.
- **Compute.** The budget is beam search's: ``n`` generations mean at most ``n`` sampled steps at every depth of
  the tree (beam search with ``n`` beams samples exactly ``n`` steps per depth), ``n * (lookahead + 1)`` generations
  charged when the search starts, and at most ``n`` steps (plus their rollouts) per round. MCTS chooses which
  nodes of each depth to expand, in any order, where beam search expands the top ones of the newest depth.
- **Stop** once ``n`` paths have finished (as beam search), when no leaf can be expanded (finished, unscored, at
  ``max_steps`` or its layer full), or at a budget limit. The pool is the top ``n`` finished paths by score; a
  search that stops short adds its best open leaves.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, NotRequired

from ttc_graph.nodes.expand import Beam, root_beam
from ttc_graph.nodes.step_rounds import (
    PolicyCost,
    StepRound,
    beam_to_candidate,
    id_key,
    steps_of,
)
from ttc_graph.state import Candidate, TTCState

__all__ = ["ROOT", "MCTSPlan", "TreeNode", "select_leaves", "uct"]

ROOT = "r"


class TreeNode(Beam):
    """A node of the search tree: a partial solution, with the visits and value sum backed up through it."""

    visits: NotRequired[int]
    value: NotRequired[float]
    backed: NotRequired[bool]


@dataclass(frozen=True, slots=True)
class MCTSPlan(PolicyCost):
    """The policy of MCTS: ``n`` generations (sampled steps per depth), ``expansions`` children per expanded
    leaf, UCT's ``exploration`` constant, a tree at most ``max_steps`` deep, rollouts of ``lookahead`` steps.
    ``asynchronous``: no rounds (the ``tree`` node); off by default, since its result then depends on the order
    expansions come back, where the round-wise search's depends on the seed alone."""

    n: int
    expansions: int
    exploration: float
    max_steps: int
    lookahead: int = 0
    asynchronous: bool = False
    label = "MCTS"

    @property
    def runner(self) -> str | None:
        """With ``asynchronous``, the node that runs the search without rounds: ``tree``
        (:mod:`~ttc_graph.nodes.step_tree`: a new leaf is selected the moment an expansion comes back)."""
        return "tree" if self.asynchronous else None

    @property
    def parallel(self) -> int:
        """Selections per round, so that a round samples at most ``n`` steps."""
        return max(1, self.n // self.expansions)

    def begin(self, state: TTCState, round_: int, seed: int | None, delimiter: str) -> StepRound:
        return _MCTSRound(self, state, round_, delimiter)


def uct(value: float, visits: int, parent_visits: int, exploration: float) -> float:
    """``Q + c * sqrt(ln N_parent / N)``; an unvisited node comes first."""
    if visits <= 0:
        return math.inf
    return value / visits + exploration * math.sqrt(math.log(max(parent_visits, 1)) / visits)


def _parent(node_id: str) -> str | None:
    return node_id.rsplit(".", 1)[0] if "." in node_id else None


def _depth(node_id: str) -> int:
    return node_id.count(".")


def _root() -> TreeNode:
    return TreeNode(**root_beam(ROOT), visits=0, value=0.0, backed=True)


def _by_score(nodes: list[TreeNode]) -> list[TreeNode]:
    return sorted(nodes, key=lambda b: (-(b["score"] if b["score"] is not None else -math.inf), -_depth(b["id"])))


class _Tree:
    """One round's view of the tree: children, layer sizes, and the selection with virtual loss."""

    def __init__(self, plan: MCTSPlan, nodes: dict[str, TreeNode]) -> None:
        self.plan = plan
        self.nodes = nodes
        self.children: dict[str, list[str]] = {i: [] for i in nodes}
        for node_id in sorted(nodes, key=id_key):
            parent = _parent(node_id)
            if parent is not None and parent in self.children:
                self.children[parent].append(node_id)
        self.layers = Counter(_depth(i) for i in nodes if i != ROOT)
        self.reserved: Counter[int] = Counter()
        self.virtual: Counter[str] = Counter()
        self.taken: set[str] = set()
        self.paths: dict[str, tuple[list[str], int, int]] = {}  # a selected leaf: its path, child depth, children

    def room(self, depth: int) -> int:
        return self.plan.n - self.layers[depth] - self.reserved[depth]

    def expandable(self, node_id: str) -> bool:
        node, depth = self.nodes[node_id], _depth(node_id)
        alive = node_id == ROOT or (node["score"] is not None and not node["finished"])
        return (
            alive
            and depth < self.plan.max_steps
            and not self.children[node_id]
            and node_id not in self.taken
            and self.room(depth + 1) > 0
        )

    def is_open(self, node_id: str, memo: dict[str, bool]) -> bool:
        if node_id not in memo:
            memo[node_id] = self.expandable(node_id) or any(self.is_open(c, memo) for c in self.children[node_id])
        return memo[node_id]

    def visits(self, node_id: str) -> int:
        return int(self.nodes[node_id].get("visits", 0)) + self.virtual[node_id]

    def select(self) -> tuple[TreeNode, int] | None:
        """One leaf to expand and its number of children, or None when no leaf can be expanded."""
        memo: dict[str, bool] = {}
        if not self.is_open(ROOT, memo):
            return None
        path, current = [ROOT], ROOT
        while self.children[current]:
            options = [c for c in self.children[current] if self.is_open(c, memo)]
            parent_visits = self.visits(current)
            current = max(
                options,
                key=lambda c: uct(
                    float(self.nodes[c].get("value", 0.0)), self.visits(c), parent_visits, self.plan.exploration
                ),
            )
            path.append(current)
        depth = _depth(current) + 1
        k = min(self.plan.expansions, self.room(depth))
        self.reserved[depth] += k
        self.taken.add(current)
        for node_id in path:
            self.virtual[node_id] += 1
        self.paths[current] = (path, depth, k)
        return self.nodes[current], k

    def arrive(self, leaf_id: str, children: list[Beam]) -> list[TreeNode]:
        """A selected leaf's expansion came back with ``children`` (scored): its virtual loss and reservation are
        lifted, the children join the tree and every new value is backed up. Returns the new nodes."""
        path, depth, k = self.paths.pop(leaf_id)
        for node_id in path:
            self.virtual[node_id] -= 1
        self.reserved[depth] -= k
        for child in children:
            self.nodes[child["id"]] = {**child, "backed": False}  # type: ignore[assignment]
            self.children.setdefault(child["id"], [])
            self.children[leaf_id].append(child["id"])
            self.layers[depth] += 1
        self.children[leaf_id].sort(key=id_key)
        self.taken.discard(leaf_id)  # with children it is no leaf; a failed expansion leaves it selectable again
        return _backup(self.nodes)

    def select_round(self) -> list[tuple[TreeNode, int]]:
        """Up to ``parallel`` selections, each seeing the virtual loss of the ones before."""
        chosen: list[tuple[TreeNode, int]] = []
        for _ in range(self.plan.parallel):
            choice = self.select()
            if choice is None:
                break
            chosen.append(choice)
        return chosen


def select_leaves(plan: MCTSPlan, nodes: dict[str, TreeNode]) -> list[tuple[TreeNode, int]]:
    """The leaves one round of ``plan`` expands in the tree ``nodes`` (by id), with their numbers of children."""
    return _Tree(plan, nodes).select_round()


def _backup(nodes: dict[str, TreeNode]) -> list[TreeNode]:
    """Back up every new node's value (in id order); returns the new nodes."""
    fresh = [nodes[i] for i in sorted(nodes, key=id_key) if not nodes[i].get("backed")]
    for node in fresh:
        node["backed"], node["visits"], node["value"] = True, 0, 0.0
        if node["score"] is None:
            continue
        value = float(node["score"])
        node["visits"], node["value"] = 1, value
        parent = _parent(node["id"])
        while parent is not None and parent in nodes:
            nodes[parent]["visits"] = int(nodes[parent].get("visits", 0)) + 1
            nodes[parent]["value"] = float(nodes[parent].get("value", 0.0)) + value
            parent = _parent(parent)
    return fresh


def _candidate(node: TreeNode, delimiter: str, reason: str | None = None) -> Candidate:
    cand = beam_to_candidate(node, delimiter, reason)
    visits = int(node.get("visits", 0))
    cand["meta"] = {
        **cand.get("meta", {}),
        "visits": visits,
        "value": node.get("value", 0.0) / visits if visits else None,
    }
    return cand


def _planned_rounds(state: TTCState) -> bool:
    """Whether the last round planned expand requests (not the ``tree`` node's whole search)."""
    plan = state.get("plan") or []
    return bool(plan) and not any("roots" in task for task in plan)


class _MCTSRound(StepRound):
    """Back up the new nodes, then select the leaves to expand by UCT."""

    def __init__(self, plan: MCTSPlan, state: TTCState, round_: int, delimiter: str) -> None:
        self.plan, self.delimiter = plan, delimiter
        if round_ == 0:
            self.nodes: dict[str, TreeNode] = {ROOT: _root()}
        else:
            self.nodes = {b["id"]: dict(b) for b in state.get("frontier", [])}  # type: ignore[misc]
        fresh = _backup(self.nodes)
        self.finished = _by_score([b for b in self.nodes.values() if b["finished"]])
        self.tree = _Tree(plan, self.nodes)
        self.selected: list[tuple[TreeNode, int]] = []
        self.retired = [_candidate(b, delimiter) for b in fresh if b["finished"]]
        if len(self.finished) >= plan.n:
            self.stop = "complete"
        elif round_ > 0 and _planned_rounds(state) and not fresh:  # every expansion of the last round failed
            self.stop = "complete" if self.finished else "error"

    def expansions(self) -> list[tuple[Beam, int]]:
        self.selected = self.tree.select_round()
        return list(self.selected)

    def exhausted(self) -> str:
        return "complete" if self.finished else "max_steps"

    def final(self, stop: str) -> tuple[list[Candidate], dict[str, Any]]:
        pool = [_candidate(b, self.delimiter) for b in self.finished[: self.plan.n]]
        if stop != "complete":  # stopped short: the best open leaves are candidates too
            leaves = [
                b
                for i, b in self.nodes.items()
                if i != ROOT and not b["finished"] and b["score"] is not None and not self.tree.children[i]
            ]
            pool += [_candidate(b, self.delimiter, stop) for b in _by_score(leaves)[: self.plan.n - len(pool)]]
        return pool, {"finished": len(self.finished), "nodes": len(self.nodes) - 1}

    def event(self) -> dict[str, Any]:
        return {
            "beams": [
                {
                    "id": b["id"],
                    "score": b["score"],
                    "value": b.get("value", 0.0) / b["visits"] if b.get("visits") else None,
                    "visits": b.get("visits", 0),
                    "children": k,
                    "steps": len(b["steps"]),
                    "last": b["steps"][-1][:80] if b["steps"] else "",
                }
                for b, k in self.selected
            ],
            "nodes": len(self.nodes) - 1,
            "layers": {str(d): c for d, c in sorted(self.tree.layers.items())},
            "steps_per_beam": steps_of(
                [b for b, _ in self.selected if b["id"] != ROOT],
                self.delimiter,
                [beam_to_candidate(b, self.delimiter) for b in self.finished],
            ),
            "finished": len(self.finished),
        }

    def frontier(self) -> list[Beam]:
        return [self.nodes[i] for i in sorted(self.nodes, key=id_key)]
