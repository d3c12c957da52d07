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
    await llama(slot_copy=True).generate([{"role": "user", "content": "q"}], n=3, params=params)  # no prefix yet
    await llama().generate([{"role": "user", "content": "q"}], n=3, params=params, prefix="s1")  # not asked for
    assert [e[0] for e in events] == ["sample"] * 6


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
