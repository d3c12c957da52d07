"""Sequential revisions, parallel chains and their hybrids, with hierarchical or majority selection."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Literal

from ttc_graph.budget import Budget, check_n
from ttc_graph.defaults import DEFAULT_REVISION_SELECTION, DEFAULT_TEMPERATURE
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph, strategy_graph
from ttc_graph.nodes.budget_controller import SamplingDefaults
from ttc_graph.nodes.dual import dual
from ttc_graph.nodes.prepare import make_prepare_node
from ttc_graph.nodes.revise import make_attempt_node
from ttc_graph.nodes.revision_controller import ChainPlan, make_revision_controller
from ttc_graph.nodes.select import make_select_node
from ttc_graph.nodes.verify import make_verify_node
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.selection import REVISION_SELECTIONS, RevisionSelection, select_revisions
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies.best_of_n import check_policy, connect_rounds
from ttc_graph.verifiers.function import VerifierLike, as_verifier

__all__ = ["create_revisions", "split_budget"]


def split_budget(n: int, chain_length: int | Literal["sqrt", "full"]) -> tuple[int, int]:
    """(parallel chains, attempts per chain) for ``n`` generations; ``chain_length`` must divide ``n``
    (``"full"``: one chain of ``n``; ``"sqrt"``: the divisor of ``n`` nearest its square root)."""
    check_n(n)
    if chain_length == "full":
        return 1, n
    if chain_length == "sqrt":  # the divisor of n nearest sqrt(n), so that chains x length is exactly n
        divisors = [x for d in range(1, math.isqrt(n) + 1) if n % d == 0 for x in (d, n // d)]
        length = min(divisors, key=lambda d: (abs(d - math.sqrt(n)), d))
        return n // length, length
    if not isinstance(chain_length, int) or chain_length < 1:
        raise ConfigurationError(f"chain_length: must be an integer >= 1, 'sqrt' or 'full', got {chain_length!r}")
    if n % chain_length:
        raise ConfigurationError(f"chain_length: {chain_length} does not divide n={n}; pick a divisor or 'sqrt'")
    return n // chain_length, chain_length


def create_revisions(
    policy: Endpoint,
    verifier: VerifierLike | None = None,
    *,
    n: int,
    chain_length: int | Literal["sqrt", "full"],
    selection: RevisionSelection = DEFAULT_REVISION_SELECTION,
    revision_policy: Endpoint | None = None,
    stop_score: float | None = None,
    stop_on_repeat: bool = False,
    budget: Budget | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    max_tokens: int | None = None,
    seed: int | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    history: History = "all",
    name: str | None = None,
    state_schema: type[Any] | None = None,
    context_schema: type[Any] | None = None,
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    """``n`` generations as ``n / chain_length`` parallel chains of ``chain_length`` attempts.

    Each revision sees up to the 4 latest attempts of its own chain. ``chain_length="full"`` (or ``n``) is purely
    sequential, ``1`` is plain best-of-N, ``"sqrt"`` is √n × √n (the length is the divisor of ``n`` nearest √n).
    Chains run to their full length by default, as in the paper, so a run at budget ``n`` spends ``n`` generations.
    Early stopping is an option beyond the paper: a chain stops once the verifier's score reaches ``stop_score`` or
    (``stop_on_repeat``) an attempt repeats the previous answer; the ledger then shows the smaller spend.
    ``revision_policy`` (e.g. a fine-tuned revision model, as the paper uses) draws the revisions; ``policy``
    draws the first attempts. Without it, revisions come from prompting the base model to revise. ``history`` and
    ``name``, ``state_schema``, ``context_schema``: as in :func:`~ttc_graph.strategies.create_best_of_n`.
    """
    check_policy(policy)
    if revision_policy is not None:
        check_policy(revision_policy)
    chains, length = split_budget(n, chain_length)
    if selection not in REVISION_SELECTIONS:
        raise ConfigurationError(f"selection: unknown {selection!r}; use one of {', '.join(REVISION_SELECTIONS)}")
    scorer = as_verifier(verifier)
    if scorer is None and selection == "hierarchical":
        raise ConfigurationError("verifier: selection='hierarchical' needs a verifier; use selection='majority'")
    if stop_score is not None and (scorer is None or not 0.0 <= stop_score <= 1.0):
        raise ConfigurationError("stop_score: needs a verifier and a value in [0, 1]")
    plan = ChainPlan(chains, length, stop_score, stop_on_repeat)
    check_n(n, budget)
    defaults = SamplingDefaults(temperature, max_tokens, seed, budget)

    graph = strategy_graph(name or "revisions", state_schema, context_schema)
    graph.add_node("prepare", make_prepare_node(history))
    graph.add_node("budget", dual(make_revision_controller(plan, defaults), io=False))
    logprobs = bool(getattr(scorer, "needs_logprobs", False))
    graph.add_node(
        "propose", dual(make_attempt_node(policy, "propose", system_prompt=system_prompt, logprobs=logprobs))
    )
    graph.add_node(
        "revise",
        dual(make_attempt_node(revision_policy or policy, "revise", system_prompt=system_prompt, logprobs=logprobs)),
    )
    graph.add_node("verify", dual(make_verify_node(scorer, budget=budget)))
    graph.add_node("select", make_select_node(partial(select_revisions, how=selection), name=graph.strategy_name))
    connect_rounds(graph, "propose", "revise")
    return graph
