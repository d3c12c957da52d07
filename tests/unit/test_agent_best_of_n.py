"""Best-of-N over whole agent runs: ``create_react_agent`` over a scripted model that calls a tool, then answers."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from pydantic import PrivateAttr
from typing_extensions import TypedDict

from ttc_graph.agents import create_agent_best_of_n
from ttc_graph.budget import Budget
from ttc_graph.errors import ConfigurationError, VerifierError
from ttc_graph.verifiers.function import FunctionVerifier

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # create_react_agent's move to langchain.agents (not a dependency here)
    from langgraph.prebuilt import create_react_agent

QUESTION = "What is the secret number?"


class ToolThenAnswer(BaseChatModel):
    """Answers a human message with a call of ``tool`` (a fresh call id), a tool result with "The answer is
    <result>."; reports usage.

    Each reply's usage is ``10 * len(messages)`` prompt tokens and ``2 + tool results seen`` completion tokens, logged
    in ``log`` so a test can add up what the model reported.
    """

    tool: str = "lookup"
    _log: list[dict[str, int]] = PrivateAttr(default_factory=list)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)
    _ids: Any = PrivateAttr(default_factory=itertools.count)

    @property
    def _llm_type(self) -> str:
        return "tool-then-answer"

    @property
    def log(self) -> list[dict[str, int]]:
        return self._log

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ToolThenAnswer:  # type: ignore[override]
        return self

    def _reply(self, messages: list[BaseMessage]) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        with self._lock:
            call = next(self._ids)
        if isinstance(messages[-1], HumanMessage):
            message = AIMessage("", tool_calls=[{"name": self.tool, "args": {"key": "secret"}, "id": f"call-{call}"}])
        else:
            message = AIMessage(f"The answer is {results[-1].content}.")
        usage = {"input_tokens": 10 * len(messages), "output_tokens": 2 + len(results)}
        message.usage_metadata = {**usage, "total_tokens": sum(usage.values())}  # type: ignore[typeddict-item]
        with self._lock:
            self._log.append(usage)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        return self._reply(messages)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._reply(messages)


def lookup_tool(result: str | Callable[[], str]) -> BaseTool:
    @tool
    def lookup(key: str) -> str:
        """Look up a value by key."""
        return result() if callable(result) else result

    return lookup


def react(model: BaseChatModel, *tools: BaseTool, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_react_agent(model, list(tools), **kwargs)


def totals(log: list[dict[str, int]]) -> tuple[int, int, int]:
    return len(log), sum(u["input_tokens"] for u in log), sum(u["output_tokens"] for u in log)


def ask() -> dict[str, Any]:
    return {"messages": [HumanMessage(QUESTION)]}


class PerRun:
    """A tool factory: run ``i`` gets its own model and a lookup tool answering ``answers[i]``."""

    def __init__(self, answers: Sequence[str], **agent_kwargs: Any) -> None:
        self.answers = list(answers)
        self.models: dict[int, ToolThenAnswer] = {}
        self.indices: list[int] = []
        self.agent_kwargs = agent_kwargs

    def __call__(self, index: int) -> Any:
        self.indices.append(index)
        model = self.models.setdefault(index, ToolThenAnswer())
        return react(model, lookup_tool(self.answers[index]), **self.agent_kwargs)

    def calls(self, index: int) -> int:
        return len(self.models[index].log) if index in self.models else 0


# -- isolation, output, usage ----------------------------------------------------------------------------------


async def test_runs_are_isolated_and_the_parent_gets_only_the_winners_new_messages() -> None:
    model = ToolThenAnswer()
    seen: list[list[AnyMessage]] = []

    def record(messages: list[AnyMessage]) -> float:
        seen.append(messages)
        return 0.5

    graph = create_agent_best_of_n(react(model, lookup_tool("7")), record, n=4).compile()
    question = HumanMessage(QUESTION)
    out = await graph.ainvoke({"messages": [question]})

    assert len(seen) == 4
    call_ids = set()
    for messages in seen:  # each run: the question, its own tool call, that call's result, its answer
        assert [m.type for m in messages] == ["human", "ai", "tool", "ai"]
        (call,) = messages[1].tool_calls
        assert messages[2].tool_call_id == call["id"]
        call_ids.add(call["id"])
    assert len(call_ids) == 4
    assert question.content == QUESTION and [m.type for m in seen[0][:1]] == ["human"]

    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"]  # the input once, then one run's three
    assert out["messages"][-1].content == "The answer is 7."
    assert out["answer"] == "7" and out["stop_reason"] == "complete" and out["errors"] == []
    assert [c["id"] for c in out["candidates"]] == ["run-0", "run-1", "run-2", "run-3"]
    assert all(c["score"] == 0.5 and c["error"] is None for c in out["candidates"])
    assert "finals" not in out and "conversation" not in out


async def test_usage_is_the_sum_of_what_the_model_reported_with_one_generation_per_run() -> None:
    model = ToolThenAnswer()
    out = (
        await create_agent_best_of_n(react(model, lookup_tool("7")), n=3, selection="majority").compile().ainvoke(ask())
    )
    requests, prompt, completion = totals(model.log)
    assert requests == 6  # two model calls per run
    usage = out["usage"]
    assert (usage["generations"], usage["requests"]) == (3, requests)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, completion)
    assert usage["by_kind"]["propose"]["completion_tokens"] == completion
    assert sum(c["tokens"] for c in out["candidates"]) == completion
    assert out["diagnostics"]["unmetered_requests"] == 0


def test_the_sync_api_runs_the_agents_and_streams_one_event_per_run() -> None:
    model = ToolThenAnswer()
    graph = create_agent_best_of_n(react(model, lookup_tool("7")), n=3, selection="majority", max_concurrency=2)
    events = [e for e in graph.compile().stream(ask(), stream_mode="custom")]
    runs = [e for e in events if e["event"] == "ttc.run"]
    assert sorted(e["run"] for e in runs) == [0, 1, 2]
    assert all(e["answer"] == "7" and e["error"] is None and e["requests"] == 2 for e in runs)
    rounds = [e for e in events if e["event"] == "ttc.round"]
    assert [(e["drawn"], e["planned"]) for e in rounds] == [(0, 2), (2, 1), (3, 0)] and rounds[-1]["stop"] == "complete"
    assert len(model.log) == 6


async def test_a_per_run_tool_factory_gets_distinct_indices() -> None:
    factory = PerRun(["1", "2", "3", "4"])
    out = await create_agent_best_of_n(None, n=4, selection="majority", tool_factory=factory).compile().ainvoke(ask())
    assert sorted(factory.indices) == [0, 1, 2, 3]
    assert {c["id"]: c["answer"] for c in out["candidates"]} == {f"run-{i}": str(i + 1) for i in range(4)}


async def test_runs_in_flight_never_exceed_max_concurrency_and_reach_it() -> None:
    limit, n = 3, 6
    flight = {"now": 0, "peak": 0}
    full = asyncio.Event()  # set while a whole round is in flight

    class Counting(ToolThenAnswer):
        async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kw: Any) -> ChatResult:
            if isinstance(messages[-1], HumanMessage):  # a run starts
                flight["now"] += 1
                flight["peak"] = max(flight["peak"], flight["now"])
                if flight["now"] == limit:
                    full.set()
            else:  # a run ends
                flight["now"] -= 1
                if flight["now"] == 0:
                    full.clear()
            return self._reply(messages)

    @tool
    async def lookup(key: str) -> str:
        """Look up a value by key."""
        await asyncio.wait_for(full.wait(), 10)  # no run ends before its round's runs have all started
        return "7"

    graph = create_agent_best_of_n(react(Counting(), lookup), n=n, selection="majority", max_concurrency=limit)
    out = await graph.compile().ainvoke(ask())
    assert out["errors"] == [] and len(out["candidates"]) == n
    assert flight["peak"] == limit
    assert [c["round"] for c in out["candidates"]] == [1, 1, 1, 2, 2, 2]


# -- selection -------------------------------------------------------------------------------------------------


async def test_majority_picks_the_most_frequent_answer_and_appends_that_runs_messages() -> None:
    factory = PerRun(["5", "7", "9", "7"])
    out = await create_agent_best_of_n(None, n=4, selection="majority", tool_factory=factory).compile().ainvoke(ask())
    assert out["answer"] == "7"
    assert out["diagnostics"]["winner"] == "run-1" and out["diagnostics"]["selection"] == "majority"
    assert out["messages"][-1].content == "The answer is 7."
    assert out["messages"][-2].content == "7"


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_verifier_selection_keeps_the_top_scored_run(asynchronous: bool) -> None:
    factory = PerRun(["5", "7", "9", "7"])

    def score(state: dict[str, Any]) -> float:
        return 0.95 if state["messages"][-1].content == "The answer is 9." else 0.1

    async def ascore(state: dict[str, Any]) -> float:
        await asyncio.sleep(0)
        return score(state)

    graph = create_agent_best_of_n(None, ascore if asynchronous else score, n=4, tool_factory=factory).compile()
    out = await graph.ainvoke(ask())
    assert out["answer"] == "9" and out["diagnostics"]["winner"] == "run-2"
    assert [c["score"] for c in out["candidates"]] == [0.1, 0.1, 0.95, 0.1]
    assert out["messages"][-1].content == "The answer is 9."


async def test_a_verifier_instance_scores_the_transcript() -> None:
    factory = PerRun(["5", "9"])
    texts: list[str] = []

    def judge(question: str, transcript: str) -> float:
        texts.append(transcript)
        return 1.0 if "returned: 9" in transcript else 0.0

    out = (
        await create_agent_best_of_n(None, FunctionVerifier(judge), n=2, tool_factory=factory).compile().ainvoke(ask())
    )
    assert out["answer"] == "9"
    assert all("Assistant calls lookup" in t and QUESTION not in t for t in texts)


async def test_a_chat_model_judges_the_transcripts_and_its_usage_is_charged_to_verify() -> None:
    class Judge(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "judge"

        def _generate(self, messages: list[BaseMessage], *args: Any, **kw: Any) -> ChatResult:
            verdict = "Yes" if "returned: 9" in str(messages[-1].content) else "No"
            message = AIMessage(verdict, usage_metadata={"input_tokens": 50, "output_tokens": 1, "total_tokens": 51})
            return ChatResult(generations=[ChatGeneration(message=message)])

    factory = PerRun(["9", "5", "7"])
    out = await create_agent_best_of_n(None, Judge(), n=3, tool_factory=factory).compile().ainvoke(ask())
    assert out["answer"] == "9"
    assert [c["score"] for c in out["candidates"]] == [1.0, 0.0, 0.0]
    verify = out["usage"]["by_kind"]["verify"]
    assert verify["requests"] > 0 and verify["prompt_tokens"] == 50 * verify["requests"]
    assert out["usage"]["by_kind"]["propose"]["requests"] == 6


@pytest.mark.parametrize("bad", ["0.9", math.nan, math.inf, 1.5, -0.1, True, None])
async def test_a_verifier_result_that_is_not_a_finite_number_in_range_is_an_error(bad: object) -> None:
    graph = create_agent_best_of_n(react(ToolThenAnswer(), lookup_tool("7")), lambda state: bad, n=2).compile()
    with pytest.raises(VerifierError, match=r"verifier <lambda> on run-\d: expected a (real|finite) number"):
        await graph.ainvoke(ask())


async def test_a_verifier_that_raises_is_an_error_naming_the_run() -> None:
    def broken(messages: list[AnyMessage]) -> float:
        raise KeyError("score")

    graph = create_agent_best_of_n(react(ToolThenAnswer(), lookup_tool("7")), broken, n=1).compile()
    with pytest.raises(VerifierError, match=r"verifier broken on run-0 raised KeyError"):
        await graph.ainvoke(ask())


# -- budget and failures ---------------------------------------------------------------------------------------


async def test_a_generations_budget_stops_launching_runs() -> None:
    model = ToolThenAnswer()
    graph = create_agent_best_of_n(
        react(model, lookup_tool("7")), n=6, selection="majority", max_concurrency=2, budget=Budget(generations=3)
    ).compile()
    out = await graph.ainvoke(ask())
    assert len(out["candidates"]) == 3 and out["usage"]["generations"] == 3
    assert out["stop_reason"] == "budget:generations"
    assert len(model.log) == 6


async def test_a_token_budget_stops_launching_runs_once_spent() -> None:
    model = ToolThenAnswer()  # a run costs 2 + 3 = 5 completion tokens
    graph = create_agent_best_of_n(
        react(model, lookup_tool("7")), n=8, selection="majority", max_concurrency=2, budget=Budget(tokens=12)
    ).compile()
    out = await graph.ainvoke(ask())
    assert out["stop_reason"] == "budget:tokens"
    assert len(out["candidates"]) == 4  # 10 tokens after two rounds: one more round, then 20 >= 12
    assert out["usage"]["completion_tokens"] == 20 == totals(model.log)[2]


async def test_the_contexts_budget_overrides_the_built_one() -> None:
    graph = create_agent_best_of_n(react(ToolThenAnswer(), lookup_tool("7")), n=4, selection="majority").compile()
    out = await graph.ainvoke(ask(), context={"budget": Budget(generations=1)})
    assert len(out["candidates"]) == 1 and out["stop_reason"] == "budget:generations"


async def test_a_failed_run_keeps_the_others() -> None:
    def factory(index: int) -> Any:
        def boom() -> str:
            raise RuntimeError("the sandbox died")

        return react(ToolThenAnswer(), lookup_tool(boom if index == 1 else "7"))

    out = await create_agent_best_of_n(None, n=3, selection="majority", tool_factory=factory).compile().ainvoke(ask())
    assert out["stop_reason"] == "complete" and out["answer"] == "7"
    failed = out["candidates"][1]
    assert failed["error"] == "RuntimeError: the sandbox died" and failed["answer"] is None
    assert out["errors"] == ["run-1: RuntimeError: the sandbox died"]
    assert failed["meta"]["requests"] == 1  # the model call before the tool failed is still counted
    assert out["usage"]["requests"] == 5 and out["usage"]["generations"] == 3
    assert out["diagnostics"]["failed"] == 1


async def test_a_factory_that_raises_fails_its_run_and_when_every_run_fails_the_strategy_stops() -> None:
    def factory(index: int) -> Any:
        raise OSError(f"no sandbox for run {index}")

    graph = create_agent_best_of_n(None, n=6, selection="majority", max_concurrency=2, tool_factory=factory)
    out = await graph.compile().ainvoke(ask())
    assert out["stop_reason"] == "error" and len(out["candidates"]) == 2
    assert out["answer"] is None and out["messages"][-1].content == "No agent run finished."
    assert out["errors"] == ["run-0: OSError: no sandbox for run 0", "run-1: OSError: no sandbox for run 1"]


# -- checkpoints -----------------------------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying mid-run: not an ``Exception``, so it is no run failure and stops the graph."""


