"""Selection over candidates that carry tool calls (actions) as well as final answers."""

from __future__ import annotations

from typing import Any

import pytest

from ttc_graph.selection import answer_groups, select_answer, select_pooled, select_revisions
from ttc_graph.state import Candidate
from ttc_graph.tool_calls import action_key

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER]


def call(city: str, days: Any = None, cid: str | None = None, name: str = "get_weather") -> dict[str, Any]:
    args: dict[str, Any] = {"city": city} if days is None else {"city": city, "days": days}
    return {"name": name, "args": args, "id": cid}


def act(cid: str, calls: list[dict[str, Any]], score: float | None = None, **meta: Any) -> Candidate:
    cand: Candidate = {
        "id": cid,
        "text": "",
        "answer": None,
        "parsable": False,
        "score": score,
        "step_scores": None,
        "scored": score is not None,
        "tokens": 5,
        "round": 1,
        "finish_reason": "tool_calls",
        "tool_calls": calls,  # type: ignore[typeddict-item]
    }
    if meta:
        cand["meta"] = meta
    return cand


def ans(cid: str, answer: str, score: float | None = None) -> Candidate:
    return {
        "id": cid,
        "text": f"The answer is {answer}.",
        "answer": answer,
        "parsable": True,
        "score": score,
        "step_scores": None,
        "scored": score is not None,
        "tokens": 5,
        "round": 1,
        "finish_reason": "stop",
    }


def test_equivalent_calls_vote_together():
    cands = [
        act("a1", [call("Paris", 2, "x")]),
        act("b1", [call("Rome")]),
        act("a2", [{"name": "get_weather", "args": '{"days": 2.0, "city": " Paris"}', "id": "y"}]),
    ]
    chosen = select_answer(cands, "majority", tools=TOOLS)
    assert chosen.is_action and chosen.valid
    assert chosen.answer is None
    assert chosen.candidate_id == "a1"
    assert chosen.action == action_key([call("Paris", 2)])
    assert [(g.candidate_ids, g.votes, g.action) for g in chosen.groups] == [
        (("a1", "a2"), 2, True),
        (("b1",), 1, True),
    ]


def test_parallel_calls_vote_as_multisets():
    both, reverse = [call("Paris"), call("Rome")], [call("Rome"), call("Paris")]
    twice = [call("Paris"), call("Paris"), call("Rome")]
    cands = [act("t1", twice), act("t2", twice), act("p1", both), act("p2", reverse), act("p3", both)]
    chosen = select_answer(cands, "majority")
    assert chosen.candidate_id == "p1"
    assert chosen.groups[0].candidate_ids == ("p1", "p2", "p3")
    assert chosen.groups[1].candidate_ids == ("t1", "t2")  # the duplicate call makes a different action


@pytest.mark.parametrize("first", ["answer", "action"])
def test_ties_go_to_the_first_seen(first: str):
    pair = [act("c1", [call("Paris")]), ans("n1", "12")]
    cands = pair if first == "action" else pair[::-1]
    chosen = select_answer(cands, "majority")
    assert chosen.candidate_id == cands[0]["id"]
    assert chosen.is_action == (first == "action")
    two = [act("r1", [call("Rome")]), act("p1", [call("Paris")]), act("p2", [call("Paris")]), act("r2", [call("Rome")])]
    assert select_answer(two, "majority").candidate_id == "r1"
    assert select_answer([act(c["id"], c["tool_calls"], 0.5) for c in two], "weighted").candidate_id == "r1"


def test_a_final_answer_and_an_action_never_merge():
    cands = [act("c1", [call("12")]), ans("n1", "12")]
    groups = answer_groups(cands)
    assert [(g.answer, g.action) for g in groups] == [(action_key([call("12")]), True), ("12", False)]
    mixed = act("m1", [call("12")])
    mixed["answer"] = "12"  # an action's answer field is not a vote for that answer
    assert [g.votes for g in answer_groups([mixed, ans("n1", "12")])] == [1, 1]


def test_the_answer_wins_with_more_votes():
    cands = [
        act("c1", [call("Paris")]),
        ans("n1", "12"),
        ans("n2", "12.0"),
        act("c2", [call("Paris")]),
        ans("n3", "12"),
    ]
    chosen = select_answer(cands, "majority", tools=TOOLS)
    assert (chosen.answer, chosen.candidate_id, chosen.is_action, chosen.action) == ("12", "n1", False, None)
    assert [(g.votes, g.action) for g in chosen.groups] == [(3, False), (2, True)]


def test_the_action_wins_with_more_votes():
    cands = [ans("n1", "12"), act("c1", [call("Paris")]), act("c2", [call("Paris")]), ans("n2", "13")]
    chosen = select_answer(cands, "majority", tools=TOOLS)
    assert (chosen.answer, chosen.candidate_id, chosen.is_action) == (None, "c1", True)


def test_weighted_sums_scores_over_actions():
    cands = [
        act("p1", [call("Paris")], 0.3),
        act("p2", [call("Paris")], 0.3),
        act("p3", [call("Paris")], 0.3),
        act("r1", [call("Rome")], 0.5),
        act("r2", [call("Rome")], 0.6),
        ans("n1", "7", 0.95),
    ]
    weighted = select_answer(cands, "weighted", tools=TOOLS)
    assert (weighted.rule, weighted.candidate_id, weighted.is_action) == ("weighted", "r2", True)
    assert weighted.groups[0].weight == pytest.approx(1.1)
    assert select_answer(cands, "majority", tools=TOOLS).candidate_id == "p1"
    naive = select_answer(cands, "naive", tools=TOOLS)
    assert (naive.rule, naive.candidate_id, naive.answer, naive.is_action) == ("naive", "n1", "7", False)


