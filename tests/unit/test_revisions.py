"""Revision chains end to end over the scripted fake endpoint: context window, budget split, selection,
early stops, budgets, a separate revision policy, progress events, bad input and failing endpoints."""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import StateGraph

from ttc_graph import Budget, TTCContext, create_revisions
from ttc_graph.compute_optimal import spec_at_budget
from ttc_graph.errors import ConfigurationError
from ttc_graph.nodes.revise import REVISION_WINDOW, revision_messages
from ttc_graph.selection import select_revisions
from ttc_graph.state import Candidate
from ttc_graph.strategies.revisions import split_budget
from ttc_graph.testing import FakeCall, ScriptedEndpoint

QUESTION = "What is 6 times 7?"
LABEL = re.compile(r"\[chain (\d+) position (\d+)\]")

AnswerFn = Callable[[int, int], str | None]


def unique_answer(chain: int, position: int) -> str:
    return str(100 * chain + position)


class Chains:
    """A scripted policy whose every attempt names its chain and position, read off the prompt it is shown.

    A prompt without previous attempts starts a new chain (labels 0, 1, ... in call order); a revision continues
    the chain of the latest attempt it is shown, one position further. ``log`` keeps, per attempt drawn, its
    label and the labels of the previous attempts its prompt showed, in prompt order. The label is the model's
    view; tests compare it with the graph's own ``meta`` bookkeeping.
    """

    def __init__(self, answer: AnswerFn = unique_answer) -> None:
        self.answer = answer
        self.started = 0
        self.log: list[tuple[int, int, list[tuple[int, int]], FakeCall, str]] = []

    def __call__(self, call: FakeCall, index: int, tag: str = "draft") -> str:
        prompt = call.messages[-1]["content"]
        seen = [(int(c), int(p)) for c, p in LABEL.findall(prompt)]
        if seen:
            chain, position = seen[-1][0], seen[-1][1] + 1
        else:
            chain, position = self.started, 0
            self.started += 1
        answer = self.answer(chain, position)
        boxed = f" So the answer is \\boxed{{{answer}}}" if answer is not None else " I am not sure yet."
        self.log.append((chain, position, seen, call, tag))
        return f"[chain {chain} position {position}] {tag} {index}: working on chain {chain} try {position}.{boxed}"

    def endpoint(self, tag: str = "draft", **kwargs: Any) -> ScriptedEndpoint:
        return ScriptedEndpoint(lambda call, index: self(call, index, tag), **kwargs)


def label_of(cand: Candidate) -> tuple[int, int]:
    (found,) = LABEL.findall(cand["text"])
    return int(found[0]), int(found[1])


def by_chain(candidates: list[Candidate]) -> dict[int, list[Candidate]]:
    out: dict[int, list[Candidate]] = defaultdict(list)
    for c in candidates:
        out[c["meta"]["chain"]].append(c)
    for attempts in out.values():
        attempts.sort(key=lambda c: c["meta"]["position"])
    return dict(out)


def check_labels_match_meta(candidates: list[Candidate]) -> dict[int, int]:
    """Every text's label agrees with its candidate's meta: positions equal, chains one-to-one. Label → meta."""
    to_meta: dict[int, int] = {}
    for c in candidates:
        chain, position = label_of(c)
        assert position == c["meta"]["position"], c["id"]
        assert to_meta.setdefault(chain, c["meta"]["chain"]) == c["meta"]["chain"], c["id"]
        assert c["id"] == f"ch{c['meta']['chain']}-a{position}"
    assert len(set(to_meta.values())) == len(to_meta)
    return to_meta


def by_kind(out: dict[str, Any], kind: str, counter: str = "generations") -> int:
    return out["usage"]["by_kind"].get(kind, {}).get(counter, 0)


