"""Search at the speed of sampling (issue 33): slot affinity of step searches and DVTS without a round barrier.

Everything is proven with counters (slot ids per request, requests in flight, the order requests start and
finish), never with wall-clock times.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from tests.steptree import DELIM, hashed, path_of
from ttc_graph import create_beam_search, create_dvts, create_mcts, create_particle_filtering
from ttc_graph.endpoints.base import SamplingParams
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.nodes import expand, step_rounds, step_tree
from ttc_graph.nodes.expand import assign_slots, root_beam, shared_prefix
from ttc_graph.nodes.step_mcts import MCTSPlan
from ttc_graph.specs import build_graph, parse_spec
from ttc_graph.strategies.stepwise import StepSearchOptions, build_step_graph
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


def test_siblings_go_where_a_slot_already_holds_most_of_their_prefix():
    parent = {**root_beam("p"), "steps": ["s1", "s2"], "slot": 0}
    held = {0: ["s1", "s2"], 1: ["x"], 2: ["s1"], 3: ["s1", "s2", "z"], 4: ["s1", "y"]}
    assert assign_slots([(parent, 2)], 8, held=held) == [[0, 3]]  # slot 3 holds all of the parent's path
    assert assign_slots([(parent, 3)], 8, busy=[3], held=held) == [[0, 2, 4]]  # then one shared step, lowest first
    assert shared_prefix(["s1", "s2"], ["s1", "s3"]) == 3 and shared_prefix(["s1"], None) == 0


def reevaluated(policy: SlottedEndpoint) -> int:
    """Prefix characters a llama.cpp server would evaluate again over ``policy``'s calls: each call's prefix minus
    what the slot of each of its samples last generated shares with it (replayed in call order)."""
    kv: dict[int, list[str]] = {}
    total = 0
    for call in policy.calls:
        steps = [s.strip() for s in call.prefix.split(DELIM)[:-1]] if call.prefix else []
        counters: dict[int, int] = {}
        for j, slot in enumerate(call.params.slots or ()):  # type: ignore[union-attr]
            assert slot is not None
            total += max(0, sum(len(s) + 1 for s in steps) - shared_prefix(steps, kv.get(slot)))
            kv[slot] = [*steps, tree_step(call, j, counters).strip()]
    return total


@pytest.mark.parametrize("search", ["beam", "particles"])
async def test_knowing_what_each_slot_holds_cuts_the_prefix_the_server_evaluates_again(
    search: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run() -> SlottedEndpoint:
        policy = slotted()
        score = lambda q, t: hashed(path_of(t.split(DELIM)[-1]))  # noqa: E731
        if search == "beam":
            graph = create_beam_search(policy, score, n=8, beam_width=4, seed=3, max_steps=4)
        else:
            graph = create_particle_filtering(policy, score, n=8, seed=3, max_steps=4)
        asyncio.run(graph.compile().ainvoke({"question": QUESTION}))
        return policy

    aware = reevaluated(await asyncio.to_thread(run))
    for module in (step_rounds, step_tree):
        monkeypatch.setattr(module, "held_paths", lambda beams: {})  # siblings as before: lowest free slot first
    blind = reevaluated(await asyncio.to_thread(run))
    assert expand.held_paths is not None and aware < blind


async def test_mcts_places_each_expansion_knowing_what_every_slot_last_generated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[int, list[str]]] = []

    def recording(expansions: Any, slots: int, busy: Any = (), held: Any = None) -> list[list[int | None]]:
        seen.append(dict(held or {}))
        return expand.assign_slots(expansions, slots, busy, held)

    monkeypatch.setattr(step_tree, "assign_slots", recording)
    policy = slotted()
    score = lambda q, t: hashed(path_of(t.split(DELIM)[-1]))  # noqa: E731
    await (
        create_mcts(policy, score, n=8, expansions=2, seed=3, max_steps=4, asynchronous=True)
        .compile()
        .ainvoke({"question": QUESTION})
    )
    generated: set[tuple[int, tuple[str, ...]]] = set()  # (slot, path) of every sample, replayed from the calls
    for call in policy.calls:
        steps = [s.strip() for s in call.prefix.split(DELIM)[:-1]] if call.prefix else []
        counters: dict[int, int] = {}
        for j, slot in enumerate(call.params.slots or ()):  # type: ignore[union-attr]
            generated.add((slot, (*steps, tree_step(call, j, counters).strip())))  # type: ignore[arg-type]
    assert len(seen) == len(policy.calls) and seen[0] == {} and len(seen[-1]) >= 4
    assert all((slot, tuple(path)) in generated for held in seen for slot, path in held.items())


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


@dataclass
class ServerSlottedEndpoint(SlottedEndpoint):
    """As llama.cpp's ``/completion`` with ``n`` (``llamacpp_n``): the server picks each sample's slot and says
    which (here the planned slot shifted by 3), so the planned slot is not where the prefix is."""

    reported: dict[str, int] = field(default_factory=dict)

    async def generate(self, messages: Any, *, n: int = 1, params: Any = None, prefix: Any = None) -> Any:
        result = await super().generate(messages, n=n, params=params, prefix=prefix)
        planned = params.slots if params is not None and params.slots else (None,) * n
        for j, gen in enumerate(result.generations):
            slot = ((planned[j] or 0) + 3) % self.slots
            result.generations[j] = replace(gen, slot=slot)
            self.reported[gen.text.strip()] = slot
        return result


async def test_a_beam_continues_on_the_slot_the_server_says_its_step_ran_on():
    policy = ServerSlottedEndpoint(slotted().script)
    graph = create_beam_search(policy, lambda q, t: hashed(path_of(t.split(DELIM)[-1])), n=4, beam_width=2, seed=3)
    await graph.compile().ainvoke({"question": QUESTION})
    continued = [c for c in policy.calls if c.prefix]
    assert len(continued) >= 2
    for call in continued:
        parent = call.prefix.split(DELIM)[:-1][-1].strip()
        assert call.params.slots[0] == policy.reported[parent]  # type: ignore[union-attr]


def test_openai_endpoint_sends_id_slot_only_when_configured_for_slots():
    params = SamplingParams(temperature=0.5, slots=(3,))
    plain = OpenAIEndpoint("http://localhost:1/v1", model="m")
    assert "id_slot" not in plain._request_kwargs(1, params).get("extra_body", {})
    llama = OpenAIEndpoint("http://localhost:1/v1", model="m", slots=4, extra_body={"top_k": 5})
    body = llama._request_kwargs(1, params)["extra_body"]
    assert body == {"top_k": 5, "id_slot": 3, "cache_prompt": True}
    assert "id_slot" not in llama._request_kwargs(1, SamplingParams(slots=(None,))).get("extra_body", {})
    assert llama.extra_body == {"top_k": 5}


# -- DVTS without a round barrier ------------------------------------------------------------------------------


def deep_step(call: FakeCall, counters: dict[int, int], crash: Callable[[int, int], bool] | None = None) -> str:
    """Sample j continuing path P is ``P + (j,)``; a path finishes at depth 3 (so every subtree takes 3 steps)."""
    pos = counters.get(id(call), 0)
    counters[id(call)] = pos + 1
    steps = call.prefix.split(DELIM)[:-1] if call.prefix else []
    if crash is not None and crash(group_of(call), len(steps)):
        raise RuntimeError(f"policy process died at depth {len(steps)}")
    parent = path_of(steps[-1]) if steps else ()
    seed = call.params.seed if call.params is not None else None
    path = (*parent, str(pos)) if parent else (f"s{seed}-{pos}",)
    text = f"[{'.'.join(path)}] step {len(path)}"
    return text + (" \\boxed{42}" if len(path) >= 3 else "")


SEED, WIDTH = 100, 2


def group_of(call: FakeCall) -> int:
    """The DVTS subtree a request belongs to: its first step's label carries the seed of the subtree's root."""
    if not call.prefix:
        return ((call.params.seed or 0) - SEED) // WIDTH  # type: ignore[union-attr]
    first = path_of(call.prefix.split(DELIM)[0])[0]  # "s{seed}-{j}"
    return (int(first[1:].split("-")[0]) - SEED) // WIDTH


@dataclass
class GatedEndpoint(ScriptedEndpoint):
    """Holds subtree 1's first request until subtree 0 has started its third step, and counts what is in flight."""

    log: list[tuple[str, int, int]] = field(default_factory=list)
    in_flight_at_start: list[int] = field(default_factory=list)
    in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(self, messages, *, n=1, params=None, prefix=None):  # type: ignore[no-untyped-def]
        call = FakeCall(list(messages), n, params, prefix)
        group, depth = group_of(call), len(prefix.split(DELIM)) - 1 if prefix else 0
        self.in_flight += n
        self.in_flight_at_start.append(self.in_flight)
        self.log.append(("start", group, depth))
        if group == 0 and depth == 2:
            self.release.set()
        try:
            if group == 1 and depth == 0:
                with contextlib.suppress(TimeoutError):  # never hang: the assertions below then fail
                    await asyncio.wait_for(self.release.wait(), 5)
            return await super().generate(messages, n=n, params=params, prefix=prefix)
        finally:
            self.in_flight -= n
            self.log.append(("end", group, depth))


