"""``ttc serve`` in front of the real llama.cpp server, called with the official ``openai`` client and LangChain.

The chain is ``client → ttc serve (uvicorn, in-process) → metering proxy → llama.cpp``: the proxy counts every
request and the tokens llama.cpp reported serving, which the usage ttc serve reports must equal. One test starts
``ttc serve`` as a subprocess on the embedded model and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from ttc_graph.local import LocalModelServer
from ttc_graph.server import Limits, ServeConfig, Upstream, create_app, load_presets
from ttc_graph.server.metering import Meter, MeteringProxy, serve_in_thread

KEY = "sk-ttc-serve-live-key"
QUESTION = "What is 2 + 3? Answer with \\boxed{}."
MAJORITY = "best_of_n_majority"
TTC = Path(sys.executable).with_name("ttc")


@dataclass
class Stack:
    base_url: str  # ttc serve's /v1
    model: str  # the upstream model name
    meter: Meter
    health: str

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until no request is in flight at the proxy and no run is active in ttc serve."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = httpx.get(self.health, timeout=5).json()["runs"]
            if self.meter.in_flight == 0 and runs == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"still busy: {self.meter.in_flight} upstream requests, {runs} runs")


@pytest.fixture(scope="module")
def stack(local_server: LocalModelServer) -> Iterator[Stack]:
    proxy = MeteringProxy(local_server.server_root)
    with serve_in_thread(proxy.app) as proxy_url:
        upstream = Upstream(f"{proxy_url}/v1", local_server.model_name, api_key="local", timeout=120.0)
        limits = Limits(generations=16, tokens=4_096, seconds=120.0, concurrent_runs=2, retry_after=1)
        app = create_app(ServeConfig(load_presets(), (KEY,), limits), upstream)
        with serve_in_thread(app) as url:
            yield Stack(f"{url}/v1", local_server.model_name, proxy.meter, f"{url}/health")


@dataclass
class Reply:
    content: str
    usage: dict[str, Any]
    ttc: dict[str, Any]
    reasoning: list[tuple[float, str]] = field(default_factory=list)


def _from_chunks(chunks: list[tuple[float, Any]]) -> Reply:
    reply = Reply("", {}, {})
    for at, ch in chunks:
        if ch.choices:
            delta = ch.choices[0].delta
            reasoning = (delta.model_extra or {}).get("reasoning_content")
            if reasoning:
                reply.reasoning.append((at, reasoning))
            reply.content += delta.content or ""
        if ch.usage is not None:
            reply.usage = ch.usage.model_dump()
            reply.ttc = (ch.model_extra or {}).get("ttc", {})
    return reply


def ask_sync(stack: Stack, stream: bool, **kwargs: Any) -> Reply:
    client = openai.OpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0, timeout=180)
    if not stream:
        out = client.chat.completions.create(**kwargs)
        return Reply(out.choices[0].message.content or "", out.usage.model_dump() if out.usage else {}, out.ttc)  # type: ignore[attr-defined]
    chunks = client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)
    return _from_chunks([(time.monotonic(), ch) for ch in chunks])


async def ask_async(stack: Stack, stream: bool, **kwargs: Any) -> Reply:
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0, timeout=180) as client:
        if not stream:
            out = await client.chat.completions.create(**kwargs)
            usage = out.usage.model_dump() if out.usage else {}
            return Reply(out.choices[0].message.content or "", usage, out.ttc)  # type: ignore[attr-defined]
        chunks = await client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)
        return _from_chunks([(time.monotonic(), ch) async for ch in chunks])


def _messages() -> Any:  # the SDK's message param types, as plain dicts
    return [{"role": "user", "content": QUESTION}]


# -- a preset runs, usage is honest ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_preset_answers_and_its_usage_is_what_the_upstream_served(stack: Stack, api: str, stream: bool) -> None:
    stack.settle()
    before = stack.meter.snapshot()
    kwargs = {"model": f"{MAJORITY}/{stack.model}", "messages": _messages(), "max_tokens": 48}
    reply = ask_sync(stack, stream, **kwargs) if api == "sync" else asyncio.run(ask_async(stack, stream, **kwargs))
    stack.settle()
    served = stack.meter.since(before)
    assert reply.content.strip()
    assert reply.ttc["preset"] == MAJORITY and reply.ttc["upstream_model"] == stack.model
    assert served["uncounted"] == 0
    assert reply.usage["prompt_tokens"] == served["prompt_tokens"]
    assert reply.usage["completion_tokens"] == served["completion_tokens"]
    assert reply.usage["total_tokens"] == served["prompt_tokens"] + served["completion_tokens"]
    assert reply.usage["ttc"]["requests"] == served["requests"] == served["answered"]
    assert reply.usage["ttc"]["generations"] == 4
    assert sum(k["completion_tokens"] for k in reply.usage["ttc"]["by_kind"].values()) == served["completion_tokens"]


def test_streamed_progress_arrives_before_any_upstream_request_finishes(stack: Stack) -> None:
    """Once the endpoint knows llama.cpp serves one sample per request (its first n>1 request finds out), every
    sample is its own task and is reported as it finishes."""
    ask_sync(stack, False, model=f"{MAJORITY}/{stack.model}", messages=_messages(), max_tokens=4)
    stack.settle()
    first = len(stack.meter.finished_at)
    kwargs = {"model": f"{MAJORITY}/{stack.model}", "messages": _messages(), "max_tokens": 32}
    reply = ask_sync(stack, True, **kwargs)
    stack.settle()
    finished = stack.meter.finished_at[first:]
    assert len(finished) >= 4 and reply.reasoning
    assert reply.reasoning[0][0] < min(finished)  # the first round's plan, while every request is in flight
    samples = [at for at, text in reply.reasoning if text.startswith("Sample")]
    assert len(samples) == 4  # each sample its own event, as its request finished (they may finish together)
    assert reply.reasoning[-1][1].startswith("Round") and "stopping" in reply.reasoning[-1][1]
    assert reply.reasoning[-1][0] >= samples[-1]


def test_a_judged_preset_counts_policy_and_verifier_requests(stack: Stack) -> None:
    stack.settle()
    before = stack.meter.snapshot()
    ttc = {"n": 2, "selection": "weighted", "verifier": {"kind": "llm_judge", "mode": "outcome", "samples": 1}}
    reply = ask_sync(
        stack, False, model=f"{MAJORITY}/{stack.model}", messages=_messages(), max_tokens=32, extra_body={"ttc": ttc}
    )
    stack.settle()
    served = stack.meter.since(before)
    by_kind = reply.usage["ttc"]["by_kind"]
    assert set(by_kind) == {"propose", "verify"}
    assert reply.usage["completion_tokens"] == served["completion_tokens"]
    assert reply.usage["prompt_tokens"] == served["prompt_tokens"]
    assert by_kind["propose"]["requests"] + by_kind["verify"]["requests"] == served["requests"]


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """ttc serve's ``/metrics`` as {(sample name, sorted labels): value}."""
    text = httpx.get(stack.health.removesuffix("/health") + "/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_after_real_requests_equal_the_usage_they_reported_and_the_server_served(stack: Stack) -> None:
    stack.settle()
    before, served_before = scrape(stack), stack.meter.snapshot()
    ttc = {"n": 2, "selection": "weighted", "verifier": {"kind": "llm_judge", "mode": "outcome", "samples": 1}}
    replies = [
        ask_sync(stack, stream, model=f"{MAJORITY}/{stack.model}", messages=_messages(), max_tokens=32,
                 extra_body={"ttc": ttc})
        for stream in (False, True)
    ]  # fmt: skip
    stack.settle()
    after, served = scrape(stack), stack.meter.since(served_before)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("ttc_requests_total", preset=MAJORITY, strategy="best_of_n", status="200") == 2
    for node in ("propose", "verify"):
        reported = [r.usage["ttc"]["by_kind"][node] for r in replies]
        assert delta("ttc_upstream_requests_total", preset=MAJORITY, node=node) == sum(k["requests"] for k in reported)
        for kind in ("prompt", "completion"):
            counted = delta("ttc_tokens_total", preset=MAJORITY, node=node, type=kind)
            assert counted == sum(k[f"{kind}_tokens"] for k in reported)
    nodes = ("propose", "verify")
    assert sum(delta("ttc_upstream_requests_total", preset=MAJORITY, node=n) for n in nodes) == served["requests"]
    for kind in ("prompt", "completion"):
        total = sum(delta("ttc_tokens_total", preset=MAJORITY, node=n, type=kind) for n in nodes)
        assert total == served[f"{kind}_tokens"] > 0
    assert after[("ttc_runs_in_flight", ())] == 0


# -- pass-through, LangChain ------------------------------------------------------------------------------------


def test_a_plain_model_passes_through(stack: Stack) -> None:
    stack.settle()
    before = stack.meter.snapshot()
    client = openai.OpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0)
    out = client.chat.completions.create(model=stack.model, messages=_messages(), max_tokens=16)  # type: ignore[arg-type]
    stack.settle()
    served = stack.meter.since(before)
    assert out.model == stack.model and out.choices[0].message.content
    assert served["requests"] == 1
    assert out.usage is not None and out.usage.completion_tokens == served["completion_tokens"]
    streamed = client.chat.completions.create(
        model=stack.model,
        messages=_messages(),  # type: ignore[arg-type]
        max_tokens=16,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    stack.settle()
    assert stack.meter.since(before)["requests"] == 2


def test_langchain_chat_openai_works_against_it(stack: Stack) -> None:
    stack.settle()
    llm = ChatOpenAI(
        model=f"{MAJORITY}/{stack.model}", base_url=stack.base_url, api_key=SecretStr(KEY), max_tokens=32, max_retries=0
    )  # type: ignore[call-arg]
    message = llm.invoke(QUESTION)
    assert isinstance(message.content, str) and message.content.strip()
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] > 0
    streamed = "".join(str(chunk.content) for chunk in llm.stream(QUESTION))
    assert streamed.strip()
    stack.settle()


