"""OpenAIEndpoint over a mocked HTTP layer (openai 3.x speaks httpx2, so we hand it an httpx2 MockTransport)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from ttc_graph import Budget, create_best_of_n
from ttc_graph.endpoints import OpenAIEndpoint, RetryConfig, SamplingParams
from ttc_graph.endpoints.n_usage import (
    PROBE,
    PROBE_TOKENS,
    forget_verdicts,
    n_usage_verdict,
    record_n_usage_verdict,
)
from ttc_graph.endpoints.openai_compat import NEXT_STEP_PROMPT
from ttc_graph.errors import ConfigurationError, EndpointError

BASE_URL = "http://mock.test/v1"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
FAST_RETRY = RetryConfig(max_attempts=3, initial_backoff=0, jitter=0, max_backoff=0.01)
NO_RETRY = RetryConfig(max_attempts=1, initial_backoff=0, jitter=0, max_backoff=0.01)


@pytest.fixture(autouse=True)
def _honest_mock() -> None:
    """The mock server counts every choice unless a test says otherwise (the probe tests forget this first)."""
    forget_verdicts()
    record_n_usage_verdict(BASE_URL.removesuffix("/v1"), True)


def chat_body(texts: list[str], *, usage: dict[str, int] | None = None, logprobs: list[Any] | None = None) -> dict:
    choices = []
    for i, text in enumerate(texts):
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": None,
        }
        if logprobs is not None:
            choice["logprobs"] = {"content": logprobs[i]}
        choices.append(choice)
    body: dict[str, Any] = {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "m", "choices": choices}
    if usage is not None:
        body["usage"] = {**usage, "total_tokens": sum(usage.values())}
    return body


def token_lp(token: str, logprob: float, tops: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "token": token,
        "logprob": logprob,
        "bytes": None,
        "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in (tops or {}).items()],
    }


@dataclass
class MockServer:
    """Records every request body and answers through ``respond(body, index)``; tracks requests in flight."""

    respond: Callable[[dict[str, Any], int], httpx2.Response | Awaitable[httpx2.Response]]
    delay: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content or b"{}")
        index = len(self.bodies)
        self.bodies.append(body)
        self.paths.append(request.url.path)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            out = self.respond(body, index)
            if not isinstance(out, httpx2.Response):
                out = await out
            return out
        finally:
            self.in_flight -= 1

    def endpoint(self, **kwargs: Any) -> OpenAIEndpoint:
        kwargs.setdefault("retry", FAST_RETRY)
        client = httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler))
        model = kwargs.pop("model", "test-model")
        return OpenAIEndpoint(BASE_URL, model, "sk-test", http_client=client, **kwargs)


def n_choices_server(**kw: Any) -> MockServer:
    """A server that honours ``n``: each choice's text names its index and the seed it was sampled with."""

    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        n = body.get("n", 1)
        texts = [f"req{index} choice{i} seed{body.get('seed')} \\boxed{{{i}}}" for i in range(n)]
        return httpx2.Response(200, json=chat_body(texts, usage={"prompt_tokens": 7, "completion_tokens": 5 * n}))

    return MockServer(respond, **kw)


def single_choice_server(reject_n: str | None = None, **kw: Any) -> MockServer:
    """A server that answers one choice per request; with ``reject_n`` it answers HTTP 400 to any n > 1."""

    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        if reject_n is not None and body.get("n", 1) > 1:
            return httpx2.Response(400, json={"error": {"message": reject_n, "type": "invalid_request_error"}})
        text = f"req{index} seed{body.get('seed')}"
        return httpx2.Response(200, json=chat_body([text], usage={"prompt_tokens": 7, "completion_tokens": 3}))

    return MockServer(respond, **kw)


# -- n > 1 -------------------------------------------------------------------------------------------------


async def test_native_n_is_one_request_and_is_remembered():
    server = n_choices_server()
    ep = server.endpoint()
    assert ep.native_n is None
    result = await ep.generate(MESSAGES, n=4)
    assert len(server.bodies) == 1
    assert server.bodies[0]["n"] == 4
    assert server.bodies[0]["messages"] == MESSAGES
    assert server.paths == ["/v1/chat/completions"]
    assert [g.text.split()[1] for g in result.generations] == [f"choice{i}" for i in range(4)]
    assert ep.native_n is True
    assert result.usage.requests == 1
    assert result.errors == []