def dvts(policy: ScriptedEndpoint) -> Any:
    return create_dvts(
        policy, lambda q, t: hashed(path_of(t.split(DELIM)[-1])), n=4, beam_width=WIDTH, seed=SEED, asynchronous=True
    )


async def test_a_dvts_subtree_steps_on_while_another_subtree_is_still_generating():
    counters: dict[int, int] = {}
    policy = GatedEndpoint(lambda call, i: deep_step(call, counters))
    out = await dvts(policy).compile().ainvoke({"question": QUESTION})
    log = policy.log
    # subtree 0 sampled its second and third steps before subtree 1's first step came back
    assert log.index(("start", 0, 1)) < log.index(("end", 1, 0))
    assert log.index(("start", 0, 2)) < log.index(("end", 1, 0))
    # the window stayed full: every step of subtree 0 started while subtree 1's request was in flight
    assert policy.in_flight_at_start[:4] == [2, 4, 4, 4]
    assert max(policy.in_flight_at_start) == 4
    assert out["stop_reason"] == "complete"
    assert sorted(c["meta"]["group"] for c in out["candidates"]) == [0, 0, 1, 1]


async def test_dvts_subtrees_use_their_own_slots():
    counters: dict[int, int] = {}
    policy = SlottedEndpoint(lambda call, i: deep_step(call, counters), slots=4)
    await dvts(policy).compile().ainvoke({"question": QUESTION})
    slot_of: dict[str, int | None] = {}
    for call in policy.calls:
        slots = call.params.slots  # type: ignore[union-attr]
        assert slots is not None
        assert set(slots) == {2 * group_of(call), 2 * group_of(call) + 1}  # subtree g keeps to slots 2g, 2g + 1
        steps = call.prefix.split(DELIM)[:-1] if call.prefix else []
        if steps:
            assert slots[0] == slot_of[steps[-1]]  # the best child's next step runs where its prefix is
        replay: dict[int, int] = {}
        for j in range(call.n):
            slot_of[deep_step(call, replay)] = slots[j]


