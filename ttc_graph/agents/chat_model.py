"""``TestTimeChatModel``: a LangChain chat model that answers each call with a test-time strategy.

It stands wherever a chat model goes (``create_react_agent(model, tools)``, ``create_agent``, a chain): each call
samples several candidate replies from the wrapped model, scores them if a verifier is given, and returns the one
the selection picks. A reply may be an action: its tool calls are the candidate, and candidates vote by action.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal, cast

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolCallChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph.state import CompiledStateGraph
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ttc_graph.budget import Budget
from ttc_graph.defaults import DEFAULT_TEMPERATURE
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.endpoints.langchain import LangChainEndpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.nodes.budget_controller import AdaptiveStop
from ttc_graph.nodes.select import NO_ANSWER
from ttc_graph.selection import REVISION_SELECTIONS, SELECTIONS
from ttc_graph.state import Candidate, TTCContext
from ttc_graph.strategies import create_best_of_n, create_revisions
from ttc_graph.tool_calls import action_key

__all__ = ["TestTimeChatModel"]

_WORDS = re.compile(r"\s+")


def _tool_choice(choice: Any) -> str | dict[str, Any] | None:
    """LangChain's ``tool_choice`` spellings as the OpenAI API takes them."""
    if choice is None or isinstance(choice, dict):
        return choice
    if choice is True or choice == "any":
        return "required"
    if choice in ("auto", "none", "required"):
        return str(choice)
    if isinstance(choice, str):
        return {"type": "function", "function": {"name": choice}}
    raise ConfigurationError(f"tool_choice: expected a tool name, 'auto', 'any', 'none' or a dict, got {choice!r}")


def _fallback(candidates: Sequence[Candidate]) -> Candidate | None:
    """A reply when no candidate has an answer to vote on (free text): the most frequent text after folding case
    and spaces, ties to the best-scored, then the first."""
    texts = [c for c in candidates if c["text"].strip() or c.get("tool_calls")]
    if not texts:
        return None

    def key(c: Candidate) -> str:
        return action_key(c["tool_calls"]) if c.get("tool_calls") else _WORDS.sub(" ", c["text"].strip().lower())

    counts: dict[str, int] = {}
    for c in texts:
        counts[key(c)] = counts.get(key(c), 0) + 1
    return max(texts, key=lambda c: (counts[key(c)], c["score"] if c["score"] is not None else -1.0))