async def test_n_equal_one_sends_no_n():
    server = n_choices_server()
    result = await server.endpoint().generate(MESSAGES, n=1)
    assert "n" not in server.bodies[0]
    assert len(result.generations) == 1


@pytest.mark.parametrize("message", ["'n' must be 1", "Only one completion choice is allowed", "n > 1 unsupported"])
async def test_server_rejecting_n_falls_back_to_concurrent_singles(message: str):
    server = single_choice_server(reject_n=message, delay=0.02)
    ep = server.endpoint(max_concurrency=2)
    result = await ep.generate(MESSAGES, n=5)
    assert len(result.generations) == 5
    assert ep.native_n is False
    # the rejected n=5 request, then 5 singles
    assert server.bodies[0]["n"] == 5
    assert len(server.bodies) == 6
    assert all("n" not in b for b in server.bodies[1:])
    assert server.max_in_flight <= 2
    assert server.max_in_flight == 2  # the singles really do run concurrently
    # usage counts the successful requests (the rejected one is an error answer, not usage)
    assert result.usage.requests == 5
    assert result.usage.completion_tokens == 5 * 3

    before = len(server.bodies)
    again = await ep.generate(MESSAGES, n=3)
    assert len(again.generations) == 3
    assert len(server.bodies) == before + 3  # no second probe with n
    assert all("n" not in b for b in server.bodies[before:])


async def test_unrelated_400_is_raised_not_treated_as_n_rejection():
    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        return httpx2.Response(400, json={"error": {"message": "Unknown model: foo", "type": "invalid_request_error"}})

    server = MockServer(respond)
    ep = server.endpoint()
    with pytest.raises(EndpointError) as info:
        await ep.generate(MESSAGES, n=3)
    assert info.value.status_code == 400
    assert len(server.bodies) == 1
    assert ep.native_n is None


def test_max_concurrency_holds_over_event_loops_in_several_threads():
    server = single_choice_server(delay=0.02)
    ep = server.endpoint(native_n=False, max_concurrency=2)
    results: list[int] = []

    def run() -> None:
        results.append(len(asyncio.run(ep.generate(MESSAGES, n=4)).generations))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [4, 4, 4] and len(server.bodies) == 12
    assert server.max_in_flight <= 2 and ep.limit.peak <= 2  # one limit, not one per loop


async def test_native_n_false_never_sends_n_and_respects_max_concurrency():
    server = single_choice_server(delay=0.02)
    ep = server.endpoint(native_n=False, max_concurrency=3)
    result = await ep.generate(MESSAGES, n=7)
    assert len(result.generations) == 7
    assert len(server.bodies) == 7
    assert all("n" not in b for b in server.bodies)
    assert 1 < server.max_in_flight <= 3


async def test_server_silently_returning_one_choice_gets_the_rest_by_singles():
    server = single_choice_server()
    ep = server.endpoint()
    result = await ep.generate(MESSAGES, n=3)
    assert len(result.generations) == 3
    assert len(server.bodies) == 3
    assert server.bodies[0]["n"] == 3
    assert all("n" not in b for b in server.bodies[1:])
    assert ep.native_n is False
    assert result.usage.requests == 3


async def test_seeded_singles_get_distinct_seeds():
    server = single_choice_server()
    ep = server.endpoint(native_n=False)
    result = await ep.generate(MESSAGES, n=4, params=SamplingParams(seed=42))
    seeds = [b["seed"] for b in server.bodies]
    assert len(set(seeds)) == 4
    assert min(seeds) == 42
    assert len({g.text.split()[1] for g in result.generations}) == 4


async def test_seeded_fill_in_singles_do_not_repeat_the_first_requests_seed():
    server = single_choice_server()
    ep = server.endpoint()
    await ep.generate(MESSAGES, n=3, params=SamplingParams(seed=7))
    seeds = [b["seed"] for b in server.bodies]
    assert seeds[0] == 7
    assert len(set(seeds)) == 3


async def test_unseeded_singles_send_no_seed():
    server = single_choice_server()
    await server.endpoint(native_n=False).generate(MESSAGES, n=2, params=SamplingParams(temperature=0.3))
    assert all("seed" not in b for b in server.bodies)
    assert all(b["temperature"] == 0.3 for b in server.bodies)


# -- usage ---------------------------------------------------------------------------------------------------


