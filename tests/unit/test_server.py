"""``ttc serve`` under httpx's ASGI transport with fake upstreams (ScriptedEndpoint, MockTransport): no network."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ttc_graph.endpoints.base import ChatMessage, GenerationResult, SamplingParams
from ttc_graph.endpoints.retry import RetryConfig
from ttc_graph.errors import EndpointError
from ttc_graph.server import Limits, ServeConfig, Upstream, create_app, load_presets
from ttc_graph.testing import FakeCall, ScriptedEndpoint

MODEL = "m1"
KEY = "sk-test-0123456789"
UPSTREAM_KEY = "sk-upstream-secret-42"
MAJORITY = "best_of_n_majority"  # the shipped preset: best-of-4, majority vote, max_tokens 512
FAST_RETRY = RetryConfig(max_attempts=2, initial_backoff=0.0, max_backoff=0.0, jitter=0.0)
PRESETS = load_presets()


@dataclass
class FakeUpstream:
    """What the pass-through sends: every request it saw, answered by ``respond``."""

    respond: Callable[[httpx.Request], httpx.Response] | None = None
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.respond is not None:
            return self.respond(request)
        body = json.loads(request.content)
        return httpx.Response(
            200,
            json={
                "id": "up-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "raw"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            },
        )


@dataclass
class Harness:
    app: Any
    client: httpx.AsyncClient
    policy: Any
    upstream: FakeUpstream

    @property
    def upstream_requests(self) -> int:
        calls = getattr(self.policy, "calls", [])
        return (len(calls) if isinstance(calls, list) else int(calls)) + len(self.upstream.requests)


def make(
    policy: Any = None,
    *,
    keys: Sequence[str] = (),
    limits: Limits | None = None,
    upstream: FakeUpstream | None = None,
) -> Harness:
    policy = policy or ScriptedEndpoint(
        ["So 2 + 2 = \\boxed{4}.", "It is \\boxed{5}.", "Thus \\boxed{4}."], native_n=False
    )
    fake = upstream or FakeUpstream()
    up = Upstream(
        "http://upstream.test/v1",
        MODEL,
        api_key=UPSTREAM_KEY,
        models=[MODEL],
        endpoint_factory=lambda model: policy,
        transport=httpx.MockTransport(fake.handler),
        retry=FAST_RETRY,
    )
    app = create_app(ServeConfig(PRESETS, tuple(keys), limits or Limits()), up)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ttc.test")
    return Harness(app, client, policy, fake)


def chat(model: str = f"{MAJORITY}/{MODEL}", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "What is 2 + 2?"}], **extra}


def sse_data(text: str) -> list[Any]:
    out = []
    for line in text.splitlines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


# -- the happy paths ------------------------------------------------------------------------------------------


async def test_health_is_open_and_models_list_presets() -> None:
    h = make(keys=[KEY])
    health = await h.client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    models = await h.client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    ids = [m["id"] for m in models.json()["data"]]
    assert f"{MAJORITY}/{MODEL}" in ids and MODEL in ids
    assert {p for p in PRESETS} <= {i.split("/")[0] for i in ids}


async def test_a_preset_answers_with_the_runs_usage() -> None:
    h = make()
    resp = await h.client.post("/v1/chat/completions", json=chat())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion" and body["model"] == f"{MAJORITY}/{MODEL}"
    assert body["choices"][0]["message"]["content"] in ("So 2 + 2 = \\boxed{4}.", "Thus \\boxed{4}.")
    assert body["ttc"]["answer"] == "4" and body["ttc"]["preset"] == MAJORITY
    # ScriptedEndpoint counts words: the run's usage is the sum over the 4 requests it served.
    calls = h.policy.calls
    assert len(calls) == 4
    prompt = sum(sum(len(m["content"].split()) for m in c.messages) for c in calls)
    usage = body["usage"]
    assert usage["prompt_tokens"] == prompt
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["ttc"]["generations"] == 4 and usage["ttc"]["requests"] == 4
    assert usage["ttc"]["by_kind"]["propose"]["completion_tokens"] == usage["completion_tokens"]


async def scrape(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` as {(sample name, sorted labels): value}."""
    resp = await h.client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


