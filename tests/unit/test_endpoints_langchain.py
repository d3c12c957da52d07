"""LangChainEndpoint over fake chat models (no network)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda
from pydantic import Field

from ttc_graph import create_best_of_n
from ttc_graph.endpoints import LangChainEndpoint, RetryConfig, SamplingParams
from ttc_graph.endpoints.openai_compat import NEXT_STEP_PROMPT
from ttc_graph.errors import ConfigurationError, EndpointError

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
FAST = RetryConfig(max_attempts=3, initial_backoff=0, jitter=0, max_backoff=0.01)


class UsageChat(BaseChatModel):
    """Answers ``texts`` in turn, each with ``usage_metadata``; records what it was called with."""

    texts: list[str]
    prompt_tokens: int = 10
    temperature: float | None = None
    fail_on: list[int] = Field(default_factory=list)
    delay: float = 0.0
    seen: list[dict[str, Any]] = Field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    @property
    def _llm_type(self) -> str:
        return "usage-chat"

    def _result(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> ChatResult:
        index = len(self.seen)
        self.seen.append({"messages": messages, "stop": stop, "kwargs": kwargs})
        if index in self.fail_on:
            raise ValueError(f"model failure on call {index}")
        text = self.texts[index % len(self.texts)]
        output = len(text.split())
        message = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": self.prompt_tokens,
                "output_tokens": output,
                "total_tokens": self.prompt_tokens + output,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message, generation_info={"finish_reason": "stop"})])

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        return self._result(messages, stop, kwargs)

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return self._result(messages, stop, kwargs)
        finally:
            self.in_flight -= 1


async def test_n_samples_are_n_requests_with_summed_usage():
    texts = ["one \\boxed{1}", "two words \\boxed{2}", "three more words \\boxed{3}"]
    model = UsageChat(texts=texts, prompt_tokens=10)
    result = await LangChainEndpoint(model).generate(MESSAGES, n=3)
    assert len(model.seen) == 3
    assert sorted(g.text for g in result.generations) == sorted(texts)
    assert result.usage.requests == 3
    assert result.usage.prompt_tokens == 3 * 10
    assert result.usage.completion_tokens == sum(len(t.split()) for t in texts)
    assert {g.completion_tokens for g in result.generations} == {len(t.split()) for t in texts}
    assert all(g.finish_reason == "stop" for g in result.generations)


async def test_messages_are_converted_to_langchain_types():
    model = UsageChat(texts=["x"])
    await LangChainEndpoint(model).generate(MESSAGES)
    sent = model.seen[0]["messages"]
    assert [type(m) for m in sent] == [SystemMessage, HumanMessage]
    assert [m.content for m in sent] == [m["content"] for m in MESSAGES]


async def test_unknown_role_is_a_configuration_error():
    model = UsageChat(texts=["x"])
    with pytest.raises(ConfigurationError, match="role"):
        await LangChainEndpoint(model).generate([{"role": "wizard", "content": "hi"}])
    assert model.seen == []


async def test_declared_sampling_params_are_passed_through():
    model = UsageChat(texts=["x"])
    params = SamplingParams(temperature=0.25, max_tokens=64, stop=("\n\n",), seed=3)
    await LangChainEndpoint(model).generate(MESSAGES, n=2, params=params)
    for call in model.seen:
        assert call["stop"] == ["\n\n"]
        assert call["kwargs"].get("temperature") == 0.25
        # max_tokens and seed are not fields of this model, so they are not passed
        assert "max_tokens" not in call["kwargs"]
        assert "seed" not in call["kwargs"]


async def test_prefix_is_continued_by_the_next_step_prompt():
    model = UsageChat(texts=["x"])
    await LangChainEndpoint(model).generate(MESSAGES, prefix="Step 1: 2 + 2")
    last = model.seen[0]["messages"][-1]
    assert isinstance(last, HumanMessage)
    assert last.content == NEXT_STEP_PROMPT.format(prefix="Step 1: 2 + 2")


async def test_concurrency_is_capped():
    model = UsageChat(texts=["x"], delay=0.02)
    result = await LangChainEndpoint(model, max_concurrency=2).generate(MESSAGES, n=6)
    assert len(result.generations) == 6
    assert model.max_in_flight == 2


async def test_partial_failure_keeps_successes_and_records_errors():
    model = UsageChat(texts=["fine \\boxed{4}"], fail_on=[1])
    result = await LangChainEndpoint(model, retry=FAST).generate(MESSAGES, n=3)
    assert len(model.seen) == 3  # a ValueError is not retried
    assert len(result.generations) == 2
    assert result.usage.requests == 2
    assert result.usage.failed_requests == 1
    assert len(result.errors) == 1
    assert "model failure" in result.errors[0]


async def test_all_failing_raises_endpoint_error():
    model = UsageChat(texts=["x"], fail_on=[0, 1])
    with pytest.raises(EndpointError, match="every request failed"):
        await LangChainEndpoint(model, retry=FAST).generate(MESSAGES, n=2)


async def test_n_below_one_is_a_configuration_error():
    model = UsageChat(texts=["x"])
    with pytest.raises(ConfigurationError, match="n"):
        await LangChainEndpoint(model).generate(MESSAGES, n=0)


async def test_generic_fake_chat_model_without_usage():
    model = GenericFakeChatModel(messages=iter(["a \\boxed{1}", "b \\boxed{2}", "c \\boxed{3}"]))
    result = await LangChainEndpoint(model).generate(MESSAGES, n=3)
    assert sorted(g.text for g in result.generations) == ["a \\boxed{1}", "b \\boxed{2}", "c \\boxed{3}"]
    assert result.usage.requests == 3
    assert result.usage.completion_tokens == 0
    assert all(g.completion_tokens is None for g in result.generations)


async def test_fake_list_chat_model_in_a_best_of_n_graph():
    model = FakeListChatModel(responses=["so \\boxed{4}", "so \\boxed{4}", "so \\boxed{5}"])
    graph = create_best_of_n(LangChainEndpoint(model), n=3, selection="majority").compile()
    out = await graph.ainvoke({"question": "What is 2 + 2?"})
    assert out["answer"] == "4"
    assert out["usage"]["generations"] == 3
    assert out["usage"]["requests"] == 3


@pytest.mark.parametrize("bad", [object(), "gpt-4o", lambda messages: "hi"])
def test_non_chat_model_is_a_configuration_error(bad: Any):
    with pytest.raises(ConfigurationError, match="chat_model"):
        LangChainEndpoint(bad)


def test_name_is_model_name_or_class():
    assert LangChainEndpoint(UsageChat(texts=["x"])).name == "UsageChat"


class TwoChoiceChat(BaseChatModel):
    """One call returns two generations and reports the call's token usage once in ``llm_output``."""

    @property
    def _llm_type(self) -> str:
        return "two-choice"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        gens = [ChatGeneration(message=AIMessage(content=t)) for t in ("\\boxed{1}", "\\boxed{2}")]
        return ChatResult(generations=gens, llm_output={"token_usage": {"prompt_tokens": 7, "completion_tokens": 9}})

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        return llm_outputs[0] or {}  # as ChatOpenAI does, so agenerate keeps token_usage