async def run(builder: StateGraph, inp: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return await builder.compile().ainvoke(inp if inp is not None else {"question": QUESTION}, **kwargs)


def check_ledger(out: dict[str, Any], *calls: ScriptedEndpoint) -> None:
    """Usage agrees with the candidates and with the requests the fakes saw."""
    usage = out["usage"]
    cands = out.get("candidates", [])
    assert usage["generations"] == len(cands) == by_kind(out, "propose") + by_kind(out, "revise")
    assert by_kind(out, "propose") == sum(1 for c in cands if c["meta"]["position"] == 0)
    assert by_kind(out, "revise") == sum(1 for c in cands if c["meta"]["position"] > 0)
    assert usage["requests"] + usage["failed_requests"] == sum(len(e.calls) for e in calls)
    assert usage["completion_tokens"] == sum(len(c["text"].split()) for c in cands)


# -- 1. context window -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "chains"), [(7, 1), (14, 2)])
async def test_revision_sees_at_most_the_4_latest_attempts_of_its_own_chain_in_order(n: int, chains: int):
    script = Chains()
    policy = script.endpoint()
    out = await run(create_revisions(policy, n=n, chain_length=7, selection="majority", stop_on_repeat=False))
    assert out["stop_reason"] == "complete"
    cands = out["candidates"]
    assert len(cands) == n == len(script.log) == len(policy.calls)
    check_labels_match_meta(cands)
    text_of = {label_of(c): c["text"] for c in cands}
    assert {chain for chain, _ in text_of} == set(range(chains))

    for chain, position, seen, call, _ in script.log:
        prompt = call.messages[-1]["content"]
        assert call.messages[0]["role"] == "system" and call.messages[-1]["role"] == "user"
        assert prompt.startswith(QUESTION)
        window = [(chain, p) for p in range(max(0, position - REVISION_WINDOW), position)]
        assert seen == window, f"chain {chain} position {position} was shown {seen}"
        if not window:
            assert prompt == QUESTION
            continue
        # exactly those texts, numbered from 1 in order, and no other attempt
        shown = "\n\n".join(f"Attempt {i + 1}:\n{text_of[label]}" for i, label in enumerate(window))
        assert shown in prompt
        assert re.findall(r"^Attempt (\d+):$", prompt, flags=re.M) == [str(i + 1) for i in range(len(window))]
        assert all(other not in prompt for label, other in text_of.items() if label not in window)
    # the 7th attempt of each chain saw attempts 3..6, never 1 or 2
    assert sorted(seen for _, position, seen, _, _ in script.log if position == 6) == [
        [(c, 2), (c, 3), (c, 4), (c, 5)] for c in range(chains)
    ]


def test_revision_messages_window_directly():
    previous = [f"text {i}" for i in range(6)]
    messages = revision_messages(QUESTION, previous, "sys")
    assert messages[0] == {"role": "system", "content": "sys"}
    content = messages[-1]["content"]
    assert [int(i) for i in re.findall(r"text (\d)", content)] == [2, 3, 4, 5]
    assert "Attempt 1:\ntext 2\n\nAttempt 2:\ntext 3\n\nAttempt 3:\ntext 4\n\nAttempt 4:\ntext 5" in content
    assert revision_messages(QUESTION, [], None) == [{"role": "user", "content": QUESTION}]


# -- 2. the split n = chains x length ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain_length", "chains", "length"), [(1, 16, 1), (2, 8, 2), (4, 4, 4), (8, 2, 8), (16, 1, 16), ("sqrt", 4, 4)]
)
async def test_split_of_n_is_exact(chain_length: int | str, chains: int, length: int):
    script = Chains()
    policy = script.endpoint()
    out = await run(
        create_revisions(policy, n=16, chain_length=chain_length, selection="majority", stop_on_repeat=False)
    )
    assert out["stop_reason"] == "complete"
    grouped = by_chain(out["candidates"])
    assert sorted(grouped) == list(range(chains))
    assert all([c["meta"]["position"] for c in attempts] == list(range(length)) for attempts in grouped.values())
    assert out["usage"]["generations"] == 16 == len(policy.calls)
    assert by_kind(out, "propose") == chains == by_kind(out, "propose", "requests")
    assert by_kind(out, "revise") == 16 - chains == by_kind(out, "revise", "requests")
    check_labels_match_meta(out["candidates"])
    check_ledger(out, policy)


@pytest.mark.parametrize("n", range(1, 101))
def test_sqrt_split_always_multiplies_back_to_n(n: int):
    chains, length = split_budget(n, "sqrt")
    assert chains * length == n
    if math.isqrt(n) ** 2 == n:
        assert chains == length == math.isqrt(n)