async def test_metrics_count_requests_latency_and_the_spend_the_responses_reported() -> None:
    h = make(keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    answers = [await h.client.post("/v1/chat/completions", json=chat(), headers=auth) for _ in range(2)]
    streamed = await h.client.post("/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage":
                                   True}), headers=auth)  # fmt: skip
    plain = await h.client.post("/v1/chat/completions", json=chat(MODEL), headers=auth)
    refused = await h.client.post("/v1/chat/completions", json={"model": "m1"}, headers=auth)
    unauthorized = await h.client.post("/v1/chat/completions", json=chat())
    assert [r.status_code for r in (*answers, streamed, plain, refused, unauthorized)] == [200] * 4 + [400, 401]
    usages = [r.json()["usage"] for r in answers] + [sse_data(streamed.text)[-2]["usage"]]
    m = await scrape(h)
    preset = (("preset", MAJORITY), ("status", "200"), ("strategy", "best_of_n"))
    assert m[("ttc_requests_total", preset)] == 3
    assert m[("ttc_requests_total", (("preset", "passthrough"), ("status", "200"), ("strategy", "none")))] == 1
    assert m[("ttc_requests_total", (("preset", "none"), ("status", "400"), ("strategy", "none")))] == 1
    assert m[("ttc_requests_total", (("preset", "none"), ("status", "401"), ("strategy", "none")))] == 1
    assert m[("ttc_request_seconds_count", (("preset", MAJORITY),))] == 3
    assert m[("ttc_time_to_first_event_seconds_count", (("preset", MAJORITY),))] == 1
    propose = (("node", "propose"), ("preset", MAJORITY))
    for kind in ("prompt", "completion"):
        counted = m[("ttc_tokens_total", (("node", "propose"), ("preset", MAJORITY), ("type", kind)))]
        assert counted == sum(u[f"{kind}_tokens"] for u in usages) > 0
    assert m[("ttc_upstream_requests_total", propose)] == sum(u["ttc"]["requests"] for u in usages) == 12
    assert m[("ttc_generations_total", propose)] == 12
    assert m[("ttc_upstream_failed_requests_total", propose)] == 0
    assert m[("ttc_runs_in_flight", ())] == 0
    assert KEY not in (await h.client.get("/metrics")).text and "2 + 2" not in (await h.client.get("/metrics")).text


async def test_request_settings_reach_the_policy() -> None:
    h = make()
    body = chat(
        temperature=0.3,
        max_tokens=64,
        seed=5,
        ttc={"n": 2},
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}],
    )
    resp = await h.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    calls = h.policy.calls
    assert len(calls) == 2
    assert calls[0].messages[0] == {"role": "system", "content": "Be brief."}
    params = calls[0].params
    assert params.temperature == 0.3 and params.max_tokens == 64 and params.seed is not None


async def test_streaming_sends_progress_then_the_solution_then_usage() -> None:
    h = make()
    resp = await h.client.post("/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse_data(resp.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    kinds = []
    for c in chunks:
        delta = c["choices"][0]["delta"] if c["choices"] else {}
        kinds.append("reasoning" if "reasoning_content" in delta else "content" if delta.get("content") else "other")
    first_content = kinds.index("content")
    assert "reasoning" in kinds[:first_content]
    rounds = [c["ttc"] for c in chunks if c.get("ttc", {}).get("event") == "round"]
    assert rounds and rounds[-1]["leading_answer"] == "4" and rounds[-1]["drawn"] == 4
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    final = chunks[-1]
    assert final["choices"] == [] and final["usage"]["ttc"]["generations"] == 4
    assert final["ttc"]["answer"] == "4"


async def test_streaming_without_include_usage_sends_no_usage() -> None:
    h = make()
    resp = await h.client.post("/v1/chat/completions", json=chat(stream=True))
    chunks = [c for c in sse_data(resp.text) if c != "[DONE]"]
    assert all("usage" not in c for c in chunks)


async def test_no_extractable_answer_falls_back_to_a_sample() -> None:
    h = make(ScriptedEndpoint(["a poem without numbers"], native_n=False))
    resp = await h.client.post("/v1/chat/completions", json=chat())
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "a poem without numbers"
    assert resp.json()["ttc"]["fallback"] is True


async def test_plain_model_passes_through_unchanged() -> None:
    h = make()
    body = chat(MODEL, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}], top_p=0.5)
    resp = await h.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "raw"
    sent = h.upstream.requests[0]
    assert json.loads(sent.content) == body
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert h.policy.calls == []


