"""Best-of-N graphs end to end over the scripted fake endpoint."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from tests.fakeclock import FakeClock, TimedEndpoint
from ttc_graph import AdaptiveStop, Budget, TTCContext, create_best_of_n
from ttc_graph.errors import ConfigurationError
from ttc_graph.selection import TRUNCATED, leader_probability, select_answer
from ttc_graph.testing import ScriptedEndpoint

SNAPSHOT = Path(__file__).parent / "__snapshots__" / "best_of_n.mmd"
QUESTION = "What is 3 + 4?"

# Three final answers built so the three selection rules disagree:
# "7": four samples scored 0.1 (most votes, weight 0.4)
# "3": three samples scored 0.6 (weight 1.8, the heaviest)
# "9": one sample scored 0.95 (the single best score)
SCORES = {"7": 0.1, "3": 0.6, "9": 0.95}
MIXED = [
    "Add them. \\boxed{7}",
    "Subtract. \\boxed{3}",
    "Add them again. \\boxed{7}",
    "Multiply. \\boxed{9}",
    "Subtract again. \\boxed{3}",
    "Still adding. \\boxed{7}",
    "One more subtraction. \\boxed{3}",
    "Adding once more. \\boxed{7}",
]


def score_by_answer(question: str, text: str) -> float:
    for answer, score in SCORES.items():
        if f"\\boxed{{{answer}}}" in text:
            return score
    return 0.0


async def ascore_by_answer(question: str, text: str) -> float:
    await asyncio.sleep(0)
    return score_by_answer(question, text)


async def run(graph_or_builder: Any, inp: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    graph = graph_or_builder.compile() if isinstance(graph_or_builder, StateGraph) else graph_or_builder
    return await graph.ainvoke(inp if inp is not None else {"question": QUESTION}, **kwargs)


# -- selection rules -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("selection", "expected"), [("weighted", "3"), ("naive", "9"), ("majority", "7")])
async def test_selection_rules_choose_differently(selection: str, expected: str):
    policy = ScriptedEndpoint(MIXED)
    verifier = score_by_answer if selection != "majority" else None
    out = await run(create_best_of_n(policy, verifier, n=len(MIXED), selection=selection))
    assert out["answer"] == expected


async def test_output_shape():
    policy = ScriptedEndpoint(MIXED)
    out = await run(create_best_of_n(policy, score_by_answer, n=len(MIXED)))
    assert {"answer", "candidates", "usage", "stop_reason"} <= set(out)
    assert out["stop_reason"] == "complete"
    assert len(out["candidates"]) == len(MIXED)
    assert sorted(c["text"] for c in out["candidates"]) == sorted(MIXED)
    for c in out["candidates"]:
        assert {"text", "answer", "score", "tokens"} <= set(c)
        assert c["score"] == score_by_answer(QUESTION, c["text"])
        assert c["scored"] is True
        assert c["parsable"] is True
        assert c["tokens"] == len(c["text"].split())
        assert c["text"].endswith(f"\\boxed{{{c['answer']}}}")
    usage = out["usage"]
    assert usage["generations"] == len(MIXED)
    assert usage["requests"] == len(policy.calls)
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] == sum(len(t.split()) for t in MIXED)
    assert usage["seconds"] >= 0


@pytest.mark.parametrize("native_n", [True, False])
@pytest.mark.parametrize("n", [1, 3, 8])
async def test_generations_equal_n(n: int, native_n: bool):
    policy = ScriptedEndpoint(MIXED, native_n=native_n)
    out = await run(create_best_of_n(policy, n=n, selection="majority"))
    assert out["usage"]["generations"] == n
    assert len(out["candidates"]) == n
    assert sum(c.n for c in policy.calls) == n
    assert out["usage"]["requests"] == len(policy.calls)
    if not native_n:
        assert all(c.n == 1 for c in policy.calls)


@pytest.mark.parametrize("verifier", [score_by_answer, ascore_by_answer], ids=["sync", "async"])
async def test_sync_and_async_callable_verifiers(verifier):
    out = await run(create_best_of_n(ScriptedEndpoint(MIXED), verifier, n=len(MIXED), selection="weighted"))
    assert out["answer"] == "3"
    assert [c["score"] for c in out["candidates"]] == [score_by_answer(QUESTION, c["text"]) for c in out["candidates"]]


@pytest.mark.parametrize("failure", ["raise", "out_of_range", "nan"])
async def test_a_failing_verifier_leaves_that_candidate_unscored(failure: str):
    def verifier(question: str, text: str) -> float:
        if "\\boxed{9}" in text:
            if failure == "raise":
                raise RuntimeError("verifier crashed")
            return 1.7 if failure == "out_of_range" else float("nan")
        return score_by_answer(question, text)

    out = await run(create_best_of_n(ScriptedEndpoint(MIXED), verifier, n=len(MIXED), selection="naive"))
    bad = [c for c in out["candidates"] if c["answer"] == "9"]
    good = [c for c in out["candidates"] if c["answer"] != "9"]
    assert len(bad) == 1
    assert bad[0]["score"] is None
    assert bad[0]["scored"] is False
    assert "verify_error" in bad[0].get("meta", {})
    assert all(c["scored"] and c["score"] is not None for c in good)
    # the unscored best candidate cannot win the naive rule; the run still answers
    assert out["answer"] == "3"
    assert any(bad[0]["id"] in e for e in out["errors"])


async def test_unparsable_candidate_is_marked_and_never_selected():
    script = ["I am not sure.", "So \\boxed{5}", "Maybe \\boxed{6}"]

    def verifier(question: str, text: str) -> float:
        return 1.0 if "not sure" in text else (0.3 if "5" in text else 0.2)

    for selection in ("weighted", "naive"):
        out = await run(create_best_of_n(ScriptedEndpoint(script), verifier, n=3, selection=selection))
        unparsable = [c for c in out["candidates"] if c["text"] == script[0]]
        assert unparsable[0]["parsable"] is False
        assert unparsable[0]["answer"] is None
        assert out["answer"] == "5"


async def test_nothing_parsable_answers_none():
    out = await run(create_best_of_n(ScriptedEndpoint(["no idea", "pass"]), n=4, selection="majority"))
    assert out["answer"] is None
    assert out["usage"]["generations"] == 4


# -- budgets -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("native_n", [True, False])
@pytest.mark.parametrize(("n", "g"), [(4, 1), (4, 2), (4, 4), (4, 10), (8, 3), (1, 1), (16, 5)])
async def test_generation_budget_is_never_exceeded(n: int, g: int, native_n: bool):
    policy = ScriptedEndpoint(MIXED, native_n=native_n)
    out = await run(create_best_of_n(policy, n=n, selection="majority", budget=Budget(generations=g)))
    assert out["usage"]["generations"] <= g
    assert out["usage"]["generations"] == min(n, g)
    assert sum(c.n for c in policy.calls) == min(n, g)
    assert out["stop_reason"] == ("budget:generations" if g < n else "complete")
    assert out["answer"] is not None


@pytest.mark.parametrize("native_n", [True, False])
@pytest.mark.parametrize(("n", "tokens"), [(4, 100), (4, 4), (8, 1000), (8, 2049), (3, 10)])
async def test_token_budget_caps_max_tokens(n: int, tokens: int, native_n: bool):
    policy = ScriptedEndpoint(MIXED, native_n=native_n)
    out = await run(create_best_of_n(policy, n=n, selection="majority", max_tokens=512, budget=Budget(tokens=tokens)))
    assert policy.calls
    for call in policy.calls:
        assert call.params is not None and call.params.max_tokens is not None
        assert 1 <= call.params.max_tokens <= 512
    assert sum(c.params.max_tokens * c.n for c in policy.calls) <= tokens
    assert out["usage"]["generations"] == n


async def test_token_budget_smaller_than_n_samples_stops_before_sampling():
    policy = ScriptedEndpoint(MIXED)
    out = await run(create_best_of_n(policy, n=8, selection="majority", budget=Budget(tokens=5)))
    assert policy.calls == []
    assert out["stop_reason"] == "budget:tokens"
    assert out["answer"] is None
    assert out["usage"].get("generations", 0) == 0


async def test_seconds_budget_ends_with_the_best_answer_so_far(monkeypatch: pytest.MonkeyPatch):
    # 50/50 answers are never decisive, so only the clock can stop the run early; each request takes 0.2 s of a
    # fake clock, two at a time
    clock = FakeClock().install(monkeypatch)
    policy = TimedEndpoint(["\\boxed{1}", "\\boxed{2}"], clock=clock, cost=0.2)
    builder = create_best_of_n(
        policy,
        n=40,
        selection="majority",
        adaptive=AdaptiveStop(window=2, confidence=0.99, min_samples=2),
        budget=Budget(seconds=0.5),
    )
    out = await asyncio.wait_for(run(builder), 60)  # a hang guard only
    assert out["stop_reason"] == "budget:seconds"
    assert out["answer"] in ("1", "2")
    assert 2 <= out["usage"]["generations"] < 40
    # it stops at the deadline: every request started before it, none after; the last pair ends past it
    assert [round(t - clock.start, 6) for t in policy.starts] == [0.0, 0.0, 0.2, 0.2, 0.4, 0.4]
    assert out["usage"]["generations"] == len(policy.starts)


@pytest.mark.parametrize("native_n", [True, False])
async def test_failing_requests_are_recorded_and_the_run_still_answers(native_n: bool):
    # with native n, one request would carry all samples; sample through a window so that some requests fail
    policy = ScriptedEndpoint(["So \\boxed{4}"], fail_every=3, native_n=native_n)
    rounds = AdaptiveStop(window=2, confidence=0.999, min_samples=6) if native_n else False
    out = await run(create_best_of_n(policy, n=6, selection="majority", adaptive=rounds))
    assert out["answer"] == "4"
    assert out["usage"]["failed_requests"] > 0
    assert out["errors"]
    assert all("scripted failure" in e or "every request failed" in e for e in out["errors"])
    assert out["usage"]["generations"] <= 6


async def test_all_requests_failing_stops_with_error():
    policy = ScriptedEndpoint(["So \\boxed{4}"], fail_every=1)
    out = await run(create_best_of_n(policy, n=4, selection="majority"))
    assert out["stop_reason"] == "error"
    assert out["answer"] is None
    assert out["usage"]["failed_requests"] > 0
    assert out["errors"]
    assert out.get("candidates", []) == []


# -- adaptive stopping ---------------------------------------------------------------------------------------------


async def test_adaptive_stops_early_when_decisive():
    stop = AdaptiveStop(window=2, confidence=0.9, min_samples=2)
    policy = ScriptedEndpoint(["So \\boxed{4}"], delay=0.01)
    out = await run(create_best_of_n(policy, n=16, selection="majority", adaptive=stop))
    drawn = out["usage"]["generations"]
    assert out["stop_reason"] == "decisive"
    assert out["answer"] == "4"
    assert stop.min_samples <= drawn < 16
    assert all(c.n == 1 for c in policy.calls)
    assert len(policy.calls) <= drawn + stop.window  # at most the window was in flight when the rule fired
    assert leader_probability([drawn]) >= stop.confidence


async def test_adaptive_uses_all_samples_on_a_split_vote():
    policy = ScriptedEndpoint(["So \\boxed{1}", "So \\boxed{2}"])
    stop = AdaptiveStop(window=2, confidence=0.9, min_samples=2)
    out = await run(create_best_of_n(policy, n=10, selection="majority", adaptive=stop))
    assert out["usage"]["generations"] == 10
    assert out["stop_reason"] == "complete"
    assert len(policy.calls) == 10


# -- messages, subgraphs, streaming, context ------------------------------------------------------------------------


async def test_messages_input_appends_an_ai_message():
    policy = ScriptedEndpoint(["Seven. \\boxed{7}"])
    out = await run(create_best_of_n(policy, n=2, selection="majority"), {"messages": [HumanMessage(QUESTION)]})
    assert out["answer"] == "7"
    assert policy.calls[0].messages[-1] == {"role": "user", "content": QUESTION}
    assert isinstance(out["messages"][0], HumanMessage)
    last = out["messages"][-1]
    assert isinstance(last, AIMessage)
    assert last.content == "Seven. \\boxed{7}"
    assert last.response_metadata.get("ttc_answer") == "7"


async def test_question_input_adds_no_messages():
    out = await run(create_best_of_n(ScriptedEndpoint(["\\boxed{7}"]), n=1, selection="majority"))
    assert not out.get("messages")


async def test_as_a_subgraph_node():
    class Parent(TypedDict, total=False):
        messages: Annotated[list[AnyMessage], add_messages]
        answer: str | None

    policy = ScriptedEndpoint(MIXED)
    child = create_best_of_n(policy, score_by_answer, n=len(MIXED)).compile()
    parent = StateGraph(Parent)
    parent.add_node("ttc", child)
    parent.add_edge(START, "ttc")
    parent.add_edge("ttc", END)
    out = await parent.compile().ainvoke({"messages": [HumanMessage(QUESTION)]})
    assert out["answer"] == "3"
    assert len(out["messages"]) == 2
    assert isinstance(out["messages"][-1], AIMessage)
    assert "\\boxed{3}" in out["messages"][-1].content
    assert policy.calls[0].messages[-1]["content"] == QUESTION


async def test_custom_stream_events():
    graph = create_best_of_n(ScriptedEndpoint(MIXED), n=4, selection="majority").compile()
    events = [e async for e in graph.astream({"question": QUESTION}, stream_mode="custom")]
    rounds = [e for e in events if isinstance(e, dict) and e.get("event") == "ttc.round"]
    assert len(rounds) >= 2
    assert rounds[0]["planned"] == 4 and rounds[0]["stop"] is None
    assert rounds[-1]["stop"] == "complete" and rounds[-1]["drawn"] == 4


async def test_run_context_overrides_temperature_and_budget():
    policy = ScriptedEndpoint(MIXED)
    graph = create_best_of_n(policy, n=6, selection="majority", temperature=0.8).compile()
    base = await graph.ainvoke({"question": QUESTION})
    assert base["usage"]["generations"] == 6
    assert {c.params.temperature for c in policy.calls} == {0.8}
    policy.calls.clear()

    out = await graph.ainvoke({"question": QUESTION}, context=TTCContext(temperature=0.1, budget=Budget(generations=2)))
    assert out["usage"]["generations"] == 2
    assert out["stop_reason"] == "budget:generations"
    assert {c.params.temperature for c in policy.calls} == {0.1}


async def test_dict_context_works():
    policy = ScriptedEndpoint(MIXED)
    graph = create_best_of_n(policy, n=6, selection="majority").compile()
    out = await graph.ainvoke(
        {"question": QUESTION}, context={"temperature": 0.2, "max_tokens": 77, "budget": Budget(generations=3)}
    )
    assert out["usage"]["generations"] == 3
    assert {c.params.temperature for c in policy.calls} == {0.2}
    assert {c.params.max_tokens for c in policy.calls} == {77}


async def test_dict_context_with_nested_budget_dict():
    policy = ScriptedEndpoint(MIXED)
    graph = create_best_of_n(policy, n=6, selection="majority").compile()
    out = await graph.ainvoke({"question": QUESTION}, context={"budget": {"generations": 3}})
    assert out["usage"]["generations"] == 3


async def test_seed_per_chunk_is_distinct():
    policy = ScriptedEndpoint(MIXED, native_n=False)
    await run(create_best_of_n(policy, n=5, selection="majority", seed=11))
    seeds = [c.params.seed for c in policy.calls]
    assert len(set(seeds)) == 5
    assert None not in seeds


async def test_all_samples_are_in_flight_at_once():
    n = 16
    all_started = asyncio.Event()
    in_flight, peak = 0, 0

    class Gated(ScriptedEndpoint):
        async def generate(self, messages: Any, **kwargs: Any) -> Any:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            if peak == n:
                all_started.set()
            try:  # no request answers before all n have started: sequential sampling would never get there
                await all_started.wait()
                return await super().generate(messages, **kwargs)
            finally:
                in_flight -= 1

    policy = Gated(MIXED, native_n=False)
    graph = create_best_of_n(policy, n=n, selection="majority").compile()
    out = await asyncio.wait_for(graph.ainvoke({"question": QUESTION}), 60)  # a hang guard only
    assert out["usage"]["generations"] == n
    assert len(policy.calls) == n
    assert peak == n


# -- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 0, "selection": "majority"}, "n"),
        ({"n": -1, "selection": "majority"}, "n"),
        ({"n": 2.5, "selection": "majority"}, "n"),
        ({"n": 4, "selection": "best"}, "selection"),
        ({"n": 4, "selection": "weighted"}, "verifier"),
        ({"n": 4, "selection": "naive"}, "verifier"),
    ],
)
def test_bad_arguments_are_configuration_errors(kwargs: dict[str, Any], field: str):
    with pytest.raises(ConfigurationError, match=rf"^{field}\b"):
        create_best_of_n(ScriptedEndpoint(MIXED), **kwargs)


def test_policy_without_generate_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match=r"^policy"):
        create_best_of_n(object(), n=2, selection="majority")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "inp",
    [{"question": ""}, {"question": "   "}, {}, {"messages": []}, {"messages": [AIMessage("hello")]}],
    ids=["empty", "blank", "missing", "no-messages", "no-human-message"],
)
async def test_bad_input_at_invocation_is_a_configuration_error(inp: dict[str, Any]):
    policy = ScriptedEndpoint(MIXED)
    with pytest.raises(ConfigurationError, match=r"^question"):
        await run(create_best_of_n(policy, n=2, selection="majority"), inp)
    assert policy.calls == []


async def test_unknown_context_field_is_a_configuration_error():
    graph = create_best_of_n(ScriptedEndpoint(MIXED), n=2, selection="majority").compile()
    with pytest.raises((ConfigurationError, TypeError), match="temprature"):
        await graph.ainvoke({"question": QUESTION}, context={"temprature": 0.1})


# -- graph structure --------------------------------------------------------------------------------------------------


def test_graph_drawing_matches_snapshot():
    # To regenerate after an intended change of the graph's structure:
    #   UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/unit/test_best_of_n.py -k snapshot
    drawing = create_best_of_n(ScriptedEndpoint(MIXED), score_by_answer, n=4).compile().get_graph().draw_mermaid()
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(drawing)
    assert SNAPSHOT.is_file(), f"missing snapshot {SNAPSHOT}; run with UPDATE_SNAPSHOTS=1 to create it"
    assert drawing == SNAPSHOT.read_text()


CUT = ("Step 1: 17 + 25. The sum so far is 0", "length")  # a sample cut off by max_tokens: its last number is a guess


async def test_samples_cut_at_max_tokens_do_not_vote() -> None:
    policy = ScriptedEndpoint([CUT, CUT, CUT, "So 17 + 25 = \\boxed{42}."])
    out = await run(create_best_of_n(policy, n=4, selection="majority"))
    assert out["answer"] == "42"  # three cut-off samples "say" 0 and lose to the one complete sample
    assert out["diagnostics"]["truncated"] == 3
    assert any("3 of 4 samples stopped at max_tokens" in w for w in out["diagnostics"]["warnings"])
    assert not out.get("errors")  # a warning, not a failure


async def test_truncated_vote_keeps_the_old_behaviour_and_all_cut_samples_pick_with_a_flag() -> None:
    policy = ScriptedEndpoint([CUT, CUT, CUT, "So 17 + 25 = \\boxed{42}."])
    old = create_best_of_n(policy, n=4, selection="majority", truncated="vote")
    assert (await run(old))["answer"] == "0"
    with pytest.raises(ConfigurationError, match="truncated"):
        create_best_of_n(policy, n=4, selection="majority", truncated="drop")  # type: ignore[arg-type]
    cands = [{"id": f"c{i}", "text": CUT[0], "answer": "0", "parsable": True, "score": None, "tokens": 9,
              "finish_reason": "length"} for i in range(2)]  # fmt: skip
    chosen = select_answer(cands, "majority")  # type: ignore[arg-type]
    assert chosen.answer == "0" and chosen.invalid == (TRUNCATED,)  # nothing complete: picked, and flagged
    assert select_answer(cands, "majority", truncated="vote").invalid == ()  # type: ignore[arg-type]
