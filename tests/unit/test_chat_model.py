"""TestTimeChatModel: a chat model that votes over replies and actions, under LangChain's and LangGraph's APIs."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent
from pydantic import BaseModel, PrivateAttr, ValidationError

from ttc_graph.agents import TestTimeChatModel
from ttc_graph.errors import ConfigurationError

USAGE = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}


def call(name: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"c-{name}"}], usage_metadata=USAGE)


def text(content: str) -> AIMessage:
    return AIMessage(content, usage_metadata=USAGE)


class ScriptedChat(BaseChatModel):
    """Answers call k with ``script(messages, k)``; records every call's messages and options."""

    script: Callable[[list[BaseMessage], int], AIMessage]
    _seen: list[tuple[list[BaseMessage], dict[str, Any]]] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        with self._lock:
            k = len(self._seen)
            self._seen.append((list(messages), kw))
        return ChatResult(generations=[ChatGeneration(message=self.script(list(messages), k))])

    def bind_tools(self, tools: Sequence[Any], **kw: Any) -> Any:
        return self.bind(tools=tools, **kw)


def cycling(*replies: AIMessage) -> ScriptedChat:
    return ScriptedChat(script=lambda messages, k: replies[k % len(replies)])


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_majority_over_actions_returns_one_message_with_the_voted_calls_and_the_runs_usage() -> None:
    fake = cycling(
        call("get_weather", city="Paris"),
        call("get_weather", city="London"),
        AIMessage(
            "",
            tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "other-id"}],
            usage_metadata=USAGE,
        ),
        text("It is sunny."),
    )
    model = TestTimeChatModel(model=fake, n=4, selection="majority").bind_tools([get_weather])
    reply = model.invoke([HumanMessage("Weather in Paris?")])
    assert isinstance(reply, AIMessage)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert reply.usage_metadata is not None
    assert (reply.usage_metadata["input_tokens"], reply.usage_metadata["output_tokens"]) == (40, 20)
    ttc = reply.response_metadata["ttc"]
    assert len(ttc["candidates"]) == 4
    sent = fake._seen
    assert len(sent) == 4
    assert all(kw["tools"][0]["function"]["name"] == "get_weather" for _, kw in sent)


def test_a_final_answer_wins_when_it_has_more_votes_than_any_action() -> None:
    fake = cycling(text("The answer is 7."), call("add", a=3, b=4), text("So the answer is 7."))
    reply = TestTimeChatModel(model=fake, n=3).bind_tools([add]).invoke("3 + 4?")
    assert reply.tool_calls == []
    assert "7" in str(reply.content)


def test_schema_invalid_calls_never_win_against_a_valid_one() -> None:
    bad = call("add", a="three", b=4)  # "three" is not an integer
    fake = cycling(bad, bad, bad, call("add", a=3, b=4))
    reply = TestTimeChatModel(model=fake, n=4).bind_tools([add]).invoke("3 + 4?")
    assert [c["args"] for c in reply.tool_calls] == [{"a": 3, "b": 4}]
    invalid = [c for c in reply.response_metadata["ttc"]["candidates"] if c["invalid"]]
    assert len(invalid) == 3


def test_calls_written_as_text_are_parsed_and_sent_as_calls() -> None:
    fenced = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    fake = cycling(text(fenced), text(fenced), text("I do not know."))
    reply = TestTimeChatModel(model=fake, n=3).bind_tools([get_weather]).invoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert reply.content == ""