async def test_pass_through_streams_the_upstreams_events() -> None:
    stream = b'data: {"choices": [{"delta": {"content": "a"}}]}\n\ndata: [DONE]\n\n'
    fake = FakeUpstream(lambda r: httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"}))
    h = make(upstream=fake)
    resp = await h.client.post("/v1/chat/completions", json=chat(MODEL, stream=True))
    assert sse_data(resp.text) == [{"choices": [{"delta": {"content": "a"}}]}, "[DONE]"]


async def test_client_key_is_not_sent_upstream_and_upstream_key_never_shown() -> None:
    fake = FakeUpstream(lambda r: httpx.Response(400, json={"error": {"message": f"bad key {UPSTREAM_KEY}"}}))
    h = make(keys=[KEY], upstream=fake)
    resp = await h.client.post("/v1/chat/completions", json=chat(MODEL), headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 400
    assert UPSTREAM_KEY not in resp.text and KEY not in resp.text
    assert KEY not in fake.requests[0].headers["authorization"]


# -- bad input: the right status, an OpenAI-shaped error naming the problem, no upstream request ---------------


BIG = "x" * 2_000


@pytest.mark.parametrize(
    ("body", "status", "param", "needle"),
    [
        (b'{"model": "m1", "messages": [', 400, None, "not valid JSON"),
        (b"[1, 2]", 400, None, "JSON object"),
        (chat("nope/m1"), 404, "model", "nope"),
        (chat(f"{MAJORITY}/other-model"), 404, "model", "other-model"),
        (chat(ttc={"n": "many"}), 400, "ttc.n", "integer"),
        (chat(ttc={"selection": "loudest"}), 400, "ttc.selection", "selection"),
        (chat(ttc=[1]), 400, "ttc", "object"),
        (chat(ttc={"policy": {"kind": "openai"}}), 400, "ttc.policy", "cannot be overridden"),
        (chat(ttc={"verifier": {"kind": "python", "target": "os:system"}}), 400, "ttc.verifier.kind", "python"),
        (chat(ttc={"budget": {"tokens": 10**9}}), 400, "ttc.budget.tokens", "cap"),
        (chat(ttc={"budget": {"seconds": 10**6}}), 400, "ttc.budget.seconds", "cap"),
        (chat(ttc={"n": 1000}), 400, "ttc.n", "cap"),
        (chat(max_tokens=100_000), 400, "max_tokens", "cap"),
        (chat(tools=[{"type": "function"}]), 400, "tools", "tools"),
        (chat(tool_choice="auto"), 400, "tool_choice", "only allowed when tools"),
        (
            chat(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="often"),
            400,
            "tool_choice",
            "often",
        ),
        (
            chat(messages=[{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]),
            400,
            "messages.1.tool_call_id",
            "name its call",
        ),
        (chat(n=2), 400, "n", "one choice"),
        (chat(logprobs=True), 400, "logprobs", "logprobs"),
        (chat(temperature="hot"), 400, "temperature", "number"),
        (chat("beam_search_judge/m1", max_tokens=64), 400, "max_tokens", "step"),
        ({"model": "m1"}, 400, "messages", "required"),
        (chat(ttc={"n": 2}, model=MODEL), 400, "ttc", "preset"),
        (chat(messages=[{"role": "user", "content": BIG}]), 413, None, "limit"),
    ],
)
async def test_bad_input_is_refused_before_any_upstream_request(
    body: Any, status: int, param: str | None, needle: str
) -> None:
    h = make(limits=Limits(body_bytes=1_000))
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await h.client.post("/v1/chat/completions", content=content)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert needle.lower() in error["message"].lower()
    assert h.upstream_requests == 0


@pytest.mark.parametrize(
    ("verifier", "param"),
    [
        ({"kind": "llm_judge", "samples": 100_000}, "ttc.verifier.samples"),
        ({"kind": "program", "programs": 17}, "ttc.verifier.programs"),
        ({"kind": "combined", "parts": [{"kind": "confidence"}, {"kind": "llm_judge", "samples": 50}]},
         "ttc.verifier.parts.1.samples"),
    ],
)  # fmt: skip
async def test_a_verifier_that_would_fan_out_past_the_cap_is_refused_before_any_request(
    verifier: dict[str, Any], param: str
) -> None:
    h = make()
    body = chat(ttc={"n": 2, "selection": "weighted", "verifier": verifier})
    resp = await h.client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["code"] == "cap_exceeded" and "cap of 16" in error["message"]
    assert h.upstream_requests == 0
    ok = chat(ttc={"n": 2, "selection": "weighted", "verifier": {"kind": "llm_judge", "samples": 16}})
    assert (await h.client.post("/v1/chat/completions", json=ok)).status_code != 400  # at the cap is allowed


async def test_a_body_over_the_limit_without_content_length_is_refused() -> None:
    h = make(limits=Limits(body_bytes=1_000))

    async def parts() -> Any:
        for _ in range(10):
            yield b" " * 200

    resp = await h.client.post("/v1/chat/completions", content=parts())
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("header", "code"), [(None, "missing_api_key"), ("Bearer wrong-key-123", "invalid_api_key"), ("Basic x", None)]
)
async def test_missing_or_wrong_key_is_a_401(header: str | None, code: str | None) -> None:
    h = make(keys=[KEY, "sk-second-key-999"])
    headers = {"Authorization": header} if header else {}
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
        resp = await h.client.request(method, path, json=chat(), headers=headers)
        assert resp.status_code == 401
        error = resp.json()["error"]
        assert error["type"] == "invalid_request_error" and (code is None or error["code"] == code)
        assert KEY not in resp.text and "wrong-key-123" not in resp.text
    assert h.upstream_requests == 0


async def test_any_configured_key_is_accepted() -> None:
    h = make(keys=[KEY, "sk-second-key-999"])
    resp = await h.client.post(
        "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer sk-second-key-999"}
    )
    assert resp.status_code == 200


async def test_unknown_route_is_an_openai_shaped_404() -> None:
    resp = await make().client.get("/v1/nothing")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


# -- limits and failures ----------------------------------------------------------------------------------------


async def test_past_the_concurrent_run_limit_is_a_429_with_retry_after() -> None:
    slow = ScriptedEndpoint(["\\boxed{4}"], native_n=False, delay=0.5)
    h = make(slow, limits=Limits(concurrent_runs=1, retry_after=3))
    first = asyncio.create_task(h.client.post("/v1/chat/completions", json=chat()))
    await asyncio.sleep(0.1)
    second = await h.client.post("/v1/chat/completions", json=chat())
    assert second.status_code == 429 and second.headers["retry-after"] == "3"
    assert second.json()["error"]["type"] == "rate_limit_error"
    assert (await first).status_code == 200
    third = await h.client.post("/v1/chat/completions", json=chat())
    assert third.status_code == 200  # the slot came back


@dataclass
class FailingEndpoint:
    """Every request fails for good (after the endpoint's own retries) with ``error``."""

    error: EndpointError
    calls: int = 0
    native_n: bool = False

    @property
    def name(self) -> str:
        return "failing"

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        self.calls += 1
        raise self.error


def _timeout() -> EndpointError:
    try:
        raise TimeoutError("read timed out")
    except TimeoutError as cause:
        error = EndpointError("chat completion failed: TimeoutError", retryable=True)
        error.__cause__ = cause
        return error


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (EndpointError("HTTP 500: boom", status_code=500), 502, "upstream_error"),
        (EndpointError("HTTP 503: busy", status_code=503), 503, "upstream_unavailable"),
        (EndpointError("HTTP 401: Incorrect API key sk-up...", status_code=401), 502, "upstream_auth"),
        (_timeout(), 504, "upstream_timeout"),
    ],
)
async def test_an_upstream_that_keeps_failing_is_a_5xx(error: EndpointError, status: int, code: str) -> None:
    h = make(FailingEndpoint(error))
    resp = await h.client.post("/v1/chat/completions", json=chat())
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert "sk-up" not in resp.text


