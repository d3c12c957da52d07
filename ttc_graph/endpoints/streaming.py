"""One streamed chat completion, counted as it arrives, so a caller that cancels it knows what the server generated.

Adaptive best-of-N cancels the samples still in flight once the leader is decisive. A non-streamed request tells its
usage only when it completes; a streamed one shows each token as the server generates it (llama.cpp, vLLM and OpenAI
send one chunk per token), and the server stops generating when the connection closes. The final chunk's usage
(``stream_options.include_usage``) replaces the count when the stream completes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ttc_graph.endpoints.base import ChatMessage, Generation, GenerationResult, SamplingParams
from ttc_graph.endpoints.gate import gate_admit, gate_settle
from ttc_graph.endpoints.retry import call_with_retries
from ttc_graph.errors import EndpointError
from ttc_graph.usage import RequestUsage

if TYPE_CHECKING:
    from ttc_graph.endpoints.openai_compat import OpenAIEndpoint

__all__ = ["stream_chat"]


def _chunk_logprobs(choice: Any) -> list[float]:
    lp = getattr(choice, "logprobs", None)
    content = getattr(lp, "content", None) if lp is not None else None
    return [float(t.logprob) for t in content or []]


async def stream_chat(
    endpoint: OpenAIEndpoint, messages: Sequence[ChatMessage], params: SamplingParams | None, meter: RequestUsage
) -> GenerationResult:
    """One sample of ``messages`` from ``endpoint``, streamed, under its concurrency limit and retry policy.

    ``meter`` counts the request once it is sent and one completion token per chunk that carries text (or per
    token log-probability, when asked for); on completion it holds the server's reported usage. Only opening the
    stream is retried: once tokens flow, a broken stream fails the sample with what it cost.
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
        result = await _stream_one(endpoint, open_stream, what, meter)
    except EndpointError as exc:
        gate_settle(gate, exc.usage, exc)
        raise
    except asyncio.CancelledError:  # cancelled by its caller: what arrived was generated all the same
        gate_settle(gate, RequestUsage(meter.requests, meter.prompt_tokens, meter.completion_tokens))
        raise
    gate_settle(gate, result.usage)
    return result


async def _stream_one(endpoint: OpenAIEndpoint, open_stream: Any, what: str, meter: RequestUsage) -> GenerationResult:
    async with endpoint.limit:
        meter.requests = 1
        try:
            stream = await call_with_retries(open_stream, endpoint.retry, what)
        except EndpointError as exc:
            exc.usage = exc.usage or RequestUsage(failed_requests=1)
            raise
        parts: list[str] = []
        logprobs: list[float] = []
        finish: str | None = None
        usage: Any = None
        try:
            async for chunk in stream:
                usage = getattr(chunk, "usage", None) or usage
                for choice in chunk.choices or []:
                    text = choice.delta.content if choice.delta is not None else None
                    lps = _chunk_logprobs(choice)
                    if text:
                        parts.append(text)
                    logprobs.extend(lps)
                    meter.completion_tokens += len(lps) if lps else int(bool(text))
                    finish = choice.finish_reason or finish
        except Exception as exc:
            spent = RequestUsage(completion_tokens=meter.completion_tokens, failed_requests=1)
            raise EndpointError(f"{what}: the stream broke: {exc}", usage=spent) from exc
        finally:
            await stream.close()
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0) or meter.completion_tokens
    meter.prompt_tokens, meter.completion_tokens = prompt, completion
    generation = Generation("".join(parts), finish, completion, tuple(logprobs) if logprobs else None)
    return GenerationResult([generation], RequestUsage(1, prompt, completion))
