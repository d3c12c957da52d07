"""The usage callback: what a model call cost, counted once per request from whatever the model reported."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult
from langchain_core.runnables import RunnableLambda

from ttc_graph.agents.usage_callback import UsageCallbackHandler, usage_of
from ttc_graph.usage import RequestUsage


def reply(text: str, usage: dict[str, int] | None) -> ChatGeneration:
    message = AIMessage(text)
    if usage is not None:
        message.usage_metadata = {**usage, "total_tokens": sum(usage.values())}  # type: ignore[typeddict-item]
    return ChatGeneration(message=message)


class Choices(BaseChatModel):
    """Returns ``choices`` generations per call, each repeating the request's usage (as ChatOpenAI does with n>1),
    or, with ``in_llm_output``, no usage on the messages and the call's usage in ``llm_output``."""

    choices: int = 1
    in_llm_output: bool = False
    fail: bool = False

    @property
    def _llm_type(self) -> str:
        return "choices"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        if self.fail:
            raise ValueError("the server went away")
        usage = {"input_tokens": 11, "output_tokens": 4}
        if self.in_llm_output:
            gens = [reply(f"choice {i}", None) for i in range(self.choices)]
            return ChatResult(
                generations=gens, llm_output={"token_usage": {"prompt_tokens": 11, "completion_tokens": 8}}
            )
        return ChatResult(generations=[reply(f"choice {i}", usage) for i in range(self.choices)])


def test_a_request_with_several_choices_is_counted_once() -> None:
    handler = UsageCallbackHandler()
    Choices(choices=3).invoke([HumanMessage("hi")], {"callbacks": [handler]})
    assert handler.usage == RequestUsage(requests=1, prompt_tokens=11, completion_tokens=4)
    assert handler.unmetered == 0


def test_without_usage_metadata_the_calls_token_usage_is_read() -> None:
    handler = UsageCallbackHandler()
    Choices(choices=2, in_llm_output=True).invoke([HumanMessage("hi")], {"callbacks": [handler]})
    assert handler.usage == RequestUsage(requests=1, prompt_tokens=11, completion_tokens=8)


def test_usage_of_counts_each_prompt_of_a_batch_as_one_request() -> None:
    result = LLMResult(
        generations=[
            [reply("a", {"input_tokens": 3, "output_tokens": 1}), reply("b", {"input_tokens": 3, "output_tokens": 1})],
            [reply("c", {"input_tokens": 5, "output_tokens": 2})],
        ]
    )
    assert usage_of(result) == (RequestUsage(requests=2, prompt_tokens=8, completion_tokens=3), 0)


def test_a_response_without_any_usage_is_a_counted_but_unmetered_request() -> None:
    assert usage_of(LLMResult(generations=[[reply("a", None)]])) == (RequestUsage(requests=1), 1)


def test_a_failed_call_is_a_failed_request() -> None:
    handler = UsageCallbackHandler()
    with pytest.raises(ValueError, match="went away"):
        Choices(fail=True).invoke([HumanMessage("hi")], {"callbacks": [handler]})
    assert handler.usage == RequestUsage(failed_requests=1)


async def test_nested_calls_under_the_config_are_counted_and_concurrent_ones_all_arrive() -> None:
    model = Choices()

    async def two_calls(text: str) -> str:
        await asyncio.gather(model.ainvoke([HumanMessage(text)]), model.ainvoke([HumanMessage(text)]))
        return text

    handler = UsageCallbackHandler()
    chain = RunnableLambda(two_calls)
    await asyncio.gather(*(chain.ainvoke("x", {"callbacks": [handler]}) for _ in range(5)))
    assert handler.usage == RequestUsage(requests=10, prompt_tokens=110, completion_tokens=40)
