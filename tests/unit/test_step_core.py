"""The step-search core that beam search, lookahead, DVTS, particle filtering and MCTS configure: one verifier rule
for all five, one options object with one set of defaults, MCTS's names (and their deprecated aliases), beam
search's and DVTS's final selection, particle filtering's lookahead, and a selection of one's own on the core."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path as FilePath
from typing import Any, get_args

import pytest

from tests.steptree import DELIM, Path, hashed, parent_of, path_of
from ttc_graph import (
    ArithmeticVerifier,
    Budget,
    CombinedVerifier,
    ConfigurationError,
    LLMJudgeVerifier,
    create_beam_search,
    create_dvts,
    create_mcts,
    create_particle_filtering,
)
from ttc_graph.nodes import step_mcts
from ttc_graph.nodes.expand import Beam
from ttc_graph.nodes.step_beam import SearchPlan
from ttc_graph.nodes.step_mcts import MCTSPlan
from ttc_graph.nodes.step_particles import ParticlePlan
from ttc_graph.nodes.step_rounds import PolicyCost, StepRound, beam_to_candidate, by_score
from ttc_graph.server.planning import generation_cost
from ttc_graph.server.presets import SHIPPED_PRESETS, apply_overrides
from ttc_graph.specs import SpecError, build_graph, load_spec, parse_spec
from ttc_graph.specs.models import BeamSearchSpec, DVTSSpec, MCTSSpec, ParticleFilteringSpec
from ttc_graph.state import Candidate, TTCState
from ttc_graph.strategies.stepwise import STEP_OPTIONS, StepSearchOptions, build_step_graph
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.verifiers import FunctionVerifier, RewardModelVerifier, VerificationResult, Verifier, VerifyItem
from ttc_graph.verifiers.aggregation import AGGREGATIONS, DEFAULT_AGGREGATION, Aggregation

QUESTION = "What is 6 * 7?"
FACTORIES: dict[str, Callable[..., Any]] = {
    "beam_search": create_beam_search,
    "dvts": create_dvts,
    "particle_filtering": create_particle_filtering,
    "mcts": create_mcts,
}
SMALL = {
    "beam_search": {"beam_width": 2},
    "dvts": {"beam_width": 2},
    "particle_filtering": {},
    "mcts": {"expansions": 2},
}


class Tree:
    """A scripted step-level policy: the j-th sample continuing path P is step ``P + (j,)``; paths finish at
    depth 3 with ``\\boxed{answer(path)}``."""

    def __init__(self, answer: Callable[[Path], str] = lambda path: "42", depth: int | None = 3) -> None:
        self.answer, self.depth = answer, depth
        self.endpoint = ScriptedEndpoint(self._respond)
        self._pos: dict[int, int] = {}

    @property
    def calls(self) -> list[FakeCall]:
        return self.endpoint.calls

    def _respond(self, call: FakeCall, index: int) -> str:
        pos = self._pos.get(id(call), 0)
        self._pos[id(call)] = pos + 1
        path = (*parent_of(call), str(pos))
        text = f"[{'.'.join(path)}] step {len(path)}"
        return text + (f" \\boxed{{{self.answer(path)}}}" if self.depth and len(path) >= self.depth else "")


def prm(question: str, text: str) -> float:
    return hashed(path_of(text.split(DELIM)[-1]))


async def run(graph: Any) -> dict[str, Any]:
    return await graph.compile().ainvoke({"question": QUESTION})


def summary(out: dict[str, Any]) -> tuple[Any, ...]:
    usage = {k: v for k, v in out["usage"].items() if k != "seconds"}
    cands = [(c["id"], c["text"], c["score"], c["finish_reason"], c.get("meta")) for c in out["candidates"]]
    return out["answer"], out["stop_reason"], cands, usage, out["diagnostics"]


def requests(tree: Tree) -> list[tuple[Any, ...]]:
    return [(c.prefix, c.n, c.params) for c in tree.calls]


class OutcomeOnly(Verifier):
    """A custom verifier of whole solutions (granularity ``outcome``, the default)."""

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        raise AssertionError("never called")


class PrefixAware(OutcomeOnly):
    scores_prefixes = True


# -- 1. one verifier rule for all five searches ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(FACTORIES))
@pytest.mark.parametrize("verifier", ["judge", "custom"])
def test_every_search_refuses_a_verifier_of_whole_solutions(kind: str, verifier: str):
    tree = Tree()
    scorer = LLMJudgeVerifier(tree.endpoint, mode="outcome") if verifier == "judge" else OutcomeOnly()
    with pytest.raises(ConfigurationError, match=r"^verifier: \S+ is not step-wise \(granularity 'outcome'.*partial"):
        FACTORIES[kind](tree.endpoint, scorer, n=4, **SMALL[kind])
    with pytest.raises(ConfigurationError, match=r"^verifier: .* needs a step-wise verifier"):
        FACTORIES[kind](tree.endpoint, None, n=4, **SMALL[kind])
    with pytest.raises(ConfigurationError, match=r"^verifier: .*not step-wise"):  # lookahead changes nothing
        FACTORIES[kind](tree.endpoint, scorer, n=4, lookahead=1, **SMALL[kind])
    assert tree.calls == []


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_every_search_takes_every_step_wise_verifier(kind: str):
    tree = Tree()
    judge = LLMJudgeVerifier(tree.endpoint, mode="process")
    for ok in (prm, FunctionVerifier(prm), PrefixAware(), ArithmeticVerifier(), judge, CombinedVerifier([prm, judge])):
        assert FACTORIES[kind](tree.endpoint, ok, n=4, **SMALL[kind]).compile() is not None
    assert tree.calls == []


@pytest.mark.parametrize("kind", ["beam_search", "dvts", "particle_filtering", "mcts"])
def test_every_search_spec_refuses_an_outcome_judge(kind: str):
    data = {"kind": kind, "n": 4, **SMALL[kind], "verifier": {"kind": "llm_judge", "mode": "outcome"}}
    with pytest.raises(SpecError, match="not step-wise"):
        parse_spec(data)
    parse_spec({**data, "verifier": {"kind": "llm_judge", "mode": "process"}})


# -- 2. one options object, one set of defaults ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 0}, "n"),
        ({"n": True}, "n"),
        ({"max_steps": 0}, "max_steps"),
        ({"lookahead": -1}, "lookahead"),
        ({"lookahead": 1.5}, "lookahead"),
        ({"aggregation": "median"}, "aggregation"),
        ({"selection": "majority"}, "selection"),
        ({"step_delimiter": ""}, "step_delimiter"),
        ({"step_max_tokens": 0}, "step_max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"budget": {"generations": 4}}, "budget"),
    ],
)
def test_the_options_name_a_bad_field(kwargs: dict[str, Any], field: str):
    with pytest.raises(ConfigurationError, match=rf"^{field}:"):
        StepSearchOptions(**{"n": 4, **kwargs})


def test_the_options_cost_and_sampling():
    options = StepSearchOptions(4, lookahead=2, temperature=0.3, step_max_tokens=64, seed=9, budget=Budget(tokens=99))
    assert options.generations == 12
    assert options.sampling().temperature == 0.3 and options.sampling().max_tokens == 64
    assert options.sampling().seed == 9 and options.sampling().budget == Budget(tokens=99)


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_every_factory_defaults_to_the_options_defaults(kind: str):
    params = inspect.signature(FACTORIES[kind]).parameters
    defaults = StepSearchOptions(n=1)
    shared = [f for f in ("max_steps", "lookahead", "aggregation", "temperature", "step_max_tokens", "step_delimiter",
                          "seed", "budget", "system_prompt", "history", "name") if f in params]  # fmt: skip
    assert len(shared) == 11  # every factory takes every option
    assert {f: params[f].default for f in shared} == {f: getattr(defaults, f) for f in shared}
    # the final selection: beam search and DVTS keep the paper's weighted vote, the sampling searches their top path
    assert params["selection"].default == ("weighted" if kind in ("beam_search", "dvts") else "naive")


def test_the_aggregation_choices_and_default_are_defined_once():
    assert AGGREGATIONS == get_args(Aggregation) == ("last", "min", "prod", "mean")
    assert DEFAULT_AGGREGATION == "last"
    for cls in (LLMJudgeVerifier, RewardModelVerifier, ArithmeticVerifier, CombinedVerifier):
        assert inspect.signature(cls).parameters["aggregation"].default == DEFAULT_AGGREGATION
    messages = set()
    for build in (
        lambda: ArithmeticVerifier(aggregation="median"),
        lambda: CombinedVerifier([prm], aggregation="median"),
        lambda: LLMJudgeVerifier(Tree().endpoint, aggregation="median"),  # type: ignore[arg-type]
        lambda: RewardModelVerifier("http://127.0.0.1:9", "prm", aggregation="median"),  # type: ignore[arg-type]
        lambda: StepSearchOptions(4, aggregation="median"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ConfigurationError) as info:
            build()
        messages.add(str(info.value))
    assert messages == {"aggregation: unknown 'median'; use one of last, min, prod, mean"}


# -- 3. beam search and DVTS take a final selection -----------------------------------------------------------------


@pytest.mark.parametrize("create", [create_beam_search, create_dvts])
@pytest.mark.parametrize(("selection", "answer"), [(None, "7"), ("weighted", "7"), ("naive", "9")])
async def test_beam_search_and_dvts_select_weighted_by_default_or_naive(create: Any, selection: str, answer: str):
    # n=4, M=4: one beam (one subtree) kept per round; its four finished children: a "9" scored 0.9, three "7" at 0.5
    def score(question: str, text: str) -> float:
        path = path_of(text.split(DELIM)[-1])
        return 0.9 if len(path) == 3 and path[-1] == "0" else 0.5

    tree = Tree(answer=lambda path: "9" if path[-1] == "0" else "7")
    kwargs = {} if selection is None else {"selection": selection}
    out = await run(create(tree.endpoint, score, n=4, beam_width=4, seed=1, **kwargs))
    assert sorted(c["answer"] for c in out["candidates"]) == ["7", "7", "7", "9"]
    assert out["answer"] == answer


async def test_a_search_spec_passes_its_selection():
    spec = parse_spec({"kind": "dvts", "n": 4, "beam_width": 4, "selection": "naive",
                       "verifier": {"kind": "python", "target": "math:fabs"}})  # fmt: skip
    assert spec.selection == "naive"
    built, direct = Tree(answer=lambda p: p[-1]), Tree(answer=lambda p: p[-1])
    out = await run(build_graph(spec, policy=built.endpoint, verifier=FunctionVerifier(prm)))
    ref = await run(create_dvts(direct.endpoint, prm, n=4, beam_width=4, selection="naive"))
    assert summary(out) == summary(ref)
    assert out["answer"] == max(out["candidates"], key=lambda c: c["score"])["answer"]


# -- 4. MCTS names its settings as the other searches do ------------------------------------------------------------


async def test_mcts_max_depth_and_rollout_are_deprecated_aliases_of_max_steps_and_lookahead():
    old, new = Tree(depth=None), Tree(depth=None)
    with pytest.warns(DeprecationWarning) as caught:
        graph = create_mcts(old.endpoint, prm, n=4, expansions=2, max_depth=3, rollout=1, seed=2)
    assert sorted(str(w.message) for w in caught) == [
        "max_depth is deprecated; use max_steps (the same setting)",
        "rollout is deprecated; use lookahead (the same setting)",
    ]
    assert all(w.filename == __file__ for w in caught)  # the warning points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reference = create_mcts(new.endpoint, prm, n=4, expansions=2, max_steps=3, lookahead=1, seed=2)
    assert summary(await run(graph)) == summary(await run(reference))
    assert requests(old) == requests(new)
    assert max(len(c["text"].split(DELIM)) for c in (await run(reference))["candidates"]) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_depth": 3, "max_steps": 5}, r"^max_depth: a deprecated alias of max_steps, given 3 with max_steps=5"),
        ({"rollout": 1, "lookahead": 2}, r"^rollout: a deprecated alias of lookahead, given 1 with lookahead=2"),
        ({"max_depth": 0}, r"^max_depth: must be an integer >= 1"),
        ({"rollout": -1}, r"^rollout: must be an integer >= 0"),
        ({"max_steps": 0}, r"^max_steps:"),
        ({"lookahead": -1}, r"^lookahead:"),
    ],
)
def test_mcts_aliases_are_checked_under_their_own_names(kwargs: dict[str, Any], message: str):
    tree = Tree()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ConfigurationError, match=message):
            create_mcts(tree.endpoint, prm, n=4, expansions=2, **kwargs)
        create_mcts(tree.endpoint, prm, n=4, expansions=2, max_depth=5, max_steps=5)  # the same value: no conflict
    assert tree.calls == []


def test_an_mcts_spec_loads_the_old_names_with_a_warning():
    data = {"kind": "mcts", "n": 4, "expansions": 2, "verifier": {"kind": "confidence"}}
    with pytest.warns(DeprecationWarning) as caught:
        spec = parse_spec({**data, "max_depth": 3, "rollout": 1})
    assert sorted(str(w.message) for w in caught) == [
        "mcts: max_depth is deprecated; use max_steps",
        "mcts: rollout is deprecated; use lookahead",
    ]
    assert (spec.max_steps, spec.lookahead) == (3, 1)
    assert "max_depth" not in spec.model_dump() and "rollout" not in spec.model_dump()
    assert generation_cost(spec) == 8  # n * (lookahead + 1), counted once
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_spec({**data, "max_steps": 3, "lookahead": 1}) == spec
        assert load_spec(SHIPPED_PRESETS / "mcts.yaml").max_steps == 3  # type: ignore[union-attr]
    with pytest.warns(DeprecationWarning):  # a request's override of an old name applies to the dumped spec
        assert apply_overrides(spec, {"max_depth": 5, "rollout": 0}).max_steps == 5  # type: ignore[union-attr]
    with pytest.warns(DeprecationWarning), pytest.raises(SpecError, match="max_steps"):
        parse_spec({**data, "max_depth": 0})
    with pytest.raises(SpecError, match="max_depth: expected a number"):
        parse_spec({**data, "max_depth": True})


# -- 5. particle filtering takes lookahead as the others do ---------------------------------------------------------


async def test_particle_filtering_with_lookahead_weighs_each_particle_after_a_rollout():
    tree = Tree()
    out = await run(create_particle_filtering(tree.endpoint, prm, n=4, lookahead=1, seed=3))
    rollouts = [c for c in tree.calls if c.params is not None and c.params.temperature == 0.0]
    assert rollouts and all(c.n == 1 and c.params is not None and c.params.seed is None for c in rollouts)
    assert out["usage"]["generations"] == 8 and out["stop_reason"] == "complete"
    assert all(c["text"].count(DELIM) == 2 for c in out["candidates"])  # rollout steps never join a particle
    with pytest.raises(ConfigurationError, match=r"^budget: particle filtering with n=4, lookahead=1 costs 8"):
        create_particle_filtering(tree.endpoint, prm, n=4, lookahead=1, budget=Budget(generations=7))
    spec = parse_spec({"kind": "particle_filtering", "n": 4, "lookahead": 1, "seed": 3,
                       "verifier": {"kind": "python", "target": "math:fabs"}})  # fmt: skip
    built = Tree()
    assert summary(await run(build_graph(spec, policy=built.endpoint, verifier=FunctionVerifier(prm)))) == summary(out)


# -- 6. a search of one's own is a selection on the core ------------------------------------------------------------


class GreedyPlan:
    """A selection of this test's own: keep the single best unfinished beam and expand it ``n`` times."""

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def generations(self) -> int:
        return self.n

    def describe(self) -> str:
        return f"greedy search (n={self.n})"

    def begin(self, state: TTCState, round_: int, seed: int | None, delimiter: str) -> StepRound:
        return GreedyRound(self.n, state, round_, delimiter)


