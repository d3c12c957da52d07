"""Monte Carlo tree search end to end over a scripted step-level policy and scripted verifiers (no network).

The fake policy is a tree, as in ``test_search.py``: the j-th sample of a request that continues path P is the step
of path ``P + (j,)``, written ``"[p0.p1...] step d"``; at the finishing depth it states ``\\boxed{answer(path)}``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from tests.fakeclock import FakeClock, TimedEndpoint
from tests.steptree import DELIM, Path, hashed, parent_of, path_of, steps_of
from ttc_graph import (
    Budget,
    BudgetError,
    ConfigurationError,
    FunctionVerifier,
    LLMJudgeVerifier,
    create_beam_search,
    create_mcts,
)
from ttc_graph.endpoints.base import GenerationResult, SamplingParams
from ttc_graph.errors import EndpointError
from ttc_graph.nodes.step_mcts import ROOT, MCTSPlan, TreeNode, select_leaves, uct
from ttc_graph.specs import SpecError, build_graph, parse_spec
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.verifiers import VerificationResult, Verifier, VerifyItem

QUESTION = "What is 6 * 7?"


class StepTree:
    """The scripted step-level policy (see ``test_particle_filtering.py``)."""

    def __init__(
        self,
        *,
        depth: int | None = 3,
        answer: Callable[[Path], str] = lambda path: "42",
        truncate: bool = False,
        delay: float = 0.0,
        crash: Callable[[Path], bool] | None = None,
        fail: Callable[[Path], bool] | None = None,
    ) -> None:
        self.depth = depth
        self.answer = answer
        self.truncate = truncate
        self.crash = crash
        self.fail = fail
        self.endpoint = ScriptedEndpoint(self._respond, delay=delay)
        self._pos: dict[int, int] = {}
        self.texts: list[str] = []

    @property
    def calls(self) -> list[FakeCall]:
        return self.endpoint.calls

    def _respond(self, call: FakeCall, index: int) -> str:
        pos = self._pos.get(id(call), 0)
        self._pos[id(call)] = pos + 1
        parent = parent_of(call)
        if self.crash and self.crash(parent):
            raise RuntimeError(f"policy process died while continuing {parent}")
        if self.fail and self.fail(parent):
            raise EndpointError(f"scripted failure after {parent}", status_code=500)
        path = (*parent, str(pos))
        text = f"[{'.'.join(path)}] step {len(path)}"
        if self.depth is not None and len(path) >= self.depth:
            text += f" \\boxed{{{self.answer(path)}}}"
        if self.truncate and call.params is not None and call.params.max_tokens is not None:
            text = " ".join(text.split()[: call.params.max_tokens])
        self.texts.append(text)
        return text

    def samples(self, *, sampled_only: bool = False) -> int:
        return sum(c.n for c in self.calls if not sampled_only or (c.params is not None and c.params.temperature))

    def per_depth(self) -> Counter[int]:
        """Sampled (temperature > 0) steps by the depth of the prefix they continue."""
        out: Counter[int] = Counter()
        for c in self.calls:
            if c.params is not None and c.params.temperature:
                out[len(steps_of(c.prefix))] += c.n
        return out


def prm_of(score: Callable[[Path], float]) -> Callable[[str, str], float]:
    def prm(question: str, text: str) -> float:
        assert question == QUESTION
        return score(path_of(text.split(DELIM)[-1]))

    return prm


async def run(builder: Any, inp: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return await builder.compile().ainvoke(inp if inp is not None else {"question": QUESTION}, **kwargs)


async def run_with_events(builder: Any, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    async for mode, chunk in builder.compile().astream(
        {"question": QUESTION}, stream_mode=["custom", "values"], **kwargs
    ):
        if mode == "custom":
            events.append(chunk)
        else:
            out = chunk
    return out, events


GOLD = ("1", "0", "1")


def gold_score(path: Path) -> float:
    return 0.9 if path == GOLD[: len(path)] else 0.1 + 0.01 * int(path[-1])


def gold_answer(path: Path) -> str:
    return "42" if path == GOLD else str(1000 + int("".join(path)))


# -- 1. it finds the verifier's best path ---------------------------------------------------------------------------


@pytest.mark.parametrize("selection", ["naive", "weighted"])
@pytest.mark.parametrize(("n", "expansions", "rollout"), [(4, 2, 0), (8, 4, 0), (16, 4, 0), (4, 2, 1)])
async def test_returns_the_answer_of_the_prm_best_path(n: int, expansions: int, rollout: int, selection: str):
    tree = StepTree(answer=gold_answer)
    graph = create_mcts(
        tree.endpoint, prm_of(gold_score), n=n, expansions=expansions, rollout=rollout, selection=selection
    )
    out = await run(graph)
    assert out["answer"] == "42"
    assert out["stop_reason"] == "complete"
    winner = next(c for c in out["candidates"] if c["answer"] == "42")
    assert [path_of(s) for s in winner["text"].split(DELIM)] == [GOLD[:1], GOLD[:2], GOLD]
    assert winner["score"] == pytest.approx(0.9)
    assert winner["meta"]["visits"] == 1
    assert len(out["candidates"]) == n  # the top n finished paths


async def test_values_are_backed_up_through_every_ancestor():
    tree = StepTree(depth=4)
    graph = create_mcts(tree.endpoint, prm_of(hashed), n=8, expansions=2).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "mcts-tree"}}
    await graph.ainvoke({"question": QUESTION}, config)
    nodes: dict[str, TreeNode] = {b["id"]: b for b in (await graph.aget_state(config)).values["frontier"]}
    children: dict[str, list[str]] = {i: [] for i in nodes}
    for i in nodes:
        if i != ROOT:
            children[i.rsplit(".", 1)[0]].append(i)
    assert len(nodes) > 8
    for i, node in nodes.items():
        own = (1, node["score"]) if i != ROOT else (0, 0.0)
        assert node["visits"] == own[0] + sum(nodes[c]["visits"] for c in children[i])
        assert node["value"] == pytest.approx(own[1] + sum(nodes[c]["value"] for c in children[i]))
        if i != ROOT:  # every node is the step its policy request sampled
            assert path_of(node["steps"][-1]) == tuple(i.split(".")[1:])


# -- 2. UCT -----------------------------------------------------------------------------------------------------------


def test_uct():
    assert uct(3.0, 5, 6, 0.0) == pytest.approx(0.6)
    assert uct(3.0, 5, 6, 2.0) == pytest.approx(0.6 + 2 * math.sqrt(math.log(6) / 5))
    assert uct(0.0, 0, 6, 1.0) == math.inf  # an unvisited child first
    assert uct(0.5, 1, 1, 1.0) == pytest.approx(0.5)  # ln 1 = 0


def node(node_id: str, visits: int, value: float, *, finished: bool = False) -> TreeNode:
    steps = [f"[{'.'.join(node_id.split('.')[1 : i + 1])}] step {i}" for i in range(1, node_id.count(".") + 1)]
    return TreeNode(
        id=node_id, group=0, steps=steps, score=value / visits if visits else None, step_scores=None, scored=True,
        finished=finished, answer=None, tokens=0, round=0, visits=visits, value=value, backed=True,
    )  # fmt: skip


def hand_built_tree() -> dict[str, TreeNode]:
    """r.0 (Q 0.6, 5 visits) with four children of Q 0.6; r.1 a leaf of Q 0.5 and one visit."""
    nodes = [node(ROOT, 6, 3.5), node("r.0", 5, 3.0), node("r.1", 1, 0.5)]
    nodes += [node(f"r.0.{i}", 1, 0.6) for i in range(4)]
    return {b["id"]: b for b in nodes}


def test_exploration_zero_is_greedy_and_a_large_one_visits_the_neglected_child():
    greedy = select_leaves(MCTSPlan(8, 2, 0.0, 10), hand_built_tree())
    assert (greedy[0][0]["id"], greedy[0][1]) == ("r.0.0", 2)  # Q 0.6 > 0.5; ties go to the lower id
    curious = select_leaves(MCTSPlan(8, 2, 2.0, 10), hand_built_tree())
    assert curious[0][0]["id"] == "r.1"  # 0.5 + 2 sqrt(ln 6 / 1) beats 0.6 + 2 sqrt(ln 6 / 5)


def test_a_round_selects_distinct_leaves_and_respects_the_layer_capacity():
    chosen = select_leaves(MCTSPlan(8, 2, 1.0, 10), hand_built_tree())
    assert len(chosen) == 4  # n // expansions selections
    assert len({b["id"] for b, _ in chosen}) == 4  # the virtual loss spreads them
    # depth 2 holds 4 nodes of 8: r.1's children fit once (2); depth 3 is empty: 8 places for r.0.x's children
    by_depth = Counter()
    for b, k in chosen:
        by_depth[b["id"].count(".") + 1] += k
    assert all(count <= 8 - {2: 4}.get(d, 0) for d, count in by_depth.items())
    full = hand_built_tree() | {f"r.1.{i}": node(f"r.1.{i}", 1, 0.5) for i in range(4)}  # depth 2 is full
    assert all(b["id"] != "r.1" for b, _ in select_leaves(MCTSPlan(8, 2, 5.0, 10), full))


def test_finished_and_depth_limited_leaves_are_never_selected():
    nodes = {b["id"]: b for b in [node(ROOT, 2, 1.0), node("r.0", 1, 0.9, finished=True), node("r.1", 1, 0.1)]}
    assert [b["id"] for b, _ in select_leaves(MCTSPlan(4, 2, 0.0, 10), nodes)] == ["r.1"]
    assert select_leaves(MCTSPlan(4, 2, 0.0, 1), nodes) == []  # max_depth 1: nothing below depth 1


# -- 3. exact accounting: the compute of beam search ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expansions", "rollout", "samples", "requests"),
    [
        (4, 2, 0, 10, 5),  # root: 2; round 2: 2 leaves x 2; round 3: 2 leaves x 2 (all finish)
        (8, 4, 0, 20, 5),  # 4 + 2 x 4 + 2 x 4
        (4, 2, 1, 16, 11),  # 10 sampled + 6 greedy rollout steps (2 at depth 1, 4 at depth 2); 5 + 6 requests
    ],
)
async def test_exact_accounting(n: int, expansions: int, rollout: int, samples: int, requests: int):
    tree = StepTree()
    out, events = await run_with_events(create_mcts(tree.endpoint, prm_of(hashed), n=n, expansions=expansions,
                                                    rollout=rollout))  # fmt: skip
    assert tree.samples() == samples
    assert len(tree.calls) == requests
    usage = out["usage"]
    assert usage["generations"] == usage["by_kind"]["propose"]["generations"] == n * (rollout + 1)
    assert usage["requests"] == usage["by_kind"]["propose"]["requests"] == requests
    assert usage["completion_tokens"] == sum(len(t.split()) for t in tree.texts)
    assert sum(e["planned"] for e in events) == tree.samples(sampled_only=True)
    rollouts = [c for c in tree.calls if c.params is not None and c.params.temperature == 0.0]
    assert len(rollouts) == samples - tree.samples(sampled_only=True)
    assert all(c.n == 1 and c.params is not None and c.params.seed is None for c in rollouts)


@pytest.mark.parametrize(("n", "expansions", "depth"), [(4, 2, 4), (8, 2, 5), (8, 4, 4), (6, 4, 4), (16, 4, 3)])
async def test_never_more_than_n_sampled_steps_per_depth_the_compute_of_beam_search(
    n: int, expansions: int, depth: int
):
    tree = StepTree(depth=depth)
    out = await run(create_mcts(tree.endpoint, prm_of(hashed), n=n, expansions=expansions))
    per_depth = tree.per_depth()
    assert max(per_depth.values()) <= n
    assert all(c.n <= expansions for c in tree.calls)
    beam = StepTree(depth=depth)
    width = expansions if n % expansions == 0 else 1
    reference = await run(create_beam_search(beam.endpoint, prm_of(hashed), n=n, beam_width=width))
    assert out["usage"]["generations"] == reference["usage"]["generations"] == n
    assert tree.samples() <= beam.samples() == n * depth
    assert out["stop_reason"] == "complete"


# -- 4. budgets and limits --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rollout", "generations"), [(0, 3), (1, 7)])
def test_generation_budget_below_the_cost_fails_at_construction(rollout: int, generations: int):
    tree = StepTree()
    with pytest.raises(ConfigurationError, match=rf"^budget:.*{4 * (rollout + 1)} generations"):
        create_mcts(tree.endpoint, prm_of(hashed), n=4, expansions=2, rollout=rollout,
                    budget=Budget(generations=generations))  # fmt: skip
    assert tree.calls == []


async def test_context_budget_below_the_cost_fails_before_any_call():
    tree = StepTree()
    graph = create_mcts(tree.endpoint, prm_of(hashed), n=4, expansions=2, rollout=1).compile()
    with pytest.raises(BudgetError, match="8 generations"):
        await graph.ainvoke({"question": QUESTION}, context={"budget": {"generations": 7}})
    assert tree.calls == []


async def test_a_generation_budget_equal_to_the_cost_is_enough():
    tree = StepTree()
    out = await run(create_mcts(tree.endpoint, prm_of(hashed), n=4, expansions=2, rollout=1,
                                budget=Budget(generations=8)))  # fmt: skip
    assert out["stop_reason"] == "complete"
    assert out["usage"]["generations"] == 8


@pytest.mark.parametrize(("tokens", "stop"), [(80, "complete"), (30, "budget:tokens"), (3, "budget:tokens")])
async def test_a_token_budget_is_never_exceeded(tokens: int, stop: str):
    tree = StepTree(truncate=True)
    graph = create_mcts(tree.endpoint, prm_of(hashed), n=4, expansions=2, budget=Budget(tokens=tokens))
    out, events = await run_with_events(graph)
    assert out["stop_reason"] == stop
    assert out["usage"].get("completion_tokens", 0) <= tokens
    # each request's cap is its round's share of what is left, over the n samples a round may draw
    caps = {min(256, (tokens - e["usage"].get("completion_tokens", 0)) // 4) for e in events if e["planned"]}
    assert {c.params.max_tokens for c in tree.calls if c.params is not None} <= caps
    if tokens < 4:  # not even one token per sample: refused before any request
        assert tree.calls == [] and out["candidates"] == []


async def test_a_seconds_budget_stops_a_slow_search(monkeypatch: pytest.MonkeyPatch):
    clock = FakeClock().install(monkeypatch)
    tree = StepTree(depth=None)  # never finishes
    tree.endpoint = policy = TimedEndpoint(tree._respond, clock=clock, cost=0.1)  # a round: 0.1 s of the fake clock
    graph = create_mcts(policy, prm_of(hashed), n=4, expansions=2, budget=Budget(seconds=0.35))
    out = await asyncio.wait_for(run(graph), 60)  # a hang guard only
    assert out["stop_reason"] == "budget:seconds"
    # rounds start at 0, 0.1, 0.2 and 0.3 s, none after the 0.35 s are spent; each request gets the seconds left
    assert {round(t - clock.start, 6) for t in policy.starts} == {0.0, 0.1, 0.2, 0.3}
    left = [0.35 - (t - clock.start) for t in policy.starts]
    assert [c.params.timeout if c.params else None for c in tree.calls] == pytest.approx(left)
    assert 1 <= len(out["candidates"]) <= 4
    assert all(c["finish_reason"] == "budget:seconds" and c["scored"] for c in out["candidates"])


async def test_max_depth_bounds_the_tree():
    tree = StepTree(depth=None)
    out = await run(create_mcts(tree.endpoint, prm_of(hashed), n=4, expansions=2, max_depth=3))
    assert out["stop_reason"] == "max_steps"
    assert max(len(steps_of(c.prefix)) for c in tree.calls) == 2
    assert max(tree.per_depth().values()) <= 4
    assert len(out["candidates"]) == 4
    assert all(c["finish_reason"] == "max_steps" and c["answer"] is None for c in out["candidates"])
    assert max(c["meta"]["steps"] for c in out["candidates"]) == 3
    assert out["answer"] is None


# -- 5. steps, progress, diagnostics, failures ----------------------------------------------------------------------


async def test_round_events_and_diagnostics():
    tree = StepTree()
    out, events = await run_with_events(create_mcts(tree.endpoint, prm_of(hashed), n=4, expansions=2))
    assert all(e["event"] == "ttc.round" for e in events)
    assert [e["round"] for e in events] == [0, 1, 2, 3]
    assert [e["planned"] for e in events] == [2, 4, 4, 0]
    assert [e["nodes"] for e in events] == [0, 2, 6, 10]
    assert events[-1]["layers"] == {"1": 2, "2": 4, "3": 4}
    assert [e["stop"] for e in events] == [None, None, None, "complete"]
    assert [b["id"] for b in events[0]["beams"]] == [ROOT]
    for event in events[1:3]:
        assert all(b["steps"] == event["round"] and b["visits"] >= 1 for b in event["beams"])
        assert event["steps_per_beam"]["median"] == event["round"]
    assert out["diagnostics"]["steps_per_candidate"] == {"histogram": {"3": 4}, "min": 3, "median": 3, "max": 3}
    assert out["diagnostics"]["warnings"] == []
    assert out["diagnostics"]["nodes"] == 10 and out["diagnostics"]["finished"] == 4


async def test_a_model_that_never_writes_the_delimiter_triggers_the_warning(caplog: pytest.LogCaptureFixture):
    endpoint = ScriptedEndpoint(["Six times seven is forty-two, so \\boxed{42}."])
    with caplog.at_level(logging.WARNING, logger="ttc_graph.search"):
        out = await run(create_mcts(endpoint, lambda q, s: 0.5, n=4, expansions=4))
    assert out["answer"] == "42"
    assert out["diagnostics"]["steps_per_candidate"]["median"] == 1
    assert "delimiter" in out["diagnostics"]["warnings"][0]
    assert any("behaves like best-of-N" in r.message for r in caplog.records)


async def test_a_truncated_step_is_continued_not_finished():
    def respond(call: FakeCall, index: int) -> str | tuple[str, str]:
        prefix = call.prefix or ""
        if not prefix:
            return ("First, 6 * 7", "length")
        if not prefix.endswith(DELIM):
            return (" = 42.", "stop")
        return ("So the answer is \\boxed{42}.", "stop")

    endpoint = ScriptedEndpoint(respond)
    out = await run(create_mcts(endpoint, lambda q, s: 0.5, n=4, expansions=2))
    assert [c.prefix for c in endpoint.calls if c.prefix and not c.prefix.endswith(DELIM)]
    assert out["answer"] == "42"
    assert out["candidates"]
    for cand in out["candidates"]:
        assert cand["text"] == "First, 6 * 7 = 42.\n\nSo the answer is \\boxed{42}."
        assert cand["meta"]["steps"] == 2  # the partial first step and its continuation are one step


async def test_a_failed_expansion_is_recorded_and_the_leaf_is_tried_again():
    attempts: Counter[Path] = Counter()

    def fail(parent: Path) -> bool:
        attempts[parent] += 1
        return parent == GOLD[:1] and attempts[parent] == 1  # the gold branch fails once

    tree = StepTree(answer=gold_answer, fail=fail)
    out = await run(create_mcts(tree.endpoint, prm_of(gold_score), n=4, expansions=2))
    assert any("expand r.1" in e for e in out["errors"])
    assert out["usage"]["failed_requests"] == 1
    assert out["answer"] == "42"


async def test_a_search_whose_every_expansion_fails_stops_with_an_error():
    tree = StepTree(fail=lambda parent: True)
    out = await run(create_mcts(tree.endpoint, prm_of(hashed), n=4, expansions=2))
    assert out["stop_reason"] == "error"
    assert out["answer"] is None and out["candidates"] == []
    assert len(tree.calls) == 1


class JitteryEndpoint:
    """Delegates to a scripted endpoint after a random delay, so concurrent branches finish in random order."""

    def __init__(self, inner: ScriptedEndpoint, rng: random.Random) -> None:
        self.inner = inner
        self.rng = rng

    @property
    def name(self) -> str:
        return "jittery"

    async def generate(
        self, messages: Any, *, n: int = 1, params: SamplingParams | None = None, prefix: str | None = None
    ) -> GenerationResult:
        await asyncio.sleep(self.rng.random() * 0.01)
        return await self.inner.generate(messages, n=n, params=params, prefix=prefix)


async def test_results_do_not_depend_on_completion_order():
    results = []
    for run_seed in range(3):
        tree = StepTree(depth=4, answer=lambda path: str(int(path[-1]) % 3))
        out = await run(create_mcts(JitteryEndpoint(tree.endpoint, random.Random(run_seed)), prm_of(hashed),
                                    n=16, expansions=4, rollout=1, seed=11))  # fmt: skip
        results.append((out["answer"], [(c["id"], c["text"], c["score"]) for c in out["candidates"]]))
    assert results[0] == results[1] == results[2]


# -- 6. resume after a crash ----------------------------------------------------------------------------------------


def summary(out: dict[str, Any]) -> tuple[Any, ...]:
    usage = {k: v for k, v in out["usage"].items() if k != "seconds"}
    cands = [(c["id"], c["text"], c["score"], c["answer"], c["meta"]) for c in out["candidates"]]
    return out["answer"], out["stop_reason"], cands, usage


def build_for_resume(tree: StepTree) -> Any:
    return create_mcts(tree.endpoint, prm_of(hashed), n=8, expansions=2, seed=17)


async def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    reference = StepTree(depth=4, answer=lambda p: str(int(p[0]) % 3))
    expected = summary(await run(build_for_resume(reference)))
    crash_round = 3
    config = {"configurable": {"thread_id": "mcts-1"}}
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "ck.sqlite")) as saver:
        crashed: set[Path] = set()

        def crash(parent: Path) -> bool:
            prefix_rounds = {len(steps_of(c.prefix)) for c in crashing.calls}
            if len(prefix_rounds) >= crash_round and parent not in crashed:
                crashed.add(parent)
                return True
            return False

        crashing = StepTree(depth=4, answer=lambda p: str(int(p[0]) % 3), crash=crash)
        with pytest.raises(RuntimeError, match="policy process died"):
            await build_for_resume(crashing).compile(checkpointer=saver).ainvoke({"question": QUESTION}, config)
        state = await build_for_resume(crashing).compile(checkpointer=saver).aget_state(config)
        assert state.next and state.values["round"] >= 2
        working = StepTree(depth=4, answer=lambda p: str(int(p[0]) % 3))
        out = await build_for_resume(working).compile(checkpointer=saver).ainvoke(None, config)
    assert summary(out) == expected
    assert out["usage"]["generations"] == 8
    # the resumed run drew only what the crashed one had not: together they are the uninterrupted run's requests
    done = [c.prefix for c in crashing.calls if parent_of(c) not in crashed]
    together = sorted(done + [c.prefix for c in working.calls], key=str)
    assert together == sorted((c.prefix for c in reference.calls), key=str)


# -- 7. bad input, names, specs -------------------------------------------------------------------------------------


class OutcomeOnly(Verifier):
    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        raise AssertionError("never called")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 0}, "n"),
        ({"n": 1.5}, "n"),
        ({"exploration": -0.1}, "exploration"),
        ({"exploration": math.nan}, "exploration"),
        ({"expansions": 0}, "expansions"),
        ({"expansions": 5}, "expansions"),
        ({"max_depth": 0}, "max_depth"),
        ({"rollout": -1}, "rollout"),
        ({"aggregation": "median"}, "aggregation"),
        ({"selection": "majority"}, "selection"),
        ({"step_delimiter": ""}, "step_delimiter"),
        ({"verifier": None}, "verifier"),
        ({"verifier": OutcomeOnly()}, "verifier"),
        ({"verifier": "judge"}, "verifier"),
    ],
)
def test_bad_arguments_are_configuration_errors_before_any_request(kwargs: dict[str, Any], field: str):
    tree = StepTree()
    kwargs = {"n": 4, "expansions": 2, "verifier": prm_of(hashed), **kwargs}
    verifier = kwargs.pop("verifier")
    if verifier == "judge":
        verifier = LLMJudgeVerifier(tree.endpoint, mode="outcome")
    with pytest.raises(ConfigurationError, match=rf"^{field}:"):
        create_mcts(tree.endpoint, verifier, **kwargs)
    assert tree.calls == []


async def test_name_history_and_messages():
    tree = StepTree()
    graph = create_mcts(tree.endpoint, prm_of(hashed), n=2, expansions=2, history="last", name="tree-2")
    assert graph.compile().name == "tree-2"
    assert create_mcts(tree.endpoint, prm_of(hashed), n=2, expansions=2).compile().name == "mcts"
    out = await run(graph, {"messages": [HumanMessage("Earlier question"), AIMessage("Earlier answer"),
                                         HumanMessage(QUESTION)]})  # fmt: skip
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and last.name == "tree-2"
    assert last.response_metadata["ttc_answer"] == "42"
    assert all(len(c.messages) == 2 for c in tree.calls)


async def test_a_spec_builds_the_same_search():
    spec = parse_spec({"kind": "mcts", "n": 4, "expansions": 2, "exploration": 0.5, "rollout": 1,
                       "verifier": {"kind": "python", "target": "math:fabs"}})  # fmt: skip
    direct, built = StepTree(), StepTree()
    out = await run(build_graph(spec, policy=built.endpoint, verifier=FunctionVerifier(prm_of(hashed))))
    ref = await run(create_mcts(direct.endpoint, prm_of(hashed), n=4, expansions=2, exploration=0.5, rollout=1))
    assert summary(out) == summary(ref)
    with pytest.raises(SpecError, match="not step-wise"):
        parse_spec({"kind": "mcts", "n": 4, "expansions": 2, "verifier": {"kind": "llm_judge", "mode": "outcome"}})
