"""Particle filtering end to end over a scripted step-level policy and scripted verifiers (no network).

The fake policy is a tree, as in ``test_search.py``: the j-th sample of a request that continues path P is the step
of path ``P + (j,)``, written ``"[p0.p1...] step d"``; at the finishing depth it states ``\\boxed{answer(path)}``.
A step's text depends only on the prefix continued and its position in the request, so runs are reproducible.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from tests.fakeclock import FakeClock, TimedEndpoint
from tests.steptree import DELIM, Path, hashed, parent_of, path_of, steps_of
from ttc_graph import (
    Budget,
    BudgetError,
    CombinedVerifier,
    ConfidenceVerifier,
    ConfigurationError,
    FunctionVerifier,
    LLMJudgeVerifier,
    TTCContext,
    create_beam_search,
    create_particle_filtering,
)
from ttc_graph.endpoints.base import GenerationResult, SamplingParams
from ttc_graph.errors import EndpointError
from ttc_graph.nodes.step_particles import effective_sample_size, resample, softmax_weights
from ttc_graph.specs import build_graph, parse_spec
from ttc_graph.strategies.stepwise import scores_prefixes
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.verifiers import Score, VerificationResult, Verifier, VerifyItem

QUESTION = "What is 6 * 7?"


class StepTree:
    """The scripted step-level policy. ``finishes(path)`` says where a path states its answer (default: depth 3;
    ``depth=None``: never). ``crash``/``fail``: requests continuing a matching parent raise a hard error / an
    :class:`EndpointError`. ``truncate``: cut each text to ``max_tokens`` words (one token per word)."""

    def __init__(
        self,
        *,
        depth: int | None = 3,
        finishes: Callable[[Path], bool] | None = None,
        answer: Callable[[Path], str] = lambda path: "42",
        truncate: bool = False,
        delay: float = 0.0,
        crash: Callable[[Path], bool] | None = None,
        fail: Callable[[Path], bool] | None = None,
    ) -> None:
        self.finishes = finishes or (lambda path: depth is not None and len(path) >= depth)
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
        if self.finishes(path):
            text += f" \\boxed{{{self.answer(path)}}}"
        if self.truncate and call.params is not None and call.params.max_tokens is not None:
            text = " ".join(text.split()[: call.params.max_tokens])
        self.texts.append(text)
        return text

    def samples(self) -> int:
        return sum(c.n for c in self.calls)


def prm_of(score: Callable[[Path], float]) -> Callable[[str, str], float]:
    """A plain-callable verifier scoring a (partial) solution by the path of its last step."""

    def prm(question: str, text: str) -> float:
        assert question == QUESTION
        return score(path_of(text.split(DELIM)[-1]))

    return prm


class StepPRM(Verifier):
    """A process verifier: every step gets ``table(path)``."""

    granularity = "process"

    def __init__(self, table: Callable[[Path], float]) -> None:
        self.table = table

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        out = []
        for item in items:
            per_step = tuple(self.table(path_of(s)) for s in item.steps)
            out.append(Score(per_step[-1], step_scores=per_step))
        return VerificationResult(out)


async def run(builder: Any, inp: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return await builder.compile().ainvoke(inp if inp is not None else {"question": QUESTION}, **kwargs)


async def run_with_events(builder: Any, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    graph = builder if hasattr(builder, "astream") else builder.compile()
    async for mode, chunk in graph.astream({"question": QUESTION}, stream_mode=["custom", "values"], **kwargs):
        if mode == "custom":
            events.append(chunk)
        else:
            out = chunk
    return out, events


def copies_by_parent(tree: StepTree, depth: int) -> Counter[Path]:
    """How many samples each parent of ``depth`` steps got (its number of resampled copies)."""
    out: Counter[Path] = Counter()
    for call in tree.calls:
        if len(steps_of(call.prefix)) == depth:
            out[parent_of(call)] += call.n
    return out


# -- 1. it finds the verifier's best path ---------------------------------------------------------------------------

GOLD = ("1", "0", "1")


def gold_score(path: Path) -> float:
    return 0.9 if path == GOLD[: len(path)] else 0.1 + 0.01 * int(path[-1])


def gold_answer(path: Path) -> str:
    return "42" if path == GOLD else str(1000 + int("".join(path)))


@pytest.mark.parametrize("resampling", ["multinomial", "systematic"])
@pytest.mark.parametrize(("n", "seed"), [(4, 0), (4, 1), (8, 2)])
async def test_returns_the_answer_of_the_prm_best_path(n: int, seed: int, resampling: str):
    tree = StepTree(answer=gold_answer)
    graph = create_particle_filtering(
        tree.endpoint, prm_of(gold_score), n=n, softmax_temperature=0.05, resampling=resampling, seed=seed
    )
    out = await run(graph)
    assert out["answer"] == "42"
    assert out["stop_reason"] == "complete"
    winner = max(out["candidates"], key=lambda c: c["score"])
    assert [path_of(s) for s in winner["text"].split(DELIM)] == [GOLD[:1], GOLD[:2], GOLD]
    assert len(out["candidates"]) == n
    assert all(c["finish_reason"] == "stop" for c in out["candidates"])
    # at this temperature the gold prefix takes every slot: each later round continues only the gold prefix
    assert set(copies_by_parent(tree, 1)) == {GOLD[:1]}
    assert set(copies_by_parent(tree, 2)) == {GOLD[:2]}


async def test_weighted_selection_can_overrule_the_top_particle():
    # Every slot goes to first step "0" (a cold softmax); its four children finish: "0.0" answers 9 with 0.9, the
    # others answer 7 with 0.5 each.
    def score(path: Path) -> float:
        if len(path) == 1:
            return 0.9 if path == ("0",) else 0.0
        return 0.9 if path[-1] == "0" else 0.5

    def answer(path: Path) -> str:
        return "9" if path[-1] == "0" else "7"

    outs = {}
    for selection in ("naive", "weighted"):
        tree = StepTree(depth=2, answer=answer)
        graph = create_particle_filtering(
            tree.endpoint, prm_of(score), n=4, softmax_temperature=0.01, selection=selection, seed=1
        )
        outs[selection] = await run(graph)
    naive, weighted = outs["naive"], outs["weighted"]
    assert sorted(c["answer"] for c in naive["candidates"]) == ["7", "7", "7", "9"]
    assert naive["answer"] == "9"
    assert weighted["answer"] == "7"


# -- 2. resampling follows the weights ------------------------------------------------------------------------------

WEIGHTS = [0.45, 0.3, 0.15, 0.1]


def test_softmax_weights():
    w = softmax_weights([0.9, 0.6, None, 0.1], 0.5, "score")
    raw = [math.exp(0.9 / 0.5), math.exp(0.6 / 0.5), 0.0, math.exp(0.1 / 0.5)]
    assert w == pytest.approx([r / sum(raw) for r in raw])
    for weighting in ("logit", "score"):
        assert softmax_weights([None, None], 1.0, weighting) == [0.5, 0.5]  # all unscored: uniform
        assert softmax_weights([0.2, 0.8], 1e-3, weighting) == pytest.approx([0.0, 1.0])  # a cold softmax: argmax
        assert softmax_weights([0.2, 0.8], 1e6, weighting) == pytest.approx([0.5, 0.5], abs=1e-5)  # a hot one: uniform
    assert effective_sample_size([0.25] * 4) == pytest.approx(4.0)
    assert effective_sample_size([1.0, 0.0]) == pytest.approx(1.0)


def test_logit_weights_are_the_odds_at_temperature_one_and_sharper_than_the_scores():
    scores = [0.9, 0.6, None, 0.1]
    odds = [0.9 / 0.1, 0.6 / 0.4, 0.0, 0.1 / 0.9]  # Puri et al. and its_hub: softmax of the logit
    assert softmax_weights(scores, 1.0) == pytest.approx([o / sum(odds) for o in odds])  # "logit" is the default
    squared = [o * o for o in odds]  # temperature 0.5 squares the odds
    assert softmax_weights(scores, 0.5, "logit") == pytest.approx([q / sum(squared) for q in squared])
    # Scores of one question's prefixes sit close together (here 0.40-0.48): the scores' own softmax is nearly
    # uniform, the odds' less so.
    close = [0.40, 0.44, 0.48]
    assert effective_sample_size(softmax_weights(close, 1.0, "score")) > 2.99
    assert effective_sample_size(softmax_weights(close, 1.0, "logit")) < 2.98
    edge = softmax_weights([0.0, 1.0], 1.0)  # 0 and 1 are clipped, not infinite logits
    assert edge == pytest.approx([0.0, 1.0], abs=1e-9) and edge[0] > 0


def test_logit_weights_refuse_scores_outside_the_unit_interval():
    with pytest.raises(ConfigurationError, match=r"^weighting: 'logit' needs verifier scores in \[0, 1\], got 3.5"):
        softmax_weights([0.5, 3.5], 1.0)
    assert softmax_weights([0.5, 3.5], 1.0, "score") == pytest.approx([1 / (1 + math.e**3), 1 / (1 + math.e**-3)])
    with pytest.raises(ConfigurationError, match=r"^weighting: unknown 'odds'"):
        softmax_weights([0.5], 1.0, "odds")  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", ["multinomial", "systematic"])
def test_a_particle_of_weight_w_survives_a_single_draw_with_frequency_w(scheme: str):
    runs = 4000
    hits = Counter(resample(WEIGHTS, 1, scheme, random.Random(seed)).index(1) for seed in range(runs))  # type: ignore[arg-type]
    for i, w in enumerate(WEIGHTS):
        sigma = math.sqrt(w * (1 - w) / runs)
        assert abs(hits[i] / runs - w) < 4 * sigma, (i, hits[i] / runs, w)


@pytest.mark.parametrize("scheme", ["multinomial", "systematic"])
def test_each_particle_gets_its_share_of_the_slots_on_average(scheme: str):
    runs, m = 2000, 8
    totals = [0] * len(WEIGHTS)
    for seed in range(runs):
        counts = resample(WEIGHTS, m, scheme, random.Random(seed))  # type: ignore[arg-type]
        assert sum(counts) == m
        totals = [t + c for t, c in zip(totals, counts, strict=True)]
    for total, w in zip(totals, WEIGHTS, strict=True):
        assert total / (runs * m) == pytest.approx(w, abs=0.02)


def test_systematic_resampling_has_lower_variance_than_multinomial():
    runs, m = 2000, 8
    draws = {
        scheme: [resample(WEIGHTS, m, scheme, random.Random(seed)) for seed in range(runs)]  # type: ignore[arg-type]
        for scheme in ("multinomial", "systematic")
    }
    for i, w in enumerate(WEIGHTS):
        multinomial = statistics.pvariance([d[i] for d in draws["multinomial"]])
        systematic = statistics.pvariance([d[i] for d in draws["systematic"]])
        assert systematic < multinomial / 3, (i, systematic, multinomial)
        assert multinomial == pytest.approx(m * w * (1 - w), rel=0.15)  # the binomial variance
        # systematic gives floor(m w) or ceil(m w) copies, never anything else
        assert {d[i] for d in draws["systematic"]} <= {math.floor(m * w), math.ceil(m * w)}


def test_an_unknown_scheme_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match=r"^resampling:"):
        resample(WEIGHTS, 4, "stratified", random.Random(0))  # type: ignore[arg-type]


def test_zero_weights_never_survive():
    for seed in range(200):
        for scheme in ("multinomial", "systematic"):
            counts = resample([0.0, 0.5, 0.0, 0.5, 0.0], 4, scheme, random.Random(seed))  # type: ignore[arg-type]
            assert counts[0] == counts[2] == counts[4] == 0


FIRST_STEP = {("0",): 0.9, ("1",): 0.6, ("2",): 0.3, ("3",): 0.1}


@pytest.mark.parametrize("scheme", ["multinomial", "systematic"])
async def test_the_graph_resamples_in_proportion_to_the_softmax_of_the_scores(scheme: str):
    temperature, n, runs = 0.5, 4, 120
    expected = softmax_weights(list(FIRST_STEP.values()), temperature)
    shares: Counter[Path] = Counter()
    survived: Counter[Path] = Counter()
    prm = prm_of(lambda p: FIRST_STEP.get(p, 0.5))
    tree = StepTree(depth=None)
    graph = create_particle_filtering(
        tree.endpoint, prm, n=n, max_steps=2, softmax_temperature=temperature, resampling=scheme
    ).compile()
    for seed in range(runs):
        seen = len(tree.calls)
        out, events = await run_with_events(graph, context=TTCContext(seed=seed))
        assert out["stop_reason"] == "max_steps"
        particles = events[1]["particles"]  # round 1: the four first steps, weighed
        assert [p["weight"] for p in particles] == pytest.approx(expected)
        copies: Counter[Path] = Counter()
        for call in tree.calls[seen:]:
            if len(steps_of(call.prefix)) == 1:
                copies[parent_of(call)] += call.n
        assert sum(copies.values()) == n  # every slot resampled, one request per surviving particle
        assert {path_of(p["last"]): p["copies"] for p in particles if p["copies"]} == dict(copies)
        if scheme == "systematic":
            for path, w in zip(FIRST_STEP, expected, strict=True):
                assert copies[path] in (math.floor(n * w), math.ceil(n * w))
        shares.update(copies)
        survived.update(copies.keys())
    for path, w in zip(FIRST_STEP, expected, strict=True):
        sigma = math.sqrt(w * (1 - w) / (runs * n))
        assert abs(shares[path] / (runs * n) - w) < 4 * sigma, (path, shares[path] / (runs * n), w)
        if scheme == "multinomial":  # survival of n independent draws
            p = 1 - (1 - w) ** n
            assert abs(survived[path] / runs - p) < 4 * math.sqrt(p * (1 - p) / runs) + 0.01


async def test_a_seed_makes_resampling_reproducible():
    def outcome(out: dict[str, Any]) -> list[tuple[str, str]]:
        return [(c["id"], c["text"]) for c in out["candidates"]]

    results = []
    for seed in (5, 5, 6, 7, 8):
        tree = StepTree(depth=4)
        out = await run(create_particle_filtering(tree.endpoint, prm_of(hashed), n=8, seed=seed))
        results.append(outcome(out))
    assert results[0] == results[1]
    assert len({tuple(r) for r in results}) >= 3  # other seeds resample differently


# -- 3. exact accounting and budgets --------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "depth"), [(4, 3), (8, 3), (6, 5)])
async def test_exact_accounting(n: int, depth: int):
    tree = StepTree(depth=depth)
    out, events = await run_with_events(create_particle_filtering(tree.endpoint, prm_of(hashed), n=n, seed=3))
    assert tree.samples() == n * depth  # every round extends every particle once
    assert [sum(c.n for c in tree.calls if len(steps_of(c.prefix)) == d) for d in range(depth)] == [n] * depth
    usage = out["usage"]
    assert usage["generations"] == usage["by_kind"]["propose"]["generations"] == n  # as beam search with n beams
    assert usage["requests"] == usage["by_kind"]["propose"]["requests"] == len(tree.calls)
    assert len(tree.calls) == sum(len([p for p in e["particles"] if p["copies"]]) for e in events) + 1
    assert usage["completion_tokens"] == sum(len(t.split()) for t in tree.texts)
    assert [e["planned"] for e in events] == [n] * depth + [0]
    beam = StepTree(depth=depth)
    reference = await run(create_beam_search(beam.endpoint, prm_of(hashed), n=n, beam_width=n))
    assert reference["usage"]["generations"] == usage["generations"]
    assert beam.samples() == tree.samples()  # the same compute as beam search with n beams


async def test_finished_particles_keep_their_slot_and_are_never_extended():
    # A path finishes when its last sample was its request's first one, or at depth 4.
    def finishes(path: Path) -> bool:
        return path[-1] == "0" or len(path) >= 4

    tree = StepTree(finishes=finishes, answer=lambda p: str(len(p)))
    n = 8
    out, events = await run_with_events(create_particle_filtering(tree.endpoint, prm_of(hashed), n=n, seed=4))
    for call in tree.calls:
        assert all("\\boxed" not in step for step in steps_of(call.prefix))
    cands = out["candidates"]
    assert len(cands) == n and len({c["id"] for c in cands}) == n
    assert all(c["finish_reason"] == "stop" and c["answer"] == str(c["meta"]["steps"]) for c in cands)
    # each round plans exactly the slots the finished particles left
    for event in events[1:]:
        if not event["stop"]:
            assert event["planned"] == n - event["finished"]
    assert tree.samples() == sum(e["planned"] for e in events)
    # a finished particle keeps the score it finished with (its weight in the final selection)
    assert all(c["score"] == pytest.approx(hashed(path_of(c["text"].split(DELIM)[-1]))) for c in cands)


def test_generation_budget_below_n_fails_at_construction():
    tree = StepTree()
    with pytest.raises(ConfigurationError, match=r"^budget:.*4 generations"):
        create_particle_filtering(tree.endpoint, prm_of(hashed), n=4, budget=Budget(generations=3))
    assert tree.calls == []


async def test_context_budget_below_n_fails_before_any_call():
    tree = StepTree()
    graph = create_particle_filtering(tree.endpoint, prm_of(hashed), n=4).compile()
    with pytest.raises(BudgetError, match="4 generations"):
        await graph.ainvoke({"question": QUESTION}, context=TTCContext(budget=Budget(generations=3)))
    assert tree.calls == []


@pytest.mark.parametrize(("tokens", "stop"), [(60, "complete"), (30, "budget:tokens"), (5, "budget:tokens")])
async def test_a_token_budget_is_never_exceeded(tokens: int, stop: str):
    tree = StepTree(truncate=True)
    graph = create_particle_filtering(tree.endpoint, prm_of(hashed), n=4, budget=Budget(tokens=tokens), seed=1)
    out, events = await run_with_events(graph)
    assert out["stop_reason"] == stop
    assert out["usage"]["completion_tokens"] <= tokens
    for event in events:  # each request's cap is its share of what is left, over the n samples of a round
        spent = event["usage"].get("completion_tokens", 0)
        at_round = [c for c in tree.calls if len(steps_of(c.prefix)) == event["round"]]
        assert all(c.params is not None and c.params.max_tokens == min(256, (tokens - spent) // 4) for c in at_round)
    assert len(out["candidates"]) == 4  # the particles alive at the limit are candidates


async def test_a_seconds_budget_stops_a_slow_filter(monkeypatch: pytest.MonkeyPatch):
    clock = FakeClock().install(monkeypatch)
    tree = StepTree(depth=None)  # never finishes
    tree.endpoint = policy = TimedEndpoint(tree._respond, clock=clock, cost=0.1)  # a round: 0.1 s of the fake clock
    graph = create_particle_filtering(policy, prm_of(hashed), n=4, max_steps=30, budget=Budget(seconds=0.35))
    out = await asyncio.wait_for(run(graph), 60)  # a hang guard only
    assert out["stop_reason"] == "budget:seconds"
    assert {len(steps_of(c.prefix)) for c in tree.calls} == {0, 1, 2, 3}  # no round after the 0.35 s are spent
    assert all(t - clock.start < 0.35 for t in policy.starts)
    assert out["usage"]["generations"] == 4
    assert len(out["candidates"]) == 4 and all(c["scored"] for c in out["candidates"])
    left = [0.35 - (t - clock.start) for t in policy.starts]  # each request was given the seconds left
    assert [c.params.timeout if c.params else None for c in tree.calls] == pytest.approx(left)


async def test_max_steps_returns_the_live_particles():
    tree = StepTree(depth=None)
    out = await run(create_particle_filtering(tree.endpoint, prm_of(hashed), n=4, max_steps=3, seed=0))
    assert out["stop_reason"] == "max_steps"
    assert {len(steps_of(c.prefix)) for c in tree.calls} == {0, 1, 2}
    assert all(c["finish_reason"] == "max_steps" and c["meta"]["steps"] == 3 for c in out["candidates"])
    assert out["answer"] is None


# -- 4. steps, progress, diagnostics ------------------------------------------------------------------------------


async def test_round_events_carry_weights_and_steps_per_beam():
    tree = StepTree()
    out, events = await run_with_events(create_particle_filtering(tree.endpoint, prm_of(hashed), n=4, seed=2))
    assert all(e["event"] == "ttc.round" for e in events)
    assert [e["round"] for e in events] == [0, 1, 2, 3]
    assert [e["stop"] for e in events] == [None, None, None, "complete"]
    for event in events[1:3]:
        assert sum(p["weight"] for p in event["particles"]) == pytest.approx(1.0)
        assert sum(p["copies"] for p in event["particles"]) == 4
        assert 1.0 <= event["ess"] <= 4.0
        assert event["steps_per_beam"]["median"] == event["round"]
    assert out["diagnostics"]["steps_per_candidate"] == {"histogram": {"3": 4}, "min": 3, "median": 3, "max": 3}
    assert out["diagnostics"]["warnings"] == []


async def test_a_model_that_never_writes_the_delimiter_triggers_the_warning(caplog: pytest.LogCaptureFixture):
    endpoint = ScriptedEndpoint(["Six times seven is forty-two, so \\boxed{42}."])
    with caplog.at_level(logging.WARNING, logger="ttc_graph.search"):
        out = await run(create_particle_filtering(endpoint, lambda q, s: 0.5, n=4))
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
    out = await run(create_particle_filtering(endpoint, lambda q, s: 0.5, n=4, seed=0))
    assert [c.prefix for c in endpoint.calls if c.prefix and not c.prefix.endswith(DELIM)]
    assert out["answer"] == "42"
    for cand in out["candidates"]:
        assert cand["text"] == "First, 6 * 7 = 42.\n\nSo the answer is \\boxed{42}."
        assert cand["meta"]["steps"] == 2


async def test_a_failed_expansion_is_recorded_and_its_slots_are_refilled():
    # Systematic resampling at a cold softmax gives "0" and "1" two slots each; continuing "0" fails, so the next
    # round resamples all four slots from the children of "1".
    tree = StepTree(fail=lambda parent: parent == ("0",))
    prm = prm_of(lambda p: 0.9 if p in {("0",), ("1",)} else (0.0 if len(p) == 1 else 0.5))
    graph = create_particle_filtering(tree.endpoint, prm, n=4, softmax_temperature=0.01, resampling="systematic")
    out, events = await run_with_events(graph)
    assert {p["last"][:3]: p["copies"] for p in events[1]["particles"] if p["copies"]} == {"[0]": 2, "[1]": 2}
    assert any("expand p.0" in e for e in out["errors"])
    assert out["usage"]["failed_requests"] == 1
    assert events[2]["planned"] == 4 and len(events[2]["particles"]) == 2
    assert out["stop_reason"] == "complete"
    assert out["answer"] == "42"
    assert len(out["candidates"]) == 4
    assert all(c["text"].startswith("[1]") for c in out["candidates"])


async def test_a_filter_whose_every_expansion_fails_stops_with_an_error():
    tree = StepTree(fail=lambda parent: len(parent) == 1)
    out = await run(create_particle_filtering(tree.endpoint, prm_of(hashed), n=4, seed=0))
    assert out["stop_reason"] == "error"
    assert out["answer"] is None and out["candidates"] == []
    assert out["errors"]


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
        out = await run(create_particle_filtering(JitteryEndpoint(tree.endpoint, random.Random(run_seed)),
                                                  prm_of(hashed), n=8, seed=11))  # fmt: skip
        results.append((out["answer"], [(c["id"], c["text"], c["score"]) for c in out["candidates"]]))
    assert results[0] == results[1] == results[2]


# -- 5. resume after a crash ----------------------------------------------------------------------------------------


def summary(out: dict[str, Any]) -> tuple[Any, ...]:
    usage = {k: v for k, v in out["usage"].items() if k != "seconds"}
    cands = [(c["id"], c["text"], c["score"], c["answer"]) for c in out["candidates"]]
    return out["answer"], out["stop_reason"], cands, usage


def build_for_resume(tree: StepTree) -> Any:
    return create_particle_filtering(tree.endpoint, prm_of(hashed), n=8, resampling="systematic", seed=17)


async def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    reference = StepTree(answer=lambda p: str(int(p[0]) % 3))
    expected = summary(await run(build_for_resume(reference)))
    config = {"configurable": {"thread_id": "pf-1"}}
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "ck.sqlite")) as saver:
        crashing = StepTree(answer=lambda p: str(int(p[0]) % 3), crash=lambda parent: len(parent) == 2)
        with pytest.raises(RuntimeError, match="policy process died"):
            await build_for_resume(crashing).compile(checkpointer=saver).ainvoke({"question": QUESTION}, config)
        state = await build_for_resume(crashing).compile(checkpointer=saver).aget_state(config)
        assert state.values["round"] == 3 and state.next
        working = StepTree(answer=lambda p: str(int(p[0]) % 3))
        out = await build_for_resume(working).compile(checkpointer=saver).ainvoke(None, config)
    assert summary(out) == expected
    assert working.calls and all(len(steps_of(c.prefix)) == 2 for c in working.calls)  # only round 3 was redone
    assert [c.prefix for c in working.calls] == [c.prefix for c in reference.calls if len(steps_of(c.prefix)) == 2]


# -- 6. bad input ---------------------------------------------------------------------------------------------------


class OutcomeOnly(Verifier):
    """A custom verifier that judges whole solutions only (granularity "outcome", the default)."""

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        raise AssertionError("never called")


class PrefixAware(OutcomeOnly):
    scores_prefixes = True


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 0}, "n"),
        ({"n": -2}, "n"),
        ({"n": 2.5}, "n"),
        ({"softmax_temperature": 0}, "softmax_temperature"),
        ({"softmax_temperature": -1.0}, "softmax_temperature"),
        ({"softmax_temperature": math.nan}, "softmax_temperature"),
        ({"softmax_temperature": math.inf}, "softmax_temperature"),
        ({"resampling": "stratified"}, "resampling"),
        ({"weighting": "odds"}, "weighting"),
        ({"max_steps": 0}, "max_steps"),
        ({"aggregation": "median"}, "aggregation"),
        ({"selection": "majority"}, "selection"),
        ({"step_delimiter": ""}, "step_delimiter"),
        ({"verifier": None}, "verifier"),
        ({"verifier": 42}, "verifier"),
        ({"verifier": OutcomeOnly()}, "verifier"),
        ({"verifier": "judge"}, "verifier"),
    ],
)
def test_bad_arguments_are_configuration_errors_before_any_request(kwargs: dict[str, Any], field: str):
    tree = StepTree()
    judge = LLMJudgeVerifier(tree.endpoint, mode="outcome")
    kwargs = {"n": 4, "verifier": prm_of(hashed), **kwargs}
    verifier = judge if kwargs["verifier"] == "judge" else kwargs["verifier"]
    del kwargs["verifier"]
    with pytest.raises(ConfigurationError, match=rf"^{field}:"):
        create_particle_filtering(tree.endpoint, verifier, **kwargs)
    assert tree.calls == []


def test_an_outcome_judge_is_refused_with_a_reason():
    tree = StepTree()
    with pytest.raises(ConfigurationError, match=r"not step-wise.*outcome.*partial"):
        create_particle_filtering(tree.endpoint, LLMJudgeVerifier(tree.endpoint, mode="outcome"), n=4)


def test_which_verifiers_are_step_wise():
    tree = StepTree()
    fn = FunctionVerifier(lambda q, s: 0.5)
    assert scores_prefixes(fn)  # a callable is given every prefix as text
    assert scores_prefixes(StepPRM(hashed))
    assert scores_prefixes(LLMJudgeVerifier(tree.endpoint, mode="process"))
    assert not scores_prefixes(LLMJudgeVerifier(tree.endpoint, mode="outcome"))
    assert scores_prefixes(ConfidenceVerifier())
    assert not scores_prefixes(OutcomeOnly())
    assert scores_prefixes(PrefixAware())
    assert scores_prefixes(CombinedVerifier([fn, StepPRM(hashed)]))
    assert not scores_prefixes(CombinedVerifier([fn, LLMJudgeVerifier(tree.endpoint, mode="outcome")]))
    for ok in (fn, PrefixAware(), CombinedVerifier([fn, ConfidenceVerifier()])):
        create_particle_filtering(tree.endpoint, ok, n=2)


# -- 7. names, messages, specs --------------------------------------------------------------------------------------


async def test_name_history_and_messages():
    tree = StepTree()
    graph = create_particle_filtering(tree.endpoint, prm_of(hashed), n=2, seed=1, history="last", name="pf-2")
    assert graph.compile().name == "pf-2"
    assert create_particle_filtering(tree.endpoint, prm_of(hashed), n=2).compile().name == "particle_filtering"
    out = await run(graph, {"messages": [HumanMessage("Earlier question"), AIMessage("Earlier answer"),
                                         HumanMessage(QUESTION)]})  # fmt: skip
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and last.name == "pf-2"
    assert last.response_metadata["ttc_answer"] == "42"
    assert all(len(c.messages) == 2 for c in tree.calls)  # history="last": system prompt and the question only


@pytest.mark.parametrize("weighting", ["logit", "score"])
async def test_a_spec_builds_the_same_filter(weighting: str):
    spec = parse_spec({"kind": "particle_filtering", "n": 4, "resampling": "systematic", "softmax_temperature": 0.5,
                       "weighting": weighting, "seed": 3,
                       "verifier": {"kind": "python", "target": "math:fabs"}})  # fmt: skip
    assert spec.kind == "particle_filtering"
    tree = StepTree()
    direct = StepTree()
    out, events = await run_with_events(
        build_graph(spec, policy=tree.endpoint, verifier=FunctionVerifier(prm_of(hashed))).compile()
    )
    ref = await run(create_particle_filtering(direct.endpoint, prm_of(hashed), n=4, resampling="systematic",
                                              softmax_temperature=0.5, weighting=weighting, seed=3))  # fmt: skip
    assert summary(out) == summary(ref)
    live = events[1]["particles"]  # round 1: the weights follow the spec's weighting
    expected = softmax_weights([p["score"] for p in live], 0.5, weighting)  # type: ignore[arg-type]
    assert [p["weight"] for p in live] == pytest.approx(expected)