async def test_usage_is_counted_once_per_request_not_per_choice():
    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        texts = [f"sample {i} \\boxed{{4}}" for i in range(body.get("n", 1))]
        return httpx2.Response(200, json=chat_body(texts, usage={"prompt_tokens": 11, "completion_tokens": 40}))

    server = MockServer(respond)
    result = await server.endpoint().generate(MESSAGES, n=4)
    assert len(result.generations) == 4
    assert result.usage.requests == 1
    assert result.usage.completion_tokens == 40
    assert result.usage.prompt_tokens == 11


async def test_ledger_of_a_best_of_n_run_counts_usage_once_per_request():
    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        texts = [f"sample {i} \\boxed{{4}}" for i in range(body.get("n", 1))]
        return httpx2.Response(200, json=chat_body(texts, usage={"prompt_tokens": 11, "completion_tokens": 40}))

    server = MockServer(respond)
    graph = create_best_of_n(server.endpoint(), n=4, selection="majority").compile()
    out = await graph.ainvoke({"question": "What is 2 + 2?"})
    assert len(server.bodies) == 1
    assert out["answer"] == "4"
    assert out["usage"]["generations"] == 4
    assert out["usage"]["requests"] == 1
    assert out["usage"]["completion_tokens"] == 40


async def test_under_reported_usage_with_logprobs_is_the_sum_of_choice_lengths():
    lengths = [5, 7, 4]

    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        lps = [[token_lp(f"t{j}", -0.1 * (j + 1)) for j in range(k)] for k in lengths]
        texts = ["x" * k for k in lengths]
        # llama.cpp with n > 1 reports one choice's tokens
        return httpx2.Response(
            200, json=chat_body(texts, usage={"prompt_tokens": 9, "completion_tokens": 5}, logprobs=lps)
        )

    server = MockServer(respond)
    result = await server.endpoint().generate(MESSAGES, n=3, params=SamplingParams(logprobs=True))
    assert server.bodies[0]["logprobs"] is True
    assert [g.tokens for g in result.generations] == lengths
    assert result.usage.completion_tokens == sum(lengths)


async def test_correct_usage_with_logprobs_is_kept_when_larger():
    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        lps = [[token_lp("a", -0.5)], [token_lp("b", -0.5), token_lp("c", -0.5)]]
        return httpx2.Response(
            200, json=chat_body(["a", "bc"], usage={"prompt_tokens": 1, "completion_tokens": 50}, logprobs=lps)
        )

    result = await MockServer(respond).endpoint().generate(MESSAGES, n=2, params=SamplingParams(logprobs=True))
    assert result.usage.completion_tokens == 50


async def test_single_generation_carries_the_request_completion_tokens():
    server = single_choice_server()
    result = await server.endpoint().generate(MESSAGES, n=1)
    assert result.generations[0].completion_tokens == result.usage.completion_tokens == 3


# -- logprobs ------------------------------------------------------------------------------------------------


async def test_chat_logprob_parsing():
    content = [
        token_lp("The", -0.25, {"The": -0.25, "A": -1.5}),
        token_lp(" end", -0.75, {" end": -0.75, " stop": -2.0}),
    ]

    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        return httpx2.Response(200, json=chat_body(["The end"], logprobs=[content]))

    server = MockServer(respond)
    result = await server.endpoint().generate(MESSAGES, params=SamplingParams(logprobs=True, top_logprobs=2))
    assert server.bodies[0]["top_logprobs"] == 2
    gen = result.generations[0]
    assert gen.token_logprobs == (-0.25, -0.75)
    assert gen.top_logprobs == ({"The": -0.25, "A": -1.5}, {" end": -0.75, " stop": -2.0})
    assert gen.tokens == 2


async def test_logprobs_without_top_alternatives_leave_top_logprobs_none():
    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        return httpx2.Response(200, json=chat_body(["hi"], logprobs=[[token_lp("hi", -0.125)]]))

    server = MockServer(respond)
    result = await server.endpoint().generate(MESSAGES, params=SamplingParams(logprobs=True))
    assert "top_logprobs" not in server.bodies[0]
    assert result.generations[0].token_logprobs == (-0.125,)
    assert result.generations[0].top_logprobs is None


async def test_no_logprobs_requested_means_none_parsed():
    server = single_choice_server()
    result = await server.endpoint().generate(MESSAGES)
    assert "logprobs" not in server.bodies[0]
    assert result.generations[0].token_logprobs is None


# -- continuation of a prefix ------------------------------------------------------------------------------


