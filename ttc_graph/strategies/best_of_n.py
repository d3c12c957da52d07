"""Best-of-N, best-of-N weighted and majority vote as a LangGraph graph."""

from __future__ import annotations

from functools import partial
from typing import Any

from langgraph.graph import END, START

from ttc_graph.budget import Budget, check_n
from ttc_graph.defaults import DEFAULT_SELECTION, DEFAULT_TEMPERATURE
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph, strategy_graph
from ttc_graph.nodes.adaptive import make_sample_node, window_for
from ttc_graph.nodes.budget_controller import (
    AdaptiveStop,
    SamplingDefaults,
    make_best_of_n_controller,
    route_plan,
)
from ttc_graph.nodes.dual import dual
from ttc_graph.nodes.prepare import make_prepare_node
from ttc_graph.nodes.propose import make_propose_node
from ttc_graph.nodes.select import make_select_node
from ttc_graph.nodes.verify import make_verify_node
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.selection import SELECTIONS, Selection, Truncated, select_answer
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.verifiers.function import VerifierLike, as_verifier

__all__ = ["connect_rounds", "create_best_of_n"]


def check_policy(policy: object) -> None:
    if not callable(getattr(policy, "generate", None)):
        raise ConfigurationError(f"policy: expected an endpoint with an async generate(), got {type(policy).__name__}")


def connect_rounds(graph: StrategyGraph[Any, Any, Any, Any], *samplers: str) -> None:
    """The edges of a strategy's round loop: ``START → prepare → budget ⇉ samplers → verify → budget``, and
    ``budget → select → END`` once the controller plans nothing (a task goes to ``samplers[0]`` unless it names
    its node)."""
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "budget")
    graph.add_conditional_edges("budget", route_plan(samplers[0], "select"), [*samplers, "select"])
    for sampler in samplers:
        graph.add_edge(sampler, "verify")
    graph.add_edge("verify", "budget")
    graph.add_edge("select", END)


def create_best_of_n(
    policy: Endpoint,
    verifier: VerifierLike | None = None,
    *,
    n: int,
    selection: Selection = DEFAULT_SELECTION,
    adaptive: AdaptiveStop | bool = False,
    budget: Budget | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int | None = None,
    seed: int | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    logprobs: bool = False,
    history: History = "all",
    name: str | None = None,
    truncated: Truncated = "lose",
    state_schema: type[Any] | None = None,
    context_schema: type[Any] | None = None,
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    """An uncompiled best-of-N graph: ``prepare → budget ⇉ propose → verify → budget → … → select``.

    ``selection``: ``weighted`` (sum of verifier scores per final answer, the paper's best-of-N weighted),
    ``naive`` (top-scored sample) or ``majority`` (most frequent answer; needs no verifier). ``adaptive``
    keeps a window of requests in flight (the endpoint's concurrency), checks the stopping rule on every arrival
    and, once the leading answer is decisive, cancels what is in flight (:class:`AdaptiveStop`). ``logprobs``
    asks the policy for token log-probabilities (needed by a confidence verifier). ``history``: with a
    ``messages`` input, send the prior human and AI turns (``all``) or only the last human message (``last``).
    ``name`` (default ``best_of_n``) names the compiled graph (the root run of a trace) and the reply it appends
    to ``messages``. ``truncated``: samples cut off by ``max_tokens`` ``lose`` (they neither vote nor win while a
    complete sample has an answer; the default) or ``vote`` as any other (the behaviour before).
    ``state_schema`` / ``context_schema``: your extensions of :class:`~ttc_graph.state.TTCState` /
    :class:`~ttc_graph.state.TTCContext` (keys you add pass through a run; see
    :func:`~ttc_graph.graph.strategy_graph`).
    """
    check_policy(policy)
    check_n(n, budget)
    if truncated not in ("lose", "vote"):
        raise ConfigurationError(f"truncated: expected 'lose' or 'vote', got {truncated!r}")
    if selection not in SELECTIONS:
        raise ConfigurationError(f"selection: unknown {selection!r}; use one of {', '.join(SELECTIONS)}")
    scorer = as_verifier(verifier)
    if scorer is None and selection in ("naive", "weighted"):
        raise ConfigurationError(f"verifier: selection={selection!r} needs a verifier; use selection='majority'")
    stop = AdaptiveStop(min_samples=min(4, n)) if adaptive is True else (adaptive or None)
    if stop is not None and not isinstance(stop, AdaptiveStop):
        raise ConfigurationError(f"adaptive: expected a bool or an AdaptiveStop, got {type(adaptive).__name__}")
    if stop is not None:
        stop.check(n, budget.generations if budget is not None else None)
    # adaptive sampling, and any endpoint that takes one sample per request (llama.cpp), keep a window of requests
    # in flight in one node: a super-step would wait for its slowest sample, and one Send per sample costs more
    windowed = stop is not None or getattr(policy, "native_n", None) is False
    needs_logprobs = logprobs or getattr(scorer, "needs_logprobs", False)
    batch = n if getattr(policy, "native_n", None) is not False else 1

    graph = strategy_graph(name or "best_of_n", state_schema, context_schema)
    graph.add_node("prepare", make_prepare_node(history))
    graph.add_node(
        "budget",
        dual(
            make_best_of_n_controller(
                n=n,
                defaults=SamplingDefaults(temperature, max_tokens, seed, budget),
                adaptive=stop,
                batch=max(1, batch),
                window=window_for(policy, n, stop) if windowed else None,
            ),
            io=False,
        ),
    )
    if windowed:
        sampler = make_sample_node(policy, system_prompt=system_prompt, logprobs=needs_logprobs, stop=stop)
        graph.add_node("propose", dual(sampler, name="propose"))
    else:
        graph.add_node("propose", dual(make_propose_node(policy, system_prompt=system_prompt, logprobs=needs_logprobs)))
    graph.add_node("verify", dual(make_verify_node(scorer, budget=budget)))
    rule = selection if truncated == "lose" else partial(select_answer, how=selection, truncated="vote")
    graph.add_node("select", make_select_node(rule, name=graph.strategy_name))
    connect_rounds(graph, "propose")
    return graph