async def test_a_call_with_several_generations_is_one_request_counted_once() -> None:
    result = await LangChainEndpoint(TwoChoiceChat()).generate(MESSAGES, n=1)
    assert [g.text for g in result.generations] == ["\\boxed{1}", "\\boxed{2}"]
    assert (result.usage.requests, result.usage.prompt_tokens, result.usage.completion_tokens) == (1, 7, 9)


# -- one concurrency limit, timeouts, the model's own max_tokens, the run's config ----------------------------


async def test_one_concurrency_limit_spans_concurrent_calls():
    model = UsageChat(texts=["x"], delay=0.02)
    endpoint = LangChainEndpoint(model, max_concurrency=2)
    results = await asyncio.gather(endpoint.generate(MESSAGES, n=3), endpoint.generate(MESSAGES, n=3))
    assert [len(r.generations) for r in results] == [3, 3]
    assert model.max_in_flight == 2


async def test_the_endpoint_timeout_cuts_each_attempt():
    model = UsageChat(texts=["x"], delay=1.0)
    with pytest.raises(EndpointError, match="TimeoutError"):
        await LangChainEndpoint(model, retry=FAST, timeout=0.05).generate(MESSAGES)
    assert len(model.seen) == 0  # no attempt got to answer
    assert model.in_flight == 0


async def test_the_requests_own_shorter_timeout_wins():
    # the model answers after 1 s: within the endpoint's 60 s, so only the request's 0.05 s can cut it
    model = UsageChat(texts=["x"], delay=1.0)
    endpoint = LangChainEndpoint(model, retry=FAST, timeout=60)
    with pytest.raises(EndpointError, match="TimeoutError"):
        await endpoint.generate(MESSAGES, params=SamplingParams(timeout=0.05))
    assert len(model.seen) == 0  # no attempt got to answer
    assert model.in_flight == 0


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"max_concurrency": 0}, "max_concurrency"), ({"timeout": 0}, "timeout")]
)
def test_bad_limits_are_configuration_errors(kwargs: dict[str, Any], message: str):
    with pytest.raises(ConfigurationError, match=message):
        LangChainEndpoint(UsageChat(texts=["x"]), **kwargs)


class CappedChat(UsageChat):
    """A model with its own ``max_tokens`` setting."""

    max_tokens: int | None = 77


async def test_a_factory_leaves_the_models_own_max_tokens_alone():
    model = CappedChat(texts=["so \\boxed{4}"])
    out = (
        await create_best_of_n(LangChainEndpoint(model), n=2, selection="majority")
        .compile()
        .ainvoke({"question": "What is 2 + 2?"})
    )
    assert out["answer"] == "4"
    assert all("max_tokens" not in call["kwargs"] for call in model.seen)


async def test_an_explicit_max_tokens_still_wins():
    model = CappedChat(texts=["so \\boxed{4}"])
    graph = create_best_of_n(LangChainEndpoint(model), n=2, selection="majority", max_tokens=64).compile()
    await graph.ainvoke({"question": "What is 2 + 2?"})
    assert [call["kwargs"]["max_tokens"] for call in model.seen] == [64, 64]


class ParentRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chains: dict[UUID, str | None] = {}
        self.chat: list[tuple[UUID | None, list[str]]] = []

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.chains[run_id] = kwargs.get("name")

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self.chat.append((parent_run_id, list(kwargs.get("tags") or [])))


async def test_model_calls_carry_the_current_runs_config():
    recorder = ParentRecorder()
    endpoint = LangChainEndpoint(UsageChat(texts=["x"]))

    async def step(_: Any) -> int:
        return len((await endpoint.generate(MESSAGES, n=2)).generations)

    outer = RunnableLambda(step, name="outer")
    assert await outer.ainvoke(None, {"callbacks": [recorder], "tags": ["mine"]}) == 2
    [outer_id] = [run for run, name in recorder.chains.items() if name == "outer"]
    assert [parent for parent, _ in recorder.chat] == [outer_id, outer_id]
    assert all("mine" in tags for _, tags in recorder.chat)