async def test_prefill_sends_assistant_prefix_and_strips_a_repeated_prefix():
    prefix = "Step 1: 2 + 2 = 4."
    continuations = [" So \\boxed{4}.", " Hence \\boxed{4}."]

    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        # the first answer repeats the prefix (as some servers do), the second does not
        text = prefix + continuations[0] if index == 0 else continuations[1]
        return httpx2.Response(200, json=chat_body([text]))

    server = MockServer(respond)
    ep = server.endpoint(continuation="prefill", extra_body={"top_k": 20})
    first = await ep.generate(MESSAGES, prefix=prefix)
    second = await ep.generate(MESSAGES, prefix=prefix)
    body = server.bodies[0]
    assert body["messages"][-1] == {"role": "assistant", "content": prefix}
    assert body["messages"][:-1] == MESSAGES
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    assert body["top_k"] == 20
    assert first.generations[0].text == continuations[0]
    assert second.generations[0].text == continuations[1]
    assert ep.extra_body == {"top_k": 20}  # the endpoint's own extra_body is not mutated


async def test_prompt_continuation_sends_the_next_step_prompt():
    prefix = "Step 1: add the numbers."
    server = single_choice_server()
    await server.endpoint(continuation="prompt").generate(MESSAGES, prefix=prefix)
    body = server.bodies[0]
    assert body["messages"][:-1] == MESSAGES
    assert body["messages"][-1] == {"role": "user", "content": NEXT_STEP_PROMPT.format(prefix=prefix)}
    assert "continue_final_message" not in body
    assert all(m["role"] != "assistant" for m in body["messages"])


async def test_completions_continuation_posts_template_plus_prefix():
    prefix = "Step 1: 2 + 2"
    rendered: list[list[dict[str, str]]] = []

    def template(msgs: Any) -> str:
        rendered.append(list(msgs))
        return "".join(f"<|{m['role']}|>{m['content']}\n" for m in msgs) + "<|assistant|>"

    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        return httpx2.Response(
            200,
            json={
                "id": "c",
                "object": "text_completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "text": " = 4. \\boxed{4}",
                        "finish_reason": "stop",
                        "logprobs": {
                            "tokens": [" =", " 4"],
                            "token_logprobs": [-0.5, -0.25],
                            "top_logprobs": [{" =": -0.5, " is": -1.0}, {" 4": -0.25}],
                            "text_offset": [0, 2],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
            },
        )

    server = MockServer(respond)
    ep = server.endpoint(continuation="completions", chat_template=template)
    result = await ep.generate(MESSAGES, prefix=prefix, params=SamplingParams(logprobs=True, top_logprobs=2))
    assert server.paths == ["/v1/completions"]
    assert rendered == [MESSAGES]
    assert server.bodies[0]["prompt"] == template(MESSAGES) + prefix
    assert server.bodies[0]["logprobs"] == 2
    gen = result.generations[0]
    assert gen.text == " = 4. \\boxed{4}"
    assert gen.token_logprobs == (-0.5, -0.25)
    assert gen.top_logprobs == ({" =": -0.5, " is": -1.0}, {" 4": -0.25})
    assert result.usage.prompt_tokens == 12


# -- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [None, "", "   "])
def test_missing_model_is_a_configuration_error(model: str | None):
    with pytest.raises(ConfigurationError, match="model"):
        OpenAIEndpoint(BASE_URL, model)


def test_bad_max_concurrency_and_continuation_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        OpenAIEndpoint(BASE_URL, "m", max_concurrency=0)
    with pytest.raises(ConfigurationError, match="continuation"):
        OpenAIEndpoint(BASE_URL, "m", continuation="telepathy")  # type: ignore[arg-type]


async def test_n_below_one_is_a_configuration_error():
    server = single_choice_server()
    with pytest.raises(ConfigurationError, match="n"):
        await server.endpoint().generate(MESSAGES, n=0)
    assert server.bodies == []


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []},
        {"id": "x", "object": "chat.completion", "created": 0, "model": "m"},
    ],
)
async def test_response_without_choices_is_an_endpoint_error(body: dict[str, Any]):
    server = MockServer(lambda b, i: httpx2.Response(200, json=body))
    with pytest.raises(EndpointError, match="no choices"):
        await server.endpoint().generate(MESSAGES, n=1)


