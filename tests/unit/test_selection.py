"""Final-answer selection and the adaptive stopping statistic."""

from __future__ import annotations

import math

import pytest

from ttc_graph.selection import answer_groups, finalists, leader_probability, select_answer, select_pooled
from ttc_graph.state import Candidate


def cand(cid: str, answer: str | None, score: float | None = None) -> Candidate:
    return {
        "id": cid,
        "text": f"... \\boxed{{{answer}}}" if answer is not None else "no idea",
        "answer": answer,
        "parsable": answer is not None,
        "score": score,
        "step_scores": None,
        "scored": score is not None,
        "tokens": 10,
        "round": 1,
        "finish_reason": "stop",
    }


def beta_upper_half(a: int, b: int, points: int = 100_000) -> float:
    """P(p > 1/2) for p ~ Beta(1 + a, 1 + b), by the midpoint rule on [1/2, 1]."""
    log_norm = math.lgamma(a + b + 2) - math.lgamma(a + 1) - math.lgamma(b + 1)
    h = 0.5 / points
    total = 0.0
    for i in range(points):
        x = 0.5 + (i + 0.5) * h
        total += math.exp(log_norm + a * math.log(x) + b * math.log1p(-x))
    return total * h


@pytest.mark.parametrize("votes", [[1], [3], [2, 1], [5, 2], [4, 4], [6, 1, 1], [10, 3, 2], [3, 3, 3]])
def test_leader_probability_matches_numerical_integration(votes: list[int]):
    a = max(votes)
    b = sum(votes) - a
    assert leader_probability(votes) == pytest.approx(beta_upper_half(a, b), abs=1e-6)


def test_leader_probability_properties():
    assert leader_probability([]) == 0.0
    assert leader_probability([4, 4]) == pytest.approx(0.5)
    # more unanimous votes, more confidence
    values = [leader_probability([k]) for k in range(1, 8)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    # order of the vote counts does not matter
    assert leader_probability([1, 5, 2]) == leader_probability([5, 2, 1])


def test_three_ways_choose_differently():
    cands = [
        cand("c1", "7", 0.1),
        cand("a1", "3", 0.6),
        cand("c2", "7", 0.1),
        cand("b1", "9", 0.95),
        cand("a2", "3", 0.6),
        cand("c3", "7", 0.1),
        cand("a3", "3", 0.6),
        cand("c4", "7", 0.1),
    ]
    assert select_answer(cands, "weighted").answer == "3"
    naive = select_answer(cands, "naive")
    assert (naive.answer, naive.candidate_id) == ("9", "b1")
    assert select_answer(cands, "majority").answer == "7"


def test_weighted_representative_is_the_best_scored_member():
    cands = [cand("x1", "2", 0.2), cand("x2", "2", 0.9), cand("y1", "5", 0.8)]
    chosen = select_answer(cands, "weighted")
    assert chosen.answer == "2"
    assert chosen.candidate_id == "x2"
    assert chosen.rule == "weighted"
    assert [g.answer for g in chosen.groups] == ["2", "5"]


def test_majority_tie_first_seen_wins():
    first = [cand("a", "1"), cand("b", "2"), cand("c", "2"), cand("d", "1")]
    assert select_answer(first, "majority").answer == "1"
    second = [first[1], first[0], first[2], first[3]]
    assert select_answer(second, "majority").answer == "2"


def test_weighted_tie_first_seen_wins():
    cands = [cand("a", "1", 0.5), cand("b", "2", 0.25), cand("c", "2", 0.25)]
    assert select_answer(cands, "weighted").answer == "1"
    assert select_answer([cands[1], cands[2], cands[0]], "weighted").answer == "2"


def test_naive_tie_first_seen_wins():
    cands = [cand("a", "1", 0.8), cand("b", "2", 0.8)]
    assert select_answer(cands, "naive").candidate_id == "a"
    assert select_answer(cands[::-1], "naive").candidate_id == "b"


def test_unparsable_candidates_are_never_selected():
    cands = [cand("u", None, 1.0), cand("p", "4", 0.1)]
    for how in ("weighted", "naive", "majority"):
        chosen = select_answer(cands, how)  # type: ignore[arg-type]
        assert chosen.answer == "4"
        assert chosen.candidate_id == "p"


def test_unscored_candidates_carry_no_weight_and_without_scores_it_is_majority():
    cands = [cand("a", "1", None), cand("b", "1", None), cand("c", "2", 0.3)]
    assert select_answer(cands, "weighted").answer == "2"
    unscored = [cand("a", "1"), cand("b", "2"), cand("c", "2")]
    for how in ("weighted", "naive"):
        chosen = select_answer(unscored, how)  # type: ignore[arg-type]
        assert chosen.answer == "2"
        assert chosen.rule == "majority"


def test_nothing_parsable_selects_nothing():
    chosen = select_answer([cand("a", None, 0.9)], "weighted")
    assert chosen.answer is None and chosen.candidate_id is None and chosen.rule == "none"
    assert select_answer([], "majority").answer is None


def test_answer_groups_merge_equivalent_answers():
    cands = [cand("a", "0.5", 0.25), cand("b", "1/2", 0.5), cand("c", "3", 0.125)]
    groups = answer_groups(cands)
    assert len(groups) == 2
    half = groups[0]
    assert half.candidate_ids == ("a", "b")
    assert half.votes == 2
    assert half.weight == pytest.approx(0.75)


def attempt(chain: int, position: int, answer: str, score: float) -> Candidate:
    return {**cand(f"ch{chain}-a{position}", answer, score), "meta": {"chain": chain, "position": position}}


# two chains: chain 0 settles on 5 (0.4, then 0.9), chain 1 on 6 (0.8, then 0.1)
CHAINS = [attempt(0, 0, "5", 0.4), attempt(1, 0, "6", 0.8), attempt(0, 1, "5", 0.9), attempt(1, 1, "6", 0.1)]


def test_finalists_are_what_each_strategy_votes_over():
    assert finalists(CHAINS) == CHAINS == finalists(CHAINS, "majority")  # search: every candidate
    assert [c["id"] for c in finalists(CHAINS, "hierarchical")] == ["ch0-a1", "ch1-a0"]  # each chain's best
    assert [c["id"] for c in finalists(CHAINS, "last")] == ["ch0-a1", "ch1-a1"]


def test_pooled_selection_weighs_the_probes_with_the_finalists():
    probes = [cand("probe-0", "6", 0.7), cand("probe-1", "7", 0.3)]
    # hierarchical finalists 5 (0.9) and 6 (0.8): the probe for 6 tips it, 1.5 against 0.9
    assert select_pooled(probes, CHAINS, "hierarchical").answer == "6"
    # every candidate votes: 5 has 1.3, 6 has 0.9 + 0.7 = 1.6
    assert select_pooled(probes, CHAINS).answer == "6"
    # last attempts 5 (0.9) and 6 (0.1): 6 has 0.8 with the probe, 5 keeps 0.9
    assert select_pooled(probes, CHAINS, "last").answer == "5"
    assert select_pooled(probes, []).answer == "6"  # nothing routed: the probes alone
