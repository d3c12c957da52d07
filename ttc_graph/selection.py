"""Selection over candidates: naive best-of-N, best-of-N weighted, majority vote, for final answers and actions.

A candidate with tool calls is an *action*: actions vote by :func:`~ttc_graph.tool_calls.action_key` (exact
equality of the multiset of calls), final answers by equivalent answer; an action group and an answer group never
merge. A candidate is *invalid* when ``meta["invalid"]`` records problems or its calls fail
:func:`~ttc_graph.tool_calls.validate_tool_calls` against the request's ``tools`` (only the arguments' JSON is
checked without ``tools``). Invalid candidates never win while a valid candidate has an answer or an action; when
none has, selection runs over the invalid ones as if they were valid and :attr:`Selected.invalid` carries the
winner's problems, so a tool node can return them to the agent as an error to recover from.

A candidate cut off by the length limit (``finish_reason == "length"``) is *truncated*: its final answer, read by
the last-number rule from an unfinished solution, is a guess, so by default (``truncated="lose"``) it counts as
invalid: it neither votes nor wins while a complete candidate has an answer, and when every candidate is cut off
the pick is flagged with :data:`TRUNCATED`. ``truncated="vote"`` keeps the old behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from math import comb
from typing import Literal

import numpy as np

from ttc_graph.answers import group_answers
from ttc_graph.state import Candidate
from ttc_graph.tool_calls import ToolsLike, action_key, candidate_problems, is_action, tool_specs

__all__ = [
    "FINAL_SELECTIONS",
    "TRUNCATED",
    "AnswerGroup",
    "FinalSelection",
    "RevisionSelection",
    "Selected",
    "Selection",
    "Truncated",
    "answer_groups",
    "finalists",
    "leader_probability",
    "revision_chains",
    "select_answer",
    "select_pooled",
    "select_revisions",
    "subset_picks",
]

Selection = Literal["weighted", "naive", "majority"]
Truncated = Literal["lose", "vote"]
TRUNCATED = "truncated: the sample stopped at max_tokens (finish_reason 'length')"
"""The problem recorded for a candidate cut off by the length limit."""
RevisionSelection = Literal["hierarchical", "majority", "last"]
REVISION_SELECTIONS: tuple[RevisionSelection, ...] = ("hierarchical", "majority", "last")
SELECTIONS: tuple[Selection, ...] = ("weighted", "naive", "majority")
FinalSelection = Literal["naive", "weighted"]
"""The answer of a step-wise search: its top-scored candidate (``naive``) or best-of-N ``weighted`` over them."""
FINAL_SELECTIONS: tuple[FinalSelection, ...] = ("naive", "weighted")


@dataclass(frozen=True, slots=True)
class AnswerGroup:
    """Candidates that share a final answer, or (``action``) the same tool calls, ``answer`` then being their
    action key. ``valid`` is False for a group of invalid candidates."""

    answer: str
    candidate_ids: tuple[str, ...]
    votes: int
    weight: float
    action: bool = False
    valid: bool = True


@dataclass(frozen=True, slots=True)
class Selected:
    """The pick: ``candidate_id`` names the winning candidate.

    For an action, ``answer`` is None and ``action`` the winner's action key. ``invalid`` holds the winner's
    problems when every candidate with an answer or action was invalid (empty otherwise).
    """

    answer: str | None
    candidate_id: str | None
    groups: tuple[AnswerGroup, ...]
    rule: str
    action: str | None = None
    invalid: tuple[str, ...] = ()

    @property
    def is_action(self) -> bool:
        """Whether the winner is a tool-call candidate."""
        return self.action is not None

    @property
    def valid(self) -> bool:
        """False when the winner was picked among invalid candidates only."""
        return not self.invalid


def _grouped(candidates: Sequence[Candidate], valid: bool = True) -> list[AnswerGroup]:
    """Answer groups and action groups, by first appearance."""
    firsts: list[tuple[int, AnswerGroup]] = []
    answers = [None if is_action(c) else c["answer"] for c in candidates]
    for idx in group_answers(answers):
        members = [candidates[i] for i in idx]
        weight = sum(c["score"] for c in members if c["score"] is not None)
        group = AnswerGroup(str(members[0]["answer"]), tuple(c["id"] for c in members), len(members), weight)
        firsts.append((idx[0], group if valid else _invalid(group)))
    actions: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        if is_action(c):
            actions.setdefault(action_key(c.get("tool_calls") or []), []).append(i)
    for key, idx in actions.items():
        members = [candidates[i] for i in idx]
        weight = sum(c["score"] for c in members if c["score"] is not None)
        firsts.append((idx[0], AnswerGroup(key, tuple(c["id"] for c in members), len(members), weight, True, valid)))
    firsts.sort(key=lambda fg: fg[0])
    return [g for _, g in firsts]


def _invalid(g: AnswerGroup) -> AnswerGroup:
    return AnswerGroup(g.answer, g.candidate_ids, g.votes, g.weight, g.action, False)


def _split(
    candidates: Sequence[Candidate], tools: ToolsLike | None, truncated: Truncated = "lose"
) -> tuple[list[Candidate], list[Candidate], dict[int, list[str]]]:
    """Valid candidates, invalid candidates, and each invalid one's problems (keyed by the candidate's ``id()``)."""
    specs = None if tools is None else tool_specs(tools)
    valid: list[Candidate] = []
    invalid: list[Candidate] = []
    problems: dict[int, list[str]] = {}
    for c in candidates:
        found = candidate_problems(c, specs)
        if truncated == "lose" and c.get("finish_reason") == "length":
            found = [*found, TRUNCATED]
        if found:
            problems[id(c)] = found
            invalid.append(c)
        else:
            valid.append(c)
    return valid, invalid, problems


def answer_groups(
    candidates: Sequence[Candidate], tools: ToolsLike | None = None, truncated: Truncated = "lose"
) -> list[AnswerGroup]:
    """Parsable candidates grouped by equivalent final answer, and actions by action key, in order of first
    appearance; the groups of invalid candidates (see the module docstring) follow, marked ``valid=False``."""
    valid, invalid, _ = _split(candidates, tools, truncated)
    return _grouped(valid) + _grouped(invalid, valid=False)


def _best(groups: list[AnswerGroup], key: str) -> AnswerGroup | None:
    best: AnswerGroup | None = None
    for g in groups:  # stable: the first group wins ties
        if best is None or getattr(g, key) > getattr(best, key):
            best = g
    return best


def select_answer(
    candidates: Sequence[Candidate],
    how: Selection = "weighted",
    *,
    tools: ToolsLike | None = None,
    truncated: Truncated = "lose",
) -> Selected:
    """Pick the final answer, or the action, the paper's way.

    ``naive``: the top-scored candidate with a final answer or tool calls. ``weighted``: the answer or action with
    the largest sum of scores (best-of-N weighted). ``majority``: the most frequent answer or action. Unscored
    candidates carry no weight; with no scored candidate at all, ``naive`` and ``weighted`` fall back to a
    majority vote. Ties go to the first seen. ``tools`` (the request's tools) enables the schema check of actions;
    invalid candidates lose to any valid one, and so do candidates cut off by the length limit unless
    ``truncated="vote"`` (see the module docstring).
    """
    valid, invalid, problems = _split(candidates, tools, truncated)
    pool, groups, others, flagged = valid, _grouped(valid), _grouped(invalid, valid=False), False
    if not groups and others:
        pool, groups, others, flagged = invalid, others, [], True
    if not groups:
        return Selected(None, None, (), "none")
    scored = [c for c in pool if (is_action(c) or c["parsable"]) and c["score"] is not None]

    def problems_of(cand: Candidate) -> tuple[str, ...]:
        return tuple(problems[id(cand)]) if flagged else ()

    if how == "naive" and scored:
        top = max(scored, key=lambda c: c["score"] or 0.0)  # max() keeps the first of equal scores
        act = action_key(top.get("tool_calls") or []) if is_action(top) else None
        answer = None if act is not None else top["answer"]
        return Selected(answer, top["id"], tuple(groups + others), "naive", act, problems_of(top))
    if how == "weighted" and scored:
        g = _best(groups, "weight")
        rule = "weighted"
    else:
        g = _best(groups, "votes")
        rule = "majority"
    assert g is not None
    by_id = {c["id"]: c for c in pool}
    members = [by_id[i] for i in g.candidate_ids]
    rep = max(members, key=lambda c: c["score"] if c["score"] is not None else -1.0)
    ranked = [*sorted(groups, key=lambda x: -getattr(x, _key(rule))), *sorted(others, key=lambda x: -x.votes)]
    return Selected(
        None if g.action else g.answer,
        rep["id"],
        tuple(ranked),
        rule,
        g.answer if g.action else None,
        problems_of(rep),
    )


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


def _chain_pick(attempts: Sequence[Candidate], tools: ToolsLike | None = None) -> Candidate | None:
    inner = select_answer(attempts, "weighted", tools=tools)
    return next((c for c in attempts if c["id"] == inner.candidate_id), None)


def finalists(
    candidates: Sequence[Candidate], revisions: RevisionSelection | None = None, *, tools: ToolsLike | None = None
) -> list[Candidate]:
    """The candidates a strategy's final vote ranges over: all of them, or for revision chains (``revisions``
    names their selection) each chain's pick (``hierarchical``), last attempt (``last``) or every attempt."""
    if revisions is None or revisions == "majority":
        return list(candidates)
    chains = revision_chains(candidates).values()
    if revisions == "last":
        return [attempts[-1] for attempts in chains]
    return [pick for attempts in chains if (pick := _chain_pick(attempts, tools)) is not None]