async def test_partial_failure_in_fan_out_keeps_the_successes():
    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        if index == 1:
            return httpx2.Response(500, json={"error": {"message": "boom"}})
        return httpx2.Response(200, json=chat_body([f"ok {index}"], usage={"prompt_tokens": 2, "completion_tokens": 3}))

    server = MockServer(respond)
    result = await server.endpoint(native_n=False, retry=NO_RETRY).generate(MESSAGES, n=4)
    assert len(server.bodies) == 4
    assert len(result.generations) == 3
    assert "ok 1" not in [g.text for g in result.generations]
    assert result.usage.failed_requests == 1
    assert result.usage.requests == 3
    assert len(result.errors) == 1
    assert "500" in result.errors[0]


async def test_fan_out_where_every_request_fails_raises():
    server = MockServer(lambda b, i: httpx2.Response(503, json={"error": {"message": "overloaded"}}))
    with pytest.raises(EndpointError) as info:
        await server.endpoint(native_n=False, retry=NO_RETRY).generate(MESSAGES, n=3)
    assert info.value.status_code == 503
    assert len(server.bodies) == 3


# -- retries through the SDK -----------------------------------------------------------------------------------


async def test_429_then_200_succeeds_with_two_requests():
    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        if index == 0:
            return httpx2.Response(429, headers={"retry-after": "0"}, json={"error": {"message": "slow down"}})
        return httpx2.Response(200, json=chat_body(["fine"]))

    server = MockServer(respond)
    result = await server.endpoint(retry=FAST_RETRY).generate(MESSAGES)
    assert len(server.bodies) == 2
    assert result.generations[0].text == "fine"


async def test_sdk_retries_are_off():
    server = MockServer(lambda b, i: httpx2.Response(500, json={"error": {"message": "internal"}}))
    with pytest.raises(EndpointError) as info:
        await server.endpoint(retry=NO_RETRY).generate(MESSAGES)
    assert len(server.bodies) == 1
    assert info.value.status_code == 500
    assert info.value.retryable is True


async def test_our_retries_stop_at_max_attempts():
    server = MockServer(lambda b, i: httpx2.Response(502, json={"error": {"message": "bad gateway"}}))
    with pytest.raises(EndpointError):
        await server.endpoint(retry=FAST_RETRY).generate(MESSAGES)
    assert len(server.bodies) == FAST_RETRY.max_attempts


async def test_400_is_not_retried_over_http():
    server = MockServer(lambda b, i: httpx2.Response(400, json={"error": {"message": "bad"}}))
    with pytest.raises(EndpointError) as info:
        await server.endpoint(retry=FAST_RETRY).generate(MESSAGES)
    assert len(server.bodies) == 1
    assert info.value.status_code == 400


def test_one_endpoint_serves_several_event_loops():
    server = single_choice_server()
    ep = server.endpoint(native_n=False, max_concurrency=2)
    first = asyncio.run(ep.generate(MESSAGES, n=2))
    second = asyncio.run(ep.generate(MESSAGES, n=2))
    assert len(first.generations) == len(second.generations) == 2
    assert len(server.bodies) == 4


# -- servers that under-count n > 1 usage are detected without flags -----------------------------------------


@dataclass
class LlamaCppLike:
    """Honours ``n`` and ``max_tokens`` but reports the first choice's completion tokens only, as llama.cpp does.

    ``served`` counts the tokens it really generated, the number a ledger must match.
    """

    honest: bool = False
    served: int = 0

    @staticmethod
    def natural(index: int, choice: int) -> int:
        return 5 + (index + choice) % 4

    def respond(self, body: dict[str, Any], index: int) -> httpx2.Response:
        cap = body.get("max_tokens") or 10**6
        lengths = [min(self.natural(index, i), cap) for i in range(body.get("n", 1))]
        self.served += sum(lengths)
        texts = [" ".join(["tok"] * (k - 1)) + f" \\boxed{{{i % 2}}}" for i, k in enumerate(lengths)]
        reported = sum(lengths) if self.honest else lengths[0]
        out = chat_body(texts, usage={"prompt_tokens": 9, "completion_tokens": reported})
        for choice, k in zip(out["choices"], lengths, strict=True):
            choice["finish_reason"] = "length" if k == cap else "stop"
        return httpx2.Response(200, json=out)

    def server(self, **kw: Any) -> MockServer:
        return MockServer(self.respond, **kw)


def is_probe(body: dict[str, Any]) -> bool:
    return body["messages"] == list(PROBE)