# -- security and limits ----------------------------------------------------------------------------------------


def test_auth_no_key_wrong_key_right_key(stack: Stack) -> None:
    body = {"model": f"{MAJORITY}/{stack.model}", "messages": _messages(), "max_tokens": 8}
    before = stack.meter.snapshot()
    bare = httpx.post(f"{stack.base_url}/chat/completions", json=body, timeout=30)
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "missing_api_key"
    wrong = openai.OpenAI(base_url=stack.base_url, api_key="sk-wrong-key-1234", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(**body)
    assert "sk-wrong-key-1234" not in str(caught.value) and KEY not in str(caught.value)
    assert stack.meter.since(before)["requests"] == 0
    right = openai.OpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0)
    models = [m.id for m in right.models.list()]
    assert f"{MAJORITY}/{stack.model}" in models and stack.model in models


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"extra_body": {"ttc": {"n": 64}}}, "ttc.n"),
        ({"extra_body": {"ttc": {"budget": {"tokens": 10_000}}}}, "ttc.budget.tokens"),
        ({"max_tokens": 2_000}, "max_tokens"),
        ({"extra_body": {"ttc": {"n": "four"}}}, "ttc.n"),
        ({"n": 2}, "n"),
    ],
)
def test_requests_over_a_cap_or_malformed_are_refused_upstream_untouched(
    stack: Stack, extra: dict[str, Any], param: str
) -> None:
    stack.settle()
    before = stack.meter.snapshot()
    client = openai.OpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=f"{MAJORITY}/{stack.model}", messages=_messages(), **extra)  # type: ignore[call-overload]
    assert caught.value.param == param
    assert stack.meter.since(before)["requests"] == 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_over_context_prompt_is_a_400_with_the_upstreams_message_after_one_request(
    stack: Stack, stream: bool
) -> None:
    stack.settle()
    before = stack.meter.snapshot()
    client = openai.OpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0, timeout=180)
    prompt = "Count the words of this text. " + "word " * 6_000  # over the server's 2048 tokens per slot
    with pytest.raises(openai.APIError) as caught:  # streamed: the stream's error event, after its 200
        reply = client.chat.completions.create(
            model=f"{MAJORITY}/{stack.model}",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=16,
            stream=stream,
            extra_body={"ttc": {"n": 8}},
        )
        list(reply) if stream else None  # type: ignore[call-overload]
    assert "context" in str(caught.value).lower()
    assert stream or isinstance(caught.value, openai.BadRequestError)
    stack.settle()
    assert stack.meter.since(before)["requests"] <= 1


