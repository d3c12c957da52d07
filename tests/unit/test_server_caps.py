"""``ttc serve`` keeps every run within its caps, verifier requests included, and stops at an upstream's
bad-request answer: fake upstreams count every request that would reach the model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from tests.unit.test_endpoints_openai import MESSAGES, MockServer
from tests.unit.test_server import MAJORITY, MODEL, chat, make
from ttc_graph.endpoints.base import ChatMessage, GenerationResult, SamplingParams
from ttc_graph.errors import EndpointError
from ttc_graph.server import Limits
from ttc_graph.server.allowance import RunAllowance, RunCapExceeded, open_allowance
from ttc_graph.testing import ScriptedEndpoint
from ttc_graph.usage import RequestUsage

CONTEXT_ERROR = "the request exceeds the available context size, try increasing it"


@dataclass
class RefusingUpstream:
    """An upstream that answers every request with llama.cpp's HTTP 400 for a prompt over its context."""

    native_n: bool = False
    calls: int = 0
    name: str = "refusing"
    max_concurrency: int = 8
    continuation: str = "prompt"
    seen: list[int] = field(default_factory=list)

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        self.calls += 1
        await asyncio.sleep(0)
        raise EndpointError(
            f"chat completion failed: HTTP 400: {CONTEXT_ERROR}",
            status_code=400,
            usage=RequestUsage(failed_requests=1),
        )


@pytest.mark.parametrize("n", [1, 4, 16])
async def test_an_over_context_prompt_is_a_400_after_one_upstream_request(n: int) -> None:
    upstream = RefusingUpstream()
    h = make(upstream)
    resp = await h.client.post("/v1/chat/completions", json=chat(ttc={"n": n}))
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert CONTEXT_ERROR in error["message"]
    assert error["code"] == "context_length_exceeded"
    assert upstream.calls == 1  # no retry, no further sample


@pytest.mark.parametrize(
    "content",
    [
        b'{"model": "%s", "messages": [{"role": "user", "content": "bad \\ud800 text"}]}' % MAJORITY.encode(),
        b'{"model": "%s", "messages": [{"role": "user", "content": "bad \\udfff"}]}' % MODEL.encode(),
    ],
    ids=["preset", "pass-through"],
)
async def test_text_that_is_not_unicode_is_refused_before_any_upstream_request(content: bytes) -> None:
    h = make()
    resp = await h.client.post("/v1/chat/completions", content=content)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_encoding" and error["param"] == "messages.0.content"
    assert h.upstream_requests == 0