@pytest.mark.parametrize("n", [1, 4, 7, 8])
def test_a_full_chain_is_one_chain_of_n_at_any_budget(n: int):
    assert split_budget(n, "full") == (1, n)


def test_a_policy_table_keeps_a_full_chain_full_at_every_budget():
    # a template that says "full" is one chain of the budget's generations, not of the first budget's
    template = {"kind": "revisions", "chain_length": "full", "selection": "majority"}
    for budget in (4, 8):
        spec = spec_at_budget(template, budget)
        assert split_budget(spec.n, spec.chain_length) == (1, budget)  # type: ignore[union-attr]


# -- 3. selection --------------------------------------------------------------------------------------------------

# Three chains of three attempts; the rules disagree:
#   majority: "5" has 5 of 9 votes; hierarchical: chains 0 and 1 each pick "7" (0.9 beats 0.1 + 0.5), chain 2 picks
#   "5" (0.3), across chains "7" weighs 1.8; last: final attempts "9", "9", "5" weigh 1.0 against 0.1.
SCORES = {"5": 0.1, "7": 0.9, "9": 0.5}
SCRIPT = {0: ["7", "5", "9"], 1: ["7", "5", "9"], 2: ["5", "5", "5"]}


def score_by_answer(question: str, text: str) -> float:
    found = re.search(r"\\boxed\{(\d+)\}", text)
    return SCORES.get(found.group(1), 0.0) if found else 0.0


def cand(chain: int, position: int, answer: str | None, score: float | None) -> Candidate:
    return {
        "id": f"ch{chain}-a{position}",
        "text": f"\\boxed{{{answer}}}",
        "answer": answer,
        "parsable": answer is not None,
        "score": score,
        "step_scores": None,
        "scored": score is not None,
        "tokens": 1,
        "round": position,
        "finish_reason": "stop",
        "meta": {"chain": chain, "position": position},
    }


def constructed(scored: bool = True) -> list[Candidate]:
    cands = [
        cand(c, p, a, SCORES[a] if scored else None) for c, answers in SCRIPT.items() for p, a in enumerate(answers)
    ]
    random.Random(3).shuffle(cands)  # selection must not depend on the order candidates arrive in
    return cands


@pytest.mark.parametrize(("how", "expected"), [("hierarchical", "7"), ("majority", "5"), ("last", "9")])
def test_select_revisions_rules_differ(how: str, expected: str):
    chosen = select_revisions(constructed(), how)  # type: ignore[arg-type]
    assert chosen.answer == expected
    assert chosen.candidate_id is not None
    assert chosen.candidate_id in {c["id"] for c in constructed() if c["answer"] == expected}


def test_hierarchical_weighs_within_chain_before_across():
    # within chain 0, "4" wins by weight (0.8) over the single best-scored "6" (0.7); across chains, one chain's
    # "4" (0.4) loses to two chains' "6" (0.6 + 0.6), although "4" has the most votes overall (4 against 3)
    cands = [cand(0, 0, "4", 0.4), cand(0, 1, "4", 0.4), cand(0, 2, "6", 0.7)]
    cands += [cand(1, 0, "4", 0.2), cand(1, 1, "6", 0.6)]
    cands += [cand(2, 0, "6", 0.6), cand(2, 1, "4", 0.1)]
    assert select_revisions(cands, "hierarchical").answer == "6"
    assert select_revisions(cands, "hierarchical").rule == "hierarchical/weighted"
    assert select_revisions(cands, "majority").answer == "4"
    only_chain0 = [c for c in cands if c["meta"]["chain"] == 0]
    assert select_revisions(only_chain0, "hierarchical").answer == "4"


def test_last_without_scores_is_a_vote_over_final_attempts():
    chosen = select_revisions(constructed(scored=False), "last")
    assert chosen.answer == "9"
    assert chosen.candidate_id in {"ch0-a2", "ch1-a2"}


def test_selection_with_nothing_parsable_is_none():
    cands = [cand(0, 0, None, 0.5), cand(1, 0, None, None)]
    for how in ("hierarchical", "majority", "last"):
        assert select_revisions(cands, how).answer is None  # type: ignore[arg-type]
    assert select_revisions([], "hierarchical").answer is None