def select_revisions(
    candidates: Sequence[Candidate], how: RevisionSelection, *, tools: ToolsLike | None = None
) -> Selected:
    """Selection over revision chains.

    ``hierarchical``: best-of-N weighted within each chain, then best-of-N weighted across the chains' picks
    (each pick weighted by its best score in its chain). ``majority``: one vote over every answer of every chain.
    ``last``: each chain's final attempt, combined by best-of-N weighted (majority when unscored).
    """
    if how == "majority":
        return select_answer(candidates, "majority", tools=tools)
    chosen = select_answer(finalists(candidates, how, tools=tools), "weighted", tools=tools)
    if how == "last":
        return chosen
    return replace(chosen, rule=f"hierarchical/{chosen.rule}")


def select_pooled(
    probes: Sequence[Candidate],
    candidates: Sequence[Candidate],
    revisions: RevisionSelection | None = None,
    *,
    tools: ToolsLike | None = None,
) -> Selected:
    """Best-of-N weighted over ``probes`` and the :func:`finalists` of a strategy's ``candidates``: how a router
    keeps the probe samples it paid for when it routes to a strategy other than best-of-N."""
    return select_answer([*probes, *finalists(candidates, revisions, tools=tools)], "weighted", tools=tools)


def subset_picks(
    groups: Sequence[int | None], scores: Sequence[float | None], subsets: np.ndarray, how: Selection
) -> np.ndarray:
    """:func:`select_answer`'s pick in every row of ``subsets`` at once, as arrays (for the exact expectation over
    every subset of a pool of final answers, none cut off).

    Candidate ``i`` of the pool has answer group ``groups[i]`` (None: no answer) and score ``scores[i]`` (None:
    unscored); a row of ``subsets`` holds ascending pool indices. The pick is the group with the largest score sum
    (``weighted``, when the row holds a scored answer) or count, ties to the group that appears first in the row,
    then its member with the highest score, ties to the first; ``naive`` picks the highest-scored scored answer
    when the row holds one. A row with no answer picks -1.
    """
    labels = np.array([-1 if g is None else g for g in groups])
    has_score = np.array([s is not None for s in scores])
    score = np.array([0.0 if s is None else s for s in scores])
    n_groups = int(labels.max(initial=-1)) + 1
    if n_groups == 0:
        return np.full(len(subsets), -1)
    lab = labels[subsets]  # (rows, N)
    member = lab[:, :, None] == np.arange(n_groups)[None, None, :]  # (rows, N, groups)
    present = member.any(axis=1)
    scored = ((lab >= 0) & has_score[subsets]).any(axis=1)
    counts = member.sum(axis=1).astype(float)
    weights = np.zeros_like(counts)
    for pos in range(subsets.shape[1]):  # in row order, as select_answer sums them
        weights += member[:, pos, :] * score[subsets[:, pos]][:, None]
    key = np.where(scored[:, None], weights, counts) if how == "weighted" else counts
    first = np.where(member, np.arange(subsets.shape[1])[None, :, None], subsets.shape[1]).min(axis=1)
    key = np.where(present, key, -np.inf)
    best = key.max(axis=1, keepdims=True)
    tied = (key == best) & present
    group = np.argmin(np.where(tied, first, subsets.shape[1] + 1), axis=1)
    in_group = lab == group[:, None]
    member_score = np.where(has_score[subsets], score[subsets], -1.0)
    member_score = np.where(in_group, member_score, -np.inf)
    pick = np.argmax(member_score, axis=1)  # the first of equal scores
    if how == "naive":  # the highest-scored scored answer, when the row holds one
        direct = np.where((lab >= 0) & has_score[subsets], score[subsets], -np.inf)
        pick = np.where(scored, np.argmax(direct, axis=1), pick)
    chosen = subsets[np.arange(len(subsets)), pick]
    return np.where(present.any(axis=1), chosen, -1)
