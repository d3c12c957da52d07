"""Particle filtering against a process verifier (Puri et al., 2025), on beam search's nodes and budget rules."""

from __future__ import annotations

import math

from ttc_graph.budget import Budget, check_n
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph
from ttc_graph.nodes.budget_controller import SamplingDefaults
from ttc_graph.nodes.particle_controller import (
    RESAMPLING,
    WEIGHTINGS,
    ParticlePlan,
    Resampling,
    Weighting,
    make_particle_controller,
)
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies.stepwise import FinalSelection, build_step_graph, check_common, check_stepwise
from ttc_graph.verifiers.base import Aggregation
from ttc_graph.verifiers.function import VerifierLike

__all__ = ["check_particle_filtering", "create_particle_filtering"]


def check_particle_filtering(
    n: object,
    *,
    max_steps: object = 40,
    softmax_temperature: object = 1.0,
    resampling: object = "multinomial",
    weighting: object = "logit",
    aggregation: str = "last",
    selection: str = "naive",
    step_delimiter: str = "\n\n",
) -> ParticlePlan:
    """The plan of a particle filter, or a :class:`ConfigurationError` naming the bad argument."""
    check_common(n=n, max_steps=max_steps, aggregation=aggregation, selection=selection, delimiter=step_delimiter)
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
    return ParticlePlan(n, max_steps, float(softmax_temperature), resampling, weighting)  # type: ignore[arg-type]


def create_particle_filtering(
    policy: Endpoint,
    verifier: VerifierLike,
    *,
    n: int,
    max_steps: int = 40,
    softmax_temperature: float = 1.0,
    resampling: Resampling = "multinomial",
    weighting: Weighting = "logit",
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
    """Particle filtering: ``n`` particles, each extended by one step per round.

    After each round the verifier scores every particle's latest prefix; a particle's weight is the softmax of
    those scores' logits at ``softmax_temperature`` (at 1: proportional to the odds ``s / (1 - s)``, as Puri et
    al. weigh a PRM's score; ``weighting="score"`` softmaxes the scores themselves, nearly uniform for scores in
    [0, 1]); the unfinished particles are resampled (``multinomial`` or
    ``systematic``) in proportion to their weights into the slots finished particles have not taken, and finished
    particles are kept with the score they finished with. The search stops when every particle has finished, after
    ``max_steps`` rounds, or at a budget limit. ``selection="naive"`` answers with the highest-weight (top-scored)
    finished particle, ``"weighted"`` with best-of-N weighted over them. It costs ``n`` generations, as beam search
    with ``n`` beams does; ``seed`` makes resampling (and the policy's sampling, where it honours seeds)
    reproducible. ``history`` and ``name``: as in :func:`~ttc_graph.strategies.create_best_of_n`. The choices
    are documented in :mod:`ttc_graph.nodes.particle_controller`.
    """
    plan = check_particle_filtering(
        n, max_steps=max_steps, softmax_temperature=softmax_temperature, resampling=resampling,
        weighting=weighting, aggregation=aggregation, selection=selection, step_delimiter=step_delimiter,
    )  # fmt: skip
    check_n(n, budget)
    scorer = check_stepwise(verifier, "particle filtering")
    defaults = SamplingDefaults(temperature, step_max_tokens, seed, budget)
    return build_step_graph(
        f"particle filtering with n={n}", policy, scorer, make_particle_controller(plan, defaults, step_delimiter),
        generations=plan.generations, lookahead=0, aggregation=aggregation, selection=selection, budget=budget,
        delimiter=step_delimiter, system_prompt=system_prompt, history=history, name=name or "particle_filtering",
    )  # fmt: skip
