"""Monte Carlo tree search over solution steps, a configuration of the step-search core."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ttc_graph.budget import Budget
from ttc_graph.defaults import (
    DEFAULT_MAX_STEPS,
    DEFAULT_PATH_SELECTION,
    DEFAULT_STEP_DELIMITER,
    DEFAULT_STEP_MAX_TOKENS,
    DEFAULT_STEP_TEMPERATURE,
)
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph
from ttc_graph.nodes.step_mcts import MCTSPlan
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies.stepwise import (
    FinalSelection,
    StepSearchOptions,
    build_step_graph,
    check_count,
    deprecated_alias,
)
from ttc_graph.verifiers.aggregation import DEFAULT_AGGREGATION, Aggregation
from ttc_graph.verifiers.function import VerifierLike

__all__ = ["check_mcts", "create_mcts"]


def check_mcts(n: object, *, expansions: object, exploration: object, max_steps: object, lookahead: object) -> MCTSPlan:
    """The policy of an MCTS, or a :class:`ConfigurationError` naming the bad argument."""
    check_count(n, "n", 1)
    check_count(max_steps, "max_steps", 1)
    check_count(lookahead, "lookahead", 0)
    check_count(expansions, "expansions", 1)
    if expansions > n:  # type: ignore[operator]
        raise ConfigurationError(f"expansions: {expansions} children per expansion exceed n={n} steps per depth")
    if (
        isinstance(exploration, bool)
        or not isinstance(exploration, int | float)
        or not math.isfinite(exploration)
        or exploration < 0
    ):
        raise ConfigurationError(f"exploration: must be a finite number >= 0, got {exploration!r}")
    return MCTSPlan(n, expansions, float(exploration), max_steps, lookahead)  # type: ignore[arg-type]


def create_mcts(
    policy: Endpoint,
    verifier: VerifierLike,
    *,
    n: int,
    expansions: int = 4,
    exploration: float = 1.0,
    max_steps: int = DEFAULT_MAX_STEPS,
    lookahead: int = 0,
    selection: FinalSelection = DEFAULT_PATH_SELECTION,
    aggregation: Aggregation = DEFAULT_AGGREGATION,
    budget: Budget | None = None,
    temperature: float = DEFAULT_STEP_TEMPERATURE,
    step_max_tokens: int = DEFAULT_STEP_MAX_TOKENS,
    seed: int | None = None,
    step_delimiter: str = DEFAULT_STEP_DELIMITER,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    history: History = "all",
    name: str | None = None,
    max_depth: int | None = None,
    rollout: int | None = None,
    state_schema: type[Any] | None = None,
    context_schema: type[Any] | None = None,
    asynchronous: bool = False,
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    """Monte Carlo tree search whose nodes are partial solutions.

    Each round selects leaves by UCT over the verifier's backed-up values (``exploration`` is UCT's constant ``c``),
    expands each with ``expansions`` sampled next steps, scores them with the verifier (after a greedy rollout of
    up to ``lookahead`` steps, as lookahead search does) and backs the values up. ``n`` is the compute in beam
    search's unit: at most ``n`` sampled steps at each depth of the tree, ``n * (lookahead + 1)`` generations
    charged, so ``create_mcts(n=N)`` spends what ``create_beam_search(n=N)`` spends. The search stops once ``n``
    paths have finished, when no leaf is left to expand (``max_steps`` bounds the tree's depth), or at a budget
    limit. The answer is the top-scored finished path (``selection="naive"``) or best-of-N weighted over the top
    ``n`` finished paths. ``max_depth`` and ``rollout`` are deprecated aliases of ``max_steps`` and ``lookahead``
    (they warn). ``history``, ``name``, ``state_schema``, ``context_schema``: as in
    :func:`~ttc_graph.strategies.create_best_of_n`. Details in
    :mod:`ttc_graph.nodes.step_mcts`.

    ``asynchronous``: no rounds (one ``tree`` node, :mod:`~ttc_graph.nodes.step_tree`): a leaf is selected, with
    virtual loss on the paths in flight, as soon as a slot of the window frees. Off by default: the tree then
    depends on the order answers arrive in, so a seeded run is not reproducible, and on llama.cpp it measured no
    faster (docs/results.md, section 13).
    """
    if max_depth is not None:
        max_steps = deprecated_alias("max_depth", max_depth, "max_steps", max_steps, DEFAULT_MAX_STEPS, 1)
    if rollout is not None:
        lookahead = deprecated_alias("rollout", rollout, "lookahead", lookahead, 0, 0)
    options = StepSearchOptions.of(locals())
    plan = check_mcts(n, expansions=expansions, exploration=exploration, max_steps=max_steps, lookahead=lookahead)
    if asynchronous:
        plan = replace(plan, asynchronous=True)
    return build_step_graph("MCTS", policy, verifier, plan, options, "mcts")