@pytest.mark.parametrize(
    ("selection", "verifier", "expected"),
    [
        ("hierarchical", score_by_answer, "7"),
        ("majority", score_by_answer, "5"),
        ("majority", None, "5"),
        ("last", score_by_answer, "9"),
        ("last", None, "9"),
    ],
)
async def test_selection_end_to_end(selection: Any, verifier: Any, expected: str):
    script = Chains(lambda chain, position: SCRIPT[chain][position])
    policy = script.endpoint()
    out = await run(create_revisions(policy, verifier, n=9, chain_length=3, selection=selection, stop_on_repeat=False))
    assert out["answer"] == expected
    assert out["stop_reason"] == "complete"
    assert Counter(c["answer"] for c in out["candidates"]) == {"5": 5, "7": 2, "9": 2}
    if verifier is not None:
        assert all(c["score"] == SCORES[c["answer"]] for c in out["candidates"])
        assert by_kind(out, "verify", "generations") == 0  # scoring is not a policy generation
    else:
        assert all(c["score"] is None for c in out["candidates"])
    check_ledger(out, policy)


# -- 4. early stops ------------------------------------------------------------------------------------------------


async def test_stop_score_ends_a_confident_chain_early():
    def verifier(question: str, text: str) -> float:
        return 0.95 if "[chain 0 position 1]" in text else 0.1

    script = Chains()
    policy = script.endpoint()
    out = await run(create_revisions(policy, verifier, n=12, chain_length=4, stop_score=0.9, stop_on_repeat=False))
    assert out["stop_reason"] == "complete"
    assert out["usage"]["generations"] == 10 < 12
    assert len(policy.calls) == 10
    assert by_kind(out, "propose") == 3 and by_kind(out, "revise") == 7
    to_meta = check_labels_match_meta(out["candidates"])
    lengths = {chain: len(attempts) for chain, attempts in by_chain(out["candidates"]).items()}
    assert lengths == {to_meta[0]: 2, to_meta[1]: 4, to_meta[2]: 4}
    assert out["answer"] == unique_answer(0, 1)  # the confident attempt wins the hierarchical selection
    check_ledger(out, policy)


async def test_stop_score_is_inclusive_and_unreached_score_changes_nothing():
    def verifier(question: str, text: str) -> float:
        return 0.8 if "position 2]" in text else 0.2

    reached = await run(create_revisions(Chains().endpoint(), verifier, n=8, chain_length=4, stop_score=0.8))
    assert reached["usage"]["generations"] == 6
    missed = await run(create_revisions(Chains().endpoint(), verifier, n=8, chain_length=4, stop_score=0.81))
    assert missed["usage"]["generations"] == 8
    assert reached["stop_reason"] == missed["stop_reason"] == "complete"


@pytest.mark.parametrize(("stop_on_repeat", "generations"), [(True, 10), (False, 12)])
async def test_a_repeated_answer_stops_its_chain(stop_on_repeat: bool, generations: int):
    def answer(chain: int, position: int) -> str:
        return "42" if chain == 1 else unique_answer(chain, position)

    policy = Chains(answer).endpoint()
    out = await run(create_revisions(policy, n=12, chain_length=4, selection="majority", stop_on_repeat=stop_on_repeat))
    assert out["stop_reason"] == "complete"
    assert out["usage"]["generations"] == generations == len(policy.calls)
    to_meta = check_labels_match_meta(out["candidates"])
    repeated = by_chain(out["candidates"])[to_meta[1]]
    assert len(repeated) == (2 if stop_on_repeat else 4)
    assert out["answer"] == "42"
    check_ledger(out, policy)


async def test_equivalent_answers_count_as_a_repeat_but_unparsable_ones_do_not():
    def answer(chain: int, position: int) -> str | None:
        if chain == 0:
            return ["0.5", "\\frac{1}{2}", "7", "8"][position]
        return None

    policy = Chains(answer).endpoint()
    out = await run(create_revisions(policy, n=8, chain_length=4, selection="majority", stop_on_repeat=True))
    to_meta = check_labels_match_meta(out["candidates"])
    grouped = by_chain(out["candidates"])
    assert len(grouped[to_meta[0]]) == 2  # 0.5 then 1/2
    assert len(grouped[to_meta[1]]) == 4  # no answer twice is no repeat
    assert out["usage"]["generations"] == 6
    assert out["stop_reason"] == "complete"


