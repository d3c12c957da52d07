"""An endpoint for any OpenAI-compatible server: OpenAI, vLLM, llama.cpp, Ollama, SGLang, ..."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

import httpx
from openai import AsyncOpenAI

from ttc_graph._limit import SharedLimit
from ttc_graph._loop import PerLoop
from ttc_graph.defaults import DEFAULT_MAX_TOKENS
from ttc_graph.endpoints.base import (
    BaseEndpoint,
    ChatMessage,
    Continuation,
    Generation,
    GenerationResult,
    SamplingParams,
    bounded_gather,
    check_number,
    check_request,
    collect,
)
from ttc_graph.endpoints.gate import gate_admit, gate_settle
from ttc_graph.endpoints.llamacpp_n import completion_body, parse_completion_results
from ttc_graph.endpoints.n_usage import (
    PROBE,
    PROBE_TOKENS,
    choice_tokens,
    judge_n_usage,
    n_usage_verdict,
    record_n_usage_verdict,
)
from ttc_graph.endpoints.retry import RetryConfig, answer_lost, call_with_retries
from ttc_graph.endpoints.slot_copy import SlotCopyUnsupported, copy_slot, copy_targets
from ttc_graph.endpoints.slot_leases import SlotLeases
from ttc_graph.endpoints.streaming import stream_chat
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.messages import from_wire_tool_calls
from ttc_graph.prices import Price, PriceTable, price_of
from ttc_graph.tracing import request_span
from ttc_graph.usage import RequestUsage

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_TOKENS", "NEXT_STEP_PROMPT", "OpenAIEndpoint"]

_PARAM_FIELDS = ("temperature", "max_tokens", "top_p", "stop", "seed", "timeout")

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


class _NoChoices(EndpointError):
    """A 200 answer without choices: retried like a 5xx."""


def _choices(response: Any, what: str) -> list[Any]:
    choices = getattr(response, "choices", None)
    if not choices or not isinstance(choices, list):
        raise _NoChoices(f"{what} returned no choices", status_code=200, retryable=True)
    return choices


def chat_generations(response: Any, what: str, prefix: str | None = None) -> list[Generation]:
    """The generations of a chat completion, plain or assembled from a stream (one parser for both): a 200
    without choices is a retryable :class:`EndpointError`, as a 5xx would be."""
    generations = []
    for choice in _choices(response, what):
        message = _field(choice, "message")
        text = (_field(message, "content") if message else None) or ""
        if prefix:
            text = _strip_prefix(text, prefix)
        lps, tops = _parse_chat_logprobs(choice)
        calls = _field(message, "tool_calls") if message else None
        tool_calls = tuple(from_wire_tool_calls(calls)) if calls else None
        generations.append(Generation(text, _field(choice, "finish_reason"), None, lps, tops, tool_calls))
    return generations


def _strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


class _LoopClients:
    """What an endpoint keeps per event loop: its API client and a plain HTTP client (its concurrency limit is one
    for every loop: ``OpenAIEndpoint.limit``)."""

    def __init__(self, endpoint: OpenAIEndpoint) -> None:
        self.api = AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint._api_key,
            max_retries=0,
            timeout=endpoint.timeout,
            http_client=endpoint._http_client,
        )
        self.judging = asyncio.Lock()
        self.slot_locks: dict[int, asyncio.Lock] = {}
        self.http = httpx.AsyncClient(timeout=endpoint.timeout)
        self._owns_api_client = endpoint._http_client is None  # a client the caller passed stays theirs to close
        self._closed = False

    async def aclose(self) -> None:
        """Close the connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self.http.aclose()
        if self._owns_api_client:
            await self.api.close()


