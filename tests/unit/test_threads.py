"""Strategies on threads (a checkpointer), as nodes of parent graphs with their own context, and in traces.

Every run on a thread starts fresh (its own candidates, usage and answer), the model sees the conversation, the
reply is appended to ``messages``, a strategy reads only the context fields it owns, and the compiled graph and its
reply carry the strategy's name and token usage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from pydantic import BaseModel
from typing_extensions import TypedDict

from ttc_graph import (
    Budget,
    TTCContext,
    create_beam_search,
    create_best_of_n,
    create_dvts,
    create_revisions,
)
from ttc_graph.compute_optimal import DifficultyBins, PolicyTable, create_compute_optimal
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT, chat_history
from ttc_graph.testing import FakeCall, ScriptedEndpoint

# A conversation whose follow-ups only make sense with the earlier turns: the scripted model answers a turn right
# only when the assistant's earlier answers are in the prompt.
TURNS = ("What is 6 * 7?", "Add 8 to that.", "Now halve it.")
ANSWERS = ("42", "50", "25")
BOXED = re.compile(r"\\boxed\{([^}]*)\}")


def turn_of(content: str) -> int:
    """The turn a user message asks (a revision prompt starts with the question)."""
    return next(i for i, q in enumerate(TURNS) if content.startswith(q))


def conversational(call: FakeCall, index: int) -> str:
    """A whole solution of the current question, right only if the earlier answers are in the conversation."""
    turn = turn_of(call.messages[-1]["content"])
    earlier = [m["content"] for m in call.messages[:-1] if m["role"] == "assistant"]
    seen = [found[-1] for text in earlier if (found := BOXED.findall(text))]
    answer = ANSWERS[turn] if seen == list(ANSWERS[:turn]) else "0"
    return f"Sample {index}: working it out.\n\nSo \\boxed{{{answer}}}"


def stepwise(call: FakeCall, index: int) -> str:
    """One step at a time: a first step, then (continuing it) the answer of the conversation's current turn."""
    if not call.prefix:
        return f"First step {index}."
    return conversational(call, index).split("\n\n")[-1]


def scorer(question: str, solution: str) -> float:
    return 0.9 if "boxed" in solution else 0.5


ROUTES = {"majority": 0.9, "revisions": 0.45, "beam": 0.1}  # route -> a probe score that lands in its bin
TABLE = PolicyTable(
    difficulty=DifficultyBins(metric="verifier_score", edges=(0.3, 0.6), probes=2),
    budgets=[4],
    strategies={
        "majority": {"kind": "best_of_n", "selection": "majority"},
        "revisions": {
            "kind": "revisions",
            "chain_length": 2,
            "selection": "hierarchical",
            "verifier": {"kind": "confidence"},  # the router's verifier stands in for the templates' own
        },
        "beam": {"kind": "beam_search", "beam_width": 2, "verifier": {"kind": "confidence"}},
    },
    table={"1": {"4": "majority"}, "2": {"4": "revisions"}, "3": {"4": "beam"}},
)


def router(route: str) -> Callable[[ScriptedEndpoint], StrategyGraph[Any, Any, Any, Any]]:
    level = ROUTES[route]
    return lambda policy: create_compute_optimal(policy, lambda q, s: level, TABLE, budget=Budget(generations=4))


FACTORIES: dict[str, Callable[[ScriptedEndpoint], StrategyGraph[Any, Any, Any, Any]]] = {
    "best_of_n": lambda policy: create_best_of_n(policy, scorer, n=3),
    "beam_search": lambda policy: create_beam_search(policy, scorer, n=4, beam_width=2),
    "dvts": lambda policy: create_dvts(policy, scorer, n=4, beam_width=2),
    "revisions": lambda policy: create_revisions(policy, scorer, n=2, chain_length=2),
    "compute_optimal:majority": router("majority"),
    "compute_optimal:revisions": router("revisions"),
    "compute_optimal:beam": router("beam"),
}
NAMES = {key: key.split(":")[0] for key in FACTORIES}