class GreedyRound(StepRound):
    def __init__(self, n: int, state: TTCState, round_: int, delimiter: str) -> None:
        frontier: list[Beam] = list(state.get("frontier", []))  # type: ignore[arg-type]
        root = Beam(id="x", group=0, steps=[], score=None, step_scores=None, scored=True, finished=False,
                    answer=None, tokens=0, round=0)  # fmt: skip
        best = by_score([b for b in frontier if not b["finished"]])[:1] if round_ else [root]
        self.chosen = [(b, n) for b in best]
        self.retired = [beam_to_candidate(b, delimiter) for b in frontier if b["finished"]]
        self.pool: list[Candidate] = [*state.get("candidates", []), *self.retired]
        if self.pool:
            self.stop = "complete"

    def expansions(self) -> list[tuple[Beam, int]]:
        return self.chosen

    def final(self, stop: str) -> tuple[list[Candidate], dict[str, Any]]:
        return self.pool, {"greedy": True}

    def event(self) -> dict[str, Any]:
        return {"kept": [b["id"] for b, _ in self.chosen]}


async def test_a_selection_of_ones_own_runs_on_the_core():
    tree = Tree()
    options = StepSearchOptions(n=3, selection="naive", seed=5)
    graph = build_step_graph("greedy search", tree.endpoint, prm, GreedyPlan(3), options, "greedy")
    assert graph.compile().name == "greedy"
    events: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    async for mode, chunk in graph.compile().astream({"question": QUESTION}, stream_mode=["custom", "values"]):
        events.append(chunk) if mode == "custom" else out.update(chunk)
    assert out["stop_reason"] == "complete" and out["answer"] == "42"
    assert len(out["candidates"]) == 3 and out["diagnostics"]["greedy"] is True
    assert out["usage"]["generations"] == 3
    assert [e["round"] for e in events] == [0, 1, 2, 3] and [e["planned"] for e in events] == [3, 3, 3, 0]
    assert [len(e["kept"]) for e in events] == [1, 1, 1, 0]
    for call in tree.calls[1:]:  # every round continued the best-scored child of the round before
        parent = parent_of(call)
        assert parent == max(((*parent[:-1], str(j)) for j in range(3)), key=hashed)
    with pytest.raises(ConfigurationError, match=r"^budget: greedy search with n=3, lookahead=0 costs 3"):
        build_step_graph("greedy search", tree.endpoint, prm, GreedyPlan(3),
                         StepSearchOptions(n=3, budget=Budget(generations=2)), "greedy")  # fmt: skip


