"""Monte Carlo tree search over solution steps, on beam search's nodes and budget rules."""

from __future__ import annotations

import math

from ttc_graph.budget import Budget, check_n
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph
from ttc_graph.nodes.budget_controller import SamplingDefaults
from ttc_graph.nodes.mcts_controller import MCTSPlan, make_mcts_controller
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies.stepwise import FinalSelection, build_step_graph, check_common, check_count, check_stepwise
from ttc_graph.verifiers.base import Aggregation
from ttc_graph.verifiers.function import VerifierLike

__all__ = ["check_mcts", "create_mcts"]


def check_mcts(
    n: object,
    *,
    expansions: object = 4,
    exploration: object = 1.0,
    max_depth: object = 40,
    rollout: object = 0,
    aggregation: str = "last",
    selection: str = "naive",
    step_delimiter: str = "\n\n",
) -> MCTSPlan:
    """The plan of an MCTS, or a :class:`ConfigurationError` naming the bad argument."""
    check_common(
        n=n, max_steps=max_depth, aggregation=aggregation, selection=selection, delimiter=step_delimiter,
        steps_field="max_depth",
    )  # fmt: skip
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
    check_count(rollout, "rollout", 0)
    return MCTSPlan(n, expansions, float(exploration), max_depth, rollout)  # type: ignore[arg-type]


def create_mcts(
    policy: Endpoint,
    verifier: VerifierLike,
    *,
    n: int,
    expansions: int = 4,
    exploration: float = 1.0,
    max_depth: int = 40,
    rollout: int = 0,
    selection: FinalSelection = "naive",
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
    """Monte Carlo tree search whose nodes are partial solutions.

    Each round selects leaves by UCT over the verifier's backed-up values (``exploration`` is UCT's constant ``c``),
    expands each with ``expansions`` sampled next steps, scores them with the verifier (after a greedy rollout of
    up to ``rollout`` steps, as lookahead search does) and backs the values up. ``n`` is the compute in beam search's
    unit: at most ``n`` sampled steps at each depth of the tree, ``n * (rollout + 1)`` generations charged, so
    ``create_mcts(n=N)`` spends what ``create_beam_search(n=N)`` spends. The search stops once ``n`` paths have
    finished, when no leaf is left to expand (``max_depth`` bounds the tree), or at a budget limit. The answer is
    the top-scored finished path (``selection="naive"``) or best-of-N weighted over the top ``n`` finished paths.
    ``history`` and ``name``: as in :func:`~ttc_graph.strategies.create_best_of_n`. Details in
    :mod:`ttc_graph.nodes.mcts_controller`.
    """
    plan = check_mcts(
        n, expansions=expansions, exploration=exploration, max_depth=max_depth, rollout=rollout,
        aggregation=aggregation, selection=selection, step_delimiter=step_delimiter,
    )  # fmt: skip
    check_n(n, budget)
    scorer = check_stepwise(verifier, "MCTS")
    defaults = SamplingDefaults(temperature, step_max_tokens, seed, budget)
    return build_step_graph(
        f"MCTS with n={n}, rollout={rollout}", policy, scorer, make_mcts_controller(plan, defaults, step_delimiter),
        generations=plan.generations, lookahead=rollout, aggregation=aggregation, selection=selection, budget=budget,
        delimiter=step_delimiter, system_prompt=system_prompt, history=history, name=name or "mcts",
    )  # fmt: skip