def test_naive_picks_the_top_scored_action():
    cands = [ans("n1", "7", 0.4), act("p1", [call("Paris")], 0.9), act("r1", [call("Rome")], 0.9)]
    naive = select_answer(cands, "naive")
    assert (naive.candidate_id, naive.answer, naive.action) == ("p1", None, action_key([call("Paris")]))


def test_unscored_actions_fall_back_to_majority():
    cands = [act("r1", [call("Rome")]), act("p1", [call("Paris")]), act("p2", [call("Paris")])]
    for how in ("weighted", "naive"):
        chosen = select_answer(cands, how)  # type: ignore[arg-type]
        assert (chosen.rule, chosen.candidate_id) == ("majority", "p1")


def test_schema_invalid_candidates_lose_even_with_more_votes():
    bad = [call("Paris", "two")]  # days must be an integer
    cands = [act("b1", bad, 0.9), act("b2", bad, 0.9), act("b3", bad, 0.9), act("g1", [call("Rome")], 0.1)]
    for how in ("majority", "weighted", "naive"):
        chosen = select_answer(cands, how, tools=TOOLS)  # type: ignore[arg-type]
        assert (chosen.candidate_id, chosen.valid, chosen.invalid) == ("g1", True, ()), how
        assert [(g.votes, g.valid) for g in chosen.groups] == [(1, True), (3, False)]
    assert select_answer(cands, "majority").candidate_id == "b1"  # without the tools there is no schema to fail


def test_an_invalid_action_loses_to_a_final_answer():
    cands = [act("u1", [call("Paris", name="launch")]), act("u2", [call("Paris", name="launch")]), ans("n1", "5")]
    chosen = select_answer(cands, "majority", tools=TOOLS)
    assert (chosen.candidate_id, chosen.answer, chosen.is_action) == ("n1", "5", False)


def test_unparsable_arguments_are_invalid_without_tools():
    broken = [{"name": "get_weather", "args": "{city: Paris", "id": None}]
    cands = [act("b1", broken), act("b2", broken), act("g1", [call("Rome")])]
    assert select_answer(cands, "majority").candidate_id == "g1"


def test_problems_recorded_in_meta_make_a_candidate_invalid():
    cands = [
        act("m1", [call("Paris")], invalid=["tool rejected it"]),
        act("m2", [call("Paris")], invalid=["tool rejected it"]),
        act("g1", [call("Rome")]),
    ]
    assert select_answer(cands, "majority", tools=TOOLS).candidate_id == "g1"
    flagged = ans("n1", "9")
    flagged["meta"] = {"invalid": ["not allowed to answer yet"]}
    assert select_answer([flagged, flagged | {"id": "n2"}, ans("n3", "8")], "majority").answer == "8"


def test_all_invalid_picks_as_if_valid_and_flags_it():
    bad_days, bad_name = [call("Paris", "two")], [call("Rome", name="launch")]
    cands = [act("d1", bad_days, 0.2), act("n1", bad_name, 0.9), act("d2", bad_days, 0.2), act("d3", bad_days, 0.2)]
    majority = select_answer(cands, "majority", tools=TOOLS)
    assert (majority.candidate_id, majority.valid, majority.is_action) == ("d1", False, True)
    assert majority.invalid and all("'two' is not of type 'integer'" in p for p in majority.invalid)
    assert all(not g.valid for g in majority.groups)
    naive = select_answer(cands, "naive", tools=TOOLS)
    assert naive.candidate_id == "n1"
    assert naive.invalid == ("call 0 ('launch'): unknown tool (known: get_weather)",)
    assert select_answer(cands, "weighted", tools=TOOLS).candidate_id == "n1"  # 0.9 > 3 x 0.2


def test_a_valid_candidate_without_an_answer_does_not_block_the_fallback():
    blank = ans("x1", "7")
    blank["answer"], blank["parsable"] = None, False
    chosen = select_answer([blank, act("b1", [call("Paris", "two")])], "majority", tools=TOOLS)
    assert (chosen.candidate_id, chosen.valid) == ("b1", False)


def test_no_candidates_and_no_votes():
    assert select_answer([], "majority", tools=TOOLS).candidate_id is None
    empty = act("e1", [])  # an empty tool_calls list is not an action
    empty["answer"], empty["parsable"] = "4", True
    chosen = select_answer([empty], "majority")
    assert (chosen.answer, chosen.is_action) == ("4", False)


def test_revisions_and_pooled_selection_check_actions_too():
    bad = [call("Paris", "two")]
    chain = [act("b1", bad, 0.9), act("g1", [call("Rome")], 0.1)]
    for i, c in enumerate(chain):
        c["meta"] = {"chain": 0, "position": i}
    assert select_revisions(chain, "hierarchical", tools=TOOLS).candidate_id == "g1"
    assert select_revisions(chain, "hierarchical").candidate_id == "b1"
    assert select_pooled([act("p1", bad, 0.9)], chain, "last", tools=TOOLS).candidate_id == "g1"


def test_answers_alone_select_as_before():
    cands = [ans("a1", "3", 0.6), ans("c1", "7", 0.1), ans("a2", "3", 0.6), ans("b1", "9", 0.95), ans("c2", "7", 0.1)]
    with_tools = select_answer(cands, "weighted", tools=TOOLS)
    without = select_answer(cands, "weighted")
    assert with_tools == without
    assert (without.answer, without.action, without.invalid) == ("3", None, ())
    assert all(not g.action and g.valid for g in without.groups)