# -- 5. budgets ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("g", [1, 2, 3, 5, 7, 8, 20])
async def test_generation_budget_is_never_exceeded(g: int):
    policy = Chains().endpoint()
    out = await run(create_revisions(policy, n=8, chain_length=4, selection="majority", budget=Budget(generations=g)))
    assert out["usage"]["generations"] <= g
    assert out["usage"]["generations"] == min(g, 8) == len(policy.calls)
    assert out["stop_reason"] == ("budget:generations" if g < 8 else "complete")
    assert out["answer"] is not None
    check_ledger(out, policy)


@pytest.mark.parametrize(
    "context",
    [{"budget": {"generations": 3}}, {"budget": Budget(generations=3)}, TTCContext(budget=Budget(generations=3))],
    ids=["dict-of-dict", "dict", "dataclass"],
)
async def test_per_run_context_budget(context: Any):
    policy = Chains().endpoint()
    graph = create_revisions(policy, n=8, chain_length=4, selection="majority", stop_on_repeat=False).compile()
    out = await graph.ainvoke({"question": QUESTION}, context=context)
    assert out["usage"]["generations"] == 3 == len(policy.calls)
    assert out["stop_reason"] == "budget:generations"
    again = await graph.ainvoke({"question": QUESTION})  # the compiled graph keeps no budget of its own
    assert again["usage"]["generations"] == 8
    assert again["stop_reason"] == "complete"


async def test_run_context_overrides_the_built_in_budget_and_sampling():
    policy = Chains().endpoint()
    graph = create_revisions(
        policy, n=8, chain_length=4, selection="majority", budget=Budget(generations=2), temperature=0.9
    ).compile()
    out = await graph.ainvoke({"question": QUESTION}, context={"budget": {"generations": 6}, "temperature": 0.1})
    assert out["usage"]["generations"] == 6
    assert out["stop_reason"] == "budget:generations"
    assert {c.params.temperature for c in policy.calls if c.params} == {0.1}


async def test_token_budget_caps_each_request_and_can_stop_before_sampling():
    policy = Chains().endpoint()
    out = await run(create_revisions(policy, n=8, chain_length=4, selection="majority", budget=Budget(tokens=1)))
    assert policy.calls == []
    assert out["stop_reason"] == "budget:tokens"
    assert out["answer"] is None

    policy = Chains().endpoint()
    out = await run(
        create_revisions(policy, n=8, chain_length=4, selection="majority", max_tokens=512, budget=Budget(tokens=40))
    )
    first_round = [c for c in policy.calls if c.messages[-1]["content"] == QUESTION]
    assert [c.params.max_tokens for c in first_round if c.params] == [20, 20]  # 40 tokens shared by 2 chains
    assert all(c.params is not None and 1 <= c.params.max_tokens <= 20 for c in policy.calls)  # type: ignore[operator]
    assert out["stop_reason"] == "budget:tokens"


# -- 6. a separate revision policy ---------------------------------------------------------------------------------


async def test_revisions_go_to_the_revision_policy():
    script = Chains()
    policy, reviser = script.endpoint("draft"), script.endpoint("revised")
    out = await run(
        create_revisions(
            policy, n=12, chain_length=4, selection="majority", revision_policy=reviser, stop_on_repeat=False
        )
    )
    assert out["stop_reason"] == "complete"
    assert len(policy.calls) == 3 and len(reviser.calls) == 9
    assert all(call.messages[-1]["content"] == QUESTION for call in policy.calls)
    assert all("Attempt 1:" in call.messages[-1]["content"] for call in reviser.calls)
    for c in out["candidates"]:
        assert (" draft " in c["text"]) == (c["meta"]["position"] == 0)
        assert (" revised " in c["text"]) == (c["meta"]["position"] > 0)
    assert by_kind(out, "propose", "requests") == 3 and by_kind(out, "revise", "requests") == 9
    check_labels_match_meta(out["candidates"])
    check_ledger(out, policy, reviser)