async def test_an_under_counting_server_is_found_out_by_a_probe_and_then_served_by_singles():
    forget_verdicts()
    fake = LlamaCppLike()
    server = fake.server()
    ep = server.endpoint()
    first = await ep.generate(MESSAGES, n=4)
    probe, *rest = server.bodies
    assert is_probe(probe) and probe["n"] == 2 and probe["max_tokens"] == PROBE_TOKENS
    assert len(rest) == 4 and all("n" not in b for b in rest)
    assert ep.native_n is False
    assert first.usage.requests == 5  # the probe is charged to the call that needed it
    assert (
        first.usage.completion_tokens == fake.served == 2 * PROBE_TOKENS + sum(fake.natural(i, 0) for i in range(1, 5))
    )

    before = fake.served
    second = await ep.generate(MESSAGES, n=4)
    assert len(server.bodies) == 9
    assert not any(is_probe(b) or "n" in b for b in server.bodies[5:])
    assert (second.usage.requests, second.usage.completion_tokens) == (4, fake.served - before)


async def test_the_verdict_is_remembered_per_server_across_endpoints():
    forget_verdicts()
    fake = LlamaCppLike()
    await fake.server().endpoint().generate(MESSAGES, n=2)
    server = fake.server()
    result = await server.endpoint().generate(MESSAGES, n=2)
    assert len(server.bodies) == 2
    assert not any(is_probe(b) or "n" in b for b in server.bodies)
    assert result.usage.completion_tokens == sum(fake.natural(i, 0) for i in range(2))


async def test_the_verdict_is_per_model_behind_one_url():
    forget_verdicts()
    await LlamaCppLike().server().endpoint(model="a").generate(MESSAGES, n=2)  # under-counts: a is judged False
    server = LlamaCppLike(honest=True).server()
    other = server.endpoint(model="b")
    await other.generate(MESSAGES, n=2)
    assert is_probe(server.bodies[0]) and other.native_n is True  # b is judged on its own, not by a's verdict
    assert n_usage_verdict(BASE_URL.removesuffix("/v1"), "a") is False
    assert n_usage_verdict(BASE_URL.removesuffix("/v1"), "b") is True
    record_n_usage_verdict(BASE_URL.removesuffix("/v1"), True)  # a verdict for the whole server
    assert n_usage_verdict(BASE_URL.removesuffix("/v1"), "c") is True
    assert n_usage_verdict(BASE_URL.removesuffix("/v1"), "a") is False  # a model's own verdict wins


async def test_a_server_that_counts_every_choice_keeps_n():
    forget_verdicts()
    fake = LlamaCppLike(honest=True)
    server = fake.server()
    ep = server.endpoint()
    first = await ep.generate(MESSAGES, n=3)
    second = await ep.generate(MESSAGES, n=3)
    assert ep.native_n is True
    assert [is_probe(b) for b in server.bodies] == [True, False, False]
    assert [b.get("n") for b in server.bodies] == [2, 3, 3]
    assert first.usage.requests == 2 and second.usage.requests == 1
    assert first.usage.completion_tokens + second.usage.completion_tokens == fake.served


async def test_a_forced_native_n_and_single_samples_send_no_probe():
    forget_verdicts()
    server = LlamaCppLike().server()
    await server.endpoint(native_n=True).generate(MESSAGES, n=2)
    await server.endpoint().generate(MESSAGES, n=1)
    await server.endpoint(native_n=False).generate(MESSAGES, n=2)
    assert not any(is_probe(b) for b in server.bodies)


async def test_a_call_under_a_token_budget_sends_no_probe_and_counts_exactly():
    """A token budget (``retry_lost=False``) plans every token: the call fans out instead of probing first."""
    forget_verdicts()
    fake = LlamaCppLike()
    server = fake.server()
    ep = server.endpoint()
    held = await ep.generate(MESSAGES, n=3, params=SamplingParams(max_tokens=6, retry_lost=False))
    assert not any(is_probe(b) or "n" in b for b in server.bodies) and len(server.bodies) == 3
    assert held.usage.completion_tokens == fake.served <= 3 * 6
    assert ep.native_n is None  # not judged yet: the next call without a budget probes
    await ep.generate(MESSAGES, n=2)
    assert is_probe(server.bodies[3]) and ep.native_n is False


