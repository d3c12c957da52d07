"""Any LangChain chat model as a policy endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config

from ttc_graph._limit import SharedLimit
from ttc_graph._loop import serving_sync_call
from ttc_graph.endpoints.base import (
    BaseEndpoint,
    ChatMessage,
    Generation,
    GenerationResult,
    SamplingParams,
    bounded_gather,
    collect,
)
from ttc_graph.endpoints.openai_compat import NEXT_STEP_PROMPT
from ttc_graph.endpoints.retry import RetryConfig, call_with_retries
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.messages import message_text, to_langchain_messages
from ttc_graph.tracing import request_span
from ttc_graph.usage import RequestUsage

__all__ = ["LangChainEndpoint"]


def to_langchain(messages: Sequence[ChatMessage]) -> list[BaseMessage]:
    """Request messages as LangChain messages (tool calls and tool results included)."""
    return to_langchain_messages(messages)


def _token_usage(message: Any, llm_output: dict[str, Any] | None) -> tuple[int, int] | None:
    meta = getattr(message, "usage_metadata", None)
    if meta:
        return int(meta.get("input_tokens", 0) or 0), int(meta.get("output_tokens", 0) or 0)
    usage = (llm_output or {}).get("token_usage") or {}
    if usage:
        return int(usage.get("prompt_tokens", 0) or 0), int(usage.get("completion_tokens", 0) or 0)
    return None


class LangChainEndpoint(BaseEndpoint):
    """A policy backed by any ``BaseChatModel``.

    ``n`` samples are ``n`` concurrent ``agenerate`` (or ``generate``) calls, not ``invoke`` (which returns only the
    first choice). Each call is a request; its usage comes from the messages' ``usage_metadata``. A partial answer
    (``prefix``) is continued by the chat-only next-step prompt. Sampling params the model declares as fields are
    passed through as call kwargs; ``max_tokens`` only when the run sets it, so the model's own setting stands
    otherwise.

    Every call carries the current run's config (callbacks, tags, metadata), so chat-model runs nest under the
    strategy's run in LangSmith or any callback handler. Under ``graph.ainvoke`` the model's async API runs in the
    caller's loop; under ``graph.invoke`` its sync API runs in worker threads, so its async client (which binds to
    the first loop that uses it) is never tied to ttc_graph's background loop. At most ``max_concurrency`` calls of
    this endpoint are in flight per event loop, and each attempt is given up after ``timeout`` seconds (or the
    request's own, shorter timeout) and retried like any transient failure (a sync call's thread runs on until
    the model client's own timeout).
    """

    native_n = False

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        retry: RetryConfig | None = None,
        max_concurrency: int = 16,
        timeout: float | None = 600.0,
    ) -> None:
        if not isinstance(chat_model, BaseChatModel):
            raise ConfigurationError(f"chat_model: expected a LangChain BaseChatModel, got {type(chat_model).__name__}")
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency: must be >= 1, got {max_concurrency}")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"timeout: must be > 0 seconds or None, got {timeout}")
        self.chat_model = chat_model
        self.retry = retry or RetryConfig()
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.limit = SharedLimit(max_concurrency)  # one limit for every thread and event loop

    @property
    def name(self) -> str:
        return getattr(self.chat_model, "model_name", None) or type(self.chat_model).__name__

    def _kwargs(self, params: SamplingParams | None) -> dict[str, Any]:
        if params is None:
            return {}
        kwargs: dict[str, Any] = {}
        if params.stop:
            kwargs["stop"] = list(params.stop)
        for key in ("temperature", "max_tokens", "seed"):
            if getattr(params, key) is not None and key in type(self.chat_model).model_fields:
                kwargs[key] = getattr(params, key)
        return kwargs

    async def _sample(
        self, messages: Sequence[ChatMessage], n: int, params: SamplingParams | None, prefix: str | None
    ) -> GenerationResult:
        msgs = list(messages)
        if prefix:
            msgs.append({"role": "user", "content": NEXT_STEP_PROMPT.format(prefix=prefix)})
        lc_messages = to_langchain(msgs)
        kwargs = self._kwargs(params)
        tools_model: Runnable[Any, Any] | None = None  # the model with the tools bound: one message per call
        if params is not None and params.tools:
            bound: dict[str, Any] = {} if params.tool_choice is None else {"tool_choice": params.tool_choice}
            tools_model = self.chat_model.bind_tools(list(params.tools), **bound)
        stop = kwargs.pop("stop", None)
        config = ensure_config()  # the run this call belongs to (LangChain's context variable), if any
        run: dict[str, Any] = {key: config.get(key) for key in ("callbacks", "tags", "metadata", "run_name")}
        sem = self.limit
        limits = [t for t in (self.timeout, params.timeout if params else None) if t is not None]
        timeout = min(limits) if limits else None
        sync = serving_sync_call()

        what = f"agenerate on {self.name}"
        reserve = (params.max_tokens if params else None) or 0

        async def one(_: int) -> GenerationResult:
            lost = 0

            async def attempt() -> Any:
                nonlocal lost
                try:
                    async with asyncio.timeout(timeout):
                        if tools_model is not None:
                            cfg = cast(RunnableConfig, {k: v for k, v in run.items() if v is not None})
                            if sync:
                                return await asyncio.to_thread(
                                    tools_model.invoke, lc_messages, cfg, stop=stop, **kwargs
                                )
                            return await tools_model.ainvoke(lc_messages, cfg, stop=stop, **kwargs)
                        if sync:
                            return await asyncio.to_thread(
                                self.chat_model.generate, [lc_messages], stop=stop, **run, **kwargs
                            )
                        return await self.chat_model.agenerate([lc_messages], stop=stop, **run, **kwargs)
                except TimeoutError as exc:  # the model may still answer (a sync call's thread runs on)
                    lost += reserve
                    if params is not None and not params.retry_lost:
                        raise EndpointError(f"{what} failed: timed out; not retried under a token budget") from exc
                    raise

            async with sem:
                with request_span(self.name, params=params, system="langchain") as span:
                    try:
                        out = await call_with_retries(attempt, self.retry, what)
                    except EndpointError as exc:
                        exc.usage = RequestUsage(failed_requests=1, unconfirmed_tokens=lost)
                        raise
                    result = _result_of(out)
                    result.usage.unconfirmed_tokens += lost
                    span.done(result)
            return result

        try:
            return collect(await bounded_gather(one, n, self.max_concurrency), what)
        except EndpointError as exc:
            raise EndpointError(
                f"{what}: every request failed: {exc.errors[:1]}", usage=exc.usage, errors=exc.errors
            ) from exc


def _message_result(message: AIMessage) -> GenerationResult:
    """A bound model's reply (one message, one request) with its tool calls."""
    tokens = _token_usage(message, None)
    prompt_toks, completion = tokens or (0, 0)
    meta = message.response_metadata or {}
    calls = tuple(message.tool_calls) or None
    text = message_text(message)
    gen = Generation(text, meta.get("finish_reason"), tokens[1] if tokens else None, tool_calls=calls)
    return GenerationResult([gen], RequestUsage(1, prompt_toks, completion))


def _result_of(out: Any) -> GenerationResult:
    """One agenerate call is one request: its usage is the messages' usage_metadata summed, or else the call's
    llm_output token_usage counted once (never once per generation)."""
    if isinstance(out, AIMessage):
        return _message_result(out)
    gens = [g for batch in out.generations for g in batch]
    per_gen = [_token_usage(getattr(g, "message", None), None) for g in gens]
    if all(t is not None for t in per_gen):
        prompt_toks = max((t[0] for t in per_gen if t), default=0)
        completion_total = sum(t[1] for t in per_gen if t)
    else:
        prompt_toks, completion_total = _token_usage(None, out.llm_output) or (0, 0)
    result = GenerationResult(usage=RequestUsage(1, prompt_toks, completion_total))
    for g, tokens in zip(gens, per_gen, strict=True):
        info = getattr(g, "generation_info", None) or {}
        calls = tuple(getattr(getattr(g, "message", None), "tool_calls", None) or ()) or None
        result.generations.append(
            Generation(g.text, info.get("finish_reason"), tokens[1] if tokens else None, tool_calls=calls)
        )
    return result