def test_as_the_model_of_a_react_agent_each_step_adds_one_message() -> None:
    def script(messages: list[BaseMessage], k: int) -> AIMessage:
        if isinstance(messages[-1], ToolMessage):
            return text(f"The sum is {messages[-1].content}.")
        return call("add", a=2, b=3)

    fake = ScriptedChat(script=script)
    agent = create_react_agent(TestTimeChatModel(model=fake, n=3), [add])
    out = agent.invoke({"messages": [HumanMessage("What is 2 + 3? Use the tool.")]})
    kinds = [type(m).__name__ for m in out["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert out["messages"][2].content == "5"
    assert "5" in str(out["messages"][-1].content)
    assert len(fake._seen) == 6  # 3 samples per step
    # the second step's samples saw the tool call and its result
    second = fake._seen[3][0]
    assert isinstance(second[-1], ToolMessage) and isinstance(second[-2], AIMessage) and second[-2].tool_calls


def test_as_the_model_of_langchains_create_agent() -> None:
    from langchain.agents import create_agent

    def script(messages: list[BaseMessage], k: int) -> AIMessage:
        if isinstance(messages[-1], ToolMessage):
            return text(f"The weather: {messages[-1].content}.")
        return call("get_weather", city="Oslo")

    agent = create_agent(TestTimeChatModel(model=ScriptedChat(script=script), n=2), tools=[get_weather])
    out = agent.invoke({"messages": [HumanMessage("Weather in Oslo?")]})
    kinds = [type(m).__name__ for m in out["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert "sunny in Oslo" in str(out["messages"][-1].content)


async def test_ainvoke_and_batch_answer_each_input() -> None:
    fake = ScriptedChat(script=lambda messages, k: text(f"The answer is {len(str(messages[-1].content))}."))
    model = TestTimeChatModel(model=fake, n=2)
    reply = await model.ainvoke("abc")
    assert "3" in str(reply.content)
    replies = model.batch(["a", "abcde"])
    assert ["1" in str(replies[0].content), "5" in str(replies[1].content)] == [True, True]


def test_free_text_replies_are_voted_by_their_words() -> None:
    fake = cycling(text("Hello there!"), text("Hi."), text("hello  THERE!"))
    reply = TestTimeChatModel(model=fake, n=3).invoke("Greet me.")
    assert str(reply.content).lower().split() == ["hello", "there!"]


def test_stream_shows_progress_then_the_chosen_message() -> None:
    fake = cycling(call("get_weather", city="Paris"))
    chunks = list(TestTimeChatModel(model=fake, n=2).bind_tools([get_weather]).stream("Weather in Paris?"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    progress = [c for c in chunks if c.additional_kwargs.get("reasoning_content")]
    assert progress, "no progress chunk"
    assert all(c.content == "" and not c.tool_call_chunks for c in progress)
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    assert [(c["name"], c["args"]) for c in whole.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] == 10


async def test_astream_ends_with_the_chosen_text() -> None:
    fake = cycling(text("The answer is 4."))
    chunks = [c async for c in TestTimeChatModel(model=fake, n=2).astream("2 + 2?")]
    assert "".join(str(c.content) for c in chunks) == "The answer is 4."


def test_with_structured_output_parses_the_voted_call() -> None:
    class Weather(BaseModel):
        city: str
        degrees: int

    fake = cycling(call("Weather", city="Paris", degrees=21), call("Weather", city="Paris", degrees=21))
    out = TestTimeChatModel(model=fake, n=2).with_structured_output(Weather).invoke("Paris, 21 degrees")
    assert out == Weather(city="Paris", degrees=21)
    assert fake._seen[0][1]["tool_choice"] == {"type": "function", "function": {"name": "Weather"}} or fake._seen[0][1][
        "tool_choice"
    ] in ("Weather", "required", "any")


class Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.parents: dict[UUID, UUID | None] = {}
        self.models: list[UUID] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                            **kw: Any) -> None:  # fmt: skip
        self.parents[run_id] = parent_run_id
        self.models.append(run_id)

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                       **kw: Any) -> None:  # fmt: skip
        self.parents[run_id] = parent_run_id


def test_the_wrapped_models_runs_nest_under_the_call() -> None:
    runs = Runs()
    fake = cycling(text("The answer is 1."))
    TestTimeChatModel(model=fake, n=2).invoke("1?", config={"callbacks": [runs]})
    outer = runs.models[0]  # the test-time model's own run starts first
    assert runs.parents[outer] is None
    inner = runs.models[1:]
    assert len(inner) == 2
    for run_id in inner:
        chain, parent = [], runs.parents[run_id]
        while parent is not None:
            chain.append(parent)
            parent = runs.parents.get(parent)
        assert outer in chain


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n": 0}, "n"),
        ({"n": True}, "n"),
        ({"selection": "hierarchical"}, "selection"),
        ({"strategy": "revisions", "selection": "majority", "chain_length": "often"}, "chain_length"),
        ({"temperature": float("nan")}, "temperature"),
        ({"selection": "weighted"}, "verifier"),
        ({"model": "gpt"}, "model"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs: dict[str, Any], needle: str) -> None:
    settings = {"model": cycling(text("1")), **kwargs}
    with pytest.raises((ValidationError, ConfigurationError)) as info:
        TestTimeChatModel(**settings)
    assert needle in str(info.value)


def test_stop_sequences_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="stop"):
        TestTimeChatModel(model=cycling(text("1")), n=1).invoke("x", stop=["\n"])


def test_revisions_revise_a_proposed_call_with_the_calls_shown() -> None:
    replies = [call("add", a=2, b=2), call("add", a=2, b=3), call("add", a=2, b=3), call("add", a=2, b=3)]
    fake = cycling(*replies)
    model = TestTimeChatModel(model=fake, n=4, strategy="revisions", selection="majority", chain_length="full")
    reply = model.bind_tools([add]).invoke("What is 2 + 3?")
    assert [c["args"] for c in reply.tool_calls] == [{"a": 2, "b": 3}]
    revision_prompt = fake._seen[1][0][-1].content
    assert '"name": "add"' in revision_prompt and json.dumps({"a": 2, "b": 2}) in revision_prompt


def test_an_action_judge_sees_tools_conversation_and_calls_and_its_scores_pick_the_action() -> None:
    from ttc_graph.testing import FakeCall, ScriptedEndpoint
    from ttc_graph.verifiers.action_judge import ActionJudgeVerifier

    def verdict(call_: FakeCall, index: int) -> str:
        prompt = call_.messages[-1]["content"]
        return "Yes" if '"city": "Paris"' in prompt else "No"

    judge_model = ScriptedEndpoint(verdict, native_n=False)
    judge = ActionJudgeVerifier(judge_model, samples=1, use_logprobs=False)
    fake = cycling(
        call("get_weather", city="London"), call("get_weather", city="London"), call("get_weather", city="Paris")
    )
    model = TestTimeChatModel(model=fake, n=3, selection="weighted", verifier=judge).bind_tools([get_weather])
    reply = model.invoke([HumanMessage("Weather in Paris?")])
    assert [c["args"] for c in reply.tool_calls] == [{"city": "Paris"}]  # one vote, but the only judged-right one
    prompts = [c.messages[-1]["content"] for c in judge_model.calls]
    assert len(prompts) == 2  # two distinct actions, each judged once
    assert all("get_weather" in p and "User: Weather in Paris?" in p and "The weather in a city." in p for p in prompts)
    judged = reply.response_metadata["ttc"]["candidates"]
    assert sorted(c["score"] for c in judged) == [0.0, 0.0, 1.0]
    assert reply.usage_metadata is not None and reply.usage_metadata["input_tokens"] > 30  # samples and judge


async def test_step_wise_search_refuses_a_run_that_offers_tools() -> None:
    from ttc_graph import create_beam_search
    from ttc_graph.state import TTCContext
    from ttc_graph.testing import ScriptedEndpoint

    graph = create_beam_search(ScriptedEndpoint(["a step"]), lambda q, s: 0.5, n=4).compile()
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(ConfigurationError, match="tools: step-wise search"):
        await graph.ainvoke({"question": "q"}, context=TTCContext(tools=tools))
