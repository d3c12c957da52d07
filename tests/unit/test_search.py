"""Step-level search (beam search, lookahead, DVTS) end to end over a scripted step-level policy and fake PRMs.

The fake policy is a tree: the j-th sample of a request that continues path P is the step of path ``P + (j,)``.
Its text is ``"[p0.p1...] step d"`` and, at the finishing depth, it states ``\\boxed{answer(path)}``. The text
depends only on the prefix being continued and the sample's position within its request, never on the order in
which concurrent ``Send`` branches reach the endpoint, so every run is reproducible.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from tests.fakeclock import FakeClock, TimedEndpoint
from ttc_graph import Budget, BudgetError, ConfigurationError, TTCContext, create_beam_search, create_dvts
from ttc_graph.endpoints.base import GenerationResult, SamplingParams
from ttc_graph.errors import EndpointError
from ttc_graph.strategies.search import resolve_width
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.verifiers import Score, VerificationResult, Verifier, VerifyItem

QUESTION = "What is 6 * 7?"
DELIM = "\n\n"
TAG = re.compile(r"^\[([^\]]+)\]")

Path = tuple[str, ...]


def path_of(step: str) -> Path:
    m = TAG.match(step)
    assert m, f"not a scripted step: {step!r}"
    return tuple(m.group(1).split("."))


def steps_of(prefix: str | None) -> list[str]:
    if not prefix:
        return []
    assert prefix.endswith(DELIM), f"a prefix must end with the delimiter: {prefix!r}"
    return prefix.split(DELIM)[:-1]


class StepTree:
    """A scripted step-level policy (see the module docstring).

    ``depth``: the depth at which every path states its answer (None: never); ``finishes(path)`` overrides it.
    ``salt_roots``: a first step's label carries its request's seed, so DVTS subtrees (which all continue the
    empty prefix) differ. ``truncate``: cut each text to ``max_tokens`` words (the fake counts one token per
    word). ``fail``: a predicate on the parent path; matching requests raise :class:`EndpointError`.
    """

    def __init__(
        self,
        *,
        depth: int | None = 3,
        finishes: Callable[[Path], bool] | None = None,
        answer: Callable[[Path], str] = lambda path: "42",
        salt_roots: bool = False,
        truncate: bool = False,
        delay: float = 0.0,
        native_n: bool = True,
        fail: Callable[[Path], bool] | None = None,
    ) -> None:
        self.depth = depth
        self.finishes = finishes or (lambda path: depth is not None and len(path) >= depth)
        self.answer = answer
        self.salt_roots = salt_roots
        self.truncate = truncate
        self.fail = fail
        self.endpoint = ScriptedEndpoint(self._respond, delay=delay, native_n=native_n)
        self._pos: dict[int, int] = {}
        self.outputs: dict[int, list[str]] = {}  # id(call) -> texts it returned

    @property
    def calls(self) -> list[FakeCall]:
        return self.endpoint.calls

    def _respond(self, call: FakeCall, index: int) -> str:
        pos = self._pos.get(id(call), 0)  # position within this request, whatever the global order
        self._pos[id(call)] = pos + 1
        steps = steps_of(call.prefix)
        parent = path_of(steps[-1]) if steps else ()
        if self.fail and self.fail(parent):
            raise EndpointError(f"scripted failure after {parent}", status_code=500)
        if parent:
            path = (*parent, str(pos))
        elif self.salt_roots:
            assert call.params is not None and call.params.seed is not None
            path = (f"s{call.params.seed}-{pos}",)
        else:
            path = (str(pos),)
        text = f"[{'.'.join(path)}] step {len(path)}"
        if self.finishes(path):
            text += f" \\boxed{{{self.answer(path)}}}"
        if self.truncate and call.params is not None and call.params.max_tokens is not None:
            text = " ".join(text.split()[: call.params.max_tokens])
        self.outputs.setdefault(id(call), []).append(text)
        return text

    def siblings(self, step: str) -> list[str]:
        """Every step sampled (at temperature > 0) by the request that produced ``step``."""
        found = [
            self.outputs[id(c)]
            for c in self.calls
            if id(c) in self.outputs and step in self.outputs[id(c)] and c.params and c.params.temperature
        ]
        assert len(found) == 1, f"{step!r} was sampled by {len(found)} requests"
        return found[0]

    def samples(self) -> int:
        return sum(c.n for c in self.calls)


def prm_of(score: Callable[[Path], float]) -> Callable[[str, str], float]:
    """A plain-callable verifier that scores a (partial) solution by the path of its last step."""

    def prm(question: str, text: str) -> float:
        assert question == QUESTION
        return score(path_of(text.split(DELIM)[-1]))

    return prm


def hashed(path: Path) -> float:
    """A reproducible pseudo-random score in [0, 1) (``hash()`` of a str is salted per process)."""
    digest = hashlib.sha256(".".join(path).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


class StepPRM(Verifier):
    """A process verifier: every step gets ``table(path)``; the solution's value is the last step's score."""

    granularity = "process"

    def __init__(self, table: Callable[[Path], float]) -> None:
        self.table = table
        self.batches: list[list[VerifyItem]] = []

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        self.batches.append(list(items))
        scores = []
        for item in items:
            per_step = tuple(self.table(path_of(s)) for s in item.steps)
            scores.append(Score(per_step[-1], step_scores=per_step))
        return VerificationResult(scores)


async def run(builder: Any, inp: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return await builder.compile().ainvoke(inp if inp is not None else {"question": QUESTION}, **kwargs)


async def events_of(builder: Any, **kwargs: Any) -> list[dict[str, Any]]:
    graph = builder.compile()
    return [e async for e in graph.astream({"question": QUESTION}, stream_mode="custom", **kwargs)]


def steps_of_candidate(c: dict[str, Any]) -> list[str]:
    steps = c["text"].split(DELIM)
    assert len(steps) == c["meta"]["steps"]
    return steps


# -- 1. the search finds the verifier's best path -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "beam_width", "gold"),
    [(4, 2, ("3", "1", "0")), (16, 4, ("13", "2", "3")), (16, "sqrt", ("0", "3", "1"))],
)
async def test_returns_the_answer_of_the_prm_best_path(n: int, beam_width: int | str, gold: Path):
    def score(path: Path) -> float:
        if path == gold[: len(path)]:
            return 0.9
        return 0.1 + 0.01 * int(path[-1])  # weaker variants, never tied with the gold prefix

    def answer(path: Path) -> str:
        return "42" if path == gold else str(1000 + int("".join(path)))

    tree = StepTree(answer=answer)
    out = await run(create_beam_search(tree.endpoint, prm_of(score), n=n, beam_width=beam_width))
    assert out["answer"] == "42"
    assert out["stop_reason"] == "complete"
    winners = [c for c in out["candidates"] if c["answer"] == "42"]
    assert len(winners) == 1
    assert [path_of(s) for s in steps_of_candidate(winners[0])] == [gold[:1], gold[:2], gold]
    assert winners[0]["score"] == pytest.approx(0.9)
    # the other finished beams answered something else
    assert len({c["answer"] for c in out["candidates"]}) == len(out["candidates"]) == n


async def test_weighted_over_finished_beams_overrides_the_top_score():
    # n=4, M=4: one beam kept per round; its four finished children: one "9" scored 0.9, three "7" scored 0.5.
    def score(path: Path) -> float:
        if len(path) < 3:
            return 0.5
        return 0.9 if path[-1] == "0" else 0.5

    tree = StepTree(answer=lambda path: "9" if path[-1] == "0" else "7")
    out = await run(create_beam_search(tree.endpoint, prm_of(score), n=4, beam_width=4))
    cands = out["candidates"]
    assert len(cands) == 4
    top = max(cands, key=lambda c: c["score"])
    assert (top["answer"], top["score"]) == ("9", pytest.approx(0.9))
    assert sorted(c["answer"] for c in cands) == ["7", "7", "7", "9"]
    assert out["answer"] == "7"  # weight 1.5 beats 0.9


@pytest.mark.parametrize(("lookahead", "expected"), [(0, "7"), (1, "42")])
async def test_lookahead_sees_past_a_weak_looking_step(lookahead: int, expected: str):
    # First step "1" looks weak (0.2) but its greedy continuation is the best step of all (0.95).
    def score(path: Path) -> float:
        if len(path) == 1:
            return 0.2 if path == ("1",) else 0.5
        if len(path) == 2:
            return 0.95 if path == ("1", "0") else 0.3
        return 0.5

    tree = StepTree(answer=lambda path: "42" if path[0] == "1" else "7")
    out = await run(create_beam_search(tree.endpoint, prm_of(score), n=4, beam_width=4, lookahead=lookahead))
    assert out["answer"] == expected
    for c in out["candidates"]:  # rollout steps score a step but never become part of a beam
        assert c["meta"]["steps"] == 3
        assert [len(path_of(s)) for s in steps_of_candidate(c)] == [1, 2, 3]
    rollouts = [c for c in tree.calls if c.params is not None and c.params.temperature == 0.0]
    assert len(rollouts) == (4 + 4 if lookahead else 0)  # round 1 and round 2 children; finished ones get none
    assert all(c.n == 1 and c.params is not None and c.params.seed is None for c in rollouts)


# -- 2. exact accounting --------------------------------------------------------------------------------------------


DEPTH = 3


def expected_policy_draws(n: int, width: int, k: int, depth: int = DEPTH) -> tuple[int, int]:
    """(step samples, requests) of beam search when every path finishes at ``depth``.

    Each of the ``depth`` rounds samples ``n`` steps: round 1 in one request of ``n`` (the single root), later
    rounds in ``n / width`` requests of ``width`` (one per kept beam). A child at depth ``r < depth`` gets a
    greedy rollout of ``min(k, depth - r)`` steps, one single-sample request each (the rollout stops at the
    finishing step); children at ``depth`` are finished and get none.
    """
    rollout_steps = sum(n * min(k, depth - r) for r in range(1, depth))
    samples = depth * n + rollout_steps
    requests = 1 + (depth - 1) * (n // width) + rollout_steps
    return samples, requests


@pytest.mark.parametrize(
    ("n", "beam_width", "k", "samples", "requests"),
    [
        (4, 2, 0, 12, 5),  # 3·4 samples; 1 + 2·2 requests
        (16, 4, 0, 48, 9),  # 3·16; 1 + 2·4
        (16, 4, 1, 80, 41),  # 48 + 16·1 + 16·1 rollout steps; 9 + 32
        (16, "sqrt", 3, 96, 57),  # M = 4: 48 + 16·2 + 16·1; 9 + 48
    ],
)
async def test_exact_accounting(n: int, beam_width: int | str, k: int, samples: int, requests: int):
    width = resolve_width(n, beam_width)  # type: ignore[arg-type]
    assert expected_policy_draws(n, width, k) == (samples, requests)
    tree = StepTree(depth=DEPTH)
    graph = create_beam_search(tree.endpoint, prm_of(hashed), n=n, beam_width=beam_width, lookahead=k)
    out = await run(graph)
    assert tree.samples() == samples
    assert len(tree.calls) == requests
    usage = out["usage"]
    assert usage["generations"] == n * (k + 1)
    assert usage["by_kind"]["propose"]["requests"] == requests == usage["requests"]
    assert usage["by_kind"]["propose"]["generations"] == n * (k + 1)
    assert usage["completion_tokens"] == sum(len(t.split()) for texts in tree.outputs.values() for t in texts)
    assert usage["failed_requests"] == 0
    assert out["stop_reason"] == "complete"
    assert len(out["candidates"]) == n
    assert all(c["meta"]["steps"] == DEPTH and c["answer"] == "42" for c in out["candidates"])
    assert out["answer"] == "42"
    # every expansion after round 1 continues a kept beam with exactly `width` samples
    expansions = [c for c in tree.calls if c.params is not None and c.params.temperature]
    assert [c.n for c in expansions if c.prefix is None] == [n]
    assert all(c.n == width for c in expansions if c.prefix is not None)


async def test_accounting_without_native_n_counts_one_request_per_sample():
    tree = StepTree(native_n=False)
    out = await run(create_beam_search(tree.endpoint, prm_of(hashed), n=16, beam_width=4, lookahead=1))
    assert tree.samples() == len(tree.calls) == 80
    assert out["usage"]["requests"] == 80
    assert out["usage"]["generations"] == 32


@pytest.mark.parametrize(("n", "beam_width", "k"), [(4, 2, 0), (16, 4, 1)])
async def test_dvts_accounting(n: int, beam_width: int, k: int):
    tree = StepTree(salt_roots=True)
    out = await run(create_dvts(tree.endpoint, prm_of(hashed), n=n, beam_width=beam_width, lookahead=k, seed=7))
    groups = n // beam_width
    rollout_steps = sum(n * min(k, DEPTH - r) for r in range(1, DEPTH))
    assert tree.samples() == DEPTH * n + rollout_steps
    assert len(tree.calls) == DEPTH * groups + rollout_steps  # one request per subtree per round
    assert out["usage"]["generations"] == n * (k + 1)
    assert out["usage"]["by_kind"]["propose"]["requests"] == len(tree.calls)


# -- 3. budgets -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tokens", "stop"), [(60, "complete"), (30, "budget:tokens")])
async def test_token_budget_caps_every_request_at_its_share(tokens: int, stop: str):
    n, k, step_max_tokens = 4, 0, 256
    tree = StepTree(truncate=True)
    graph = create_beam_search(
        tree.endpoint, prm_of(hashed), n=n, beam_width=2, budget=Budget(tokens=tokens), step_max_tokens=step_max_tokens
    )
    events = await events_of(graph)
    planned = [e for e in events if e["planned"]]
    assert planned
    for event in planned:  # the round's share: what is left, split over every sample the round may draw
        spent = event["usage"].get("completion_tokens", 0)
        cap = min(step_max_tokens, (tokens - spent) // (n * (k + 1)))
        depth = event["round"]
        at_depth = [c for c in tree.calls if len(steps_of(c.prefix)) == depth]
        assert at_depth
        assert all(c.params is not None and c.params.max_tokens == cap for c in at_depth)
    final = events[-1]
    assert final["stop"] == stop
    assert final["usage"]["completion_tokens"] <= tokens
    assert final["finished"] == (4 if stop == "complete" else 0)
    out = await run(create_beam_search(StepTree(truncate=True).endpoint, prm_of(hashed), n=n, beam_width=2,
                                       budget=Budget(tokens=tokens)))  # fmt: skip
    assert out["stop_reason"] == stop
    assert out["usage"]["completion_tokens"] <= tokens
    # finished or not, the beams alive at the end are the candidates (a token-starved step is cut short)
    assert len(out["candidates"]) == 4
    assert [c["answer"] for c in out["candidates"]] == (["42"] * 4 if stop == "complete" else [None] * 4)


@pytest.mark.parametrize("k", [0, 2])
async def test_generation_budget_equal_to_the_cost_is_enough(k: int):
    tree = StepTree()
    out = await run(
        create_beam_search(
            tree.endpoint, prm_of(hashed), n=4, beam_width=2, lookahead=k, budget=Budget(generations=4 * (k + 1))
        )
    )
    assert out["stop_reason"] == "complete"
    assert out["usage"]["generations"] == 4 * (k + 1)
    assert out["answer"] == "42"


@pytest.mark.parametrize("create", [create_beam_search, create_dvts])
@pytest.mark.parametrize(("n", "k", "generations"), [(4, 0, 3), (4, 1, 7), (16, 3, 63)])
def test_generation_budget_below_the_cost_fails_at_construction(create: Any, n: int, k: int, generations: int):
    tree = StepTree()
    with pytest.raises(ConfigurationError, match=r"^budget:.*" + str(n * (k + 1))):
        create(tree.endpoint, prm_of(hashed), n=n, beam_width=2, lookahead=k, budget=Budget(generations=generations))
    assert tree.calls == []


@pytest.mark.parametrize("as_dict", [False, True])
async def test_context_budget_below_the_cost_fails_before_any_call(as_dict: bool):
    tree = StepTree()
    graph = create_beam_search(tree.endpoint, prm_of(hashed), n=4, beam_width=2, lookahead=1).compile()
    context: Any = {"budget": {"generations": 7}} if as_dict else TTCContext(budget=Budget(generations=7))
    with pytest.raises(BudgetError, match="8 generations"):
        await graph.ainvoke({"question": QUESTION}, context=context)
    assert tree.calls == []


async def test_context_budget_overrides_the_built_one():
    tree = StepTree(truncate=True)
    graph = create_beam_search(tree.endpoint, prm_of(hashed), n=4, beam_width=2, budget=Budget(generations=100))
    out = await graph.compile().ainvoke({"question": QUESTION}, context=TTCContext(budget=Budget(tokens=30)))
    assert out["stop_reason"] == "budget:tokens"
    assert out["usage"]["completion_tokens"] <= 30


@pytest.mark.parametrize("generations", [None, 4], ids=["seconds-only", "with-generations"])
async def test_seconds_budget_stops_a_slow_search_without_error(
    generations: int | None, monkeypatch: pytest.MonkeyPatch
):
    clock = FakeClock().install(monkeypatch)
    tree = StepTree(depth=None)  # never finishes
    tree.endpoint = policy = TimedEndpoint(tree._respond, clock=clock, cost=0.1)  # a round: 0.1 s of the fake clock
    budget = Budget(seconds=0.35, generations=generations)
    graph = create_beam_search(policy, prm_of(hashed), n=4, beam_width=2, max_steps=30, budget=budget)
    out = await asyncio.wait_for(run(graph), 60)  # a hang guard only
    assert out["stop_reason"] == "budget:seconds"
    assert out["usage"]["generations"] == 4
    rounds = {len(steps_of(c.prefix)) for c in tree.calls}
    assert rounds == {0, 1, 2, 3}  # rounds start at 0, 0.1, 0.2 and 0.3 s; none after the 0.35 s are spent
    assert all(t - clock.start < 0.35 for t in policy.starts)
    # the live beams of the interrupted search are returned, scored, as max_steps would return them
    assert len(out["candidates"]) == 4
    assert all(c["scored"] and c["answer"] is None for c in out["candidates"])
    assert {c["meta"]["steps"] for c in out["candidates"]} == {max(rounds) + 1}
    left = [0.35 - (t - clock.start) for t in policy.starts]  # each request was given the seconds left
    assert [c.params.timeout if c.params else None for c in tree.calls] == pytest.approx(left)


# -- 4. DVTS --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "beam_width"), [(16, 4), (8, 2)])
async def test_dvts_keeps_independent_subtrees_each_with_its_best_child(n: int, beam_width: int):
    tree = StepTree(salt_roots=True, answer=lambda path: path[0].split("-")[0])
    out = await run(create_dvts(tree.endpoint, prm_of(hashed), n=n, beam_width=beam_width, seed=1000))
    groups = n // beam_width
    cands = out["candidates"]
    assert len(cands) == n
    by_group: dict[int, list[dict[str, Any]]] = {}
    for c in cands:
        by_group.setdefault(c["meta"]["group"], []).append(c)
    assert sorted(by_group) == list(range(groups))
    roots = [c for c in tree.calls if c.prefix is None]
    assert len(roots) == groups and all(c.n == beam_width for c in roots)
    first_steps = set()
    for g, members in by_group.items():
        assert len(members) == beam_width
        assert all(c["id"].startswith(f"g{g}.") for c in members)
        paths = [steps_of_candidate(c) for c in members]
        # one root per subtree, one kept beam per round: every member shares all but its last step
        assert len({tuple(p[:-1]) for p in paths}) == 1
        kept = paths[0][:-1]
        for step in kept:  # the kept beam is the PRM's best among its siblings
            siblings = tree.siblings(step)
            assert len(siblings) == beam_width
            assert step == max(siblings, key=lambda s: hashed(path_of(s)))
        assert sorted(p[-1] for p in paths) == sorted(tree.siblings(paths[0][-1]))
        first_steps.add(kept[0])
    assert len(first_steps) == groups  # the subtrees grew from different roots


async def test_dvts_differs_from_beam_search_on_a_dominant_root():
    # Root "0" and everything below it scores high: beam search puts every beam under it; DVTS cannot.
    def score(path: Path) -> float:
        return 0.9 if path[0].endswith("-0") else 0.1

    tree = StepTree(salt_roots=True, answer=lambda path: path[0])
    # n=16, M=4: the dominant root's four children fill all four kept slots
    beam = await run(create_beam_search(tree.endpoint, prm_of(score), n=16, beam_width=4, seed=5))
    assert len({c["text"].split(DELIM)[0] for c in beam["candidates"]}) == 1
    tree = StepTree(salt_roots=True, answer=lambda path: path[0])
    dvts = await run(create_dvts(tree.endpoint, prm_of(score), n=16, beam_width=4, seed=5))
    assert len({c["text"].split(DELIM)[0] for c in dvts["candidates"]}) == 4


@pytest.mark.parametrize(("n", "beam_width"), [(16, 4), (8, 2)])
async def test_finished_beams_are_set_aside_and_never_expanded(n: int, beam_width: int):
    # A path finishes at depth >= 2 when its last sample was a request's first, or at depth 5 in any case.
    def finishes(path: Path) -> bool:
        return (len(path) >= 2 and path[-1] == "0") or len(path) >= 5

    tree = StepTree(finishes=finishes, answer=lambda path: str(len(path)))
    events = await events_of(create_beam_search(tree.endpoint, prm_of(hashed), n=n, beam_width=beam_width))
    out = await run(create_beam_search(StepTree(finishes=finishes, answer=lambda p: str(len(p))).endpoint,
                                       prm_of(hashed), n=n, beam_width=beam_width))  # fmt: skip
    for call in tree.calls:  # no request continues a finished solution
        assert all("\\boxed" not in step for step in steps_of(call.prefix))
    cands = out["candidates"]
    assert len({c["id"] for c in cands}) == len(cands)
    assert all(c["answer"] == str(c["meta"]["steps"]) for c in cands)
    assert out["stop_reason"] == "complete"
    # each round expands min(n / M, live beams) kept beams, M children each
    for event in events:
        if event["round"] > 0 and event["planned"]:
            assert event["planned"] == beam_width * min(n // beam_width, len(event["beams"]))
    finished = [e["finished"] for e in events]
    assert finished == sorted(finished) and finished[-1] >= n
    # the final selection is over the top n finished beams by score, never more (search-and-learn's pool)
    assert len(cands) == n
    assert out["diagnostics"]["finished"] == finished[-1]


async def test_beam_search_pool_is_the_top_n_finished_beams_by_score():
    # Every path finishes at depth 2 or 3, so more than n beams finish before the search ends.
    def finishes(path: Path) -> bool:
        return (len(path) >= 2 and path[-1] == "0") or len(path) >= 3

    n, width = 8, 2
    tree = StepTree(finishes=finishes, answer=lambda path: ".".join(path))
    out = await run(create_beam_search(tree.endpoint, prm_of(hashed), n=n, beam_width=width))
    finished_ids = {".".join(path_of(t)) for texts in tree.outputs.values() for t in texts if "\\boxed" in t}
    assert len(finished_ids) > n  # the search retired more than n finished beams
    scores = sorted((hashed(tuple(i.split("."))) for i in finished_ids), reverse=True)
    assert len(out["candidates"]) == n
    assert sorted((c["score"] for c in out["candidates"]), reverse=True) == pytest.approx(scores[:n])


# -- 5. max_steps ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("create", "max_steps"), [(create_beam_search, 1), (create_beam_search, 4), (create_dvts, 3)])
async def test_max_steps_ends_the_search_with_the_live_beams_as_candidates(create: Any, max_steps: int):
    tree = StepTree(depth=None, salt_roots=create is create_dvts)
    out = await run(create(tree.endpoint, prm_of(hashed), n=4, beam_width=2, max_steps=max_steps, seed=3))
    assert {len(steps_of(c.prefix)) for c in tree.calls} == set(range(max_steps))
    assert len(out["candidates"]) == 4
    assert all(c["meta"]["steps"] == max_steps and c["answer"] is None for c in out["candidates"])
    assert all(c["scored"] and c["score"] is not None for c in out["candidates"])
    assert all(c["finish_reason"] == "max_steps" for c in out["candidates"])
    assert out["answer"] is None
    assert out["stop_reason"] == "max_steps"
    assert out["usage"]["generations"] == 4


# -- 6. progress events ---------------------------------------------------------------------------------------------


async def test_one_round_event_per_round_with_live_beams_and_usage():
    tree = StepTree()
    events = await events_of(create_beam_search(tree.endpoint, prm_of(hashed), n=4, beam_width=2))
    rounds = [e for e in events if e.get("event") == "ttc.round"]
    assert rounds == events
    assert [e["round"] for e in rounds] == [0, 1, 2, 3]
    assert [len(e["beams"]) for e in rounds] == [0, 4, 4, 0]
    assert [e["planned"] for e in rounds] == [4, 4, 4, 0]
    assert [e["finished"] for e in rounds] == [0, 0, 0, 4]
    assert [e["stop"] for e in rounds] == [None, None, None, "complete"]
    assert rounds[0]["usage"] == {}
    requests_so_far = [1, 3, 5]
    for event, requests in zip(rounds[1:], requests_so_far, strict=True):
        assert event["usage"]["generations"] == 4
        assert event["usage"]["requests"] == requests
        scores = [b["score"] for b in event["beams"]]
        assert scores == sorted(scores, reverse=True)
        assert all(b["steps"] == event["round"] for b in event["beams"])
        assert all(b["last"].startswith("[") for b in event["beams"])


# -- 7. bad input ---------------------------------------------------------------------------------------------------


class NoPrefixEndpoint:
    """An endpoint that can only answer from scratch."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    @property
    def name(self) -> str:
        return "no-prefix"

    async def generate(self, messages: Any, *, n: int = 1, params: SamplingParams | None = None) -> GenerationResult:
        self.calls.append(messages)
        raise AssertionError("never called")


