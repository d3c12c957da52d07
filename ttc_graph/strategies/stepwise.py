"""The core every step-wise search is a configuration of: its options, its verifier rule and its graph.

Beam search, lookahead search (beam search with ``lookahead``), DVTS, particle filtering and MCTS share one graph,
``prepare → budget ⇄ expand → verify``, then ``select``, built by :func:`build_step_graph`: ``expand`` samples next
steps (:func:`~ttc_graph.nodes.expand.make_expand_node`: a step cut off by the token limit is partial and is
continued, a ``lookahead`` rollout follows each new step), ``verify`` scores the new prefixes in one call
(:func:`~ttc_graph.nodes.step_verify.score_beams`), and ``budget`` is one round engine
(:mod:`ttc_graph.nodes.step_rounds`: cost checks, round limits, expand requests, the final update) run with the
search's own *policy* of which beams to keep and expand (:mod:`~ttc_graph.nodes.step_beam` for beam search and DVTS,
:mod:`~ttc_graph.nodes.step_particles`, :mod:`~ttc_graph.nodes.step_mcts`). A policy with no round barrier of its
own names a ``runner`` node that runs the search after round 0 in one call, each step started as soon as its own
work is scored: DVTS's ``subtrees`` (:mod:`~ttc_graph.nodes.step_subtrees`), and MCTS's ``tree``
(:mod:`~ttc_graph.nodes.step_tree`, opt-in). The options every step search takes are
one :class:`StepSearchOptions` (their names: :data:`STEP_OPTIONS`; defaults: :mod:`ttc_graph.defaults`); the step
scores' aggregation is :mod:`ttc_graph.verifiers.aggregation`'s, the final selection :mod:`ttc_graph.selection`'s.

**Step-wise verifiers.** Every step-wise search ranks or weighs *partial* solutions, so its verifier must score a
prefix. A verifier does when it declares ``scores_prefixes = True``, when its ``granularity`` is ``"process"``
(PRMs, the process LLM judge, :class:`~ttc_graph.verifiers.ArithmeticVerifier`), when it is a plain callable
(:class:`~ttc_graph.verifiers.FunctionVerifier`: it is given every prefix as text) or a
:class:`~ttc_graph.verifiers.ConfidenceVerifier` (it scores whatever tokens it is given), and a
:class:`~ttc_graph.verifiers.CombinedVerifier` does when all its parts do. Any other verifier of granularity
``"outcome"`` (the outcome LLM judge, a custom outcome verifier) judges whole solutions only and is refused by all
five searches with a :class:`~ttc_graph.errors.ConfigurationError` before any request.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from langgraph.graph import END, START

from ttc_graph.budget import Budget, check_n
from ttc_graph.defaults import (
    DEFAULT_MAX_STEPS,
    DEFAULT_SEARCH_SELECTION,
    DEFAULT_STEP_DELIMITER,
    DEFAULT_STEP_MAX_TOKENS,
    DEFAULT_STEP_TEMPERATURE,
)
from ttc_graph.endpoints.base import Endpoint, check_number
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph, strategy_graph
from ttc_graph.nodes.budget_controller import SamplingDefaults, route_plan
from ttc_graph.nodes.dual import dual
from ttc_graph.nodes.expand import check_can_continue, endpoint_slots, make_expand_node
from ttc_graph.nodes.prepare import make_prepare_node
from ttc_graph.nodes.select import make_select_node
from ttc_graph.nodes.step_rounds import StepPolicy, make_step_controller
from ttc_graph.nodes.step_runner import RunnerParts
from ttc_graph.nodes.step_subtrees import SUBTREES, make_subtrees_node
from ttc_graph.nodes.step_tree import TREE, make_tree_node
from ttc_graph.nodes.step_verify import make_scored_expand_node, make_step_verify_node
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.selection import FINAL_SELECTIONS, FinalSelection
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies.best_of_n import check_policy
from ttc_graph.verifiers.aggregation import DEFAULT_AGGREGATION, Aggregation, check_aggregation
from ttc_graph.verifiers.base import Verifier
from ttc_graph.verifiers.combined import CombinedVerifier
from ttc_graph.verifiers.confidence import ConfidenceVerifier
from ttc_graph.verifiers.function import FunctionVerifier, VerifierLike, as_verifier

__all__ = [
    "DEFAULT_MAX_STEPS",
    "DEFAULT_STEP_DELIMITER",
    "DEFAULT_STEP_MAX_TOKENS",
    "DEFAULT_STEP_TEMPERATURE",
    "FINAL_SELECTIONS",
    "STEP_OPTIONS",
    "FinalSelection",
    "StepSearchOptions",
    "build_step_graph",
    "check_count",
    "check_stepwise",
    "deprecated_alias",
    "scores_prefixes",
]


def check_count(value: object, field: str, minimum: int) -> int:
    """``value`` as an integer >= ``minimum`` (bools refused), or a :class:`ConfigurationError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{field}: must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class StepSearchOptions:
    """What every step-wise search is configured with, its selection's own knobs aside; checked when made.

    ``n``: the compute, in generations of whole solutions (``n`` sampled steps per depth); ``max_steps``: the most
    steps a solution gets; ``lookahead``: greedy rollout steps after each sampled step before it is scored (the
    search then costs ``n * (lookahead + 1)`` generations); ``aggregation``: step scores to a prefix's score;
    ``selection``: the final answer over the candidates; ``temperature``, ``step_max_tokens``, ``seed``: each step
    request's sampling; ``step_delimiter``: what ends a step; ``budget``, ``system_prompt``, ``history``, ``name``,
    ``state_schema``, ``context_schema``: as in :func:`~ttc_graph.strategies.create_best_of_n`.
    """

    n: int
    max_steps: int = DEFAULT_MAX_STEPS
    lookahead: int = 0
    aggregation: Aggregation = DEFAULT_AGGREGATION
    selection: FinalSelection = DEFAULT_SEARCH_SELECTION
    temperature: float = DEFAULT_STEP_TEMPERATURE
    step_max_tokens: int = DEFAULT_STEP_MAX_TOKENS
    step_delimiter: str = DEFAULT_STEP_DELIMITER
    seed: int | None = None
    budget: Budget | None = None
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    history: History = "all"
    name: str | None = None
    state_schema: type[Any] | None = None
    context_schema: type[Any] | None = None

    def __post_init__(self) -> None:
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise ConfigurationError(f"budget: expected a Budget, got {type(self.budget).__name__} {self.budget!r}")
        check_n(self.n, self.budget)
        check_count(self.max_steps, "max_steps", 1)
        check_count(self.lookahead, "lookahead", 0)
        check_aggregation(self.aggregation)
        if self.selection not in FINAL_SELECTIONS:
            raise ConfigurationError(f"selection: unknown {self.selection!r}; use one of {', '.join(FINAL_SELECTIONS)}")
        if not isinstance(self.step_delimiter, str) or not self.step_delimiter:
            raise ConfigurationError("step_delimiter: must be a non-empty string")
        check_number("step_max_tokens", self.step_max_tokens, integer=True, minimum=1)
        self.sampling()  # temperature, seed and budget

    @classmethod
    def of(cls, arguments: Mapping[str, Any]) -> StepSearchOptions:
        """The options among a factory's ``arguments`` (its ``locals()``): every field of this class, by name."""
        return cls(**{name: arguments[name] for name in STEP_OPTIONS if name in arguments})

    @property
    def generations(self) -> int:
        """What the search costs, as the paper counts it: ``n * (lookahead + 1)``."""
        return self.n * (self.lookahead + 1)

    def sampling(self) -> SamplingDefaults:
        """The step requests' sampling settings (a run's context may override them)."""
        return SamplingDefaults(self.temperature, self.step_max_tokens, self.seed, self.budget)


STEP_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(StepSearchOptions))
"""The names of the options every step-wise search takes (its factory's keyword arguments and its spec's fields)."""


def deprecated_alias(old: str, value: object, new: str, current: object, default: object, minimum: int) -> int:
    """The value of ``new`` when the deprecated ``old`` was given as ``value`` (checked under its own name); it
    warns, and refuses a ``current`` value of ``new`` set to something else."""
    given = check_count(value, old, minimum)
    warnings.warn(f"{old} is deprecated; use {new} (the same setting)", DeprecationWarning, stacklevel=3)
    if current != default and current != given:
        raise ConfigurationError(f"{old}: a deprecated alias of {new}, given {given!r} with {new}={current!r}")
    return given


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


def build_step_graph(
    kind: str, policy: Endpoint, verifier: VerifierLike, keep: StepPolicy, options: StepSearchOptions, name: str
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    """The graph of the step-wise search ``kind`` (named ``options.name`` or ``name``): ``keep`` is its
    :class:`~ttc_graph.nodes.step_rounds.StepPolicy` (which beams it keeps and expands); the ``policy`` endpoint
    must be able to continue a prefix and the verifier must score one (see the module docstring)."""
    check_policy(policy)
    scorer = check_stepwise(verifier, kind)
    budget = options.budget
    if budget is not None and budget.generations is not None and budget.generations < keep.generations:
        raise ConfigurationError(
            f"budget: {kind} with n={options.n}, lookahead={options.lookahead} costs {keep.generations}"
            f" generations; the budget allows {budget.generations}"
        )
    check_can_continue(policy)
    graph = strategy_graph(options.name or name, options.state_schema, options.context_schema)
    expand = make_expand_node(
        policy,
        system_prompt=options.system_prompt,
        delimiter=options.step_delimiter,
        lookahead=options.lookahead,
        logprobs=bool(getattr(scorer, "needs_logprobs", False)),
    )
    runner = getattr(keep, "runner", None)  # DVTS's subtrees, MCTS's tree: run without a round barrier
    slots = endpoint_slots(policy)
    controller = make_step_controller(keep, options.sampling(), options.step_delimiter, slots, runner=runner)
    graph.add_node("prepare", make_prepare_node(options.history, takes_tools=False))
    graph.add_node("budget", dual(controller, io=False))
    graph.add_node("expand", dual(make_scored_expand_node(expand, scorer, options.aggregation, budget=options.budget)))
    graph.add_node("verify", dual(make_step_verify_node(scorer, options.aggregation, budget=options.budget)))
    graph.add_node("select", make_select_node(options.selection, name=graph.strategy_name))
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "budget")
    targets = ["expand", "select"]
    parts = RunnerParts(keep, expand, scorer, options.aggregation, options.sampling(), slots, options.budget)
    if runner == SUBTREES:
        node = make_subtrees_node(parts, options.step_delimiter)
    elif runner == TREE:
        node = make_tree_node(parts)  # keep: an MCTSPlan, the policy whose runner is the tree
    elif runner is not None:
        raise ConfigurationError(f"{kind}: unknown runner node {runner!r}")
    if runner is not None:
        graph.add_node(runner, dual(node))
        graph.add_edge(runner, "budget")
        targets.insert(1, runner)
    graph.add_conditional_edges("budget", route_plan("expand", "select"), targets)
    graph.add_edge("expand", "verify")
    graph.add_edge("verify", "budget")
    graph.add_edge("select", END)
    return graph
