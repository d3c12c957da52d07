"""Particle filtering against a process verifier (Puri et al., 2025), a configuration of the step-search core."""

from __future__ import annotations

import math
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
from ttc_graph.nodes.step_particles import RESAMPLING, WEIGHTINGS, ParticlePlan, Resampling, Weighting
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies.stepwise import (
    FinalSelection,
    StepSearchOptions,
    build_step_graph,
    check_count,
)
from ttc_graph.verifiers.aggregation import DEFAULT_AGGREGATION, Aggregation
from ttc_graph.verifiers.function import VerifierLike

__all__ = ["check_particle_filtering", "create_particle_filtering"]


def check_particle_filtering(
    n: object,
    *,
    max_steps: object,
    lookahead: object,
    softmax_temperature: object,
    resampling: object,
    weighting: object,
) -> ParticlePlan:
    """The policy of a particle filter, or a :class:`ConfigurationError` naming the bad argument."""
    check_count(n, "n", 1)
    check_count(max_steps, "max_steps", 1)
    check_count(lookahead, "lookahead", 0)
    if (
        isinstance(softmax_temperature, bool)
        or not isinstance(softmax_temperature, int | float)
        or not math.isfinite(softmax_temperature)
        or softmax_temperature <= 0
    ):
        raise ConfigurationError(f"softmax_temperature: must be a finite number > 0, got {softmax_temperature!r}")
    if resampling not in RESAMPLING:
        raise ConfigurationError(f"resampling: unknown {resampling!r}; use one of {', '.join(RESAMPLING)}")
    if weighting not in WEIGHTINGS:
        raise ConfigurationError(f"weighting: unknown {weighting!r}; use one of {', '.join(WEIGHTINGS)}")
    temperature = float(softmax_temperature)
    return ParticlePlan(n, max_steps, temperature, resampling, weighting, lookahead)  # type: ignore[arg-type]


def create_particle_filtering(
    policy: Endpoint,
    verifier: VerifierLike,
    *,
    n: int,
    max_steps: int = DEFAULT_MAX_STEPS,
    lookahead: int = 0,
    softmax_temperature: float = 1.0,
    resampling: Resampling = "multinomial",
    weighting: Weighting = "logit",
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
    state_schema: type[Any] | None = None,
    context_schema: type[Any] | None = None,
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    """Particle filtering: ``n`` particles, each extended by one step per round.

    After each round the verifier scores every particle's latest prefix; a particle's weight is the softmax of
    those scores' logits at ``softmax_temperature`` (at 1: proportional to the odds ``s / (1 - s)``, as Puri et
    al. weigh a PRM's score; ``weighting="score"`` softmaxes the scores themselves, nearly uniform for scores in
    [0, 1]); the unfinished particles are resampled (``multinomial`` or
    ``systematic``) in proportion to their weights into the slots finished particles have not taken, and finished
    particles are kept with the score they finished with. The search stops when every particle has finished, after
    ``max_steps`` rounds, or at a budget limit. ``selection="naive"`` answers with the highest-weight (top-scored)
    finished particle, ``"weighted"`` with best-of-N weighted over them. It costs ``n`` generations, as beam search
    with ``n`` beams does (``lookahead=k``: each particle is weighed after a greedy rollout of up to ``k`` steps,
    for ``n * (k + 1)``); ``seed`` makes resampling (and the policy's sampling, where it honours seeds)
    reproducible. ``history``, ``name``, ``state_schema``, ``context_schema``: as in
    :func:`~ttc_graph.strategies.create_best_of_n`. The choices
    are documented in :mod:`ttc_graph.nodes.step_particles`.
    """
    options = StepSearchOptions.of(locals())
    plan = check_particle_filtering(
        n, max_steps=max_steps, lookahead=lookahead, softmax_temperature=softmax_temperature, resampling=resampling,
        weighting=weighting,
    )  # fmt: skip
    return build_step_graph("particle filtering", policy, verifier, plan, options, "particle_filtering")