class NoContinuationEndpoint(NoPrefixEndpoint):
    continuation = "none"

    async def generate(
        self, messages: Any, *, n: int = 1, params: SamplingParams | None = None, prefix: str | None = None
    ) -> GenerationResult:
        self.calls.append(messages)
        raise AssertionError("never called")


@pytest.mark.parametrize("create", [create_beam_search, create_dvts])
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 16, "beam_width": 3}, "beam_width"),
        ({"n": 16, "beam_width": 0}, "beam_width"),
        ({"n": 16, "beam_width": -4}, "beam_width"),
        ({"n": 16, "beam_width": "cube"}, "beam_width"),
        ({"n": 16, "beam_width": 4.0}, "beam_width"),
        ({"n": 0}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": 16, "lookahead": -1}, "lookahead"),
        ({"n": 16, "max_steps": 0}, "max_steps"),
        ({"n": 16, "aggregation": "median"}, "aggregation"),
        ({"n": 16, "step_delimiter": ""}, "step_delimiter"),
        ({"n": 16, "verifier": None}, "verifier"),
        ({"n": 16, "verifier": 42}, "verifier"),
    ],
)
def test_bad_arguments_are_configuration_errors(create: Any, kwargs: dict[str, Any], field: str):
    tree = StepTree()
    kwargs = {"verifier": prm_of(hashed), **kwargs}
    verifier = kwargs.pop("verifier")
    with pytest.raises(ConfigurationError, match=rf"^{field}:"):
        create(tree.endpoint, verifier, **kwargs)
    assert tree.calls == []