async def test_a_failing_upstream_in_a_stream_is_an_error_event() -> None:
    h = make(FailingEndpoint(EndpointError("HTTP 500: boom", status_code=500)))
    resp = await h.client.post("/v1/chat/completions", json=chat(stream=True))
    events = sse_data(resp.text)
    assert events[-1]["error"]["code"] == "upstream_error"


@pytest.mark.parametrize(("upstream_status", "status"), [(503, 503), (500, 502), (404, 404)])
async def test_pass_through_failures(upstream_status: int, status: int) -> None:
    fake = FakeUpstream(lambda r: httpx.Response(upstream_status, json={"error": {"message": "upstream says no"}}))
    h = make(upstream=fake)
    resp = await h.client.post("/v1/chat/completions", json=chat(MODEL))
    assert resp.status_code == status
    assert "error" in resp.json()
    retried = upstream_status >= 500
    assert len(fake.requests) == (FAST_RETRY.max_attempts if retried else 1)


async def test_pass_through_timeout_is_a_504() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    h = make(upstream=FakeUpstream(hang))
    resp = await h.client.post("/v1/chat/completions", json=chat(MODEL))
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"


async def test_a_client_that_goes_away_cancels_the_run() -> None:
    """A non-streamed request whose client disconnects: the run and its upstream requests are cancelled."""
    all_started = asyncio.Event()
    cancelled: list[FakeCall] = []

    class Hanging(ScriptedEndpoint):
        """Every request waits for ever: only a cancellation ends it."""

        async def generate(
            self,
            messages: Sequence[ChatMessage],
            *,
            n: int = 1,
            params: SamplingParams | None = None,
            prefix: str | None = None,
        ) -> GenerationResult:
            call = FakeCall(list(messages), n, params, prefix)
            self.calls.append(call)
            if len(self.calls) == 4:
                all_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(call)
                raise
            raise AssertionError("unreachable")

    slow = Hanging(["\\boxed{4}"], native_n=False)
    h = make(slow)
    app = h.app
    body = json.dumps(chat()).encode()
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        if received == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await all_started.wait()  # the client goes away once every request of the run is in flight
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("ttc.test", 80),
    }  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), 60)  # a hang guard: only the cancellation can end the run
    assert len(slow.calls) == 4  # every request started
    assert {id(c) for c in cancelled} == {id(c) for c in slow.calls}  # and each was cancelled, none left running
    assert app.state.ttc.active == 0