def thread(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": name}}


def history_of(turn: int) -> list[dict[str, str]]:
    """The chat messages of the turns before ``turn`` as the model must see them (roles only; texts vary)."""
    return [r for i in range(turn) for r in ({"role": "user", "content": TURNS[i]}, {"role": "assistant"})]


def assert_sent_with_history(call: FakeCall, turn: int) -> None:
    sent = call.messages
    assert sent[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    prior = sent[1:-1]
    assert [{k: v for k, v in m.items() if k == "role" or m["role"] == "user"} for m in prior] == history_of(turn)
    assert [BOXED.findall(m["content"])[-1] for m in prior if m["role"] == "assistant"] == list(ANSWERS[:turn])
    assert sent[-1]["role"] == "user" and sent[-1]["content"].startswith(TURNS[turn])


# -- threads --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(FACTORIES))
async def test_every_factory_answers_every_turn_of_a_thread(key: str) -> None:
    policy = ScriptedEndpoint(conversational)
    graph = FACTORIES[key](policy).compile(checkpointer=InMemorySaver())
    config = thread(key)
    first: dict[str, Any] = {}
    for turn, question in enumerate(TURNS):
        before = len(policy.calls)
        out = await graph.ainvoke({"messages": [HumanMessage(question)]}, config)
        assert out["question"] == question
        assert out["answer"] == ANSWERS[turn], (turn, out.get("errors"))
        assert out["stop_reason"] == "complete"
        assert not out.get("errors")
        messages = out["messages"]
        assert len(messages) == 2 * (turn + 1)
        assert [type(m) for m in messages] == [HumanMessage, AIMessage] * (turn + 1)
        reply = messages[-1]
        assert BOXED.findall(str(reply.content))[-1] == ANSWERS[turn]
        assert reply.name == NAMES[key]
        assert reply.response_metadata["ttc_answer"] == ANSWERS[turn]
        # this turn's own usage and candidates, not the thread's running total
        usage = out["usage"]
        assert reply.usage_metadata == {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
        }
        calls = policy.calls[before:]
        assert usage["requests"] == len(calls)
        assert usage["completion_tokens"] == sum(len(t.split()) for t in _texts(calls))
        if turn == 0:
            first = {"generations": usage["generations"], "candidates": len(out["candidates"])}
            assert first["generations"] > 0
        else:
            assert usage["generations"] == first["generations"]
            assert len(out["candidates"]) == first["candidates"]
        # the model saw the conversation; verifiers and answer extraction only the question
        for call in calls:
            assert_sent_with_history(call, turn)


def _texts(calls: list[FakeCall]) -> list[str]:
    return [conversational(c, 0) for c in calls for _ in range(c.n)]


async def test_a_follow_up_is_sent_with_the_earlier_turn() -> None:
    policy = ScriptedEndpoint(conversational)
    graph = create_best_of_n(policy, n=2, selection="majority").compile(checkpointer=InMemorySaver())
    first = await graph.ainvoke({"messages": [HumanMessage(TURNS[0])]}, thread("follow-up"))
    policy.calls.clear()
    out = await graph.ainvoke({"messages": [HumanMessage(TURNS[1])]}, thread("follow-up"))
    assert out["answer"] == "50"
    reply = str(first["messages"][-1].content)
    for call in policy.calls:
        assert call.messages == [
            {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": TURNS[0]},
            {"role": "assistant", "content": reply.strip()},
            {"role": "user", "content": TURNS[1]},
        ]


async def test_a_single_run_with_a_message_history_sends_it() -> None:
    policy = ScriptedEndpoint(conversational)
    history = [HumanMessage(TURNS[0]), AIMessage("It is \\boxed{42}"), HumanMessage(TURNS[1])]
    out = await create_best_of_n(policy, n=2, selection="majority").compile().ainvoke({"messages": history})
    assert out["answer"] == "50"
    assert policy.calls[0].messages[1:] == chat_history(history)


async def test_history_last_sends_only_the_question() -> None:
    policy = ScriptedEndpoint(conversational)
    history = [HumanMessage(TURNS[0]), AIMessage("It is \\boxed{42}"), HumanMessage(TURNS[1])]
    graph = create_best_of_n(policy, n=2, selection="majority", history="last").compile()
    out = await graph.ainvoke({"messages": history})
    assert out["answer"] == "0"  # the follow-up cannot be answered without the earlier turn
    assert all(c.messages[1:] == [{"role": "user", "content": TURNS[1]}] for c in policy.calls)
    # the run's context overrides the factory's choice, both ways
    policy.calls.clear()
    out = await graph.ainvoke({"messages": history}, context=TTCContext(history="all"))
    assert out["answer"] == "50" and len(policy.calls[0].messages) == 4
    policy.calls.clear()
    graph = create_best_of_n(policy, n=2, selection="majority").compile()
    out = await graph.ainvoke({"messages": history}, context={"history": "last"})
    assert out["answer"] == "0" and len(policy.calls[0].messages) == 2


async def test_revision_prompts_keep_the_previous_attempts_after_the_conversation() -> None:
    policy = ScriptedEndpoint(conversational)
    graph = create_revisions(policy, scorer, n=3, chain_length=3).compile(checkpointer=InMemorySaver())
    await graph.ainvoke({"messages": [HumanMessage(TURNS[0])]}, thread("revise"))
    policy.calls.clear()
    out = await graph.ainvoke({"messages": [HumanMessage(TURNS[1])]}, thread("revise"))
    assert out["answer"] == "50"
    assert len(policy.calls) == 3
    first, *revisions = policy.calls
    assert first.messages[-1] == {"role": "user", "content": TURNS[1]}
    for k, call in enumerate(revisions, start=1):
        assert_sent_with_history(call, 1)
        prompt = call.messages[-1]["content"]
        assert prompt.count("Attempt ") == k and "previous attempts" in prompt


async def test_search_continues_its_prefix_after_the_conversation() -> None:
    policy = ScriptedEndpoint(stepwise)
    graph = create_beam_search(policy, scorer, n=4, beam_width=2).compile(checkpointer=InMemorySaver())
    await graph.ainvoke({"messages": [HumanMessage(TURNS[0])]}, thread("search"))
    policy.calls.clear()
    out = await graph.ainvoke({"messages": [HumanMessage(TURNS[1])]}, thread("search"))
    assert out["answer"] == "50"
    continued = [c for c in policy.calls if c.prefix]
    assert continued and len(continued) < len(policy.calls)
    for call in policy.calls:
        assert_sent_with_history(call, 1)
    assert all(c.prefix and c.prefix.startswith("First step") for c in continued)


async def test_question_and_message_turns_mix_on_one_thread() -> None:
    policy = ScriptedEndpoint(conversational)
    graph = create_best_of_n(policy, n=2, selection="majority").compile(checkpointer=InMemorySaver())
    config = thread("mixed")
    out = await graph.ainvoke({"messages": [HumanMessage(TURNS[0])]}, config)
    assert out["answer"] == "42" and len(out["messages"]) == 2
    # a `question` turn answers that question (the conversation still reaches the model) and adds no reply
    out = await graph.ainvoke({"question": TURNS[1]}, config)
    assert out["question"] == TURNS[1] and out["answer"] == "50"
    assert len(out["messages"]) == 2 and out["usage"]["generations"] == 2
    # a later human message wins over the `question` the state kept from the previous run
    out = await graph.ainvoke({"messages": [HumanMessage(TURNS[1])]}, config)
    assert out["question"] == TURNS[1] and out["answer"] == "50" and len(out["messages"]) == 4
    out = await graph.ainvoke({"question": TURNS[0]}, config)
    assert out["question"] == TURNS[0] and len(out["messages"]) == 4


async def test_verifiers_see_only_the_question() -> None:
    seen: list[str] = []

    def verifier(question: str, solution: str) -> float:
        seen.append(question)
        return 0.5

    policy = ScriptedEndpoint(conversational)
    graph = create_best_of_n(policy, verifier, n=2).compile(checkpointer=InMemorySaver())
    for question in TURNS[:2]:
        await graph.ainvoke({"messages": [HumanMessage(question)]}, thread("verify"))
    assert seen == [TURNS[0]] * 2 + [TURNS[1]] * 2


def test_a_thread_under_the_sync_api() -> None:
    policy = ScriptedEndpoint(conversational)
    graph = create_best_of_n(policy, n=2, selection="majority").compile(checkpointer=InMemorySaver())
    answers = [graph.invoke({"messages": [HumanMessage(q)]}, thread("sync"))["answer"] for q in TURNS]
    assert answers == list(ANSWERS)


# -- parent graphs ----------------------------------------------------------------------------------------------


@dataclass
class AppCtx:
    user_id: str


class AppState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    answer: str | None
    usage: dict[str, Any]


def parent_with_node(child: Any, context_schema: type = AppCtx) -> StateGraph[Any, Any, Any, Any]:
    parent: StateGraph[Any, Any, Any, Any] = StateGraph(AppState, context_schema=context_schema)
    parent.add_node("solve", child)
    parent.add_edge(START, "solve")
    parent.add_edge("solve", END)
    return parent


def parent_calling_it(child: Any, seen: list[str]) -> StateGraph[Any, Any, Any, Any]:
    async def solve(state: AppState, runtime: Runtime[AppCtx]) -> dict[str, Any]:
        seen.append(runtime.context.user_id)
        out = await child.ainvoke({"messages": state["messages"]})
        return {"messages": out["messages"][len(state["messages"]) :], "answer": out["answer"], "usage": out["usage"]}

    parent: StateGraph[Any, Any, Any, Any] = StateGraph(AppState, context_schema=AppCtx)
    parent.add_node("solve", solve)
    parent.add_edge(START, "solve")
    parent.add_edge("solve", END)
    return parent


@pytest.mark.parametrize("how", ["node", "called"])
async def test_a_parent_with_its_own_context_runs_the_strategy(how: str) -> None:
    policy = ScriptedEndpoint(conversational)
    child = create_best_of_n(policy, n=3, selection="majority").compile()
    seen: list[str] = []
    parent = parent_with_node(child) if how == "node" else parent_calling_it(child, seen)
    app = parent.compile(checkpointer=InMemorySaver())
    for turn, question in enumerate(TURNS):
        out = await app.ainvoke({"messages": [HumanMessage(question)]}, thread(how), context=AppCtx(user_id="u1"))
        assert out["answer"] == ANSWERS[turn]
        assert len(out["messages"]) == 2 * (turn + 1)
        assert out["usage"]["generations"] == 3
    assert seen == ([] if how == "node" else ["u1"] * 3)


async def test_a_parent_context_sets_the_fields_the_strategy_owns() -> None:
    class Settings(BaseModel):
        user_id: str
        temperature: float = 0.1
        budget: Budget | None = None
        tenant: dict[str, str] = {}

    policy = ScriptedEndpoint(conversational)
    child = create_best_of_n(policy, n=4, selection="majority", temperature=0.9).compile()
    app = parent_with_node(child, Settings).compile()
    ctx = Settings(user_id="u2", budget=Budget(generations=2), tenant={"plan": "pro"})
    out = await app.ainvoke({"messages": [HumanMessage(TURNS[0])]}, context=ctx)
    assert out["usage"]["generations"] == 2
    assert {c.params.temperature for c in policy.calls if c.params} == {0.1}


async def test_a_dict_context_from_a_parent_without_a_schema() -> None:
    policy = ScriptedEndpoint(conversational)
    child = create_best_of_n(policy, n=4, selection="majority").compile()
    parent: StateGraph[Any, Any, Any, Any] = StateGraph(AppState)
    parent.add_node("solve", child)
    parent.add_edge(START, "solve")
    app = parent.compile()
    out = await app.ainvoke(
        {"messages": [HumanMessage(TURNS[0])]}, context={"user_id": "u3", "budget": {"generations": 3}}
    )
    assert out["usage"]["generations"] == 3


@dataclass
class BadCtx:
    user_id: str = "u"
    budget: Any = None
    temperature: Any = None
    max_tokens: Any = None
    history: Any = None


@pytest.mark.parametrize(
    ("field", "value"),
    [("budget", "x"), ("budget", {"generations": 0}), ("temperature", "hot"), ("max_tokens", 0), ("history", "most")],
)
async def test_a_wrong_type_for_an_owned_field_names_it(field: str, value: Any) -> None:
    policy = ScriptedEndpoint(conversational)
    app = parent_with_node(create_best_of_n(policy, n=2, selection="majority").compile(), BadCtx).compile()
    with pytest.raises(ConfigurationError, match=rf"^context\.{field}\b"):
        await app.ainvoke({"messages": [HumanMessage(TURNS[0])]}, context=BadCtx(**{field: value}))
    assert policy.calls == []


async def test_a_wrong_type_in_ttc_context_names_it() -> None:
    graph = create_best_of_n(ScriptedEndpoint(conversational), n=2, selection="majority").compile()
    with pytest.raises(ConfigurationError, match=r"^context\.temperature"):
        await graph.ainvoke({"question": TURNS[0]}, context=TTCContext(temperature="hot"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "messages",
    [[AIMessage("hello")], [SystemMessage("be brief"), AIMessage("hello")], [HumanMessage("   ")]],
    ids=["ai-only", "system-and-ai", "blank-human"],
)
async def test_a_message_list_without_a_human_message_is_a_clear_error(messages: list[AnyMessage]) -> None:
    policy = ScriptedEndpoint(conversational)
    with pytest.raises(ConfigurationError, match=r"^question: the 'messages' list has no human message"):
        await create_best_of_n(policy, n=2, selection="majority").compile().ainvoke({"messages": messages})
    assert policy.calls == []


def test_a_bad_history_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"^history"):
        create_best_of_n(ScriptedEndpoint(conversational), n=2, selection="majority", history="some")  # type: ignore[arg-type]


# -- names and progress ------------------------------------------------------------------------------------------


class RootRuns(BaseCallbackHandler):
    def __init__(self) -> None:
        self.names: list[str | None] = []

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        if parent_run_id is None:
            self.names.append(kwargs.get("name"))


@pytest.mark.parametrize("key", ["best_of_n", "beam_search", "dvts", "revisions", "compute_optimal:majority"])
async def test_the_compiled_graph_and_its_root_run_are_named_after_the_strategy(key: str) -> None:
    builder = FACTORIES[key](ScriptedEndpoint(conversational))
    graph = builder.compile()
    assert graph.name == NAMES[key]
    assert graph.get_graph().nodes  # drawable as before
    handler = RootRuns()
    await graph.ainvoke({"question": TURNS[0]}, {"callbacks": [handler]})
    assert handler.names == [NAMES[key]]
    assert builder.compile(name="mine").name == "mine"


async def test_a_factory_name_names_the_graph_and_the_reply() -> None:
    graph = create_best_of_n(ScriptedEndpoint(conversational), n=2, selection="majority", name="solver").compile()
    out = await graph.ainvoke({"messages": [HumanMessage(TURNS[0])]})
    assert graph.name == "solver" and out["messages"][-1].name == "solver"


async def test_progress_events_of_a_subgraph_stream_with_subgraphs_true() -> None:
    child = create_best_of_n(ScriptedEndpoint(conversational), n=2, selection="majority").compile()
    app = parent_with_node(child).compile()
    inp = {"messages": [HumanMessage(TURNS[0])]}
    events = [
        e
        async for e in app.astream(inp, stream_mode="custom", subgraphs=True, context=AppCtx(user_id="u"))
        if isinstance(e[1], dict) and e[1].get("event") == "ttc.round"
    ]
    assert events and all(ns and ns[0].startswith("solve") for ns, _ in events)