@pytest.mark.parametrize("create", [create_beam_search, create_dvts])
@pytest.mark.parametrize("policy_cls", [NoPrefixEndpoint, NoContinuationEndpoint])
def test_a_policy_that_cannot_continue_a_prefix_is_rejected(create: Any, policy_cls: type[NoPrefixEndpoint]):
    policy = policy_cls()
    with pytest.raises(ConfigurationError, match=r"^policy:.*prefix"):
        create(policy, prm_of(hashed), n=4, beam_width=2)
    assert policy.calls == []


def test_a_policy_without_generate_is_rejected():
    with pytest.raises(ConfigurationError, match=r"^policy:"):
        create_beam_search(object(), prm_of(hashed), n=4, beam_width=2)  # type: ignore[arg-type]


async def test_a_missing_question_fails_before_any_call():
    tree = StepTree()
    graph = create_beam_search(tree.endpoint, prm_of(hashed), n=4, beam_width=2).compile()
    with pytest.raises(ConfigurationError, match=r"^question:"):
        await graph.ainvoke({"question": "  "})
    assert tree.calls == []


@pytest.mark.parametrize(
    ("n", "beam_width", "width"),
    [(16, "sqrt", 4), (8, "sqrt", 2), (12, "sqrt", 3), (1, "sqrt", 1), (2, "sqrt", 1), (7, "sqrt", 1), (12, 3, 3)],
)
def test_resolve_width(n: int, beam_width: Any, width: int):
    assert resolve_width(n, beam_width) == width
    assert n % width == 0


