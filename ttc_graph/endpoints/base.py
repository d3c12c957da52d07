"""The policy-endpoint interface: what every model backend returns."""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.messages import ChatMessage  # re-exported: the message types live in ttc_graph.messages
from ttc_graph.usage import RequestUsage

if TYPE_CHECKING:
    from langchain_core.messages import ToolCall  # re-exported: the usage types live in ttc_graph.usage

__all__ = [
    "BaseEndpoint",
    "ChatMessage",
    "Continuation",
    "Endpoint",
    "EndpointWrapper",
    "Generation",
    "GenerationResult",
    "RequestUsage",
    "SamplingParams",
    "bounded_gather",
    "check_number",
    "check_request",
    "collect",
]

Continuation = Literal["auto", "completions", "prefill", "prompt"]
"""How an endpoint continues a partial assistant answer.

``completions``: raw prompt on ``/v1/completions`` with the chat template rendered by the server or client;
``prefill``: a trailing assistant message that the server continues; ``prompt``: a chat-only fallback that shows
the partial solution and asks for the next step.
"""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request sampling knobs.

    ``retry_lost=False`` gives up on an attempt whose answer was lost after it was sent (a timeout, a dropped
    connection, an unreadable body) instead of retrying it: under a token budget the controller re-plans that sample
    from what is left, since the lost attempt may have been generated. ``tools`` (OpenAI-format tool specs) and
    ``tool_choice`` go to the model as the chat API takes them; a generation then may carry ``tool_calls``.
    ``slots``: a hint of the server slot each sample should run on (the i-th sample on ``slots[i]``, ``None``: the
    server's choice), so a continuation lands where its prefix's KV cache already is; an endpoint sends it only when
    it was configured for a server with such slots (:class:`~ttc_graph.endpoints.openai_compat.OpenAIEndpoint`'s
    ``slots``, llama.cpp's ``id_slot``) and ignores it otherwise. ``slot_owner``: the hints are this search's own
    numbers (any key unique to the run), which the endpoint leases to server slots, so concurrent searches never
    queue on one slot (:mod:`ttc_graph.endpoints.slot_leases`); None: the hints name server slots.
    """

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    timeout: float | None = None
    retry_lost: bool = True
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: str | dict[str, Any] | None = None
    slots: tuple[int | None, ...] | None = None
    slot_owner: str | None = None


def check_number(name: str, value: object, *, integer: bool, minimum: float, strict: bool = False) -> None:
    """A ConfigurationError naming ``name`` unless ``value`` is a finite number (an integer if asked; never a bool)
    at least ``minimum`` (above it if ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise ConfigurationError(f"{name}: expected {kind}, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name}: must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ConfigurationError(f"{name}: must be {'>' if strict else '>='} {minimum:g}, got {value!r}")


def check_request(n: object, params: SamplingParams | None) -> None:
    """Refuse, before any request, an ``n`` or a sampling knob no server should be sent (a ConfigurationError
    naming it): ``n`` an integer >= 1 (not a bool), ``temperature >= 0``, ``max_tokens >= 1``, ``0 < top_p <= 1``,
    ``timeout > 0``."""
    check_number("n", n, integer=True, minimum=1)
    if params is None:
        return
    if params.temperature is not None:
        check_number("temperature", params.temperature, integer=False, minimum=0)
    if params.max_tokens is not None:
        check_number("max_tokens", params.max_tokens, integer=True, minimum=1)
    if params.top_p is not None:
        check_number("top_p", params.top_p, integer=False, minimum=0, strict=True)
        if params.top_p > 1:
            raise ConfigurationError(f"top_p: must be <= 1, got {params.top_p!r}")
    if params.timeout is not None:
        check_number("timeout", params.timeout, integer=False, minimum=0, strict=True)
    if params.seed is not None:
        check_number("seed", params.seed, integer=True, minimum=-(2**63))


@dataclass(frozen=True, slots=True)
class Generation:
    """One sampled completion; ``tool_calls`` (LangChain's shape: ``name``, ``args``, ``id``) when the model called
    tools through the API; ``slot`` the llama.cpp slot that generated it, where the server said (its KV cache
    holds this sample's prefix, so a continuation is best sent there)."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None
    token_logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[dict[str, float], ...] | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    slot: int | None = None

    @property
    def tokens(self) -> int | None:
        if self.token_logprobs is not None:
            return len(self.token_logprobs)
        return self.completion_tokens


@dataclass(slots=True)
class GenerationResult:
    """The generations of one logical call plus its usage."""

    generations: list[Generation] = field(default_factory=list)
    usage: RequestUsage = field(default_factory=RequestUsage)
    errors: list[str] = field(default_factory=list)


@runtime_checkable
class Endpoint(Protocol):
    """A policy model: anything that samples chat completions asynchronously."""

    @property
    def name(self) -> str: ...

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        """Sample ``n`` completions of ``messages``.

        ``prefix`` is a partial assistant answer to continue; the returned text is only the continuation.
        A request that fails for good is reported in ``errors`` with its usage kept, not raised, when at
        least one generation succeeded; when all fail an :class:`~ttc_graph.errors.EndpointError` is raised.
        """
        ...


class BaseEndpoint(ABC):
    """A base for endpoints: :meth:`generate` refuses a bad request (:func:`check_request`) before any call, then
    :meth:`_sample` does the sampling. The library's endpoints derive from it; an endpoint only has to satisfy
    :class:`Endpoint`."""

    @property
    @abstractmethod
    def name(self) -> str: ...

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        """Sample ``n`` completions of ``messages`` (see :meth:`Endpoint.generate`)."""
        check_request(n, params)
        return await self._sample(messages, n, params, prefix)

    @abstractmethod
    async def _sample(
        self, messages: Sequence[ChatMessage], n: int, params: SamplingParams | None, prefix: str | None
    ) -> GenerationResult:
        """What :meth:`generate` does once the request is known to be valid."""


class EndpointWrapper:
    """An endpoint around another, ``inner``: its name and every other attribute are the inner one's, and each
    request goes through :meth:`forward`, which a subclass overrides to count, record or redirect requests."""

    def __init__(self, inner: Endpoint) -> None:
        self.inner = inner

    def __getattr__(self, attr: str) -> Any:
        if attr == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    @property
    def name(self) -> str:
        return self.inner.name

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        return await self.forward(lambda endpoint: endpoint.generate(messages, n=n, params=params, prefix=prefix), n)

    async def forward(self, request: Callable[[Endpoint], Awaitable[GenerationResult]], n: int) -> GenerationResult:
        """``request`` (one ``generate`` call of ``n`` samples) sent to ``inner``; override to act around it."""
        return await request(self.inner)


T = TypeVar("T")


async def bounded_gather(fn: Callable[[int], Awaitable[T]], n: int, limit: int) -> list[T | Exception]:
    """``fn(0) … fn(n - 1)`` with at most ``limit`` running at once, in order; a failure is returned in its place.

    Only ``limit`` coroutines exist at a time, so memory follows what is in flight, not ``n``.
    """
    outcomes: list[T | Exception | None] = [None] * n
    indices = iter(range(n))

    async def worker() -> None:
        for i in indices:
            try:
                outcomes[i] = await fn(i)
            except Exception as exc:
                outcomes[i] = exc

    await asyncio.gather(*(worker() for _ in range(min(n, max(1, limit)))))
    return outcomes  # type: ignore[return-value]


def collect(outcomes: Sequence[GenerationResult | Exception], what: str) -> GenerationResult:
    """The generations and usage of a fan-out's requests; every failed one is counted in ``failed_requests`` (with
    what it cost: an :class:`EndpointError` carries its usage) and its message kept in ``errors``.

    When every request failed, the first failure is raised, carrying the fan-out's usage and every message.
    """
    result = GenerationResult()
    first: Exception | None = None
    for out in outcomes:
        if isinstance(out, Exception):
            first = first or out
            spent = out.usage if isinstance(out, EndpointError) else None
            result.usage.add(spent or RequestUsage(failed_requests=1))
            result.errors.append(str(out) or f"{what}: {type(out).__name__}")
        else:
            result.generations.extend(out.generations)
            result.usage.add(out.usage)
            result.errors.extend(out.errors)
    if first is not None and not result.generations:
        if isinstance(first, EndpointError):
            first.usage, first.errors = result.usage, result.errors
        raise first
    return result