class TestTimeChatModel(BaseChatModel):
    """A chat model that spends more compute per call: best-of-N (any selection, a verifier, adaptive stopping) or
    revisions over a wrapped chat model or endpoint.

    ``TestTimeChatModel(model=ChatOpenAI(...), n=8, selection="majority")`` samples 8 replies per call and returns
    the most frequent: a final answer by its extracted answer, an action by its tool calls (names and arguments
    normalised; parallel calls as a multiset). With ``bind_tools`` the tools go to the wrapped model; a model that
    writes its calls as text (fenced JSON, ``<tool_call>`` tags) has them parsed. Arguments that do not validate
    against their tool's schema never win over a valid candidate. The reply's ``usage_metadata`` is the whole
    run's spend (every sample and verifier call); ``response_metadata["ttc"]`` holds the candidates, the votes'
    answer and the stop reason. Each call is one strategy run whose model calls nest under the call's run in any
    callback handler. ``stream`` yields the run's progress as ``reasoning_content`` and then the chosen message.
    """

    __test__ = False  # not a pytest class despite its name

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any = Field(description="The wrapped LangChain chat model or ttc_graph endpoint.")
    n: int = Field(8, ge=1, strict=True, description="Samples per call (the strategy's budget in generations).")
    strategy: Literal["best_of_n", "revisions"] = "best_of_n"
    selection: str = Field("majority", description="best_of_n: majority, weighted, naive; revisions: hierarchical…")
    verifier: Any = None
    adaptive: AdaptiveStop | bool = False
    chain_length: int | Literal["sqrt", "full"] = "sqrt"
    budget: Budget | None = None
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1, strict=True)
    system_prompt: str | None = Field(None, description="Joined to the conversation's own system message, if any.")

    _policy: Endpoint | None = PrivateAttr(default=None)
    _graph: CompiledStateGraph[Any, Any, Any, Any] | None = PrivateAttr(default=None)

    @field_validator("model")
    @classmethod
    def _model(cls, value: Any) -> Any:
        if isinstance(value, BaseChatModel) or callable(getattr(value, "generate", None)):
            return value
        raise ValueError(f"expected a LangChain chat model or an endpoint with generate(), got {type(value).__name__}")

    @model_validator(mode="after")
    def _check(self) -> TestTimeChatModel:
        allowed = SELECTIONS if self.strategy == "best_of_n" else REVISION_SELECTIONS
        if self.selection not in allowed:
            raise ValueError(f"selection: {self.selection!r} is not a {self.strategy} selection; use one of {allowed}")
        self.compiled()  # build now: every configuration problem is raised at construction
        return self

    @property
    def _llm_type(self) -> str:
        return "ttc-test-time"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "n": self.n, "selection": self.selection, "policy": self.policy.name}

    @property
    def graph_name(self) -> str:
        """The strategy graph's name (the model's ``name`` if set): its run's name in traces."""
        return self.name or "test_time_chat_model"

    @property
    def policy(self) -> Endpoint:
        """The wrapped model as the endpoint the strategy samples from."""
        if self._policy is None:
            model = self.model
            self._policy = LangChainEndpoint(model) if isinstance(model, BaseChatModel) else model
        return self._policy

    def compiled(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The strategy graph every call runs (built once)."""
        if self._graph is None:
            common: dict[str, Any] = {
                "n": self.n, "selection": self.selection, "budget": self.budget, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "system_prompt": self.system_prompt, "name": self.graph_name,
            }  # fmt: skip
            if self.strategy == "best_of_n":
                builder = create_best_of_n(self.policy, self.verifier, adaptive=self.adaptive, **common)
            else:
                builder = create_revisions(self.policy, self.verifier, chain_length=self.chain_length, **common)
            self._graph = builder.compile(name=self.graph_name)
        return self._graph

    # -- tools ----------------------------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with ``tools`` (converted to OpenAI's format) sent to the wrapped model on every call."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=_tool_choice(tool_choice), **kwargs)

    # -- calls ----------------------------------------------------------------------------------------------

    def _inputs(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], TTCContext]:
        if stop:
            raise ConfigurationError("stop: a test-time chat model does not take stop sequences")
        unknown = sorted(set(kwargs) - {"tools", "tool_choice", "parallel_tool_calls", "strict"})
        if unknown:
            raise ConfigurationError(f"{unknown[0]}: not a call option of TestTimeChatModel")
        context = TTCContext(tools=kwargs.get("tools") or None, tool_choice=kwargs.get("tool_choice"))
        return {"messages": list(messages)}, context

    def _result(self, out: dict[str, Any]) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(out))])

    def _reply(self, out: dict[str, Any]) -> AIMessage:
        reply: AIMessage = out["messages"][-1]
        candidates: list[Candidate] = out.get("candidates") or []
        unanswered = not reply.tool_calls and reply.content == NO_ANSWER
        if unanswered and (pick := _fallback(candidates)) is not None:
            calls = pick.get("tool_calls") or []
            text = "" if calls and pick.get("meta", {}).get("calls_from_text") else pick["text"]
            reply = reply.model_copy(update={"content": text, "tool_calls": list(calls)})
        summary = {
            "answer": out.get("answer"),
            "stop_reason": out.get("stop_reason"),
            "usage": out.get("usage"),
            "errors": out.get("errors") or [],
            "candidates": [
                {"id": c["id"], "text": c["text"], "answer": c["answer"], "score": c["score"],
                 "tool_calls": c.get("tool_calls") or [], "tokens": c["tokens"], "finish_reason": c["finish_reason"],
                 "invalid": c.get("meta", {}).get("invalid")}
                for c in candidates
            ],
        }  # fmt: skip
        return AIMessage(
            content=reply.content,
            tool_calls=reply.tool_calls,
            usage_metadata=reply.usage_metadata,
            response_metadata={"model_name": self.policy.name, "ttc": summary},
            id=reply.id,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        inputs, context = self._inputs(messages, stop, kwargs)
        config = _child_config(run_manager)
        return self._result(self.compiled().invoke(inputs, config, context=context))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        inputs, context = self._inputs(messages, stop, kwargs)
        config = _child_config(run_manager)
        return self._result(await self.compiled().ainvoke(inputs, config, context=context))

    # -- streaming: progress as reasoning, then the chosen message ------------------------------------------

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        inputs, context = self._inputs(messages, stop, kwargs)
        config = _child_config(run_manager)
        final: dict[str, Any] = {}
        for mode, data in self.compiled().stream(inputs, config, context=context, stream_mode=["custom", "values"]):
            if mode == "values":
                final = cast(dict[str, Any], data)
            elif (chunk := _progress_chunk(data)) is not None:
                if run_manager:
                    run_manager.on_llm_new_token("", chunk=chunk)
                yield chunk
        yield _final_chunk(self._reply(final))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        inputs, context = self._inputs(messages, stop, kwargs)
        config = _child_config(run_manager)
        final: dict[str, Any] = {}
        graph = self.compiled()
        async for mode, data in graph.astream(inputs, config, context=context, stream_mode=["custom", "values"]):
            if mode == "values":
                final = cast(dict[str, Any], data)
            elif (chunk := _progress_chunk(data)) is not None:
                if run_manager:
                    await run_manager.on_llm_new_token("", chunk=chunk)
                yield chunk
        yield _final_chunk(self._reply(final))


def _child_config(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None) -> RunnableConfig:
    """A config whose runs nest under this call's run (LangChain's LLM run managers have no ``get_child``)."""
    if run_manager is None:
        return {}
    manager_cls = AsyncCallbackManager if isinstance(run_manager, AsyncCallbackManagerForLLMRun) else CallbackManager
    child = manager_cls(
        handlers=list(run_manager.inheritable_handlers),
        inheritable_handlers=list(run_manager.inheritable_handlers),
        parent_run_id=run_manager.run_id,
        tags=list(run_manager.inheritable_tags),
        inheritable_tags=list(run_manager.inheritable_tags),
        metadata=dict(run_manager.inheritable_metadata),
        inheritable_metadata=dict(run_manager.inheritable_metadata),
    )
    return {"callbacks": child}


def _progress_chunk(event: Any) -> ChatGenerationChunk | None:
    """A controller's progress event as a chunk with no content: a line of ``reasoning_content`` and the event."""
    if not isinstance(event, dict) or not str(event.get("event", "")).startswith("ttc."):
        return None
    kind = event["event"]
    if kind == "ttc.round":
        line = f"Round {event.get('round', 0) + 1}: {event.get('drawn', 0)} samples drawn"
    elif kind == "ttc.sample":
        line = f"Sample {event.get('index', '')} {event.get('kind', 'arrived')}"
    elif kind == "ttc.subtree":
        line = f"Subtree {event.get('group', '')}: step {event.get('round', '')} scored"
    elif kind == "ttc.expansion":
        line = f"Expansion {event.get('index', '')} of {event.get('leaf', '')} scored"
    else:
        line = kind
    message = AIMessageChunk(content="", additional_kwargs={"reasoning_content": line + "\n"})
    return ChatGenerationChunk(message=message, generation_info={"ttc_event": event})


def _final_chunk(reply: AIMessage) -> ChatGenerationChunk:
    """The chosen message as one chunk (its tool calls as complete call chunks)."""
    chunks = [
        ToolCallChunk(name=c["name"], args=_json(c["args"]), id=c.get("id"), index=i)
        for i, c in enumerate(reply.tool_calls)
    ]
    message = AIMessageChunk(
        content=reply.content,
        tool_call_chunks=chunks,
        usage_metadata=reply.usage_metadata,
        response_metadata=reply.response_metadata,
        id=reply.id,
    )
    return ChatGenerationChunk(message=message)


def _json(args: Any) -> str:
    return json.dumps(args, ensure_ascii=False)