async def test_past_the_run_limit_is_a_429_with_retry_after(stack: Stack) -> None:
    await asyncio.to_thread(stack.settle)
    kwargs: dict[str, Any] = {
        "model": f"{MAJORITY}/{stack.model}",
        "messages": _messages(),
        "max_tokens": 64,
        "extra_body": {"ttc": {"n": 8}},
    }
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0, timeout=180) as client:
        streams = [await client.chat.completions.create(stream=True, **kwargs) for _ in range(2)]  # both accepted
        try:
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(**kwargs)
            assert caught.value.response.headers["retry-after"] == "1"
            assert caught.value.code == "too_many_requests"
        finally:
            for s in streams:
                await s.close()
    await asyncio.to_thread(stack.settle)


async def test_a_client_that_disconnects_cancels_the_run_and_its_upstream_requests(stack: Stack) -> None:
    """Revisions: 4 chains of 4 attempts, a round of 4 requests at a time; the client leaves after the first sample,
    while the other requests of its round are in flight. When none is (every request of the round ended with the
    first, as when all four hit ``max_tokens`` together), there is nothing to cut, and the run is tried again."""
    for _attempt in range(3):
        await asyncio.to_thread(stack.settle)
        before = stack.meter.snapshot()
        async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0, timeout=180) as client:
            stream = await client.chat.completions.create(
                model=f"revisions_sqrt/{stack.model}",
                messages=_messages(),  # type: ignore[arg-type]
                max_tokens=96,
                stream=True,
                extra_body={"ttc": {"n": 16}},
            )
            async for ch in stream:
                reasoning = (ch.choices[0].delta.model_extra or {}).get("reasoning_content", "") if ch.choices else ""
                if reasoning.startswith("Sample"):
                    break
            in_flight = stack.meter.in_flight  # upstream requests still running as the client leaves
            await stream.close()
        await asyncio.to_thread(stack.settle, 30.0)  # the run ended and its upstream requests with it
        served = stack.meter.since(before)
        assert served["requests"] < 16
        if in_flight:
            break
    assert in_flight, "in every attempt the round's requests had all ended before the client left"
    assert served["answered"] < served["requests"]  # requests in flight were cut, not waited for
    await asyncio.sleep(2.0)
    assert stack.meter.since(before)["requests"] == served["requests"]  # and no new ones were started


# -- the command: SIGTERM finishes in-flight runs and stops the embedded model --------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ttc_serve_drains_on_sigterm_and_stops_the_embedded_model(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    cmd = [str(TTC), "serve", "--port", str(port), "--parallel", "2", "--threads", "1", "--shutdown-timeout", "60"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        found = re.search(r"started llama-server pid (\d+)", log.read_text())
        assert found, log.read_text()
        llama = int(found[1])
        model = httpx.get(f"{base}/health", timeout=5).json()["upstream_model"]

        events: list[str] = []
        started = threading.Event()

        def stream() -> None:
            body = {"model": f"{MAJORITY}/{model}", "messages": _messages(), "max_tokens": 24, "stream": True}
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        events.append(line[5:].strip())
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        proc.send_signal(signal.SIGTERM)
        reader.join(90)
        assert events[-1] == "[DONE]", events[-3:]  # the in-flight run finished before the server went down
        assert any('"content": "' in e and '"content": ""' not in e for e in events)
        assert proc.wait(60) in (0, -signal.SIGTERM), log.read_text()  # uvicorn re-raises the signal it drained on
        with pytest.raises(ProcessLookupError):
            os.kill(llama, 0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