def summary(out: dict[str, Any]) -> tuple[Any, ...]:
    usage = {k: v for k, v in out["usage"].items() if k != "seconds"}
    cands = [(c["id"], c["text"], c["score"], c["answer"], c["finish_reason"]) for c in out["candidates"]]
    return out["answer"], out["stop_reason"], cands, usage


async def test_dvts_resumes_after_a_crash_without_redoing_the_scored_steps(tmp_path):
    counters: dict[int, int] = {}
    reference = ScriptedEndpoint(lambda call, i: deep_step(call, counters))
    expected = summary(await dvts(reference).compile().ainvoke({"question": QUESTION}))
    assert len(reference.calls) == 6  # two subtrees, three steps each

    config = {"configurable": {"thread_id": "dvts-1"}}
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "ck.sqlite")) as saver:
        crashed: dict[int, int] = {}
        crashing = ScriptedEndpoint(lambda call, i: deep_step(call, crashed, lambda g, d: g == 1 and d == 2))
        with pytest.raises(RuntimeError, match="policy process died"):
            await dvts(crashing).compile(checkpointer=saver).ainvoke({"question": QUESTION}, config)
        fresh: dict[int, int] = {}
        working = ScriptedEndpoint(lambda call, i: deep_step(call, fresh))
        out = await dvts(working).compile(checkpointer=saver).ainvoke(None, config)

    assert summary(out) == expected
    redone = [(group_of(c), len(c.prefix.split(DELIM)) - 1 if c.prefix else 0) for c in working.calls]
    assert (1, 2) in redone and (1, 0) not in redone and (1, 1) not in redone  # only what was not yet scored
    assert len(working.calls) < len(reference.calls)


