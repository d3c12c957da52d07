"""One vocabulary: every public factory takes ``state_schema`` / ``context_schema``; the router's ``budget`` is a
``Budget``; the defaults are declared once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

import ttc_graph
from ttc_graph import (
    Budget,
    ConfigurationError,
    TTCContext,
    TTCState,
    create_agent_best_of_n,
    create_beam_search,
    create_best_of_n,
    create_compute_optimal,
    create_dvts,
    create_mcts,
    create_particle_filtering,
    create_revisions,
)
from ttc_graph import defaults as ttc_defaults
from ttc_graph.agents import AgentRunsState
from ttc_graph.compute_optimal import DifficultyBins, PolicyTable, RouterState
from ttc_graph.specs import load_spec
from ttc_graph.specs.models import BeamSearchSpec, BestOfNSpec, MCTSSpec, RevisionsSpec
from ttc_graph.testing import FakeCall, ScriptedEndpoint


def stepwise(call: FakeCall, index: int) -> str:
    depth = (call.prefix or "").count("\n\n")
    return f"step {index % 2}" if call.prefix is None or depth < 2 else f"so \\boxed{{{index % 2}}}"


def half(question: str, solution: str) -> float:
    return 0.9 if "step 1" in solution else 0.4


TABLE = PolicyTable(
    difficulty=DifficultyBins(metric="verifier_score", edges=(0.3, 0.6), probes=2),
    budgets=[4],
    strategies={"majority": {"kind": "best_of_n", "selection": "majority"}},
    table={"1": {"4": "majority"}, "2": {"4": "majority"}, "3": {"4": "majority"}},
)


class Agent(TypedDict, total=False):
    messages: list[Any]


def agent_graph() -> Any:
    graph = StateGraph(Agent)
    graph.add_node("reply", lambda state: {"messages": [AIMessage("\\boxed{7}")]})
    graph.add_edge(START, "reply")
    graph.add_edge("reply", END)
    return graph.compile()


class Mine(TTCState, total=False):
    ticket: str


class MyRouterState(RouterState, total=False):
    ticket: str


class MyAgentState(AgentRunsState, total=False):
    ticket: str


@dataclass
class MyContext(TTCContext):
    user: str | None = None


FACTORIES: dict[str, tuple[Callable[..., Any], type[Any]]] = {
    "best_of_n": (
        lambda **kw: create_best_of_n(ScriptedEndpoint(["\\boxed{7}"]), n=2, selection="majority", **kw),
        Mine,
    ),
    "revisions": (
        lambda **kw: create_revisions(
            ScriptedEndpoint(["\\boxed{7}"]), n=2, chain_length=1, selection="majority", **kw
        ),
        Mine,
    ),
    "beam_search": (lambda **kw: create_beam_search(ScriptedEndpoint(stepwise), half, n=2, beam_width=2, **kw), Mine),
    "dvts": (lambda **kw: create_dvts(ScriptedEndpoint(stepwise), half, n=2, beam_width=2, **kw), Mine),
    "particle_filtering": (lambda **kw: create_particle_filtering(ScriptedEndpoint(stepwise), half, n=2, **kw), Mine),
    "mcts": (lambda **kw: create_mcts(ScriptedEndpoint(stepwise), half, n=2, expansions=2, **kw), Mine),
    "compute_optimal": (
        lambda **kw: create_compute_optimal(
            ScriptedEndpoint(["\\boxed{7}"]), lambda q, s: 0.9, TABLE, budget=Budget(generations=4), **kw
        ),
        MyRouterState,
    ),
    "agent_best_of_n": (
        lambda **kw: create_agent_best_of_n(agent_graph(), n=2, selection="majority", **kw),
        MyAgentState,
    ),
}


@pytest.mark.parametrize("kind", sorted(FACTORIES))
async def test_a_key_the_caller_adds_to_the_state_passes_through(kind: str) -> None:
    factory, schema = FACTORIES[kind]
    graph = factory(state_schema=schema, context_schema=MyContext).compile()
    out = await graph.ainvoke({"question": "What is 3 + 4?", "ticket": "T-1"}, context=MyContext(user="ann"))
    assert out["ticket"] == "T-1"
    assert out["answer"] is not None


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_a_schema_without_the_graphs_fields_is_refused_by_name(kind: str) -> None:
    factory, _ = FACTORIES[kind]

    class Thin(TypedDict, total=False):
        question: str
        ticket: str

    with pytest.raises(ConfigurationError, match=r"state_schema: Thin lacks the fields .*candidates"):
        factory(state_schema=Thin)

    @dataclass
    class ThinContext:
        budget: Budget | None = None

    with pytest.raises(ConfigurationError, match=r"context_schema: ThinContext lacks the fields .*temperature"):
        factory(context_schema=ThinContext)


def test_a_state_schema_that_drops_a_reducer_is_refused() -> None:
    class Redeclared(TTCState, total=False):
        errors: list[str]  # type: ignore[misc]

    with pytest.raises(ConfigurationError, match=r"redeclares errors"):
        create_best_of_n(ScriptedEndpoint(["x"]), n=2, selection="majority", state_schema=Redeclared)


async def test_the_strategy_runs_as_a_subgraph_of_the_callers_graph() -> None:
    class Parent(TypedDict, total=False):
        question: str
        ticket: str
        answer: str | None

    strategy = create_best_of_n(ScriptedEndpoint(["\\boxed{7}"]), n=2, selection="majority", state_schema=Mine)
    parent = StateGraph(Parent)
    parent.add_node("solve", strategy.compile())
    parent.add_edge(START, "solve")
    parent.add_edge("solve", END)
    out = await parent.compile().ainvoke({"question": "What is 3 + 4?", "ticket": "T-2"})
    assert out == {"question": "What is 3 + 4?", "ticket": "T-2", "answer": "7"}


def test_the_router_takes_a_budget_and_an_int_is_deprecated() -> None:
    policy = ScriptedEndpoint(["\\boxed{7}"])
    with pytest.warns(DeprecationWarning, match=r"budget=Budget\(generations=...\)"):
        create_compute_optimal(policy, lambda q, s: 0.9, TABLE, budget=4)
    with pytest.raises(ConfigurationError, match=r"Budget\(generations=...\)"):
        create_compute_optimal(policy, lambda q, s: 0.9, TABLE, budget=Budget(tokens=100))
    with pytest.raises(ConfigurationError, match=r"generations only; seconds"):
        create_compute_optimal(policy, lambda q, s: 0.9, TABLE, budget=Budget(generations=4, seconds=5.0))


def test_the_router_spec_takes_a_budget_and_generations_is_a_deprecated_alias(tmp_path: Any) -> None:
    (tmp_path / "table.json").write_text(TABLE.model_dump_json())
    base = {"kind": "compute_optimal", "table": "table.json", "verifier": {"kind": "confidence"}}
    new = tmp_path / "new.yaml"
    new.write_text("\n".join(f"{k}: {v!r}" if not isinstance(v, dict) else f"{k}: {v}" for k, v in base.items()))
    new.write_text(new.read_text() + "\nbudget: {generations: 4}\n")
    spec = load_spec(new)
    assert spec.budget == Budget(generations=4)
    old = tmp_path / "old.yaml"
    old.write_text(new.read_text().replace("budget: {generations: 4}", "generations: 4"))
    with pytest.warns(DeprecationWarning, match="generations is deprecated"):
        assert load_spec(old) == spec


def test_factories_and_specs_read_one_default_per_concept() -> None:
    d = ttc_defaults
    assert BestOfNSpec.model_fields["temperature"].default == d.DEFAULT_TEMPERATURE
    assert RevisionsSpec.model_fields["temperature"].default == d.DEFAULT_TEMPERATURE
    assert BeamSearchSpec.model_fields["temperature"].default == d.DEFAULT_STEP_TEMPERATURE
    assert BestOfNSpec.model_fields["selection"].default == d.DEFAULT_SELECTION
    assert MCTSSpec.model_fields["selection"].default == d.DEFAULT_PATH_SELECTION
    assert (d.DEFAULT_TEMPERATURE, d.DEFAULT_STEP_TEMPERATURE) == (0.7, 0.8)  # changing one changes results


def test_every_public_factory_is_exported() -> None:
    factories = {name for name in dir(ttc_graph) if name.startswith("create_")}
    assert factories <= set(ttc_graph.__all__)
    assert sorted(ttc_graph.__all__) == sorted(set(ttc_graph.__all__))
    assert all(hasattr(ttc_graph, name) for name in ttc_graph.__all__)