async def test_a_resumed_strategy_does_not_redo_finished_runs() -> None:
    saver = InMemorySaver()
    config = {"configurable": {"thread_id": "resume"}}
    crashed = False

    def finished_runs() -> int:
        checkpoint = saver.get_tuple(config)
        writes = checkpoint.pending_writes if checkpoint is not None else []
        return len({task for task, channel, _ in writes or [] if channel == "candidates"})

    async def crash_once() -> str:
        nonlocal crashed
        if not crashed:
            crashed = True
            for _ in range(1000):  # the other runs' results are saved first
                if finished_runs() == 2:
                    break
                await asyncio.sleep(0.005)
            raise Crash
        return "9"

    models: dict[int, ToolThenAnswer] = {}

    def factory(index: int) -> Any:
        model = models.setdefault(index, ToolThenAnswer())

        @tool
        async def lookup(key: str) -> str:
            """Look up a value by key."""
            return await crash_once() if index == 2 else "7"

        return react(model, lookup)

    graph = create_agent_best_of_n(None, n=3, selection="majority", tool_factory=factory).compile(checkpointer=saver)
    with pytest.raises(Crash):
        await graph.ainvoke(ask(), config)
    assert finished_runs() == 2
    before = {i: len(m.log) for i, m in models.items()}
    assert before == {0: 2, 1: 2, 2: 1}

    out = await graph.ainvoke(None, config)
    after = {i: len(m.log) for i, m in models.items()}
    assert after[0] == before[0] and after[1] == before[1]  # the finished runs were not run again
    assert after[2] == 2  # the crashed run continued from its last step: its first model call is not redone
    assert out["stop_reason"] == "complete" and out["errors"] == []
    assert [c["answer"] for c in out["candidates"]] == ["7", "7", "9"]
    assert out["usage"]["generations"] == 3