# -- MCTS without rounds (asynchronous=True: the ``tree`` node) -------------------------------------------------


def async_mcts(policy: ScriptedEndpoint, n: int = 8) -> Any:
    options = StepSearchOptions(n=n, max_steps=4, seed=SEED)
    plan = MCTSPlan(n, 2, 1.0, options.max_steps, asynchronous=True)
    verifier = lambda q, t: hashed(path_of(t.split(DELIM)[-1]))  # noqa: E731
    return build_step_graph("MCTS", policy, verifier, plan, options, "mcts")


def test_create_mcts_and_its_spec_run_without_rounds_on_request():
    verifier = lambda q, t: 0.5  # noqa: E731
    assert "tree" not in create_mcts(slotted(), verifier, n=4).nodes
    assert "tree" in create_mcts(slotted(), verifier, n=4, asynchronous=True).nodes
    spec = {"kind": "mcts", "n": 4, "asynchronous": True, "verifier": {"kind": "confidence"}}
    assert "tree" in build_graph(parse_spec(spec)).nodes


def label_path(call: FakeCall) -> tuple[str, ...]:
    """The choices a request continues: ``("0",)`` continues the root's first child."""
    steps = call.prefix.split(DELIM)[:-1] if call.prefix else []
    if not steps:
        return ()
    path = path_of(steps[-1])
    return (path[0].split("-")[1], *path[1:])


@dataclass
class HeldEndpoint(ScriptedEndpoint):
    """Holds the expansion of the root's second child until a grandchild of the first is being expanded."""

    log: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(self, messages, *, n=1, params=None, prefix=None):  # type: ignore[no-untyped-def]
        path = label_path(FakeCall(list(messages), n, params, prefix))
        self.log.append(("start", path))
        if len(path) == 2 and path[0] == "0":
            self.release.set()
        try:
            if path == ("1",):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.release.wait(), 5)
            return await super().generate(messages, n=n, params=params, prefix=prefix)
        finally:
            self.log.append(("end", path))