async def test_concurrent_first_calls_send_one_probe():
    forget_verdicts()
    fake = LlamaCppLike()
    server = fake.server(delay=0.01)
    ep = server.endpoint()
    results = await asyncio.gather(*(ep.generate(MESSAGES, n=2) for _ in range(3)))
    assert sum(is_probe(b) for b in server.bodies) == 1
    assert sum(r.usage.completion_tokens for r in results) == fake.served


async def test_a_probe_rejected_for_n_means_singles_without_a_failed_request():
    forget_verdicts()
    server = single_choice_server(reject_n="'n' must be 1")
    result = await server.endpoint().generate(MESSAGES, n=3)
    assert [is_probe(b) for b in server.bodies] == [True, False, False, False]
    assert (result.usage.requests, result.usage.failed_requests) == (3, 0)


async def test_a_probe_that_fails_otherwise_leaves_the_request_to_go_on():
    forget_verdicts()

    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        if is_probe(body):
            return httpx2.Response(404, json={"error": {"message": "no chat here"}})
        return httpx2.Response(200, json=chat_body(["a", "b"], usage={"prompt_tokens": 1, "completion_tokens": 2}))

    server = MockServer(respond)
    ep = server.endpoint(retry=NO_RETRY)
    assert len((await ep.generate(MESSAGES, n=2)).generations) == 2
    assert len((await ep.generate(MESSAGES, n=2)).generations) == 2
    assert [is_probe(b) for b in server.bodies] == [True, False, False]  # tried once per endpoint


async def test_the_ledger_of_a_run_equals_what_the_server_generated_without_flags():
    forget_verdicts()
    fake = LlamaCppLike()
    graph = create_best_of_n(fake.server().endpoint(), n=4, selection="majority").compile()
    first = await graph.ainvoke({"question": "What is 2 + 2?"})
    assert first["usage"]["completion_tokens"] == fake.served
    before = fake.served
    second = await graph.ainvoke({"question": "What is 2 + 2?"})
    assert second["usage"]["completion_tokens"] == fake.served - before
    assert second["usage"]["requests"] == 4


# -- max_tokens: the endpoint's default unless the run says otherwise ----------------------------------------


async def test_max_tokens_defaults_to_the_endpoints_own():
    server = single_choice_server()
    await server.endpoint().generate(MESSAGES)
    await server.endpoint().generate(MESSAGES, params=SamplingParams(temperature=0.2))
    await server.endpoint(max_tokens=100).generate(MESSAGES)
    await server.endpoint(max_tokens=None).generate(MESSAGES)
    await server.endpoint().generate(MESSAGES, params=SamplingParams(max_tokens=64))
    assert [b.get("max_tokens") for b in server.bodies] == [512, 512, 100, None, 64]


async def test_params_fill_what_they_leave_unset_from_default_params():
    server = single_choice_server()
    ep = server.endpoint(default_params=SamplingParams(temperature=0.1, seed=5, max_tokens=30))
    await ep.generate(MESSAGES, params=SamplingParams(max_tokens=9, temperature=0.9))
    body = server.bodies[0]
    assert (body["temperature"], body["seed"], body["max_tokens"]) == (0.9, 5, 9)


@pytest.mark.parametrize(("kwargs", "message"), [({"max_tokens": 0}, "max_tokens"), ({"timeout": 0}, "timeout")])
def test_bad_max_tokens_and_timeout_are_configuration_errors(kwargs: dict[str, Any], message: str):
    with pytest.raises(ConfigurationError, match=message):
        OpenAIEndpoint(BASE_URL, "m", **kwargs)


async def test_the_concurrency_limit_covers_native_n_requests_too():
    server = n_choices_server(delay=0.02)
    ep = server.endpoint(native_n=True, max_concurrency=2)
    results = await asyncio.gather(*(ep.generate(MESSAGES, n=2) for _ in range(5)))
    assert [len(r.generations) for r in results] == [2] * 5
    assert server.max_in_flight == 2


@pytest.mark.parametrize(("budget", "expected"), [(None, 512), (Budget(tokens=100), 25)])
async def test_a_token_budget_still_caps_max_tokens_when_the_factory_sets_none(budget: Budget | None, expected: int):
    server = n_choices_server()
    graph = create_best_of_n(server.endpoint(), n=4, selection="majority", budget=budget).compile()
    await graph.ainvoke({"question": "What is 2 + 2?"})
    assert [b["max_tokens"] for b in server.bodies] == [expected]