async def test_a_verifier_that_would_send_more_requests_than_a_run_may_is_refused_up_front() -> None:
    h = make(limits=Limits(run_requests=100))
    judge = {"kind": "llm_judge", "mode": "outcome", "samples": 16}
    resp = await h.client.post(
        "/v1/chat/completions", json=chat(ttc={"n": 8, "selection": "weighted", "verifier": judge})
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == "ttc.verifier" and error["code"] == "cap_exceeded" and "cap of 100" in error["message"]
    assert h.upstream_requests == 0


async def test_a_hundred_thousand_verifier_samples_are_refused_before_any_request() -> None:
    h = make()
    judge = {"kind": "llm_judge", "mode": "outcome", "samples": 100_000}
    resp = await h.client.post("/v1/chat/completions", json=chat(ttc={"selection": "weighted", "verifier": judge}))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "cap_exceeded"
    assert h.upstream_requests == 0


async def test_a_process_judge_stops_at_the_runs_request_cap() -> None:
    # a process judge judges every step: its worst case shows only at run time, where the run's allowance holds it
    h = make(limits=Limits(run_requests=6))
    judge = {"kind": "llm_judge", "mode": "process", "samples": 2}
    resp = await h.client.post(
        "/v1/chat/completions", json=chat(ttc={"n": 4, "selection": "weighted", "verifier": judge})
    )
    assert resp.status_code == 200, resp.text
    assert h.upstream_requests <= 6
    assert resp.json()["usage"]["ttc"]["requests"] <= 6


async def test_the_allowance_counts_tokens_of_every_kind_and_refuses_past_its_caps() -> None:
    allowance = RunAllowance(max_requests=3, max_tokens=10)
    await allowance.admit(1)
    allowance.settle(RequestUsage(1, 5, 6))
    await allowance.admit(2)
    with pytest.raises(RunCapExceeded, match="cap of 3"):
        await allowance.admit(1)
    allowance = RunAllowance(max_requests=9, max_tokens=10)
    await allowance.admit(1)
    allowance.settle(RequestUsage(1, 0, 4, unconfirmed_tokens=6))
    with pytest.raises(RunCapExceeded, match="10 completion tokens"):
        await allowance.admit(1)


async def test_after_a_bad_request_answer_every_later_request_of_the_run_fails_unsent() -> None:
    allowance = RunAllowance(max_requests=9, max_tokens=100)
    await allowance.admit(1)
    refusal = EndpointError("HTTP 400: bad", status_code=400)
    allowance.settle(None, refusal)
    with pytest.raises(EndpointError) as caught:
        await allowance.admit(1)
    assert caught.value is refusal and allowance.requests == 1


@pytest.mark.parametrize(
    ("field", "value"), [("run_requests", 0), ("run_requests", True), ("seconds", float("inf")), ("tokens", 1.5)]
)
def test_limits_are_finite_numbers_of_the_right_type(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        Limits(**{field: value})  # type: ignore[arg-type]


def context_refusal(body: dict[str, Any], index: int) -> httpx2.Response:
    error = {"code": 400, "message": CONTEXT_ERROR, "type": "exceed_context_size_error"}
    return httpx2.Response(400, json={"error": error})


@pytest.mark.parametrize("stream", [False, True], ids=["fan-out", "streamed"])
async def test_an_openai_endpoint_sends_one_request_of_a_run_an_upstream_refuses(stream: bool) -> None:
    server = MockServer(context_refusal)
    endpoint = server.endpoint(native_n=False)
    open_allowance(100, 10_000)

    async def one() -> Any:
        return await endpoint.stream_one(MESSAGES, meter=RequestUsage())

    with pytest.raises(EndpointError, match="context size"):
        if stream:
            await asyncio.gather(*(one() for _ in range(8)))
        else:
            await endpoint.generate(MESSAGES, n=8)
    assert len(server.bodies) == 1


async def test_an_over_context_prompt_through_a_served_openai_endpoint_is_one_request() -> None:
    server = MockServer(context_refusal)
    h = make(server.endpoint(native_n=False))
    resp = await h.client.post("/v1/chat/completions", json=chat(ttc={"n": 8}))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "context_length_exceeded"
    assert len(server.bodies) == 1


async def test_the_reply_counts_truncated_samples() -> None:
    cut = ("Step 1: 2 + 2 is", "length")
    h = make(ScriptedEndpoint([cut, "So \\boxed{4}.", cut, "So \\boxed{4}."], native_n=False))
    resp = await h.client.post("/v1/chat/completions", json=chat())
    assert resp.status_code == 200, resp.text
    assert resp.json()["ttc"]["truncated"] == 2


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b'"max_tokens": true', "max_tokens"),
        (b'"max_tokens": "64"', "max_tokens"),
        (b'"seed": false', "seed"),
        (b'"temperature": Infinity', "temperature"),
        (b'"temperature": NaN', "temperature"),
        (b'"ttc": {"temperature": Infinity}', "ttc.temperature"),
        (b'"ttc": {"n": true}', "ttc.n"),
    ],
)
async def test_every_numeric_knob_of_a_request_is_a_finite_number_of_its_type(content: bytes, param: str) -> None:
    h = make()
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], %s}' % (MAJORITY.encode(), content)
    resp = await h.client.post("/v1/chat/completions", content=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    assert h.upstream_requests == 0


def test_a_spec_number_is_finite() -> None:
    from ttc_graph.specs.models import BestOfNSpec

    with pytest.raises(ValueError, match="finite"):
        BestOfNSpec(n=2, selection="majority", temperature=float("inf"))


@pytest.mark.parametrize(
    ("ttc", "param"),
    [
        ({"temperature": 50}, "ttc.temperature"),
        ({"seed": 2**70}, "ttc.seed"),
        ({"verifier": {"kind": "program", "programs": 2, "max_tokens": 10**9}}, "ttc.verifier.max_tokens"),
        ({"verifier": {"kind": "program", "programs": 2, "temperature": 9.0}}, "ttc.verifier.temperature"),
        ({"budget": {"generations": 10**6}}, "ttc.budget.generations"),
    ],
)
async def test_every_numeric_override_has_a_ceiling(ttc: dict[str, Any], param: str) -> None:
    h = make()
    resp = await h.client.post("/v1/chat/completions", json=chat(ttc={"selection": "weighted", **ttc}))
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["code"] == "cap_exceeded"
    assert h.upstream_requests == 0
