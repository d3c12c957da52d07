"""An endpoint for any OpenAI-compatible server: OpenAI, vLLM, llama.cpp, Ollama, SGLang, ..."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import httpx
from openai import AsyncOpenAI

from ttc_graph.endpoints.base import (
    ChatMessage,
    Continuation,
    Generation,
    GenerationResult,
    RequestUsage,
    SamplingParams,
)
from ttc_graph.endpoints.retry import RetryConfig, call_with_retries
from ttc_graph.errors import ConfigurationError, EndpointError

__all__ = ["NEXT_STEP_PROMPT", "OpenAIEndpoint"]

NEXT_STEP_PROMPT = (
    "Here is the beginning of a solution to the problem above:\n\n{prefix}\n\n"
    "Continue the solution from exactly where it stops. Write only what comes next, without repeating it."
)


def _parse_chat_logprobs(choice: Any) -> tuple[tuple[float, ...] | None, tuple[dict[str, float], ...] | None]:
    lp = _field(choice, "logprobs")
    content = _field(lp, "content") if lp is not None else None
    if not content:
        return None, None
    tokens = tuple(float(_field(t, "logprob")) for t in content)
    tops = tuple(
        {str(_field(alt, "token")): float(_field(alt, "logprob")) for alt in (_field(t, "top_logprobs") or [])}
        for t in content
    )
    return tokens, tops if any(tops) else None


def _field(obj: Any, name: str) -> Any:
    """An attribute of an SDK object, or a key of the plain dict some servers' extra fields arrive as."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _parse_completion_logprobs(
    choice: Any,
) -> tuple[tuple[float, ...] | None, tuple[dict[str, float], ...] | None]:
    lp = getattr(choice, "logprobs", None)
    if lp is None:
        return None, None
    values = getattr(lp, "token_logprobs", None)
    if values:
        tops_raw = getattr(lp, "top_logprobs", None) or []
        tops = tuple({str(k): float(v) for k, v in (d or {}).items()} for d in tops_raw)
        return tuple(float(v) for v in values if v is not None), tops or None
    return _parse_chat_logprobs(choice)


_MENTIONS_N = re.compile(r"(?<![\w\\])n(?!\w)|choice", re.IGNORECASE)


def _rejects_n(exc: EndpointError) -> bool:
    """Whether a 4xx answer is about the ``n`` parameter (judged on the server's message, not on ours)."""
    return _MENTIONS_N.search(str(exc.__cause__ or exc)) is not None


def _strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