async def test_turns_on_a_thread_start_afresh_and_runs_see_the_whole_conversation() -> None:
    seen: list[int] = []

    def record(messages: list[AnyMessage]) -> float:
        seen.append(len(messages))
        return 1.0

    graph = create_agent_best_of_n(react(ToolThenAnswer(), lookup_tool("7")), record, n=2).compile(
        checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "chat"}}
    await graph.ainvoke(ask(), config)
    out = await graph.ainvoke({"messages": [HumanMessage("And again?")]}, config)
    assert seen == [4, 4, 8, 8]  # turn two: the first turn (question + winner's 3), the new question, its own 3
    assert len(out["candidates"]) == 2 and out["usage"]["generations"] == 2
    assert len(out["messages"]) == 8


async def test_an_agent_compiled_with_checkpointer_true_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="checkpointer=True"):
        create_agent_best_of_n(react(ToolThenAnswer(), lookup_tool("7"), checkpointer=True), n=2, selection="majority")


async def test_an_agent_with_a_saver_of_its_own_shares_no_state_across_runs() -> None:
    seen: list[int] = []

    def record(messages: list[AnyMessage]) -> float:
        seen.append(len(messages))
        return 1.0

    agent = react(ToolThenAnswer(), lookup_tool("7"), checkpointer=InMemorySaver())
    graph = create_agent_best_of_n(agent, record, n=3).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "own"}}
    await graph.ainvoke(ask(), config)
    await graph.ainvoke({"messages": [HumanMessage("Again?")]}, config)
    assert seen == [4, 4, 4, 8, 8, 8]


