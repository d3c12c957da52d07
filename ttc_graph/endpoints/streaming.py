"""One streamed chat completion, counted as it arrives, so a caller that cancels it knows what the server generated.

Adaptive best-of-N cancels the samples still in flight once the leader is decisive. A non-streamed request tells its
usage only when it completes; a streamed one shows each token as the server generates it (llama.cpp, vLLM and OpenAI
send one chunk per token), and the server stops generating when the connection closes. The final chunk's usage
(``stream_options.include_usage``) replaces the count when the stream completes.

A stream is assembled into the shape of a plain chat completion and read by the same parser
(:func:`~ttc_graph.endpoints.openai_compat.chat_generations`), so it fails the same ways: a 200 without choices is
retried like a 5xx, and so is a stream that broke or ended without a ``finish_reason`` (its answer was lost). Each
lost attempt is charged the tokens that arrived, and the rest of its ``max_tokens`` is recorded as unconfirmed (the
server may have generated them); under a token budget (``retry_lost`` False) it is not retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ttc_graph.endpoints.base import ChatMessage, Generation, GenerationResult, SamplingParams
from ttc_graph.endpoints.gate import gate_admit, gate_settle
from ttc_graph.endpoints.retry import AnswerLost, call_with_retries
from ttc_graph.errors import EndpointError
from ttc_graph.usage import RequestUsage

if TYPE_CHECKING:
    from ttc_graph.endpoints.openai_compat import OpenAIEndpoint

__all__ = ["StreamedAnswer", "stream_chat"]


@dataclass
class StreamedAnswer:
    """The chunks of one streamed choice put together: what arrived, as a chat completion's fields."""

    parts: list[str] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)
    finish: str | None = None
    usage: Any = None
    choices_seen: bool = False
    arrived: int = 0
    """Completion tokens that arrived: one per chunk with text, or per token log-probability when asked for."""

    def add(self, chunk: Any) -> int:
        """Take one chunk; the completion tokens it carried."""
        self.usage = getattr(chunk, "usage", None) or self.usage
        tokens = 0
        for choice in getattr(chunk, "choices", None) or []:
            self.choices_seen = True
            delta = getattr(choice, "delta", None)
            text = getattr(delta, "content", None) if delta is not None else None
            lp = getattr(choice, "logprobs", None)
            content = list(getattr(lp, "content", None) or []) if lp is not None else []
            if text:
                self.parts.append(text)
            self.logprobs.extend(content)
            tokens += len(content) if content else int(bool(text))
            self.finish = getattr(choice, "finish_reason", None) or self.finish
        self.arrived += tokens
        return tokens

    def response(self) -> Any:
        """The answer as a plain chat completion (no choices if the stream carried none)."""
        if not self.choices_seen:
            return SimpleNamespace(choices=[], usage=self.usage)
        message = SimpleNamespace(content="".join(self.parts), tool_calls=None)
        logprobs = SimpleNamespace(content=self.logprobs) if self.logprobs else None
        choice = SimpleNamespace(message=message, finish_reason=self.finish, logprobs=logprobs)
        return SimpleNamespace(choices=[choice], usage=self.usage)


async def stream_chat(
    endpoint: OpenAIEndpoint, messages: Sequence[ChatMessage], params: SamplingParams | None, meter: RequestUsage
) -> GenerationResult:
    """One sample of ``messages`` from ``endpoint``, streamed, under its concurrency limit and retry policy.

    ``meter`` counts the request once it is sent and one completion token per chunk that carries text (or per
    token log-probability, when asked for), lost attempts' included; on completion it holds the server's reported
    usage plus what lost attempts were charged.
    """
    p = endpoint._params(params)
    kwargs = endpoint._request_kwargs(1, p)
    kwargs["stream"] = True
    kwargs["stream_options"] = {"include_usage": True}
    if p.logprobs:
        kwargs["logprobs"] = True
        if p.top_logprobs:
            kwargs["top_logprobs"] = p.top_logprobs
    clients = endpoint._clients.get()
    msgs = [dict(m) for m in messages]
    what = f"streamed chat completion on {endpoint.name}"

    async def open_stream() -> Any:
        return await clients.api.chat.completions.create(messages=msgs, **kwargs)  # type: ignore[arg-type]

    gate = await gate_admit(1)
    try:
        result = await _stream_one(endpoint, open_stream, p, what, meter)
    except EndpointError as exc:
        gate_settle(gate, exc.usage, exc)
        raise
    except asyncio.CancelledError:  # cancelled by its caller: what arrived was generated all the same
        gate_settle(gate, RequestUsage(meter.requests, meter.prompt_tokens, meter.completion_tokens))
        raise
    gate_settle(gate, result.usage)
    return result


async def _stream_one(
    endpoint: OpenAIEndpoint, open_stream: Any, params: SamplingParams, what: str, meter: RequestUsage
) -> GenerationResult:
    from ttc_graph.endpoints.openai_compat import chat_generations

    lost = RequestUsage()  # what lost attempts cost: the tokens that arrived, the rest of max_tokens unconfirmed

    async def attempt() -> tuple[StreamedAnswer, list[Generation]]:
        stream = await open_stream()
        answer = StreamedAnswer()
        try:
            try:
                async for chunk in stream:
                    meter.completion_tokens += answer.add(chunk)
            except Exception as exc:
                raise AnswerLost(f"the stream broke: {type(exc).__name__}: {exc}", arrived=answer.arrived) from exc
            finally:
                await stream.close()
            try:
                generations = chat_generations(answer.response(), what)
            except EndpointError as exc:  # a 200 without choices: lost, as a plain answer without them is
                raise AnswerLost(str(exc), arrived=answer.arrived) from exc
            if answer.finish is None:
                raise AnswerLost("the stream ended without a finish_reason", arrived=answer.arrived)
        except AnswerLost as exc:
            lost.completion_tokens += exc.arrived
            lost.unconfirmed_tokens += max(0, (params.max_tokens or 0) - exc.arrived)
            if not params.retry_lost:
                raise EndpointError(
                    f"{what} failed: the answer was lost ({exc}); not retried under a token budget"
                ) from exc
            raise
        return answer, generations

    async with endpoint.limit:
        meter.requests = 1
        try:
            answer, generations = await call_with_retries(attempt, endpoint.retry, what)
        except EndpointError as exc:
            lost.failed_requests = 1
            exc.usage = lost
            raise
    prompt = int(getattr(answer.usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(answer.usage, "completion_tokens", 0) or 0) or answer.arrived
    meter.prompt_tokens, meter.completion_tokens = prompt, lost.completion_tokens + completion
    generation = generations[0]
    lps = generation.token_logprobs
    final = Generation(generation.text, generation.finish_reason, completion, lps, generation.top_logprobs)
    usage = RequestUsage(1, prompt, lost.completion_tokens + completion, 0, lost.unconfirmed_tokens)
    return GenerationResult([final], usage)