# -- tools on a preset: the voted action, whole or streamed -----------------------------------------------------

WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
PARIS = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
LONDON = '```json\n{"name": "get_weather", "arguments": {"city": "London"}}\n```'


def tool_chat(**extra: Any) -> dict[str, Any]:
    return chat(messages=[{"role": "user", "content": "Weather in Paris?"}], tools=WEATHER, **extra)


async def test_a_preset_with_tools_answers_with_the_voted_tool_calls() -> None:
    h = make(ScriptedEndpoint([PARIS, LONDON, PARIS, PARIS], native_n=False))
    resp = await h.client.post("/v1/chat/completions", json=tool_chat(tool_choice="auto"))
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert choice["message"]["content"] is None
    sent = h.policy.calls[0].params
    assert sent.tools and sent.tools[0]["function"]["name"] == "get_weather" and sent.tool_choice == "auto"


async def test_a_preset_streams_the_voted_tool_calls_as_the_openai_api_does() -> None:
    h = make(ScriptedEndpoint([PARIS, PARIS, LONDON, PARIS], native_n=False))
    resp = await h.client.post("/v1/chat/completions", json=tool_chat(stream=True))
    chunks = [c for c in sse_data(resp.text) if c != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    parts = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert parts[0]["function"]["name"] == "get_weather" and parts[0]["id"]
    assert json.loads("".join(p["function"].get("arguments", "") for p in parts)) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_calls_and_results_of_the_conversation_reach_the_model() -> None:
    h = make(ScriptedEndpoint(["It is sunny in Paris, 21 degrees."], native_n=False))
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21"},
    ]  # fmt: skip
    resp = await h.client.post("/v1/chat/completions", json=chat(messages=messages, tools=WEATHER))
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "It is sunny in Paris, 21 degrees."
    sent = h.policy.calls[0].messages
    assert [m["role"] for m in sent[-3:]] == ["user", "assistant", "tool"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[-1] == {"role": "tool", "content": "sunny, 21", "tool_call_id": "c1"}
