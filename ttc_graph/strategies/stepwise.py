"""What the step-wise sampling searches (particle filtering, MCTS) share: their checks and their graph.

Their graph is beam search's: ``prepare → budget ⇄ expand → verify``, then ``select``; only the controller differs.
Expansion reuses :func:`~ttc_graph.nodes.expand.make_expand_node` (same delimiter, same truncation rules: a step
cut off by the token limit is partial and is continued), scoring reuses beam search's verify node.

**Step-wise verifiers.** These searches weigh *partial* solutions, so their verifier must score a prefix. A verifier
does when it declares ``scores_prefixes = True``, when its ``granularity`` is ``"process"`` (PRMs, the process LLM
judge, :class:`~ttc_graph.verifiers.ArithmeticVerifier`), when it is a plain callable
(:class:`~ttc_graph.verifiers.FunctionVerifier`: it is given every prefix as text, as beam search gives it) or a
:class:`~ttc_graph.verifiers.ConfidenceVerifier` (it scores whatever tokens it is given), and a
:class:`~ttc_graph.verifiers.CombinedVerifier` does when all its parts do. Any other verifier of granularity
``"outcome"`` (the outcome LLM judge, a custom outcome verifier) judges whole solutions only, is not step-wise,
and is refused with a :class:`~ttc_graph.errors.ConfigurationError` before any request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from langgraph.graph import END, START
from langgraph.runtime import Runtime

from ttc_graph.budget import Budget
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph
from ttc_graph.nodes.budget_controller import route_plan
from ttc_graph.nodes.dual import dual
from ttc_graph.nodes.expand import check_can_continue, make_expand_node
from ttc_graph.nodes.prepare import make_prepare_node
from ttc_graph.nodes.search_controller import make_search_verify_node
from ttc_graph.nodes.select import make_select_node
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies.best_of_n import check_policy
from ttc_graph.verifiers.base import Aggregation, Verifier
from ttc_graph.verifiers.combined import CombinedVerifier
from ttc_graph.verifiers.confidence import ConfidenceVerifier
from ttc_graph.verifiers.function import FunctionVerifier, VerifierLike, as_verifier

__all__ = [
    "FINAL_SELECTIONS",
    "FinalSelection",
    "build_step_graph",
    "check_common",
    "check_count",
    "check_stepwise",
    "scores_prefixes",
]

FinalSelection = Literal["naive", "weighted"]
FINAL_SELECTIONS: tuple[FinalSelection, ...] = ("naive", "weighted")
_AGGREGATIONS = ("last", "min", "prod", "mean")
Controller = Callable[[TTCState, Runtime[Any]], Awaitable[dict[str, Any]]]


def scores_prefixes(verifier: Verifier) -> bool:
    """Whether ``verifier`` can score a partial solution (see the module docstring)."""
    declared = getattr(verifier, "scores_prefixes", None)
    if isinstance(declared, bool):
        return declared
    if isinstance(verifier, CombinedVerifier):
        return all(scores_prefixes(part) for part in verifier.parts)
    if getattr(verifier, "granularity", "outcome") == "process":
        return True
    return isinstance(verifier, FunctionVerifier | ConfidenceVerifier)


def check_stepwise(verifier: VerifierLike | None, kind: str) -> Verifier:
    """The verifier as a :class:`Verifier` that scores prefixes, or a :class:`ConfigurationError` naming why not."""
    scorer = as_verifier(verifier)
    if scorer is None:
        raise ConfigurationError(f"verifier: {kind} needs a step-wise verifier (a PRM, a process judge or a callable)")
    if not scores_prefixes(scorer):
        raise ConfigurationError(
            f"verifier: {scorer.name} is not step-wise (granularity {scorer.granularity!r}: it judges whole solutions"
            f" and cannot score the partial ones {kind} weighs); use a process verifier (a PRM, "
            "LLMJudgeVerifier(mode='process'), ArithmeticVerifier), a plain callable, or set scores_prefixes = True"
        )
    return scorer


def check_count(value: object, field: str, minimum: int) -> int:
    """``value`` as an integer >= ``minimum`` (bools refused), or a :class:`ConfigurationError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{field}: must be an integer >= {minimum}, got {value!r}")
    return value


def check_common(
    *, n: object, max_steps: object, aggregation: str, selection: str, delimiter: str, steps_field: str = "max_steps"
) -> None:
    """The checks every step-wise search shares (``n``, step limit, aggregation, final selection, delimiter)."""
    check_count(n, "n", 1)
    check_count(max_steps, steps_field, 1)
    if aggregation not in _AGGREGATIONS:
        raise ConfigurationError(f"aggregation: unknown {aggregation!r}; use one of {', '.join(_AGGREGATIONS)}")
    if selection not in FINAL_SELECTIONS:
        raise ConfigurationError(f"selection: unknown {selection!r}; use one of {', '.join(FINAL_SELECTIONS)}")
    if not isinstance(delimiter, str) or not delimiter:
        raise ConfigurationError("step_delimiter: must be a non-empty string")


def build_step_graph(
    kind: str,
    policy: Endpoint,
    scorer: Verifier,
    controller: Controller,
    *,
    generations: int,
    lookahead: int,
    aggregation: Aggregation,
    selection: FinalSelection,
    budget: Budget | None,
    delimiter: str,
    system_prompt: str | None,
    history: History,
    name: str,
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    """The graph of a step-wise search run by ``controller``; the policy must be able to continue a prefix."""
    check_policy(policy)
    if budget is not None and budget.generations is not None and budget.generations < generations:
        raise ConfigurationError(
            f"budget: {kind} costs {generations} generations; the budget allows {budget.generations}"
        )
    check_can_continue(policy)
    graph = StrategyGraph(
        TTCState, context_schema=TTCContext, input_schema=TTCInput, output_schema=TTCOutput, name=name
    )
    expand = make_expand_node(
        policy,
        system_prompt=system_prompt,
        delimiter=delimiter,
        lookahead=lookahead,
        logprobs=bool(getattr(scorer, "needs_logprobs", False)),
    )
    graph.add_node("prepare", make_prepare_node(history))
    graph.add_node("budget", dual(controller, io=False))
    graph.add_node("expand", dual(expand))
    graph.add_node("verify", dual(make_search_verify_node(scorer, aggregation)))
    graph.add_node("select", make_select_node(selection, name=graph.strategy_name))
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "budget")
    graph.add_conditional_edges("budget", route_plan("expand", "select"), ["expand", "select"])
    graph.add_edge("expand", "verify")
    graph.add_edge("verify", "budget")
    graph.add_edge("select", END)
    return graph
