"""The policy of particle filtering: weigh the live particles and resample them (the round engine plans and stops).

Choices (Puri et al., 2025; its_hub's ``ParticleFiltering`` differs where noted):

- A particle's weight is the softmax, at ``softmax_temperature``, of the logit of the verifier's score of its latest
  prefix (the aggregated score, ``last`` step by default), as Puri et al. and its_hub weigh a PRM's score: at
  temperature 1 a weight is proportional to the odds ``s / (1 - s)``. ``weighting="score"`` softmaxes the score
  itself, which for scores in [0, 1] spreads weights at most e-fold at temperature 1 (nearly uniform: resampling
  then drops particles at random instead of selecting them; it was the default before). Weights are not multiplied
  across steps: every round resamples, which resets the weights to uniform, so the new weight is the latest
  likelihood alone (its_hub also uses the latest score only).
- Only unfinished particles are resampled, into the ``n - finished`` slots left. A finished particle keeps the score
  it finished with as its weight and its slot: it is never extended, copied or dropped (its_hub keeps finished
  particles in the softmax, where they can be copied or lost). Every round thus spends its samples on live paths.
- A particle drawn ``c`` times is continued by one request of ``c`` samples; an unscored particle has weight 0
  (all unscored: uniform). ``multinomial`` draws the slots independently; ``systematic`` uses one uniform offset
  and evenly spaced points, so a particle of weight ``w`` gets ``floor(m w)`` or ``ceil(m w)`` of ``m`` slots.
- The random stream of a round is seeded by (seed, round, the particles and their scores): the controller is
  deterministic given the state and the seed, so a resumed run resamples exactly as the uninterrupted one.
- Cost: ``n`` generations, charged when the search starts, as beam search with ``n`` beams (every round samples at
  most ``n`` steps); with ``lookahead=k`` a particle is weighed by its score after a greedy rollout of up to ``k``
  more steps (as lookahead search scores a step) and the search costs ``n * (k + 1)``.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ttc_graph.errors import ConfigurationError
from ttc_graph.nodes.expand import Beam, root_beam
from ttc_graph.nodes.step_rounds import (
    PolicyCost,
    StepRound,
    beam_to_candidate,
    id_key,
    limit_stop,
    retire,
    split_frontier,
    steps_of,
)
from ttc_graph.state import Candidate, TTCState

__all__ = [
    "RESAMPLING",
    "WEIGHTINGS",
    "ParticlePlan",
    "Resampling",
    "Weighting",
    "effective_sample_size",
    "resample",
    "softmax_weights",
]

Resampling = Literal["multinomial", "systematic"]
RESAMPLING: tuple[Resampling, ...] = ("multinomial", "systematic")
Weighting = Literal["logit", "score"]
WEIGHTINGS: tuple[Weighting, ...] = ("logit", "score")
LOGIT_CLIP = 1e-6  # a score of exactly 0 or 1 has an infinite logit: clipped, as its_hub does


@dataclass(frozen=True, slots=True)
class ParticlePlan(PolicyCost):
    """The policy of particle filtering: ``n`` particles extended by one step per round for at most
    ``max_steps`` rounds, resampled by their weights (each scored after a greedy rollout of ``lookahead`` steps)."""

    n: int
    max_steps: int
    softmax_temperature: float = 1.0
    resampling: Resampling = "multinomial"
    weighting: Weighting = "logit"
    lookahead: int = 0
    label = "particle filtering"

    def begin(self, state: TTCState, round_: int, seed: int | None, delimiter: str) -> StepRound:
        return _ParticleRound(self, state, round_, seed, delimiter)


def _logit(score: float) -> float:
    clipped = min(max(score, LOGIT_CLIP), 1.0 - LOGIT_CLIP)
    return math.log(clipped / (1.0 - clipped))


def softmax_weights(scores: Sequence[float | None], temperature: float, weighting: Weighting = "logit") -> list[float]:
    """Normalised ``exp(x / temperature)``, ``x`` the logit of each score (``"logit"``; scores must lie in [0, 1])
    or the score itself (``"score"``); an unscored particle weighs 0 (all unscored: uniform)."""
    known = [s for s in scores if s is not None]
    if not known:
        return [1.0 / len(scores)] * len(scores) if scores else []
    if weighting == "logit":
        if bad := [s for s in known if not 0.0 <= s <= 1.0]:
            raise ConfigurationError(
                f"weighting: 'logit' needs verifier scores in [0, 1], got {bad[0]!r}; use weighting='score'"
            )
        scores = [None if s is None else _logit(s) for s in scores]
        known = [s for s in scores if s is not None]
    elif weighting != "score":
        raise ConfigurationError(f"weighting: unknown {weighting!r}; use one of {', '.join(WEIGHTINGS)}")
    top = max(known)
    raw = [0.0 if s is None else math.exp((s - top) / temperature) for s in scores]
    total = math.fsum(raw)
    return [r / total for r in raw]


def resample(weights: Sequence[float], m: int, scheme: Resampling, rng: random.Random) -> list[int]:
    """How many of ``m`` slots each particle gets, drawn in proportion to ``weights`` (which sum to 1)."""
    counts = [0] * len(weights)
    if m <= 0 or not weights:
        return counts
    if not any(w > 0 for w in weights):
        weights = [1.0] * len(weights)
    if scheme == "multinomial":
        for i in rng.choices(range(len(weights)), weights=weights, k=m):
            counts[i] += 1
        return counts
    if scheme != "systematic":
        raise ConfigurationError(f"resampling: unknown {scheme!r}; use one of {', '.join(RESAMPLING)}")
    cumulative = list(itertools.accumulate(weights))
    last = max(i for i, w in enumerate(weights) if w > 0)
    start = rng.random() / m
    for j in range(m):  # particle i covers [cumulative[i - 1], cumulative[i]) of the total
        i = bisect.bisect_right(cumulative, (start + j / m) * cumulative[-1])
        counts[min(i, last)] += 1
    return counts


def effective_sample_size(weights: Sequence[float]) -> float:
    """``1 / sum(w^2)``: how many equally weighted particles the weights are worth."""
    total = math.fsum(w * w for w in weights)
    return 1.0 / total if total else 0.0


def _rng(seed: int | None, round_: int, live: Sequence[Beam]) -> random.Random:
    key = f"{seed}|{round_}|" + "|".join(f"{b['id']}={b['score']!r}" for b in live)
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


class _ParticleRound(StepRound):
    """Retire the finished particles, weigh the live ones and resample them into the slots left."""

    def __init__(self, plan: ParticlePlan, state: TTCState, round_: int, seed: int | None, delimiter: str) -> None:
        self.plan, self.round, self.seed, self.delimiter = plan, round_, seed, delimiter
        frontier = sorted(state.get("frontier", []), key=lambda b: id_key(b["id"]))
        at_limit = round_ >= plan.max_steps
        ending, self.live = split_frontier(frontier, at_limit)
        self.retired = retire(ending, delimiter)
        self.pool: list[Candidate] = [*state.get("candidates", []), *self.retired]
        self.slots = plan.n - len(self.pool) if round_ > 0 else plan.n
        self.weights = softmax_weights([b["score"] for b in self.live], plan.softmax_temperature, plan.weighting)
        self.counts: list[int] = []
        if at_limit:
            self.stop = limit_stop(ending)
        elif round_ > 0 and (self.slots <= 0 or not self.live):
            self.stop = "complete" if self.pool else "error"

    def expansions(self) -> list[tuple[Beam, int]]:
        if self.round == 0:
            return [(root_beam("p"), self.plan.n)]
        rng = _rng(self.seed, self.round, self.live)
        self.counts = resample(self.weights, self.slots, self.plan.resampling, rng)
        return [(b, c) for b, c in zip(self.live, self.counts, strict=True) if c]

    def final(self, stop: str) -> tuple[list[Candidate], dict[str, Any]]:
        if stop.startswith("budget:"):  # cut short by the budget: the live particles are candidates too
            self.pool += [beam_to_candidate(b, self.delimiter, stop) for b in self.live]
        return self.pool, {}

    def event(self) -> dict[str, Any]:
        return {
            "particles": [
                {
                    "id": b["id"],
                    "score": b["score"],
                    "weight": w,
                    "copies": self.counts[i] if self.counts else 0,
                    "steps": len(b["steps"]),
                    "last": b["steps"][-1][:80],
                }
                for i, (b, w) in enumerate(zip(self.live, self.weights, strict=True))
            ],
            "ess": effective_sample_size(self.weights),
            "steps_per_beam": steps_of(self.live, self.delimiter, self.retired),
            "finished": len(self.pool),
        }