@pytest.mark.parametrize("create", [create_beam_search, create_dvts])
@pytest.mark.parametrize("n", [8, 12, 6])
async def test_sqrt_width_draws_n_steps_every_round_for_any_n(create: Any, n: int):
    tree = StepTree(salt_roots=create is create_dvts)
    out = await run(create(tree.endpoint, prm_of(hashed), n=n, beam_width="sqrt", seed=1))
    per_depth = [sum(c.n for c in tree.calls if len(steps_of(c.prefix)) == d) for d in range(DEPTH)]
    assert per_depth == [n] * DEPTH
    assert len(out["candidates"]) == n


# -- 8. aggregation of step scores -----------------------------------------------------------------------------------

# Round 1 keeps "0" (0.9) and "1" (0.5). Under "0" the second steps are middling (0.7, 0.65); under "1" they are
# the best seen (0.95, 0.9). Every last step scores 0.5. "last" keeps the children of "1", every other
# aggregation keeps the children of "0" (min 0.7/0.65 vs 0.5, prod .63/.585 vs .475/.45, mean .8/.775 vs .725/.7).
AGG_TABLE = {("0",): 0.9, ("1",): 0.5, ("2",): 0.3, ("3",): 0.2,
             ("0", "0"): 0.7, ("0", "1"): 0.65, ("1", "0"): 0.95, ("1", "1"): 0.9}  # fmt: skip


