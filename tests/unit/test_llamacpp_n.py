"""``OpenAIEndpoint(llamacpp_n=True)``: an ``n > 1`` call is one request to llama.cpp's ``/completion`` with ``n``,
its usage summed from each result's ``tokens_predicted``; over a mocked HTTP layer (no network)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import httpx2
import pytest

from ttc_graph import OpenAIEndpoint
from ttc_graph.endpoints import SamplingParams
from ttc_graph.endpoints.llamacpp_n import completion_body, parse_completion_results
from ttc_graph.endpoints.retry import AnswerLost, RetryConfig
from ttc_graph.errors import EndpointError

ROOT = "http://llama.test"
FAST = RetryConfig(max_attempts=3, initial_backoff=0, jitter=0, max_backoff=0.01)
TEMPLATE = "<|user|>Q<|assistant|>"


def results(n: int, *, tokens: int = 5, stop_type: str = "eos") -> list[dict[str, Any]]:
    """A ``/completion`` answer for ``n`` children, listed in reverse order of ``index``."""
    return [
        {"index": i, "content": f"child {i}", "tokens_predicted": tokens + i, "tokens_evaluated": 40,
         "stop_type": stop_type, "stop": True, "id_slot": 7 - i}
        for i in reversed(range(n))
    ]  # fmt: skip


class Llama:
    """A mocked llama.cpp: ``/apply-template`` and ``/completion``; ``answers`` are served in turn (an int is an
    error status, anything else a JSON body), and every ``/completion`` body is kept."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == "/apply-template":
            return httpx.Response(200, json={"prompt": TEMPLATE})
        if request.url.path == "/props":
            return httpx.Response(200, json={"total_slots": 4})
        self.bodies.append(json.loads(request.content))
        answer = self.answers.pop(0)
        if isinstance(answer, int):
            return httpx.Response(answer, json={"error": "busy"})
        if isinstance(answer, str):
            return httpx.Response(200, text=answer)
        return httpx.Response(200, json=answer)


def run(llama: Llama, n: int, params: SamplingParams | None = None, prefix: str | None = None, **kw: Any) -> Any:
    async def go() -> Any:
        ep = OpenAIEndpoint(ROOT + "/v1", "m", "k", llamacpp_n=True, retry=FAST, **kw)
        ep._clients.get().http = httpx.AsyncClient(transport=httpx.MockTransport(llama.handler))
        try:
            return await ep.generate([{"role": "user", "content": "Q"}], n=n, params=params, prefix=prefix)
        finally:
            await ep.aclose()

    return asyncio.run(go())


def test_n_samples_are_one_completion_request_with_exact_usage() -> None:
    llama = Llama(results(4, tokens=10))
    params = SamplingParams(temperature=0.7, max_tokens=64, seed=11, stop=("\n\n",))
    out = run(llama, 4, params, prefix="Step 1: ")
    assert llama.paths == ["/props", "/apply-template", "/completion"]  # its slots, its template, the samples
    body = llama.bodies[0]
    assert body["prompt"] == TEMPLATE + "Step 1: "
    assert (body["n"], body["n_predict"], body["seed"], body["stop"]) == (4, 64, 11, ["\n\n"])
    assert [g.text for g in out.generations] == ["child 0", "child 1", "child 2", "child 3"]
    assert [g.completion_tokens for g in out.generations] == [10, 11, 12, 13]
    assert [g.slot for g in out.generations] == [7, 6, 5, 4]  # where the server ran each child
    assert out.usage.completion_tokens == 46 and out.usage.prompt_tokens == 40 and out.usage.requests == 1


def test_a_slot_hint_runs_the_request_on_the_parents_slot() -> None:
    llama = Llama(results(2))
    run(llama, 2, SamplingParams(max_tokens=8, slots=(5, 6)), slots=4)
    assert llama.bodies[0]["id_slot"] == 1  # the first sample's slot, modulo the server's 4
    assert llama.bodies[0]["cache_prompt"] is True


