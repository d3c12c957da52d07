"""Scripted fakes for tests of code built on ttc_graph (never a stand-in for a real model)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ttc_graph.endpoints.base import (
    BaseEndpoint,
    ChatMessage,
    Generation,
    GenerationResult,
    RequestUsage,
    SamplingParams,
)
from ttc_graph.errors import EndpointError
from ttc_graph.prices import Price
from ttc_graph.tracing import request_span

__all__ = ["FakeCall", "ScriptedEndpoint"]


@dataclass(slots=True)
class FakeCall:
    messages: list[ChatMessage]
    n: int
    params: SamplingParams | None
    prefix: str | None


Responder = Callable[[FakeCall, int], "str | tuple[str, str]"]


@dataclass
class ScriptedEndpoint(BaseEndpoint):
    """Answers from a script: a list of texts served round-robin, or ``fn(call, index) -> text``.

    A script entry may be ``(text, finish_reason)`` (e.g. ``"length"`` for a sample cut off by ``max_tokens``);
    a plain text finishes with ``"stop"``.

    Each request reports ``prompt_tokens`` = words in the prompt and ``completion_tokens`` = words in every
    returned text (counted once per request). ``delay`` simulates latency; ``fail_every`` makes every k-th
    request raise an :class:`EndpointError`; ``native_n`` says whether one request may carry ``n`` samples;
    ``price`` prices each request's tokens into its usage's ``cost``.
    """

    script: Sequence[str] | Responder
    delay: float = 0.0
    native_n: bool = True
    fail_every: int | None = None
    price: Price | None = None
    calls: list[FakeCall] = field(default_factory=list)
    _requests: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _samples: Iterator[int] = field(default_factory=itertools.count, repr=False)

    @property
    def name(self) -> str:
        return "scripted"

    def _text(self, call: FakeCall, index: int) -> str | tuple[str, str]:
        if callable(self.script):
            return self.script(call, index)
        return self.script[index % len(self.script)]

    async def _sample(
        self, messages: Sequence[ChatMessage], n: int, params: SamplingParams | None, prefix: str | None
    ) -> GenerationResult:
        requests = [n] if self.native_n else [1] * n
        result = GenerationResult()

        async def one(k: int) -> GenerationResult:
            with request_span("scripted", n=k, params=params, system="scripted") as span:
                result = await answer(k)
                span.done(result)
                return result

        async def answer(k: int) -> GenerationResult:
            call = FakeCall(list(messages), k, params, prefix)
            self.calls.append(call)
            number = next(self._requests)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_every and (number + 1) % self.fail_every == 0:
                raise EndpointError("scripted failure", status_code=500)
            outputs = [self._text(call, next(self._samples)) for _ in range(k)]
            pairs = [o if isinstance(o, tuple) else (o, "stop") for o in outputs]
            gens = [Generation(t, reason, len(t.split())) for t, reason in pairs]
            prompt = sum(len(m["content"].split()) for m in messages)
            completion = sum(g.completion_tokens or 0 for g in gens)
            cost = self.price.cost(prompt, completion) if self.price else 0.0
            return GenerationResult(gens, RequestUsage(1, prompt, completion, cost=cost))

        outcomes = await asyncio.gather(*(one(k) for k in requests), return_exceptions=True)
        for out in outcomes:
            if isinstance(out, EndpointError):
                result.usage.failed_requests += 1
                result.errors.append(str(out))
            elif isinstance(out, BaseException):
                raise out
            else:
                result.generations.extend(out.generations)
                result.usage.add(out.usage)
        if not result.generations:
            raise EndpointError("scripted endpoint: every request failed")
        return result