# -- 7. progress events --------------------------------------------------------------------------------------------


async def test_one_progress_event_per_round():
    policy = Chains().endpoint()
    graph = create_revisions(policy, n=6, chain_length=3, selection="majority", stop_on_repeat=False).compile()
    events = [e async for e in graph.astream({"question": QUESTION}, stream_mode="custom")]
    rounds = [e for e in events if isinstance(e, dict) and e.get("event") == "ttc.round"]
    assert [e["round"] for e in rounds] == [0, 1, 2, 3]
    assert [e["planned"] for e in rounds] == [2, 2, 2, 0]
    assert [e["stop"] for e in rounds] == [None, None, None, "complete"]
    assert [[ch["attempts"] for ch in e["chains"].values()] for e in rounds] == [[0, 0], [1, 1], [2, 2], [3, 3]]
    assert {ch["status"] for ch in rounds[-1]["chains"].values()} == {"full"}
    assert rounds[-1]["usage"]["generations"] == sum(e["planned"] for e in rounds) == len(policy.calls) == 6


async def test_progress_events_report_early_stops():
    def verifier(question: str, text: str) -> float:
        return 0.99 if "[chain 0 position 0]" in text else 0.1

    def answer(chain: int, position: int) -> str:
        return "42" if chain == 1 else unique_answer(chain, position)

    graph = create_revisions(
        Chains(answer).endpoint(), verifier, n=9, chain_length=3, stop_score=0.9, stop_on_repeat=True
    ).compile()
    rounds = [e async for e in graph.astream({"question": QUESTION}, stream_mode="custom") if e.get("event")]
    assert [e["planned"] for e in rounds] == [3, 2, 1, 0]
    assert sorted(ch["status"] for ch in rounds[-1]["chains"].values()) == ["confident", "full", "repeated"]
    assert rounds[-1]["stop"] == "complete"


# -- 8. bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 16, "chain_length": 3}, "chain_length"),
        ({"n": 16, "chain_length": 32}, "chain_length"),
        ({"n": 16, "chain_length": 0}, "chain_length"),
        ({"n": 16, "chain_length": -4}, "chain_length"),
        ({"n": 16, "chain_length": 2.0}, "chain_length"),
        ({"n": 16, "chain_length": "SQRT"}, "chain_length"),
        ({"n": 0, "chain_length": 1}, "n"),
        ({"n": -2, "chain_length": 1}, "n"),
        ({"n": 4.0, "chain_length": 1}, "n"),
        ({"n": 4, "chain_length": 2, "selection": "best"}, "selection"),
        ({"n": 4, "chain_length": 2, "selection": "weighted"}, "selection"),
        ({"n": 4, "chain_length": 2, "verifier": None}, "verifier"),
        ({"n": 4, "chain_length": 2, "verifier": None, "selection": "hierarchical"}, "verifier"),
        ({"n": 4, "chain_length": 2, "verifier": None, "selection": "majority", "stop_score": 0.5}, "stop_score"),
        ({"n": 4, "chain_length": 2, "stop_score": 1.5}, "stop_score"),
        ({"n": 4, "chain_length": 2, "stop_score": -0.1}, "stop_score"),
        ({"n": 4, "chain_length": 2, "verifier": 3}, "verifier"),
        ({"n": 4, "chain_length": 2, "revision_policy": object()}, "policy"),
    ],
)
def test_bad_input_raises_before_any_request(kwargs: dict[str, Any], field: str):
    policy = Chains().endpoint()
    kwargs = {"verifier": score_by_answer, **kwargs}
    with pytest.raises(ConfigurationError) as info:
        create_revisions(policy, **kwargs)
    assert str(info.value).startswith(f"{field}:"), str(info.value)
    assert policy.calls == []


def test_a_policy_without_generate_is_rejected():
    with pytest.raises(ConfigurationError, match=r"^policy:"):
        create_revisions(object(), n=4, chain_length=2, selection="majority")  # type: ignore[arg-type]