def test_the_presets_of_the_step_searches_load_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("beam_search_judge", "dvts", "lookahead", "mcts", "particle_filtering"):
            assert load_spec(FilePath(SHIPPED_PRESETS) / f"{name}.yaml").kind  # type: ignore[union-attr]


# -- 7. one list of option names, one place per rule ----------------------------------------------------------------


@pytest.mark.parametrize("spec", [BeamSearchSpec, DVTSSpec, ParticleFilteringSpec, MCTSSpec])
def test_every_step_spec_takes_the_options_by_their_names(spec: type[Any]):
    # history is a run's choice (build_graph's argument), not a spec field; the schemas are Python types, not data
    assert set(STEP_OPTIONS) - {"history", "state_schema", "context_schema"} <= set(spec.model_fields)
    assert tuple(inspect.signature(StepSearchOptions).parameters) == STEP_OPTIONS


def test_the_policies_share_their_cost_and_description():
    plans = [
        (SearchPlan(4, 2, 1, 2, 1, 5), "beam search"),
        (SearchPlan(4, 2, 2, 1, 1, 5, diverse=True), "DVTS"),
        (ParticlePlan(4, 5, lookahead=1), "particle filtering"),
        (MCTSPlan(4, 2, 1.0, 5, 1), "MCTS"),
    ]
    for plan, label in plans:
        assert isinstance(plan, PolicyCost) and plan.generations == 8
        assert plan.describe() == f"{label} (n=4, lookahead=1)"


def test_the_old_module_paths_of_the_policies_still_import():
    from ttc_graph.nodes import mcts_controller, particle_controller, search_controller

    assert search_controller.SearchPlan is SearchPlan and particle_controller.ParticlePlan is ParticlePlan
    assert mcts_controller.MCTSPlan is MCTSPlan and mcts_controller.__all__ == step_mcts.__all__
