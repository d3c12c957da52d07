"""Search against a verifier, one step at a time: beam search, lookahead search and DVTS."""

from __future__ import annotations

import math
from typing import Literal

from langgraph.graph import END, START

from ttc_graph.budget import Budget, check_n
from ttc_graph.endpoints.base import Endpoint, check_number
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph
from ttc_graph.nodes.budget_controller import SamplingDefaults, route_plan
from ttc_graph.nodes.dual import dual
from ttc_graph.nodes.expand import check_can_continue, make_expand_node
from ttc_graph.nodes.prepare import make_prepare_node
from ttc_graph.nodes.search_controller import SearchPlan, make_search_controller, make_search_verify_node
from ttc_graph.nodes.select import make_select_node
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies.best_of_n import check_policy
from ttc_graph.verifiers.base import Aggregation
from ttc_graph.verifiers.function import VerifierLike, as_verifier

__all__ = ["create_beam_search", "create_dvts", "resolve_width"]

AGGREGATIONS = ("last", "min", "prod", "mean")


def resolve_width(n: int, beam_width: int | Literal["sqrt"]) -> int:
    """M from ``beam_width``: an integer dividing ``n``, or ``"sqrt"`` for the divisor of ``n`` nearest sqrt(n)
    (so that ``n / M`` kept beams times ``M`` children is exactly ``n`` every round)."""
    check_n(n)
    if beam_width == "sqrt":
        divisors = [x for d in range(1, math.isqrt(n) + 1) if n % d == 0 for x in (d, n // d)]
        return min(divisors, key=lambda d: (abs(d - math.sqrt(n)), d))
    if not isinstance(beam_width, int) or beam_width < 1:
        raise ConfigurationError(f"beam_width: must be an integer >= 1 or 'sqrt', got {beam_width!r}")
    if n % beam_width:
        raise ConfigurationError(f"beam_width: {beam_width} does not divide n={n}; pick a divisor or 'sqrt'")
    return beam_width


def _build(
    kind: str,
    policy: Endpoint,
    verifier: VerifierLike,
    plan: SearchPlan,
    *,
    aggregation: Aggregation,
    budget: Budget | None,
    temperature: float,
    step_max_tokens: int,
    seed: int | None,
    delimiter: str,
    system_prompt: str | None,
    history: History,
    name: str,
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    check_policy(policy)
    scorer = as_verifier(verifier)
    if scorer is None:
        raise ConfigurationError(f"verifier: {kind} needs a verifier (a PRM, an LLM judge or a callable)")
    if aggregation not in AGGREGATIONS:
        raise ConfigurationError(f"aggregation: unknown {aggregation!r}; use one of {', '.join(AGGREGATIONS)}")
    if plan.lookahead < 0:
        raise ConfigurationError(f"lookahead: must be >= 0, got {plan.lookahead}")
    if plan.max_steps < 1:
        raise ConfigurationError(f"max_steps: must be >= 1, got {plan.max_steps}")
    if not delimiter:
        raise ConfigurationError("step_delimiter: must be a non-empty string")
    if budget is not None and budget.generations is not None and budget.generations < plan.generations:
        raise ConfigurationError(
            f"budget: {kind} with n={plan.n}, lookahead={plan.lookahead} costs {plan.generations} generations;"
            f" the budget allows {budget.generations}"
        )
    check_n(plan.n, budget)
    check_number("step_max_tokens", step_max_tokens, integer=True, minimum=1)
    check_can_continue(policy)
    defaults = SamplingDefaults(temperature, step_max_tokens, seed, budget)
    graph = StrategyGraph(
        TTCState, context_schema=TTCContext, input_schema=TTCInput, output_schema=TTCOutput, name=name
    )
    graph.add_node("prepare", make_prepare_node(history))
    graph.add_node("budget", dual(make_search_controller(plan, defaults, delimiter), io=False))
    graph.add_node(
        "expand",
        dual(
            make_expand_node(
                policy,
                system_prompt=system_prompt,
                delimiter=delimiter,
                lookahead=plan.lookahead,
                logprobs=bool(getattr(scorer, "needs_logprobs", False)),
            )
        ),
    )
    graph.add_node("verify", dual(make_search_verify_node(scorer, aggregation)))
    graph.add_node("select", make_select_node("weighted", name=graph.strategy_name))
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "budget")
    graph.add_conditional_edges("budget", route_plan("expand", "select"), ["expand", "select"])
    graph.add_edge("expand", "verify")
    graph.add_edge("verify", "budget")
    graph.add_edge("select", END)
    return graph


def create_beam_search(
    policy: Endpoint,
    verifier: VerifierLike,
    *,
    n: int,
    beam_width: int | Literal["sqrt"] = 4,
    max_steps: int = 40,
    lookahead: int = 0,
    aggregation: Aggregation = "last",
    budget: Budget | None = None,
    temperature: float = 0.8,
    step_max_tokens: int = 256,
    seed: int | None = None,
    step_delimiter: str = "\n\n",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    history: History = "all",
    name: str | None = None,
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    """Beam search against a (process) verifier, the paper's way.

    Sample ``n`` first steps; keep the top ``n / beam_width`` by verifier score; expand each kept beam
    ``beam_width`` times; set finished beams aside; repeat until ``n`` beams finished, none is left, or
    ``max_steps`` rounds. The answer is best-of-N weighted over the finished beams. ``lookahead=k`` scores each
    candidate step after a temperature-0 rollout of up to ``k`` more steps; the ledger charges ``n * (k + 1)``
    generations. ``history`` and ``name``: as in :func:`~ttc_graph.strategies.create_best_of_n`; every step
    request continues the answer after the conversation.
    """
    width = resolve_width(n, beam_width)
    plan = SearchPlan(n, width, 1, max(1, n // width), lookahead, max_steps)
    return _build(
        "beam search", policy, verifier, plan, aggregation=aggregation, budget=budget, temperature=temperature,
        step_max_tokens=step_max_tokens, seed=seed, delimiter=step_delimiter, system_prompt=system_prompt,
        history=history, name=name or "beam_search",
    )  # fmt: skip


def create_dvts(
    policy: Endpoint,
    verifier: VerifierLike,
    *,
    n: int,
    beam_width: int | Literal["sqrt"] = 4,
    max_steps: int = 40,
    lookahead: int = 0,
    aggregation: Aggregation = "last",
    budget: Budget | None = None,
    temperature: float = 0.8,
    step_max_tokens: int = 256,
    seed: int | None = None,
    step_delimiter: str = "\n\n",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    history: History = "all",
    name: str | None = None,
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    """Diverse verifier tree search: ``n / beam_width`` independent subtrees, each expanding its current beam
    ``beam_width`` times and keeping its best child, so one strong early step cannot take over every beam."""
    width = resolve_width(n, beam_width)
    plan = SearchPlan(n, width, n // width, 1, lookahead, max_steps, diverse=True)
    return _build(
        "DVTS", policy, verifier, plan, aggregation=aggregation, budget=budget, temperature=temperature,
        step_max_tokens=step_max_tokens, seed=seed, delimiter=step_delimiter, system_prompt=system_prompt,
        history=history, name=name or "dvts",
    )  # fmt: skip