# -- as a subgraph, inputs, configuration ----------------------------------------------------------------------


class Parent(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    answer: str | None


async def test_a_parent_graph_receives_the_winners_messages_and_answer_only() -> None:
    strategy = create_agent_best_of_n(react(ToolThenAnswer(), lookup_tool("7")), n=3, selection="majority").compile()
    parent = StateGraph(Parent)
    parent.add_node("agents", strategy)
    parent.add_edge(START, "agents")
    parent.add_edge("agents", END)
    out = await parent.compile().ainvoke(ask())
    assert set(out) == {"messages", "answer"}
    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"] and out["answer"] == "7"


async def test_a_question_input_answers_without_appending_messages() -> None:
    graph = create_agent_best_of_n(react(ToolThenAnswer(), lookup_tool("7")), n=2, selection="majority").compile()
    out = await graph.ainvoke({"question": QUESTION})
    assert out["answer"] == "7" and not out.get("messages")


def test_too_many_rounds_for_the_recursion_limit_is_a_clear_error() -> None:
    graph = create_agent_best_of_n(
        react(ToolThenAnswer(), lookup_tool("7")), n=12, selection="majority", max_concurrency=1
    ).compile()
    with pytest.raises(ConfigurationError, match=r"recursion_limit of 28 graph steps, above 25"):
        graph.invoke(ask())
    out = graph.invoke(ask(), {"recursion_limit": 28})
    assert len(out["candidates"]) == 12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0, "selection": "majority"}, "n: must be an integer"),
        ({"n": 2}, "selection='verifier' needs a verifier"),
        ({"n": 2, "selection": "best"}, "selection: unknown 'best'"),
        ({"n": 2, "selection": "majority", "max_concurrency": 0}, "max_concurrency"),
        ({"n": 2, "selection": "majority", "input_key": "conversation"}, "input_key: the agent has no 'conversation'"),
        ({"n": 2, "selection": "majority", "tool_factory": lambda i: None}, "either an agent or a tool_factory"),
        ({"n": 2, "verifier": 0.5}, "verifier: expected a function"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        create_agent_best_of_n(react(ToolThenAnswer(), lookup_tool("7")), **kwargs)


def test_an_agent_that_is_not_a_runnable_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="agent: expected a compiled LangGraph agent"):
        create_agent_best_of_n(lambda state: state, n=2, selection="majority")  # type: ignore[arg-type]
    graph = create_agent_best_of_n(None, n=1, selection="majority", tool_factory=lambda i: "not an agent")
    with pytest.raises(ConfigurationError, match=r"tool_factory\(0\): expected a compiled LangGraph agent"):
        graph.compile().invoke(ask())