def test_one_sample_tools_or_logprobs_take_the_chat_route() -> None:
    for n, params in [(1, None), (3, SamplingParams(logprobs=True)), (2, SamplingParams(tools=({"type": "x"},)))]:
        llama = Llama()
        chat: list[str] = []
        with pytest.raises(EndpointError):  # the mocked chat route answers 500: the call fails there
            run_chat_route(llama, chat, n, params)
        assert chat and all(path == "/v1/chat/completions" for path in chat)
        assert "/completion" not in llama.paths


def run_chat_route(llama: Llama, chat: list[str], n: int, params: SamplingParams | None) -> Any:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        chat.append(request.url.path)
        return httpx2.Response(500, json={"error": "down"})

    async def go() -> Any:
        api = httpx2.AsyncClient(transport=httpx2.MockTransport(refuse))
        ep = OpenAIEndpoint(
            ROOT + "/v1", "m", "k", llamacpp_n=True, native_n=False, http_client=api,
            retry=RetryConfig(max_attempts=1),
        )  # fmt: skip
        ep._clients.get().http = httpx.AsyncClient(transport=httpx.MockTransport(llama.handler))
        try:
            return await ep.generate([{"role": "user", "content": "Q"}], n=n, params=params)
        finally:
            await ep.aclose()
            await api.aclose()

    return asyncio.run(go())


def test_a_server_error_is_retried_and_a_lost_answer_is_charged_as_unconfirmed() -> None:
    llama = Llama(503, "not json", results(2, tokens=3))
    out = run(llama, 2, SamplingParams(max_tokens=16))
    assert len(llama.bodies) == 3
    assert out.usage.completion_tokens == 7
    assert out.usage.unconfirmed_tokens == 2 * 16  # the unreadable 200 may have cost both children's max_tokens


def test_a_failure_for_good_raises_with_its_usage() -> None:
    llama = Llama(400)
    with pytest.raises(EndpointError) as info:
        run(llama, 2, SamplingParams(max_tokens=16))
    assert info.value.status_code == 400
    assert info.value.usage is not None and info.value.usage.failed_requests == 1


def test_completion_body_without_slots_sends_no_slot() -> None:
    body = completion_body("p", 3, SamplingParams(top_p=0.9, slots=(2,)), slots=None, extra={"top_k": 5})
    assert body == {"prompt": "p", "n": 3, "cache_prompt": True, "top_k": 5, "top_p": 0.9}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (results(3), "3 results for n=2"),
        ([{"content": "x"}, {"content": "y"}], "unreadable"),
        ({"content": "x", "tokens_predicted": 2}, "1 results for n=2"),
        ("oops", "unreadable"),
    ],
)
def test_a_broken_answer_is_an_answer_lost(data: Any, why: str) -> None:
    with pytest.raises(AnswerLost, match=why):
        parse_completion_results(data, 2, "completion")


def test_stop_types_map_to_finish_reasons() -> None:
    data = [
        {"index": 0, "content": "a", "tokens_predicted": 8, "stop_type": "limit"},
        {"index": 1, "content": "b", "tokens_predicted": 2, "stop_type": "word"},
        {"index": 2, "content": "c", "tokens_predicted": 3, "stop_type": "eos"},
    ]
    generations, prompt, completion = parse_completion_results(data, 3, "completion")
    assert [g.finish_reason for g in generations] == ["length", "stop", "stop"]
    assert (prompt, completion) == (0, 13)


def test_more_samples_than_slots_are_split_keeping_each_samples_seed_and_slot() -> None:
    llama = Llama(results(6))
    run(llama, 6, SamplingParams(max_tokens=8, seed=100, slots=(3, 1, 2, 0, 5, 6)), slots=8)
    assert [(b["n"], b["seed"], b["id_slot"]) for b in llama.bodies] == [(6, 100, 3)]
    assert "/props" not in llama.paths  # the slots it was given
    llama = Llama(results(4), results(2))
    out = run(llama, 6, SamplingParams(max_tokens=8, seed=100), slots=None)  # the server says 4 slots
    assert llama.paths.count("/props") == 1
    assert sorted((b["n"], b["seed"]) for b in llama.bodies) == [(2, 104), (4, 100)]
    assert len(out.generations) == 6 and out.usage.requests == 2