async def test_asynchronous_mcts_selects_a_new_leaf_while_another_expansion_is_in_flight():
    counters: dict[int, int] = {}
    policy = HeldEndpoint(lambda call, i: deep_step(call, counters))
    events: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    async for mode, chunk in (
        async_mcts(policy).compile().astream({"question": QUESTION}, stream_mode=["custom", "values"])
    ):
        if mode == "custom":
            events.append(chunk)
        else:
            out = chunk
    log = policy.log
    first_grandchild = next(i for i, (kind, p) in enumerate(log) if kind == "start" and len(p) == 2 and p[0] == "0")
    assert first_grandchild < log.index(("end", ("1",)))  # the tree grew under r.0 while r.1 was still generating
    expansions = [e for e in events if e["event"] == "ttc.expansion"]
    assert expansions and max(e["in_flight"] for e in expansions) >= 1
    assert events[0]["event"] == "ttc.round" and events[-1]["event"] == "ttc.round"
    assert out["stop_reason"] == "complete" and len(out["candidates"]) == 8
    per_depth: dict[int, int] = {}
    for call in policy.calls:
        per_depth[len(label_path(call))] = per_depth.get(len(label_path(call)), 0) + call.n
    assert max(per_depth.values()) <= 8  # never more than n sampled steps per depth


async def test_asynchronous_mcts_resumes_without_redoing_what_came_back(tmp_path):
    config = {"configurable": {"thread_id": "mcts-async-1"}}
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "ck.sqlite")) as saver:
        crashed: dict[int, int] = {}
        crashing = ScriptedEndpoint(lambda call, i: deep_step(call, crashed, lambda g, d: d == 2))
        with pytest.raises(RuntimeError, match="policy process died"):
            await async_mcts(crashing).compile(checkpointer=saver).ainvoke({"question": QUESTION}, config)
        came_back = {c.prefix for c in crashing.calls if (len(c.prefix.split(DELIM)) - 1 if c.prefix else 0) < 2}
        fresh: dict[int, int] = {}
        working = ScriptedEndpoint(lambda call, i: deep_step(call, fresh))
        out = await async_mcts(working).compile(checkpointer=saver).ainvoke(None, config)
    assert out["stop_reason"] == "complete" and len(out["candidates"]) == 8
    assert came_back and not came_back & {c.prefix for c in working.calls}  # the logged expansions were replayed


def test_a_local_server_endpoint_sends_slot_hints_for_its_parallel_slots():
    from ttc_graph.local import LocalModelServer

    server = LocalModelServer(parallel=3)
    server._bound_port, server._started_in = 9, 0.1  # as if started: endpoint() needs only the address
    assert server.endpoint().slots == 3
    assert server.endpoint(slots=None).slots is None  # a caller can turn the hints off


# -- scoring on arrival -----------------------------------------------------------------------------------------


@dataclass
class RoundGatedEndpoint(ScriptedEndpoint):
    """The first request of the second round answers at once; the round's other requests hold until a two-step
    path has been scored (or 5 s pass), and record whether it had been."""

    scored: list[str] = field(default_factory=list)
    held_until_scored: list[bool] = field(default_factory=list)
    second_round: int = 0

    async def _sample(self, messages: Any, n: int, params: Any, prefix: Any) -> Any:
        if prefix and len(prefix.split(DELIM)) == 2:  # one step so far: a request of the second round
            self.second_round += 1
            if self.second_round > 1:
                for _ in range(500):
                    if any(len(t.split(DELIM)) >= 2 for t in self.scored):
                        break
                    await asyncio.sleep(0.01)
                self.held_until_scored.append(any(len(t.split(DELIM)) >= 2 for t in self.scored))
        return await super()._sample(messages, n, params, prefix)


async def test_a_beams_children_are_scored_while_the_rounds_other_requests_still_generate():
    counters: dict[int, int] = {}
    policy = RoundGatedEndpoint(lambda call, i: tree_step(call, i, counters))

    def score(question: str, text: str) -> float:
        policy.scored.append(text)
        return hashed(path_of(text.split(DELIM)[-1]))

    await create_beam_search(policy, score, n=4, beam_width=2, seed=3).compile().ainvoke({"question": QUESTION})
    assert policy.second_round >= 2 and policy.held_until_scored
    assert all(policy.held_until_scored), "a child was scored before the round's last request returned"