@pytest.mark.parametrize(("aggregation", "root"), [("last", "1"), ("min", "0"), ("prod", "0"), ("mean", "0")])
async def test_aggregation_decides_which_beams_are_kept(aggregation: str, root: str):
    prm = StepPRM(lambda path: AGG_TABLE.get(path, 0.5))
    tree = StepTree(answer=lambda path: {"0": "1", "1": "2"}[path[0]])
    out = await run(create_beam_search(tree.endpoint, prm, n=4, beam_width=2, aggregation=aggregation))
    assert out["answer"] == {"0": "1", "1": "2"}[root]
    cands = out["candidates"]
    assert sorted(c["id"] for c in cands) == [f"g0.{root}.{i}.{j}" for i in "01" for j in "01"]
    for c in cands:
        path = path_of(c["text"].split(DELIM)[-1])
        expected = [AGG_TABLE.get(path[:d], 0.5) for d in (1, 2, 3)]
        assert c["step_scores"] == pytest.approx(expected)
        assert c["score"] == pytest.approx(
            {
                "last": expected[-1],
                "min": min(expected),
                "mean": sum(expected) / 3,
                "prod": expected[0] * expected[1] * expected[2],
            }[aggregation]
        )
    # one verifier batch per expansion as it arrives (the root's 4 children, then 2 children of each kept beam),
    # scoring every new beam once
    assert [len(b) for b in prm.batches] == [4, 2, 2, 2, 2]


