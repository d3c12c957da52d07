"""Search at the speed of sampling (issue 33): slot affinity of step searches and DVTS without a round barrier.

Everything is proven with counters (slot ids per request, requests in flight, the order requests start and
finish), never with wall-clock times.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.steptree import DELIM, hashed, path_of
from ttc_graph import create_beam_search
from ttc_graph.endpoints.base import SamplingParams
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.nodes.expand import assign_slots, root_beam
from ttc_graph.testing import FakeCall, ScriptedEndpoint

QUESTION = "What is 6 * 7?"


def tree_step(call: FakeCall, index: int, counters: dict[int, int]) -> str:
    """Sample j of a request continuing path P is the step of ``P + (j,)``; paths finish by hash or at depth 4."""
    pos = counters.get(id(call), 0)
    counters[id(call)] = pos + 1
    steps = call.prefix.split(DELIM)[:-1] if call.prefix else []
    parent = path_of(steps[-1]) if steps else ()
    seed = call.params.seed if call.params is not None else None
    path = (*parent, str(pos)) if parent else (f"s{seed}-{pos}",)
    text = f"[{'.'.join(path)}] step {len(path)}"
    if (len(path) >= 2 and hashed(path) < 0.3) or len(path) >= 4:
        text += " \\boxed{42}"
    return text


@dataclass
class SlottedEndpoint(ScriptedEndpoint):
    """A scripted endpoint that takes slot hints, as a llama.cpp-backed OpenAIEndpoint does."""

    slots: int = 8


def slotted() -> SlottedEndpoint:
    counters: dict[int, int] = {}
    return SlottedEndpoint(lambda call, i: tree_step(call, i, counters))


def test_assign_slots_children_inherit_the_parents_slot_and_siblings_spread():
    a, b = {**root_beam("a"), "slot": 5}, {**root_beam("b"), "slot": 2}
    fresh = root_beam("c")  # no slot yet
    assert assign_slots([(a, 2), (b, 2), (fresh, 2)], 8) == [[5, 0], [2, 1], [3, 4]]
    assert assign_slots([(a, 3)], 2) == [[0, 1, None]]  # a's slot is out of range: spread, then server's choice
    assert assign_slots([(a, 2)], 8, busy=[0, 5]) == [[1, 2]]  # busy slots are not given out


async def test_beam_search_continues_each_beam_on_the_slot_of_its_prefix():
    policy = slotted()
    graph = create_beam_search(policy, lambda q, t: hashed(path_of(t.split(DELIM)[-1])), n=4, beam_width=2, seed=3)
    await graph.compile().ainvoke({"question": QUESTION})
    slot_of: dict[str, int | None] = {}  # a step's label -> the slot it was generated on
    continued = 0
    for call in policy.calls:
        slots = call.params.slots if call.params is not None else None
        assert slots is not None and len(slots) == call.n
        steps = call.prefix.split(DELIM)[:-1] if call.prefix else []
        if steps:
            assert slots[0] == slot_of[steps[-1]], "the first child runs on its parent's slot"
            continued += 1
        replay: dict[int, int] = {}
        for j in range(call.n):
            slot_of[tree_step(call, j, replay)] = slots[j]
    assert continued >= 2
    per_round: dict[int, list[int | None]] = {}
    for call in policy.calls:
        depth = len(call.prefix.split(DELIM)) - 1 if call.prefix else 0
        per_round.setdefault(depth, []).extend(call.params.slots or ())  # type: ignore[union-attr]
    for used in per_round.values():
        assert len(set(used)) == len(used), "no two samples of a round queue on one slot"


def test_openai_endpoint_sends_id_slot_only_when_configured_for_slots():
    params = SamplingParams(temperature=0.5, slots=(3,))
    plain = OpenAIEndpoint("http://localhost:1/v1", model="m")
    assert "id_slot" not in plain._request_kwargs(1, params).get("extra_body", {})
    llama = OpenAIEndpoint("http://localhost:1/v1", model="m", slots=4, extra_body={"top_k": 5})
    body = llama._request_kwargs(1, params)["extra_body"]
    assert body == {"top_k": 5, "id_slot": 3, "cache_prompt": True}
    assert "id_slot" not in llama._request_kwargs(1, SamplingParams(slots=(None,))).get("extra_body", {})
    assert llama.extra_body == {"top_k": 5}
