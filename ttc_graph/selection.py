"""Final-answer selection over candidates: naive best-of-N, best-of-N weighted, majority vote."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from math import comb
from typing import Literal

from ttc_graph.answers import group_answers
from ttc_graph.state import Candidate

__all__ = [
    "AnswerGroup",
    "RevisionSelection",
    "Selected",
    "Selection",
    "answer_groups",
    "finalists",
    "leader_probability",
    "revision_chains",
    "select_answer",
    "select_pooled",
    "select_revisions",
]

Selection = Literal["weighted", "naive", "majority"]
RevisionSelection = Literal["hierarchical", "majority", "last"]
REVISION_SELECTIONS: tuple[RevisionSelection, ...] = ("hierarchical", "majority", "last")
SELECTIONS: tuple[Selection, ...] = ("weighted", "naive", "majority")


@dataclass(frozen=True, slots=True)
class AnswerGroup:
    """Candidates that share a final answer."""

    answer: str
    candidate_ids: tuple[str, ...]
    votes: int
    weight: float


@dataclass(frozen=True, slots=True)
class Selected:
    answer: str | None
    candidate_id: str | None
    groups: tuple[AnswerGroup, ...]
    rule: str


def answer_groups(candidates: Sequence[Candidate]) -> list[AnswerGroup]:
    """Parsable candidates grouped by equivalent final answer, heaviest first (ties: first seen)."""
    groups = []
    for idx in group_answers([c["answer"] for c in candidates]):
        members = [candidates[i] for i in idx]
        weight = sum(c["score"] for c in members if c["score"] is not None)
        groups.append(AnswerGroup(str(members[0]["answer"]), tuple(c["id"] for c in members), len(members), weight))
    return groups


def _best(groups: list[AnswerGroup], key: str) -> AnswerGroup | None:
    best: AnswerGroup | None = None
    for g in groups:  # stable: the first group wins ties
        if best is None or getattr(g, key) > getattr(best, key):
            best = g
    return best


def select_answer(candidates: Sequence[Candidate], how: Selection = "weighted") -> Selected:
    """Pick the final answer the paper's way.

    ``naive``: the top-scored candidate with a final answer. ``weighted``: the answer with the largest sum of
    scores (best-of-N weighted). ``majority``: the most frequent answer. Unscored candidates carry no weight;
    with no scored candidate at all, ``naive`` and ``weighted`` fall back to a majority vote.
    """
    groups = answer_groups(candidates)
    if not groups:
        return Selected(None, None, (), "none")
    scored = [c for c in candidates if c["parsable"] and c["score"] is not None]
    if how == "naive" and scored:
        top = max(scored, key=lambda c: c["score"] or 0.0)  # max() keeps the first of equal scores
        return Selected(top["answer"], top["id"], tuple(groups), "naive")
    if how == "weighted" and scored:
        g = _best(groups, "weight")
        rule = "weighted"
    else:
        g = _best(groups, "votes")
        rule = "majority"
    assert g is not None
    by_id = {c["id"]: c for c in candidates}
    members = [by_id[i] for i in g.candidate_ids]
    rep = max(members, key=lambda c: c["score"] if c["score"] is not None else -1.0)
    return Selected(g.answer, rep["id"], tuple(sorted(groups, key=lambda x: -getattr(x, _key(rule)))), rule)


def _key(rule: str) -> str:
    return "weight" if rule == "weighted" else "votes"


def leader_probability(votes: Sequence[int]) -> float:
    """P(the leading answer's true share > 1/2) under a uniform Beta prior on it, given vote counts.

    With a = leader votes and b = all others, the posterior is Beta(1 + a, 1 + b), and for integer
    parameters P(p <= 1/2) = P(Binomial(a + b + 1, 1/2) >= a + 1).
    """
    if not votes:
        return 0.0
    a = max(votes)
    b = sum(votes) - a
    n = a + b + 1
    tail = sum(comb(n, k) for k in range(a + 1, n + 1)) / 2**n
    return 1.0 - tail


def revision_chains(candidates: Iterable[Candidate]) -> dict[int, list[Candidate]]:
    """Revision attempts by chain (``meta.chain``, 0 without), each chain in attempt order, chains in order."""
    chains: dict[int, list[Candidate]] = {}
    for c in candidates:
        chains.setdefault(int(c.get("meta", {}).get("chain", 0)), []).append(c)
    for attempts in chains.values():
        attempts.sort(key=lambda c: c.get("meta", {}).get("position", 0))
    return dict(sorted(chains.items()))


def _chain_pick(attempts: Sequence[Candidate]) -> Candidate | None:
    inner = select_answer(attempts, "weighted")
    return next((c for c in attempts if c["id"] == inner.candidate_id), None)


def finalists(candidates: Sequence[Candidate], revisions: RevisionSelection | None = None) -> list[Candidate]:
    """The candidates a strategy's final vote ranges over: all of them, or for revision chains (``revisions``
    names their selection) each chain's pick (``hierarchical``), last attempt (``last``) or every attempt."""
    if revisions is None or revisions == "majority":
        return list(candidates)
    chains = revision_chains(candidates).values()
    if revisions == "last":
        return [attempts[-1] for attempts in chains]
    return [pick for attempts in chains if (pick := _chain_pick(attempts)) is not None]


def select_revisions(candidates: Sequence[Candidate], how: RevisionSelection) -> Selected:
    """Selection over revision chains.

    ``hierarchical``: best-of-N weighted within each chain, then best-of-N weighted across the chains' picks
    (each pick weighted by its best score in its chain). ``majority``: one vote over every answer of every chain.
    ``last``: each chain's final attempt, combined by best-of-N weighted (majority when unscored).
    """
    if how == "majority":
        return select_answer(candidates, "majority")
    chosen = select_answer(finalists(candidates, how), "weighted")
    if how == "last":
        return chosen
    return Selected(chosen.answer, chosen.candidate_id, chosen.groups, f"hierarchical/{chosen.rule}")


def select_pooled(
    probes: Sequence[Candidate], candidates: Sequence[Candidate], revisions: RevisionSelection | None = None
) -> Selected:
    """Best-of-N weighted over ``probes`` and the :func:`finalists` of a strategy's ``candidates``: how a router
    keeps the probe samples it paid for when it routes to a strategy other than best-of-N."""
    return select_answer([*probes, *finalists(candidates, revisions)], "weighted")