# -- robustness -----------------------------------------------------------------------------------------------------


async def test_a_failed_expansion_is_recorded_and_the_search_goes_on():
    # The kept beam "0" cannot be expanded (its request fails); the others carry on and finish.
    def score(path: Path) -> float:
        return 0.9 if path == ("0",) else 0.5

    tree = StepTree(fail=lambda parent: parent == ("0",))
    out = await run(create_beam_search(tree.endpoint, prm_of(score), n=4, beam_width=2))
    assert any("expand g0.0" in e for e in out["errors"])
    assert out["usage"]["failed_requests"] == 1
    assert out["answer"] == "42"
    assert out["stop_reason"] == "complete"
    assert all(not c["text"].startswith("[0]") for c in out["candidates"])


async def test_a_verifier_failure_leaves_the_beam_unscored_and_ranked_last():
    def score(path: Path) -> float:
        if path == ("0",):
            raise RuntimeError("PRM crashed")
        return 0.5

    tree = StepTree()
    out = await run(create_beam_search(tree.endpoint, prm_of(score), n=4, beam_width=2))
    assert any("verify g0.0" in e and "PRM crashed" in e for e in out["errors"])
    assert out["answer"] == "42"
    assert all(not c["text"].startswith("[0]") for c in out["candidates"])  # the unscored beam was not kept


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


