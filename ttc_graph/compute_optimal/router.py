"""The compute-optimal router: estimate a question's difficulty from probes, then run the table's strategy."""

from __future__ import annotations

import time
import warnings
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.graph import END, START

from ttc_graph.budget import Budget, merge_usage, usage_delta
from ttc_graph.compute_optimal.difficulty import probe_score
from ttc_graph.compute_optimal.table import PolicyTable, load_table
from ttc_graph.defaults import DEFAULT_TEMPERATURE
from ttc_graph.endpoints.base import Endpoint, RequestUsage, SamplingParams
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.graph import StrategyGraph, strategy_graph
from ttc_graph.nodes.dual import dual
from ttc_graph.nodes.prepare import make_prepare_node
from ttc_graph.nodes.propose import make_candidate
from ttc_graph.nodes.select import answer_message
from ttc_graph.nodes.verify import verify_candidates
from ttc_graph.progress import round_event
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT, solve_messages
from ttc_graph.selection import select_answer, select_pooled
from ttc_graph.specs.build import build_graph, register_graph_builder
from ttc_graph.specs.models import BestOfNSpec, ComputeOptimalSpec, RevisionsSpec, StrategySpec
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies.best_of_n import check_policy
from ttc_graph.verifiers.base import Verifier
from ttc_graph.verifiers.function import VerifierLike, as_verifier

__all__ = [
    "PROBE_ID",
    "RouterOutput",
    "RouterState",
    "build_compute_optimal",
    "create_compute_optimal",
    "generations_of",
]

PROBE_ID = "probe-"
"""The prefix of a probe sample's candidate id."""


class RouterState(TTCState, total=False):
    route: str | None
    difficulty_bin: int | None
    difficulty_score: float | None


class RouterOutput(TTCOutput, total=False):
    route: str
    difficulty_bin: int
    difficulty_score: float


def generations_of(budget: Budget | int) -> int:
    """The generations a router's ``budget`` allows: a :class:`~ttc_graph.budget.Budget` with ``generations`` set
    and no other limit (the policy table is calibrated in generations). A bare ``int`` is deprecated (it warns)."""
    if isinstance(budget, int) and not isinstance(budget, bool):
        warnings.warn(
            "create_compute_optimal(budget=<int>) is deprecated; pass budget=Budget(generations=...)",
            DeprecationWarning,
            stacklevel=3,
        )
        budget = Budget(generations=budget)
    if not isinstance(budget, Budget):
        raise ConfigurationError(f"budget: expected a Budget, got {type(budget).__name__} {budget!r}")
    if budget.generations is None:
        raise ConfigurationError("budget: the router needs Budget(generations=...), the unit its table is fitted in")
    others = [k for k in ("tokens", "seconds", "dollars") if getattr(budget, k) is not None]
    if others:
        raise ConfigurationError(f"budget: the router spends generations only; {', '.join(others)} is not supported")
    return budget.generations


