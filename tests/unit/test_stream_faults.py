"""A streamed answer fails the ways a plain one does, and is retried or charged the same way.

Each fault is scripted per attempt: the mock server answers attempt ``i`` with ``script[i]`` (a list of SSE lines,
or an exception to raise mid-stream after them).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ttc_graph.endpoints.base import SamplingParams
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.endpoints.retry import RetryConfig
from ttc_graph.errors import EndpointError
from ttc_graph.usage import RequestUsage

FAST = RetryConfig(max_attempts=3, initial_backoff=0, jitter=0, max_backoff=0)
MESSAGES = [{"role": "user", "content": "q"}]
MAX_TOKENS = 20


def delta(text: str, finish: str | None = None) -> bytes:
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def usage(prompt: int, completion: int) -> bytes:
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


DONE = b"data: [DONE]\n\n"
GOOD = [delta("So "), delta("\\boxed{4}"), delta("", "stop"), usage(5, 2), DONE]


class Reset(Exception):
    """The connection dropped mid-stream."""


def endpoint(script: list[list[bytes] | tuple[list[bytes], BaseException]], attempts: list[int]) -> OpenAIEndpoint:
    async def handler(request: httpx.Request) -> httpx.Response:
        i = len(attempts)
        attempts.append(i)
        step = script[min(i, len(script) - 1)]
        lines, error = step if isinstance(step, tuple) else (step, None)

        async def body() -> AsyncIterator[bytes]:
            for line in lines:
                yield line
            if error is not None:
                raise error

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAIEndpoint("http://fake/v1", model="m", http_client=client, native_n=False, retry=FAST)


async def stream(ep: OpenAIEndpoint, *, retry_lost: bool = True) -> tuple[Any, RequestUsage]:
    meter = RequestUsage()
    params = SamplingParams(max_tokens=MAX_TOKENS, retry_lost=retry_lost)
    return await ep.stream_one(MESSAGES, params=params, meter=meter), meter


@pytest.mark.parametrize(
    ("fault", "arrived"),
    [
        ([delta("So "), delta("\\boxed")], 2),  # no finish_reason, no [DONE]
        ([delta("So "), DONE], 1),  # [DONE] without a finish_reason
        ([DONE], 0),  # a 200 without choices
        ([delta("So "), b"data: {not json\n\n"], 1),  # a malformed chunk
        (([delta("So "), delta("\\boxed")], Reset("connection reset")), 2),  # reset mid-stream
    ],
    ids=["no-finish-no-done", "done-without-finish", "no-choices", "malformed", "reset"],
)
async def test_a_broken_stream_is_retried_and_charged_what_arrived(fault: Any, arrived: int) -> None:
    attempts: list[int] = []
    result, meter = await stream(endpoint([fault, GOOD], attempts))
    assert len(attempts) == 2
    assert result.generations[0].text == "So \\boxed{4}" and result.generations[0].finish_reason == "stop"
    u = result.usage
    assert (u.requests, u.prompt_tokens, u.failed_requests) == (1, 5, 0)
    assert u.completion_tokens == arrived + 2  # what the lost attempt delivered, then the answer's own
    assert u.unconfirmed_tokens == MAX_TOKENS - arrived  # the rest of the lost attempt's max_tokens
    assert meter.completion_tokens == arrived + 2


async def test_under_a_token_budget_a_reset_stream_is_not_retried_and_charged_exactly() -> None:
    attempts: list[int] = []
    fault = ([delta("So "), delta("\\boxed"), delta("{4")], Reset("connection reset"))
    with pytest.raises(EndpointError, match="not retried") as caught:
        await stream(endpoint([fault, GOOD], attempts), retry_lost=False)
    assert len(attempts) == 1
    spent = caught.value.usage
    assert spent is not None
    assert (spent.failed_requests, spent.completion_tokens, spent.unconfirmed_tokens) == (1, 3, MAX_TOKENS - 3)


async def test_a_stream_that_always_breaks_fails_with_every_attempt_charged() -> None:
    attempts: list[int] = []
    with pytest.raises(EndpointError) as caught:
        await stream(endpoint([[delta("a"), delta("b")]], attempts))
    assert len(attempts) == FAST.max_attempts
    spent = caught.value.usage
    assert spent is not None and spent.failed_requests == 1
    assert spent.completion_tokens == 2 * FAST.max_attempts
    assert spent.unconfirmed_tokens == (MAX_TOKENS - 2) * FAST.max_attempts