class OpenAIEndpoint:
    """A policy served by an OpenAI-compatible HTTP API.

    ``n`` samples are asked for in one request where the server honours ``n``; servers that reject it (llama.cpp
    in some builds, Ollama) or silently return fewer choices are detected once and then served by concurrent
    single requests under ``max_concurrency``. Usage is counted once per request from the response.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        max_concurrency: int = 16,
        native_n: bool | None = None,
        continuation: Continuation = "auto",
        chat_template: Callable[[Sequence[ChatMessage]], str] | None = None,
        timeout: float = 600.0,
        retry: RetryConfig | None = None,
        default_params: SamplingParams | None = None,
        extra_body: dict[str, Any] | None = None,
        http_client: Any | None = None,
    ) -> None:
        if not model or not str(model).strip():
            raise ConfigurationError("model: a model name is required (e.g. model='gpt-4o-mini')")
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency: must be >= 1, got {max_concurrency}")
        if continuation not in ("auto", "completions", "prefill", "prompt"):
            raise ConfigurationError(f"continuation: unknown mode {continuation!r}")
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip(
            "/"
        )
        self.model = str(model)
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.max_concurrency = max_concurrency
        self.native_n = native_n
        self.continuation: Continuation = continuation
        self.chat_template = chat_template
        self.timeout = timeout
        self.retry = retry or RetryConfig()
        self.default_params = default_params or SamplingParams()
        self.extra_body = dict(extra_body or {})
        self._http_client = http_client
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, AsyncOpenAI, asyncio.Semaphore]] = {}

    @property
    def name(self) -> str:
        return f"{self.model}@{self.base_url}"

    def __repr__(self) -> str:
        return f"OpenAIEndpoint(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def server_root(self) -> str:
        """The base URL without its trailing ``/v1``."""
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    # -- plumbing -------------------------------------------------------------------------------------------

    def _loop_state(self) -> tuple[AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        state = self._clients.get(id(loop))
        if state is None or state[0] is not loop:
            for key, (old_loop, _, _) in list(self._clients.items()):
                if old_loop.is_closed():
                    del self._clients[key]
            client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                max_retries=0,
                timeout=self.timeout,
                http_client=self._http_client,
            )
            state = (loop, client, asyncio.Semaphore(self.max_concurrency))
            self._clients[id(loop)] = state
        return state[1], state[2]

    def _request_kwargs(self, n: int, params: SamplingParams) -> dict[str, Any]:
        p = params
        kwargs: dict[str, Any] = {"model": self.model}
        if n != 1:
            kwargs["n"] = n
        for key in ("temperature", "max_tokens", "top_p", "seed"):
            value = getattr(p, key)
            if value is not None:
                kwargs[key] = value
        if p.stop:
            kwargs["stop"] = list(p.stop)
        if p.timeout is not None:
            kwargs["timeout"] = p.timeout
        if self.extra_body:
            kwargs["extra_body"] = dict(self.extra_body)
        return kwargs

    async def resolve_continuation(self) -> Continuation:
        """Pick the continuation mode once: llama.cpp and vLLM continue a trailing assistant message."""
        if self.continuation != "auto":
            return self.continuation
        mode: Continuation = "prompt"
        async with httpx.AsyncClient(timeout=5.0) as client:
            for path in ("/props", "/version"):
                try:
                    resp = await client.get(self.server_root + path)
                except httpx.HTTPError:
                    continue
                if resp.status_code == 200:
                    mode = "prefill"
                    break
        self.continuation = mode
        return mode

    # -- sampling -------------------------------------------------------------------------------------------

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        if n < 1:
            raise ConfigurationError(f"n: must be >= 1, got {n}")
        p = params or self.default_params
        mode: Continuation | None = await self.resolve_continuation() if prefix else None
        if mode == "prompt" and prefix:
            messages = [*messages, {"role": "user", "content": NEXT_STEP_PROMPT.format(prefix=prefix)}]
            prefix = None
        one = self._completion_call if mode == "completions" else self._chat_call
        if n == 1 or self.native_n is False:
            return await self._fan_out(one, messages, n, p, prefix)
        result = GenerationResult()
        try:
            first = await one(messages, n, p, prefix)
        except EndpointError as exc:
            if exc.status_code in (400, 422) and self.native_n is None and _rejects_n(exc):
                self.native_n = False
                return await self._fan_out(one, messages, n, p, prefix)
            raise
        result.generations.extend(first.generations)
        result.usage.add(first.usage)
        missing = n - len(first.generations)
        if missing > 0:
            self.native_n = False
            rest = await self._fan_out(one, messages, missing, p, prefix, seed_offset=len(first.generations))
            result.generations.extend(rest.generations)
            result.usage.add(rest.usage)
            result.errors.extend(rest.errors)
        elif self.native_n is None:
            self.native_n = True
        return result

    async def _fan_out(
        self,
        one: Any,
        messages: Sequence[ChatMessage],
        n: int,
        params: SamplingParams,
        prefix: str | None,
        seed_offset: int = 0,
    ) -> GenerationResult:
        _, sem = self._loop_state()

        async def single(i: int) -> GenerationResult:
            # Distinct seeds: n single requests with one seed would return n identical samples.
            p = params if params.seed is None else replace(params, seed=params.seed + seed_offset + i)
            async with sem:
                return await one(messages, 1, p, prefix)

        outcomes = await asyncio.gather(*(single(i) for i in range(n)), return_exceptions=True)
        result = GenerationResult()
        failures: list[BaseException] = []
        for out in outcomes:
            if isinstance(out, BaseException):
                if not isinstance(out, Exception):
                    raise out
                failures.append(out)
                result.usage.failed_requests += 1
                result.errors.append(str(out))
            else:
                result.generations.extend(out.generations)
                result.usage.add(out.usage)
        if failures and not result.generations:
            raise failures[0]
        return result

    @staticmethod
    def _usage_of(response: Any, generations: list[Generation]) -> RequestUsage:
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        # Some servers (llama.cpp with n>1) report one choice's tokens only; where per-choice counts are
        # known from logprobs, never record less than their sum.
        known = [g.tokens for g in generations]
        if len(generations) > 1 and all(k is not None for k in known):
            completion = max(completion, sum(int(k) for k in known if k is not None))
        return RequestUsage(requests=1, prompt_tokens=prompt, completion_tokens=completion)

    async def _chat_call(
        self, messages: Sequence[ChatMessage], n: int, params: SamplingParams, prefix: str | None
    ) -> GenerationResult:
        client, _ = self._loop_state()
        kwargs = self._request_kwargs(n, params)
        msgs: list[dict[str, str]] = [dict(m) for m in messages]
        if prefix:
            msgs.append({"role": "assistant", "content": prefix})
            body = kwargs.setdefault("extra_body", {})
            body.setdefault("continue_final_message", True)
            body.setdefault("add_generation_prompt", False)
        if params.logprobs:
            kwargs["logprobs"] = True
            if params.top_logprobs:
                kwargs["top_logprobs"] = params.top_logprobs

        async def call() -> Any:
            return await client.chat.completions.create(messages=msgs, **kwargs)  # type: ignore[arg-type]

        response = await call_with_retries(call, self.retry, f"chat completion on {self.name}")
        generations = []
        for choice in response.choices or []:
            text = (choice.message.content if choice.message else None) or ""
            if prefix:
                text = _strip_prefix(text, prefix)
            lps, tops = _parse_chat_logprobs(choice)
            generations.append(Generation(text, choice.finish_reason, None, lps, tops))
        if not generations:
            raise EndpointError(f"chat completion on {self.name} returned no choices")
        usage = self._usage_of(response, generations)
        if len(generations) == 1:
            generations[0] = replace(generations[0], completion_tokens=usage.completion_tokens)
        return GenerationResult(generations, usage)

    async def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The chat template applied to ``messages`` with a generation prompt, for ``/v1/completions``."""
        if self.chat_template is not None:
            return self.chat_template(messages)

        async def call() -> str:
            async with httpx.AsyncClient(timeout=30.0) as client:
                resp = await client.post(
                    self.server_root + "/apply-template", json={"messages": list(messages)}
                )
                resp.raise_for_status()
                return str(resp.json()["prompt"])

        try:
            return await call_with_retries(call, self.retry, f"apply-template on {self.name}")
        except EndpointError as exc:
            raise ConfigurationError(
                "continuation='completions' needs chat_template=... or a server with /apply-template "
                f"(llama.cpp): {exc}"
            ) from exc

    async def _completion_call(
        self, messages: Sequence[ChatMessage], n: int, params: SamplingParams, prefix: str | None
    ) -> GenerationResult:
        client, _ = self._loop_state()
        prompt = await self.render_prompt(messages) + (prefix or "")
        kwargs = self._request_kwargs(n, params)
        if params.logprobs:
            kwargs["logprobs"] = max(1, params.top_logprobs)

        async def call() -> Any:
            return await client.completions.create(prompt=prompt, **kwargs)

        response = await call_with_retries(call, self.retry, f"completion on {self.name}")
        generations = []
        for choice in response.choices or []:
            lps, tops = _parse_completion_logprobs(choice)
            generations.append(Generation(choice.text or "", choice.finish_reason, None, lps, tops))
        if not generations:
            raise EndpointError(f"completion on {self.name} returned no choices")
        usage = self._usage_of(response, generations)
        if len(generations) == 1:
            generations[0] = replace(generations[0], completion_tokens=usage.completion_tokens)
        return GenerationResult(generations, usage)