@pytest.mark.parametrize(("stop_score", "score", "generations"), [(0.0, 0.0, 2), (1.0, 1.0, 2), (1.0, 0.99, 4)])
async def test_stop_score_bounds_are_allowed(stop_score: float, score: float, generations: int):
    # both ends of [0, 1] are accepted, and inclusive: two chains stop after a first attempt scored exactly the bound
    policy = Chains().endpoint()
    out = await run(create_revisions(policy, lambda q, t: score, n=4, chain_length=2, stop_score=stop_score))
    assert out["stop_reason"] == "complete"
    assert out["usage"]["generations"] == len(policy.calls) == generations
    check_ledger(out, policy)


# -- 9. failing endpoints ------------------------------------------------------------------------------------------


async def test_an_endpoint_that_always_fails_stops_with_error():
    policy = ScriptedEndpoint(["So \\boxed{4}"], fail_every=1)
    out = await run(create_revisions(policy, n=8, chain_length=4, selection="majority"))
    assert out["stop_reason"] == "error"
    assert out["answer"] is None
    assert out["usage"]["failed_requests"] > 0
    assert out["usage"]["generations"] == 0
    assert out["errors"] and all("scripted" in e for e in out["errors"])
    assert out.get("candidates", []) == []


async def test_a_revision_policy_that_always_fails_stops_with_the_first_attempts():
    script = Chains()
    policy, reviser = script.endpoint(), script.endpoint("revised", fail_every=1)
    out = await run(create_revisions(policy, n=8, chain_length=4, selection="majority", revision_policy=reviser))
    assert out["stop_reason"] == "error"
    assert out["answer"] in {unique_answer(0, 0), unique_answer(1, 0)}
    assert out["usage"]["generations"] == 2
    assert 0 < out["usage"]["failed_requests"] <= 8  # retried, but never more often than n
    assert by_kind(out, "revise", "failed_requests") == out["usage"]["failed_requests"]
    assert all(e.startswith("revise chain ") for e in out["errors"])


async def test_transient_failures_are_retried_at_the_same_position():
    script = Chains()
    policy = script.endpoint(fail_every=3)
    out = await run(create_revisions(policy, n=8, chain_length=4, selection="majority", stop_on_repeat=False))
    assert out["stop_reason"] == "complete"
    assert out["usage"]["generations"] == 8
    assert out["usage"]["failed_requests"] > 0
    grouped = by_chain(out["candidates"])
    assert all([c["meta"]["position"] for c in a] == [0, 1, 2, 3] for a in grouped.values())
    check_labels_match_meta(out["candidates"])
    check_ledger(out, policy)


# -- odds and ends -------------------------------------------------------------------------------------------------


async def test_seeds_are_distinct_per_chain_and_position():
    policy = Chains().endpoint()
    await run(create_revisions(policy, n=8, chain_length=4, selection="majority", stop_on_repeat=False, seed=5))
    seeds = [c.params.seed for c in policy.calls if c.params]
    assert len(seeds) == 8 and len(set(seeds)) == 8
    unseeded = Chains().endpoint()
    await run(create_revisions(unseeded, n=4, chain_length=2, selection="majority"))
    assert {c.params.seed for c in unseeded.calls if c.params} == {None}


async def test_messages_input_gets_an_ai_reply_with_the_chosen_attempt():
    policy = Chains(lambda chain, position: "42").endpoint()
    out = await run(
        create_revisions(policy, n=4, chain_length=2, selection="majority"),
        {"messages": [HumanMessage(content=QUESTION)]},
    )
    assert out["answer"] == "42"
    assert isinstance(out["messages"][-1], AIMessage)
    assert "\\boxed{42}" in out["messages"][-1].content
    assert out["messages"][-1].response_metadata["ttc_answer"] == "42"


@pytest.mark.parametrize(("n", "chain_length"), [(4, 4), (8, 4), (9, "sqrt")])
async def test_chains_run_to_full_length_by_default_even_when_answers_repeat(n: int, chain_length: int | str):
    policy = Chains(lambda chain, position: "42").endpoint()  # every attempt repeats the previous answer
    out = await run(create_revisions(policy, n=n, chain_length=chain_length, selection="majority"))
    assert out["usage"]["generations"] == n == len(policy.calls)
    assert out["stop_reason"] == "complete"