@pytest.mark.parametrize("create", [create_beam_search, create_dvts])
async def test_results_do_not_depend_on_completion_order(create: Any):
    results = []
    for run_seed in range(3):
        tree = StepTree(salt_roots=create is create_dvts, answer=lambda path: str(int(path[-1]) % 3))
        policy = JitteryEndpoint(tree.endpoint, random.Random(run_seed))
        out = await run(create(policy, prm_of(hashed), n=16, beam_width=4, lookahead=1, seed=11))
        results.append(
            (out["answer"], [(c["id"], c["text"], c["score"]) for c in out["candidates"]], out["usage"]["requests"])
        )
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("create", [create_beam_search, create_dvts])
@pytest.mark.parametrize(("n", "beam_width"), [(16, 4), (64, 32), (64, 2)])
async def test_sample_seeds_never_repeat_within_a_run(create: Any, n: int, beam_width: int):
    # An endpoint that splits a request of k samples into k single requests seeds them seed, seed + 1, ...,
    # seed + k - 1; those ranges must not overlap, or two subtrees (same empty prefix) draw the same first step.
    tree = StepTree(salt_roots=create is create_dvts)
    await run(create(tree.endpoint, prm_of(hashed), n=n, beam_width=beam_width, seed=123))
    sampled = [c for c in tree.calls if c.params is not None and c.params.temperature]
    seeds = [
        c.params.seed + i for c in sampled if c.params is not None and c.params.seed is not None for i in range(c.n)
    ]
    assert len(seeds) == tree.samples() == DEPTH * n
    assert len(set(seeds)) == len(seeds)


async def test_messages_input_gets_the_winning_solution_as_an_ai_message():
    tree = StepTree()
    out = await run(
        create_beam_search(tree.endpoint, prm_of(hashed), n=4, beam_width=2),
        {"messages": [HumanMessage(content=QUESTION)]},
    )
    last = out["messages"][-1]
    assert isinstance(last, AIMessage)
    assert last.response_metadata["ttc_answer"] == "42"
    assert last.content in {c["text"] for c in out["candidates"]}
