"""Copying a beam's llama.cpp slot to its siblings' slots (``OpenAIEndpoint(slot_copy=True)``), without a server:
the HTTP exchange through a mock transport, the order of copy and samples through recording stand-ins."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ttc_graph.endpoints import openai_compat
from ttc_graph.endpoints.base import Generation, GenerationResult, SamplingParams
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.endpoints.slot_copy import SlotCopyUnsupported, copy_slot, copy_targets
from ttc_graph.errors import EndpointError
from ttc_graph.usage import RequestUsage


def test_the_first_hint_is_home_and_the_other_distinct_hints_receive_its_cache():
    assert copy_targets((3, 5, None, 3, 1), 8) == (3, [1, 5])
    assert copy_targets((11, 2), 8) == (3, [2])  # hints wrap as id_slot does
    assert copy_targets((None, 2), 8) is None and copy_targets((4,), 8) is None and copy_targets(None, 8) is None
    assert copy_targets((4, 4), 8) is None


async def test_copy_saves_the_home_slot_once_then_restores_it_into_each_target():
    seen: list[tuple[str, str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.url.params["action"], json.loads(request.content)["filename"]))
        return httpx.Response(200, json={"n_saved": 140})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        await copy_slot(http, "http://llama", 2, [5, 6], "f.bin")
    assert seen[0] == ("/slots/2", "save", "f.bin")
    assert sorted(seen[1:]) == [("/slots/5", "restore", "f.bin"), ("/slots/6", "restore", "f.bin")]


async def test_a_server_without_slot_save_path_is_named_as_the_problem():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(501, json={"error": {"message": "This server does not support slots action."}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(SlotCopyUnsupported, match="--slot-save-path"):
            await copy_slot(http, "http://llama", 0, [1], "f.bin")


def recording(monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None) -> list[Any]:
    """Record slot copies and sample requests in the order they happen."""
    events: list[Any] = []

    async def fake_copy(http: Any, root: str, home: int, targets: list[int], filename: str) -> None:
        events.append(("copy", home, tuple(targets)))
        if fail is not None:
            raise fail

    async def fake_chat(self: Any, messages: Any, n: int, params: SamplingParams, prefix: Any) -> GenerationResult:
        if params.max_tokens == 1 and params.temperature == 0.0:
            events.append(("prime", params.slots, params.logprobs, prefix))
            return GenerationResult([Generation("To", "length")], RequestUsage(requests=1, prompt_tokens=90))
        events.append(("sample", params.slots))
        return GenerationResult([Generation("step", "stop")], RequestUsage(requests=1, completion_tokens=1))

    monkeypatch.setattr(openai_compat, "copy_slot", fake_copy)
    monkeypatch.setattr(OpenAIEndpoint, "_chat_call", fake_chat)
    return events


def llama(**kwargs: Any) -> OpenAIEndpoint:
    return OpenAIEndpoint("http://127.0.0.1:1/v1", "m", native_n=False, continuation="prefill", slots=8, **kwargs)


async def test_siblings_get_the_home_slots_cache_before_any_sample_is_requested(monkeypatch: pytest.MonkeyPatch):
    events = recording(monkeypatch)
    params = SamplingParams(slots=(4, 1, 6))
    result = await llama(slot_copy=True).generate([{"role": "user", "content": "q"}], n=3, params=params, prefix="s1")
    assert len(result.generations) == 3
    assert events[0] == ("copy", 4, (1, 6))
    assert sorted(e[1] for e in events[1:]) == [(1,), (4,), (6,)]
    events.clear()
    await llama().generate([{"role": "user", "content": "q"}], n=3, params=params, prefix="s1")  # not asked for
    await llama(slot_copy=True).generate([{"role": "user", "content": "q"}], n=1, params=params)  # one sample
    assert [e[0] for e in events] == ["sample"] * 4


async def test_a_server_that_refuses_turns_slot_copy_off_and_the_samples_are_still_drawn(
    monkeypatch: pytest.MonkeyPatch,
):
    events = recording(monkeypatch, SlotCopyUnsupported("slot copy: refused; it needs --slot-save-path"))
    endpoint = llama(slot_copy=True)
    with pytest.warns(RuntimeWarning, match="slot_copy is now off"):
        result = await endpoint.generate([], n=2, params=SamplingParams(slots=(0, 1)), prefix="s1")
    assert len(result.generations) == 2 and endpoint.slot_copy is False
    await endpoint.generate([], n=2, params=SamplingParams(slots=(0, 1)), prefix="s1")
    assert [e[0] for e in events] == ["copy", "sample", "sample", "sample", "sample"]


async def test_a_prompt_without_prefix_is_evaluated_once_then_copied_to_the_other_slots(
    monkeypatch: pytest.MonkeyPatch,
):
    """The root of a search: no slot holds the prompt yet, so a one-token request at temperature 0 evaluates it on
    the first hinted slot (the server samples that token from the prompt's logits), which is then copied."""
    events = recording(monkeypatch)
    params = SamplingParams(slots=(4, 1, 6), logprobs=True, temperature=0.8, max_tokens=64)
    result = await llama(slot_copy=True).generate([{"role": "user", "content": "q"}], n=3, params=params)
    assert events[0] == ("prime", (4,), False, None)
    assert events[1] == ("copy", 4, (1, 6))
    assert sorted(e[1] for e in events[2:]) == [(1,), (4,), (6,)]
    assert len(result.generations) == 3
    assert (result.usage.requests, result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 90, 3)


async def test_samples_without_hints_get_slots_of_their_own_to_share_their_prompt(monkeypatch: pytest.MonkeyPatch):
    """Best-of-N's n samples of one prompt: leased slots of the call's own (distinct, none shared with a search
    running beside it), one evaluation of the prompt, and no slot numbers handed back."""
    events = recording(monkeypatch)
    endpoint = llama(slot_copy=True)
    search = endpoint._slot_leases().acquire("search", (0, 1))  # a search holds server slots 0 and 1 meanwhile
    result = await endpoint.generate([{"role": "user", "content": "q"}], n=3, params=SamplingParams())
    endpoint._slot_leases().release(search)
    prime, copy, samples = events[0], events[1], events[2:]
    assert prime[0] == "prime" and copy[0] == "copy" and copy[1] == prime[1][0]
    slots = sorted(e[1][0] for e in samples)
    assert len(set(slots)) == 3 and not {0, 1} & set(slots) and set(slots) == {copy[1], *copy[2]}
    assert all(g.slot is None for g in result.generations)
    events.clear()
    await llama().generate([{"role": "user", "content": "q"}], n=3, params=SamplingParams())  # slot_copy off
    assert events == [("sample", None)] * 3


async def test_no_priming_request_under_a_token_budget_or_when_n_is_one_request(monkeypatch: pytest.MonkeyPatch):
    events = recording(monkeypatch)
    held = SamplingParams(slots=(0, 1), retry_lost=False)  # a token budget: only the planned samples are sent
    await llama(slot_copy=True).generate([{"role": "user", "content": "q"}], n=2, params=held)
    await llama(slot_copy=True).generate([{"role": "user", "content": "q"}], n=2, params=SamplingParams())
    assert [e[0] for e in events] == ["sample", "sample", "prime", "copy", "sample", "sample"]
    events.clear()
    native = OpenAIEndpoint("http://127.0.0.1:1/v1", "m", native_n=True, slots=8, slot_copy=True)
    assert not native._copies_prompt(2, SamplingParams())  # one request with n: the server shares the prompt


async def test_a_failed_priming_request_costs_the_samples_an_evaluation_never_the_samples(
    monkeypatch: pytest.MonkeyPatch,
):
    events = recording(monkeypatch)
    real = OpenAIEndpoint._chat_call

    async def refusing(self: Any, messages: Any, n: int, params: SamplingParams, prefix: Any) -> GenerationResult:
        if params.max_tokens == 1:
            raise EndpointError("boom", status_code=400, usage=RequestUsage(failed_requests=1))
        return await real(self, messages, n, params, prefix)

    monkeypatch.setattr(OpenAIEndpoint, "_chat_call", refusing)
    result = await llama(slot_copy=True).generate([], n=2, params=SamplingParams(slots=(0, 1)))
    assert [e[0] for e in events] == ["sample", "sample"]  # no copy of a slot that holds no prompt
    assert len(result.generations) == 2 and result.usage.failed_requests == 1
