"""Concurrent searches on one llama.cpp server: each search's slot hints are leased to server slots of their own
(``ttc_graph.endpoints.slot_leases``), so no two searches queue on one slot. Counters, no clocks, no network."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import pytest

from ttc_graph.endpoints.base import Generation, GenerationResult, SamplingParams
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.endpoints.slot_leases import SlotLeases
from ttc_graph.strategies import create_beam_search, create_dvts, create_mcts, create_particle_filtering
from ttc_graph.usage import RequestUsage


def test_a_search_alone_keeps_its_own_numbers():
    leases = SlotLeases(8)
    assert leases.acquire("a", (0, 1, 2, 3)) == (0, 1, 2, 3)
    leases.release((0, 1, 2, 3))
    assert leases.acquire("a", (2, 5)) == (2, 5)


def test_two_searches_with_the_same_numbers_get_different_server_slots():
    leases = SlotLeases(8)
    a = leases.acquire("a", (0, 1, 2, 3))
    b = leases.acquire("b", (0, 1, 2, 3))
    assert a == (0, 1, 2, 3) and set(b) == {4, 5, 6, 7}
    leases.release(a)
    leases.release(b)
    assert leases.acquire("a", (1,)) == (1,) and leases.acquire("b", (1,)) == b[1:2]  # each keeps its cache's slot


def test_past_the_idle_slots_a_sample_goes_unhinted_instead_of_waiting():
    leases = SlotLeases(4)
    assert leases.acquire("a", (0, 1, 2)) == (0, 1, 2)
    assert leases.acquire("b", (0, 1)) == (3, None)


def test_a_new_search_takes_the_slot_used_longest_ago_and_its_old_owner_loses_it():
    leases = SlotLeases(2)
    leases.release(leases.acquire("old", (0,)))
    leases.release(leases.acquire("newer", (1,)))
    assert leases.acquire("c", (0,)) == (0,)  # "old" used slot 0 longest ago
    assert leases.hint_of("c", 0) == 0 and leases.hint_of("old", 0) is None
    assert ("old", 0) not in leases.leased()


def test_hints_without_a_search_name_server_slots_and_count_as_busy():
    leases = SlotLeases(4)
    assert leases.acquire(None, (1, 6)) == (1, 2)  # wrapped, as llama.cpp's id_slot does
    assert leases.acquire("a", (1, 2)) == (0, 3)  # slots 1 and 2 are busy


class _Server:
    """A stand-in for llama.cpp's chat call: counts the requests in flight per ``id_slot`` it receives."""

    def __init__(self, gate: int = 0) -> None:
        self.gate = gate  # the first ``gate`` requests are held until all of them are in flight
        self.in_flight: Counter[int] = Counter()
        self.most_on_one_slot = 0
        self.requests = 0
        self.hinted = 0
        self.first_rounds = asyncio.Event()

    async def chat(self, messages: Any, n: int, params: SamplingParams, prefix: Any) -> Any:
        slot = params.slots[0] if params.slots else None
        self.requests += 1
        if slot is not None:
            self.hinted += 1
            self.in_flight[slot] += 1
            self.most_on_one_slot = max(self.most_on_one_slot, self.in_flight[slot])
        if self.requests == self.gate:
            self.first_rounds.set()
        if self.requests <= self.gate:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.first_rounds.wait(), 5.0)
        await asyncio.sleep(0)
        if slot is not None:
            self.in_flight[slot] -= 1
        text = "The answer is \\boxed{4}." if prefix and prefix.count("Step.") >= 2 else "Step."
        return GenerationResult(
            [Generation(text, "stop", completion_tokens=3)], RequestUsage(requests=1, completion_tokens=3)
        )


SEARCHES = {
    "beam search": lambda p, v: create_beam_search(p, v, n=4, beam_width=2, max_steps=4),
    "DVTS": lambda p, v: create_dvts(p, v, n=4, beam_width=2, max_steps=4),
    "particle filtering": lambda p, v: create_particle_filtering(p, v, n=4, max_steps=4, seed=1),
    "MCTS": lambda p, v: create_mcts(p, v, n=4, expansions=2, max_steps=4, seed=1),
}


async def run_two(monkeypatch: pytest.MonkeyPatch, search: str, gate: int = 0) -> _Server:
    """Two runs of ``search`` at once on one endpoint with 4 server slots; the server stand-in's counts."""
    server = _Server(gate)
    monkeypatch.setattr(OpenAIEndpoint, "_chat_call", server.chat)
    endpoint = OpenAIEndpoint("http://127.0.0.1:1/v1", "m", native_n=False, continuation="prefill", slots=4)
    graph = SEARCHES[search](endpoint, lambda q, t: 0.5).compile()
    outs = await asyncio.gather(*(graph.ainvoke({"question": f"q{i}"}) for i in range(2)))
    assert all(out["answer"] == "4" for out in outs)
    assert server.hinted >= 8
    return server


@pytest.mark.parametrize("search", SEARCHES)
async def test_concurrent_searches_never_share_a_slot(monkeypatch: pytest.MonkeyPatch, search: str):
    assert (await run_two(monkeypatch, search)).most_on_one_slot == 1


async def test_without_leases_two_searches_queue_on_the_same_slots(monkeypatch: pytest.MonkeyPatch):
    # what the searches did before leases: their hints named server slots directly
    monkeypatch.setattr(SlotLeases, "_place", lambda self, key: key[1] % self.slots)
    server = await run_two(monkeypatch, "beam search", gate=8)  # both first rounds (4 samples each) in flight at once
    assert server.most_on_one_slot == 2