class OpenAIEndpoint(BaseEndpoint):
    """A policy served by an OpenAI-compatible HTTP API.

    ``n`` samples are asked for in one request where the server honours ``n`` and counts every choice's tokens;
    servers that reject it (Ollama, some llama.cpp builds), silently return fewer choices, or under-count its usage
    (llama.cpp) are found out by a tiny probe before the first ``n > 1`` request (charged to that call's usage) and
    then served by concurrent single requests, so the ledger is exact without flags (see
    :mod:`ttc_graph.endpoints.n_usage`). ``native_n`` forces either way and skips the probe. Usage is counted once per
    request from the response, and priced at ``prices`` (a :class:`~ttc_graph.prices.Price`, or a table to look
    the model up in; default: the shipped table, where an unknown model costs nothing). At most ``max_concurrency``
    requests are in flight per event loop; ``timeout`` bounds each HTTP attempt (a request's own, shorter timeout
    wins). ``max_tokens`` is the endpoint's default
    length per sample (``None``: the server's own); a run's explicit value wins. ``slots``: the server is llama.cpp
    with this many parallel slots; a request whose :class:`~ttc_graph.endpoints.base.SamplingParams` carries a
    ``slots`` hint is sent with ``id_slot`` (and ``cache_prompt``), so a search continues a beam on the slot whose KV
    cache holds its prefix (:meth:`ttc_graph.local.LocalModelServer.endpoint` turns it on; ``None``: no hints sent).
    ``llamacpp_n``: the server is llama.cpp, and a call for ``n > 1`` samples without tools or logprobs is one
    request to its native ``/completion`` with ``n`` (the prompt evaluated once and copied to the children's slots,
    usage exact from each result's ``tokens_predicted``; see :mod:`ttc_graph.endpoints.llamacpp_n`). ``slot_copy``
    (with ``slots``): before a call whose samples are hinted to several slots continues a prefix, the first hinted
    slot's KV cache is copied to the others (llama.cpp's slot save and restore; the server needs
    ``--slot-save-path``, which :class:`~ttc_graph.local.LocalModelServer` passes), so a beam's siblings do not
    evaluate its path again (:mod:`ttc_graph.endpoints.slot_copy`). A call of ``n > 1`` samples of a prompt with no
    prefix (best-of-N, a search's root; unhinted calls get slots of their own) first evaluates the prompt on one
    slot with a one-token request, then copies it, so the prompt is evaluated once, not ``n`` times (not under a
    token budget, which plans no extra request). A server that refuses turns it off with a warning; the samples are
    drawn either way.
    """

    gates_requests = True
    """Every request it sends passes the task's request gate (:mod:`ttc_graph.endpoints.gate`)."""

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
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        default_params: SamplingParams | None = None,
        extra_body: dict[str, Any] | None = None,
        http_client: Any | None = None,
        prices: PriceTable | Price | None = None,
        slots: int | None = None,
        llamacpp_n: bool = False,
        slot_copy: bool = False,
    ) -> None:
        if not model or not str(model).strip():
            raise ConfigurationError("model: a model name is required (e.g. model='gpt-4o-mini')")
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency: must be >= 1, got {max_concurrency}")
        if continuation not in ("auto", "completions", "prefill", "prompt"):
            raise ConfigurationError(f"continuation: unknown mode {continuation!r}")
        if max_tokens is not None and max_tokens < 1:
            raise ConfigurationError(f"max_tokens: must be >= 1 or None, got {max_tokens}")
        if timeout <= 0:
            raise ConfigurationError(f"timeout: must be > 0 seconds, got {timeout}")
        if slots is not None:
            check_number("slots", slots, integer=True, minimum=1)
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.model = str(model)
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.max_concurrency = max_concurrency
        self.native_n = native_n
        self._n_forced = native_n is not None
        self._judged = False
        self.continuation: Continuation = continuation
        self.chat_template = chat_template
        self.timeout = timeout
        self.retry = retry or RetryConfig()
        self.max_tokens = max_tokens
        self.default_params = default_params or SamplingParams()
        self.extra_body = dict(extra_body or {})
        self.slots = slots
        self.llamacpp_n = bool(llamacpp_n)
        self.slot_copy = bool(slot_copy)
        self._slot_file = f"ttc-{uuid.uuid4().hex[:12]}"  # this endpoint's files, one per home slot (overwritten)
        self._llamacpp_width: int | None = None
        self._leases: SlotLeases | None = None  # the server's slots, leased to concurrent searches' own numbers
        self._http_client = http_client
        self.price = price_of(self.model, prices)
        self._clients: PerLoop[_LoopClients] = PerLoop(lambda: _LoopClients(self), close=_LoopClients.aclose)

    @property
    def name(self) -> str:
        return f"{self.model}@{self.base_url}"

    def __repr__(self) -> str:
        return f"OpenAIEndpoint(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def max_concurrency(self) -> int:
        """Requests in flight at most, over every thread and event loop that uses this endpoint."""
        return self.limit.limit

    @max_concurrency.setter
    def max_concurrency(self, value: int) -> None:
        check_number("max_concurrency", value, integer=True, minimum=1)
        self.limit = SharedLimit(value)

    @property
    def server_root(self) -> str:
        """The base URL without its trailing ``/v1``."""
        return self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url

    async def aclose(self) -> None:
        """Close the endpoint's HTTP clients in every event loop that still runs (``async with endpoint:`` does it).

        The endpoint stays usable: a later call opens new clients. ``asyncio.run`` closes a loop's clients itself
        when it ends, so repeated ``asyncio.run`` calls leave no connection behind either way.
        """
        running = asyncio.get_running_loop()
        for loop, clients in self._clients.pop_all():
            if loop is running:
                await clients.aclose()
            elif loop.is_running():
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(clients.aclose(), loop))

    async def __aenter__(self) -> OpenAIEndpoint:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- plumbing -------------------------------------------------------------------------------------------

    def _params(self, params: SamplingParams | None) -> SamplingParams:
        """``params`` with what it leaves unset taken from ``default_params``, then ``max_tokens``."""
        p = params or self.default_params
        if params is not None:
            unset = {f: getattr(self.default_params, f) for f in _PARAM_FIELDS if getattr(params, f) is None}
            p = replace(params, **{f: v for f, v in unset.items() if v is not None})
        if p.max_tokens is None and self.max_tokens is not None:
            p = replace(p, max_tokens=self.max_tokens)
        return p

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
        if p.tools:
            kwargs["tools"] = [dict(t) for t in p.tools]
            if p.tool_choice is not None:
                kwargs["tool_choice"] = p.tool_choice
        if p.timeout is not None:
            kwargs["timeout"] = p.timeout
        if self.extra_body:
            kwargs["extra_body"] = dict(self.extra_body)
        slots = self.slots
        slot = p.slots[0] if slots and p.slots else None
        if slots and slot is not None:  # llama.cpp: run on this slot, reusing the prompt prefix its KV cache holds
            body = kwargs.setdefault("extra_body", {})
            body.setdefault("id_slot", int(slot) % slots)
            body.setdefault("cache_prompt", True)
        return kwargs

    async def resolve_continuation(self) -> Continuation:
        """Pick the continuation mode once: llama.cpp and vLLM continue a trailing assistant message."""
        if self.continuation != "auto":
            return self.continuation
        mode: Continuation = "prompt"
        http = self._clients.get().http
        for path in ("/props", "/version"):
            try:
                resp = await http.get(self.server_root + path, timeout=5.0)
            except httpx.HTTPError:
                continue
            if resp.status_code == 200:
                mode = "prefill"
                break
        self.continuation = mode
        return mode

    # -- sampling -------------------------------------------------------------------------------------------

    async def _sample(
        self, messages: Sequence[ChatMessage], n: int, params: SamplingParams | None, prefix: str | None
    ) -> GenerationResult:
        p = self._params(params)
        check_request(n, p)
        shared = not p.slots and not prefix and self._copies_prompt(n, p)
        if shared:  # n samples of one prompt on slots of their own, so the prompt is evaluated once and copied
            p = replace(p, slots=tuple(range(n)), slot_owner=f"call-{uuid.uuid4().hex[:12]}")
        if not (self.slots and p.slots):
            return await self._sample_on(messages, n, p, prefix)
        owner, leases = p.slot_owner, self._slot_leases()
        held = leases.acquire(owner, p.slots)  # a search's own slot numbers, as server slots (None: all busy)
        try:
            result = await self._sample_on(messages, n, replace(p, slots=held, slot_owner=None), prefix)
        finally:
            leases.release(held)
        if owner is not None:  # where a sample ran, in the search's own numbers again (none for a call's own slots)
            result.generations[:] = [
                replace(g, slot=None if shared else leases.hint_of(owner, g.slot)) if g.slot is not None else g
                for g in result.generations
            ]
        return result

    def _copies_prompt(self, n: int, p: SamplingParams) -> bool:
        """Whether a call of ``n`` samples of a prompt without a prefix evaluates the prompt once and copies it to
        its other slots (``slot_copy`` on llama.cpp; not under a token budget, which plans no extra request, nor
        when the call goes as one request with ``n``, whose server shares the prompt itself)."""
        native = (self.llamacpp_n and not p.tools and not p.logprobs) or self.native_n is True
        return bool(self.slot_copy and self.slots and n > 1 and p.retry_lost and not native)

    def _slot_leases(self) -> SlotLeases:
        assert self.slots is not None
        if self._leases is None or self._leases.slots != self.slots:
            self._leases = SlotLeases(self.slots)
        return self._leases

    async def _sample_on(
        self, messages: Sequence[ChatMessage], n: int, p: SamplingParams, prefix: str | None
    ) -> GenerationResult:
        """Sample with ``p.slots`` naming server slots (see :meth:`_sample`)."""
        primed: RequestUsage | None = None
        if self.slot_copy and self.slots and prefix:
            await self._copy_prefix(p.slots)
        elif p.slots and self._copies_prompt(n, p):  # (it checks slot_copy and slots)
            primed = await self._prime_and_copy(messages, p)
        if primed is None:
            return await self._draw(messages, n, p, prefix)
        try:
            result = await self._draw(messages, n, p, prefix)
        except EndpointError as exc:  # the error carries what the call cost, the priming request included
            exc.usage = exc.usage or RequestUsage(failed_requests=1)
            exc.usage.add(primed)
            raise
        result.usage.add(primed)
        return result

    async def _draw(
        self, messages: Sequence[ChatMessage], n: int, p: SamplingParams, prefix: str | None
    ) -> GenerationResult:
        """The samples of :meth:`_sample_on`, once any slot copy is done."""
        if n > 1 and self.llamacpp_n and not p.tools and not p.logprobs:  # the prefix is appended to the prompt
            return await self._llamacpp_n(messages, n, p, prefix)
        mode: Continuation | None = await self.resolve_continuation() if prefix else None
        if mode == "prompt" and prefix:
            messages = [*messages, {"role": "user", "content": NEXT_STEP_PROMPT.format(prefix=prefix)}]
            prefix = None
        one = self._completion_call if mode == "completions" else self._chat_call
        result = GenerationResult()
        unjudged = n > 1 and self.native_n is None and n_usage_verdict(self.server_root, self.model) is None
        if unjudged and p.retry_lost:
            result.usage.add(await self._judge_n_usage())  # waits while a concurrent call probes
        if not self._n_forced and n_usage_verdict(self.server_root, self.model) is False:
            self.native_n = False
        # Under a token budget (retry_lost False) nothing is spent that the controller did not plan: no probe, and
        # the call fans out, which counts exactly on any server; a later call without a budget judges native n.
        held = unjudged and not p.retry_lost
        try:
            if n == 1 or self.native_n is False or held:
                rest = await self._fan_out(one, messages, n, p, prefix)
                rest.usage.add(result.usage)
                return rest
            try:
                first = await self._request(one, messages, n, p, prefix)
            except EndpointError as exc:
                if exc.status_code in (400, 422) and self.native_n is None and _rejects_n(exc):
                    self.native_n = False
                    rest = await self._fan_out(one, messages, n, p, prefix)
                    rest.usage.add(result.usage)
                    return rest
                raise
        except EndpointError as exc:  # nothing came back: the error carries what the call cost (a probe included)
            exc.usage = exc.usage or RequestUsage(failed_requests=1)
            exc.usage.add(result.usage)
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
            self.native_n = n_usage_verdict(self.server_root, self.model) is not False
        return result

    async def stream_one(
        self, messages: Sequence[ChatMessage], *, params: SamplingParams | None = None, meter: RequestUsage
    ) -> GenerationResult:
        """One sample, streamed and counted in ``meter`` as it arrives, so a caller that cancels it (adaptive
        best-of-N) knows what the server generated (:func:`ttc_graph.endpoints.streaming.stream_chat`)."""
        with request_span(self.model, params=params, server=self.base_url) as span:
            result = await stream_chat(self, messages, params, meter)
            if self.price:
                result.usage.cost = self.price.cost(result.usage.prompt_tokens, result.usage.completion_tokens)
            span.done(result)
        return result

    async def _judge_n_usage(self) -> RequestUsage:
        """Send the n-usage probe once (see :mod:`ttc_graph.endpoints.n_usage`); return what it cost."""
        async with self._clients.get().judging:
            if self._judged or n_usage_verdict(self.server_root, self.model) is not None:
                self._judged = True
                return RequestUsage()
            self._judged = True
            params = SamplingParams(temperature=0.0, max_tokens=PROBE_TOKENS)
            try:
                probe = await self._request(self._chat_call, PROBE, 2, params, None)
            except EndpointError as exc:
                if exc.status_code in (400, 422) and _rejects_n(exc):
                    record_n_usage_verdict(self.server_root, False, self.model)
                return RequestUsage()  # no verdict: the real request finds out the rest as before
            if len(probe.generations) < 2:
                record_n_usage_verdict(self.server_root, False, self.model)
            elif n_usage_verdict(self.server_root, self.model) is None:
                record_n_usage_verdict(self.server_root, True, self.model)  # nothing says it under-counts: trust it
            return probe.usage

    async def _request(
        self, one: Any, messages: Sequence[ChatMessage], n: int, params: SamplingParams, prefix: str | None
    ) -> GenerationResult:
        """One HTTP request under the endpoint's concurrency limit, admitted by the task's request gate
        (:mod:`ttc_graph.endpoints.gate`) first; a span of the run's trace (:mod:`ttc_graph.tracing`)."""
        operation = "chat" if one == self._chat_call else "text_completion"
        gate = await gate_admit(1)
        try:
            async with self.limit:
                with request_span(self.model, n=n, params=params, operation=operation, server=self.base_url) as span:
                    result: GenerationResult = await one(messages, n, params, prefix)
                    span.done(result)
        except EndpointError as exc:
            # a server that refuses n > 1 is asked again one sample per request: that refusal stops nothing
            about_n = n > 1 and exc.status_code in (400, 422) and _rejects_n(exc)
            gate_settle(gate, exc.usage, None if about_n else exc)
            raise
        gate_settle(gate, result.usage)
        return result

    async def _send(
        self,
        send: Callable[[], Awaitable[Any]],
        parse: Callable[[Any], list[Generation]],
        n: int,
        params: SamplingParams,
        what: str,
        result_of: Callable[[Any, list[Generation]], GenerationResult] | None = None,
    ) -> GenerationResult:
        """One request under the retry policy, its answer parsed inside it (no choices is retried like a 5xx);
        ``result_of`` (default: the OpenAI response's usage) turns the answer and its generations into the result.

        Each attempt whose answer was lost after it was sent reserves ``n * max_tokens`` in ``unconfirmed_tokens``;
        with ``params.retry_lost`` False such an attempt is not retried. A failure for good raises an
        :class:`EndpointError` carrying that usage and one failed request.
        """
        lost = 0

        async def attempt() -> tuple[Any, list[Generation]]:
            nonlocal lost
            try:
                response = await send()
                generations = parse(response)
            except Exception as exc:
                if answer_lost(exc) or isinstance(exc, _NoChoices):
                    lost += n * (params.max_tokens or 0)
                    if not params.retry_lost:
                        raise EndpointError(
                            f"{what} failed: the answer was lost ({type(exc).__name__}: {exc}); not retried under"
                            " a token budget"
                        ) from exc
                raise
            return response, generations

        try:
            response, generations = await call_with_retries(attempt, self.retry, what)
        except EndpointError as exc:
            exc.usage = RequestUsage(failed_requests=1, unconfirmed_tokens=lost)
            raise
        result = (result_of or (lambda r, g: self._result(r, g, params)))(response, generations)
        result.usage.unconfirmed_tokens += lost
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
        async def single(i: int) -> GenerationResult:
            # Distinct seeds: n single requests with one seed would return n identical samples.
            p = params if params.seed is None else replace(params, seed=params.seed + seed_offset + i)
            if params.slots:  # the i-th single request runs on the i-th sample's slot
                j = seed_offset + i
                p = replace(p, slots=params.slots[j : j + 1] or None)
            return await self._request(one, messages, 1, p, prefix)

        return collect(await bounded_gather(single, n, self.max_concurrency), f"{n} requests on {self.name}")

    def _usage_of(self, response: Any, generations: list[Generation], params: SamplingParams) -> RequestUsage:
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        if len(generations) > 1:
            verdict = judge_n_usage(completion, generations, params.max_tokens)
            if verdict is False or (verdict is True and n_usage_verdict(self.server_root, self.model) is None):
                record_n_usage_verdict(self.server_root, verdict, self.model)
            # Never record less than the choices are known to have taken (llama.cpp reports one choice's tokens).
            completion = max(completion, choice_tokens(generations, params.max_tokens)[0])
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        cost = self.price.cost(prompt, completion, cached) if self.price else 0.0
        return RequestUsage(requests=1, prompt_tokens=prompt, completion_tokens=completion, cost=cost)

    async def _chat_call(
        self, messages: Sequence[ChatMessage], n: int, params: SamplingParams, prefix: str | None
    ) -> GenerationResult:
        client = self._clients.get().api
        kwargs = self._request_kwargs(n, params)
        msgs: list[dict[str, Any]] = [dict(m) for m in messages]
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

        def parse(response: Any) -> list[Generation]:
            return chat_generations(response, what, prefix)

        what = f"chat completion on {self.name}"
        return await self._send(call, parse, n, params, what)

    def _result(self, response: Any, generations: list[Generation], params: SamplingParams) -> GenerationResult:
        usage = self._usage_of(response, generations, params)
        if len(generations) == 1:
            generations[0] = replace(generations[0], completion_tokens=usage.completion_tokens)
        else:
            generations = [
                replace(g, completion_tokens=len(g.token_logprobs)) if g.token_logprobs is not None else g
                for g in generations
            ]
        return GenerationResult(generations, usage)

    async def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The chat template applied to ``messages`` with a generation prompt, for ``/v1/completions``."""
        if self.chat_template is not None:
            return self.chat_template(messages)
        http = self._clients.get().http

        async def call() -> str:
            body = {"messages": list(messages)}
            resp = await http.post(self.server_root + "/apply-template", json=body, timeout=30.0)
            resp.raise_for_status()
            return str(resp.json()["prompt"])

        try:
            return await call_with_retries(call, self.retry, f"apply-template on {self.name}")
        except EndpointError as exc:
            raise ConfigurationError(
                "continuation='completions' needs chat_template=... or a server with /apply-template "
                f"(llama.cpp): {exc}"
            ) from exc

    async def _llamacpp_n(
        self, messages: Sequence[ChatMessage], n: int, params: SamplingParams, prefix: str | None
    ) -> GenerationResult:
        """``n`` samples as ``/completion`` requests of at most the server's slots each (llama.cpp refuses more):
        the k-th sample keeps seed ``seed + k`` and slot hint ``slots[k]`` whichever request carries it."""
        width = self.slots or await self._server_slots()
        starts = list(range(0, n, width))

        async def part(i: int) -> GenerationResult:
            start = starts[i]
            k = min(width, n - start)
            p = params if params.seed is None else replace(params, seed=params.seed + start)
            if params.slots:
                p = replace(p, slots=params.slots[start : start + k] or None)
            return await self._request(self._llamacpp_call, messages, k, p, prefix)

        if len(starts) == 1:
            return await part(0)
        return collect(await bounded_gather(part, len(starts), self.max_concurrency), f"{n} samples on {self.name}")

    async def _prime_and_copy(self, messages: Sequence[ChatMessage], p: SamplingParams) -> RequestUsage:
        """Evaluate the prompt of ``messages`` once on the first hinted slot (a request for one token at
        temperature 0, which the server samples from the prompt's own logits, so it costs no decode step) and copy
        that slot to the call's other hinted slots: its samples then evaluate one prompt token each instead of the
        whole prompt. Returns what the priming request cost; a failed one costs the samples an evaluation only."""
        plan = copy_targets(p.slots, self.slots or 1)
        if plan is None:
            return RequestUsage()
        home = plan[0]
        prime = replace(p, max_tokens=1, temperature=0.0, seed=None, logprobs=False, top_logprobs=0, slots=(home,))
        try:
            primed = await self._request(self._chat_call, messages, 1, prime, None)
        except EndpointError as exc:
            logger.warning("slot copy: priming slot %s failed (%s); the samples evaluate the prompt", home, exc)
            return exc.usage or RequestUsage(failed_requests=1)
        await self._copy_prefix(p.slots)
        return primed.usage

    async def _copy_prefix(self, hints: Sequence[int | None] | None) -> None:
        """Copy the first hinted slot's KV cache to the call's other hinted slots (see ``slot_copy``)."""
        assert self.slots is not None
        plan = copy_targets(hints, self.slots)
        if plan is None:
            return
        home, targets = plan
        clients = self._clients.get()
        lock = clients.slot_locks.setdefault(home, asyncio.Lock())
        async with lock:  # one save of this home slot's file at a time
            try:
                await copy_slot(clients.http, self.server_root, home, targets, f"{self._slot_file}-{home}.bin")
            except SlotCopyUnsupported as exc:
                if self.slot_copy:
                    warnings.warn(f"{exc}; slot_copy is now off for {self.name}", RuntimeWarning, stacklevel=2)
                self.slot_copy = False
            except EndpointError as exc:  # a failed copy costs the siblings an evaluation, never the samples
                logger.warning("%s", exc)

    async def _server_slots(self) -> int:
        """llama.cpp's parallel slots (``/props`` ``total_slots``), asked once; 1 when it does not say."""
        if self._llamacpp_width is None:
            http = self._clients.get().http

            async def call() -> int:
                resp = await http.get(self.server_root + "/props", timeout=30.0)
                resp.raise_for_status()
                return max(1, int(resp.json().get("total_slots") or 1))

            self._llamacpp_width = await call_with_retries(call, self.retry, f"props of {self.server_root}")
        return self._llamacpp_width

    async def _llamacpp_call(
        self, messages: Sequence[ChatMessage], n: int, params: SamplingParams, prefix: str | None
    ) -> GenerationResult:
        """``n`` samples in one request to llama.cpp's ``/completion`` (:mod:`ttc_graph.endpoints.llamacpp_n`)."""
        http = self._clients.get().http
        prompt = await self.render_prompt(messages) + (prefix or "")
        body = completion_body(prompt, n, params, slots=self.slots, extra=self.extra_body)
        what = f"completion (n={n}) on {self.server_root}"
        counts: dict[str, int] = {}

        async def call() -> Any:
            resp = await http.post(self.server_root + "/completion", json=body, timeout=params.timeout or self.timeout)
            resp.raise_for_status()
            return resp.json()

        def parse(data: Any) -> list[Generation]:
            generations, counts["prompt"], counts["completion"] = parse_completion_results(data, n, what)
            return generations

        def result_of(_: Any, generations: list[Generation]) -> GenerationResult:
            prompt_tokens, completion = counts["prompt"], counts["completion"]
            cost = self.price.cost(prompt_tokens, completion) if self.price else 0.0
            usage = RequestUsage(requests=1, prompt_tokens=prompt_tokens, completion_tokens=completion, cost=cost)
            return GenerationResult(generations, usage)

        return await self._send(call, parse, n, params, what, result_of)

    async def _completion_call(
        self, messages: Sequence[ChatMessage], n: int, params: SamplingParams, prefix: str | None
    ) -> GenerationResult:
        client = self._clients.get().api
        prompt = await self.render_prompt(messages) + (prefix or "")
        kwargs = self._request_kwargs(n, params)
        if params.logprobs:
            kwargs["logprobs"] = max(1, params.top_logprobs)

        async def call() -> Any:
            return await client.completions.create(prompt=prompt, **kwargs)

        def parse(response: Any) -> list[Generation]:
            generations = []
            for choice in _choices(response, what):
                lps, tops = _parse_completion_logprobs(choice)
                generations.append(Generation(choice.text or "", choice.finish_reason, None, lps, tops))
            return generations

        what = f"completion on {self.name}"
        return await self._send(call, parse, n, params, what)