def create_compute_optimal(
    policy: Endpoint,
    verifier: VerifierLike,
    table: PolicyTable,
    *,
    budget: Budget | int,
    probe_max_tokens: int | None = None,
    probe_temperature: float | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    history: History = "all",
    name: str | None = None,
    state_schema: type[Any] | None = None,
    context_schema: type[Any] | None = None,
) -> StrategyGraph[RouterState, TTCContext, TTCInput, RouterOutput]:
    """A router graph: ``prepare → probe → <strategy for the question's bin at budget> → finish``.

    ``budget`` is a :class:`~ttc_graph.budget.Budget` with ``generations`` (one the table covers) and no other limit;
    an ``int`` still means that many generations but is deprecated.

    ``probe`` samples the table's number of probe solutions, scores them with ``verifier`` and bins the mean
    score with the table's edges (predicted difficulty: no labels needed). The probes are sampled as the table's
    bins were fitted (its ``difficulty.temperature`` and ``max_tokens``; 0.7 and the endpoint's default where it
    records none) unless ``probe_temperature`` or ``probe_max_tokens`` say otherwise. The probes are charged to the
    ledger and count towards ``budget``: a best-of-N route reuses them as candidates (it draws only the rest of
    its ``n``), any other route runs at ``budget - probes`` generations, as the table was calibrated
    (:meth:`PolicyTable.spend`), and its final answer is best-of-N weighted over the probes and the route's
    finalists (:func:`~ttc_graph.selection.select_pooled`), so no sample paid for is thrown away. The run never
    spends more than ``budget`` generations in total. ``history``, ``name``, ``state_schema`` (extending
    :class:`RouterState`) and ``context_schema``: as in :func:`~ttc_graph.strategies.create_best_of_n` (the probes
    and the routed strategy both see the conversation).
    """
    check_policy(policy)
    generations = generations_of(budget)
    scorer = as_verifier(verifier)
    if scorer is None:
        raise ConfigurationError("verifier: the router needs a verifier to estimate difficulty from probes")
    if table.difficulty.metric != "verifier_score":
        raise ConfigurationError(
            "table: its bins are oracle pass rates (they need labels); route with a table fitted on verifier_score"
        )
    probes = table.difficulty.probes
    if probes < 1:
        raise ConfigurationError(
            "table: its difficulty was estimated offline (probes: 0); route with a table fitted with probes >= 1"
        )
    if generations < probes:
        raise ConfigurationError(f"budget: {generations} generations cannot pay for the table's {probes} probe samples")
    if probe_temperature is None:
        probe_temperature = (
            DEFAULT_TEMPERATURE if table.difficulty.temperature is None else table.difficulty.temperature
        )
    if probe_max_tokens is None:
        probe_max_tokens = table.difficulty.max_tokens
    routes: dict[int, tuple[str, StrategySpec]] = {
        b: table.choose(b, generations) for b in range(1, table.difficulty.n_bins + 1)
    }
    graph = strategy_graph(
        name or "compute_optimal", state_schema, context_schema, state=RouterState, output=RouterOutput
    )

    async def probe(state: RouterState) -> dict[str, Any]:
        params = SamplingParams(
            temperature=probe_temperature,
            max_tokens=probe_max_tokens,
            logprobs=bool(getattr(scorer, "needs_logprobs", False)),
        )
        try:
            messages = solve_messages(state["question"], system_prompt, state.get("history") or ())
            result = await policy.generate(messages, n=probes, params=params)
        except EndpointError as exc:
            return {
                "errors": [f"probe: {exc}"],
                "usage": usage_delta("propose", RequestUsage(failed_requests=1)),
                "stop_reason": "error",
                "difficulty_bin": table.difficulty.n_bins,
                "difficulty_score": 0.0,
            }
        cands = [make_candidate(f"{PROBE_ID}{i}", g, 0) for i, g in enumerate(result.generations)]
        scored = await verify_candidates(scorer, state["question"], cands)
        scored_cands = scored.get("candidates", cands)
        value = probe_score([c["score"] for c in scored_cands])
        bin_ = table.difficulty.bin_of(value)
        route_name = routes[bin_][0]
        update: dict[str, Any] = {
            "candidates": scored_cands,
            "usage": usage_delta("propose", result.usage, generations=len(cands)),
            "difficulty_bin": bin_,
            "difficulty_score": value,
            "route": route_name,
        }
        if "usage" in scored:
            update["usage"] = merge_usage(update["usage"], scored["usage"])
        errors = [f"probe: {e}" for e in result.errors] + scored.get("errors", [])
        if errors:
            update["errors"] = errors
        event = round_event(0, drawn=len(cands), total=probes, planned=probes, usage=update["usage"], route=route_name)
        get_stream_writer()(event)  # the routed strategy streams its own rounds from its subgraph
        return update

    nodes: dict[str, StrategySpec] = {}
    for route_name, spec in routes.values():
        if isinstance(spec, BestOfNSpec):
            rest = spec.n - probes
            if rest < 1:
                continue  # the probes already are this route's samples
            spec = spec.model_copy(update={"n": rest})
        nodes[route_name] = spec
    for route_name, spec in nodes.items():
        sub = build_graph(spec, policy=policy, verifier=scorer, history=history).compile(name=route_name)
        graph.add_node(f"run_{route_name}", sub)

    def route(state: RouterState) -> str:
        route_name = state.get("route")
        return f"run_{route_name}" if route_name in nodes else "finish"

    def finish(state: RouterState) -> dict[str, Any]:
        route_name = state.get("route")
        spec = dict(routes.values()).get(route_name) if route_name else None
        candidates = state.get("candidates", [])
        if spec is None or isinstance(spec, BestOfNSpec):
            chosen = select_answer(candidates, spec.selection if isinstance(spec, BestOfNSpec) else "weighted")
        else:  # the probes join the route's final vote: samples paid for are not thrown away
            probes = [c for c in candidates if c["id"].startswith(PROBE_ID)]
            ran = [c for c in candidates if not c["id"].startswith(PROBE_ID)]
            chosen = select_pooled(probes, ran, spec.selection if isinstance(spec, RevisionsSpec) else None)
        answer, chosen_id = chosen.answer, chosen.candidate_id
        update: dict[str, Any] = {
            "answer": answer,
            "usage": {"seconds": time.time() - state.get("started_at", time.time())},
        }
        if not state.get("stop_reason"):
            update["stop_reason"] = "complete"
        if state.get("from_messages"):
            text = next((c["text"] for c in candidates if c["id"] == chosen_id), None)
            if text is None:
                text = next((c["text"] for c in candidates if c["answer"] == answer), str(answer))
            reply = answer_message(text, answer, state.get("usage"), graph.strategy_name, ttc_route=route_name)
            update["messages"] = [reply]
        return update

    graph.add_node("prepare", make_prepare_node(history, reset=("route", "difficulty_bin", "difficulty_score")))
    graph.add_node("probe", dual(probe))
    graph.add_node("finish", finish)
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "probe")
    graph.add_conditional_edges("probe", route, [*(f"run_{n}" for n in nodes), "finish"])
    for route_name in nodes:
        graph.add_edge(f"run_{route_name}", "finish")
    graph.add_edge("finish", END)
    return graph


def build_compute_optimal(
    spec: ComputeOptimalSpec, policy: Endpoint, verifier: Verifier | None, common: dict[str, Any]
) -> StrategyGraph[RouterState, TTCContext, TTCInput, RouterOutput]:
    """The router a :class:`~ttc_graph.specs.ComputeOptimalSpec` describes (registered with
    :func:`~ttc_graph.specs.build_graph`, which cannot import this package: it imports ``specs``)."""
    table = load_table(spec.table)
    covered = sorted({int(b) for row in table.table.values() for b in row})
    if spec.budget.generations not in covered:
        raise ConfigurationError(
            f"budget.generations: {spec.budget.generations} is not covered by {spec.table} ({covered})"
        )
    assert verifier is not None
    return create_compute_optimal(
        policy, verifier, table, budget=spec.budget, probe_max_tokens=spec.probe_max_tokens,
        system_prompt=spec.system_prompt, **{k: v for k, v in common.items() if k in ("history", "name")},
    )  # fmt: skip


register_graph_builder("compute_optimal", build_compute_optimal)
