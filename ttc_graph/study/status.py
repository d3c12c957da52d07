"""Where a long study stands: questions and units done, tokens spent, and what the rest costs at the recent rate."""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ttc_graph.errors import ConfigurationError
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.store import ResultStore
from ttc_graph.study.config import StudyConfig
from ttc_graph.study.runner import StudyUnit, plan_units

__all__ = ["PAUSE_FACTOR", "RATE_WINDOW", "StudyStatus", "study_status"]

RATE_WINDOW = 30  # the latest live units the rate is measured over
PAUSE_FACTOR = 10  # an interval between finished units this many times the median one is a pause, not work


@dataclass(frozen=True, slots=True)
class StudyStatus:
    """A study's progress. ``rate`` is completion tokens per second over the latest units, pauses left out
    (None: too few units to tell); ``remaining_tokens`` prices every live unit left at its (template, budget)'s mean so
    far (None: one has no finished unit yet), and a pool's missing samples at the stored samples' mean length.
    ``until``/``until_tokens``: the same price of the units of the first ``until`` questions alone (the plan runs
    question by question, so it is what is left before that many questions are complete)."""

    questions: int
    complete: int
    units: int
    units_done: int
    tokens: int
    remaining_tokens: float | None
    rate: float | None
    until: int | None = None
    until_tokens: float | None = None

    @property
    def eta_seconds(self) -> float | None:
        return self._eta(self.remaining_tokens)

    @property
    def until_eta_seconds(self) -> float | None:
        return self._eta(self.until_tokens)

    def _eta(self, tokens: float | None) -> float | None:
        return None if tokens is None or not self.rate else tokens / self.rate


def _rate(timeline: Sequence[tuple[float, str, int, int]]) -> float | None:
    """Tokens per second over the latest units, leaving out pauses (the study stopped between sessions): an
    interval between two finished units longer than ``PAUSE_FACTOR`` times the median one, with its unit."""
    recent = list(timeline[-RATE_WINDOW:])
    if len(recent) < 3:
        return None
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(recent)]
    limit = PAUSE_FACTOR * statistics.median(gaps)
    kept = [(gap, unit[3]) for gap, unit in zip(gaps, recent[1:], strict=True) if gap <= limit]
    seconds = sum(gap for gap, _ in kept)
    return sum(tokens for _, tokens in kept) / seconds if seconds > 0 else None


def _price(
    left: Sequence[StudyUnit],
    config: StudyConfig,
    sizes: dict[str, int],
    drawn: Sequence[int],
    per_unit: dict[tuple[str, int], list[int]],
) -> float | None:
    """Completion tokens of the units ``left``: a live unit at its (template, budget)'s mean so far, a pool's missing
    samples at the stored samples' mean length; None when a kind of unit has no measure yet."""
    remaining = 0.0
    for unit in left:
        if unit.template is None:  # a best-of-N pool
            missing = max(0, config.pool_samples - sizes.get(unit.problem.id, 0))
            if missing:
                if not drawn:
                    return None
                remaining += missing * statistics.fmean(drawn)
            continue
        seen = per_unit.get((unit.template, unit.budget))
        if not seen:
            return None
        remaining += statistics.fmean(seen)
    return remaining


def study_status(
    config: StudyConfig, store: ResultStore, problems: Sequence[Problem], *, until: int | None = None
) -> StudyStatus:
    """Progress of ``config``'s study in ``store`` over ``problems`` (no model call); with ``until``, also what is
    left before the first ``until`` questions are complete."""
    if until is not None and not 1 <= until <= len(problems):
        raise ConfigurationError(f"until: {until} questions is not between 1 and the study's {len(problems)}")
    done = store.done(config.name)
    pools = store.pools(config.name)
    sizes = {q: len(samples) for q, samples in pools.items()}
    left = plan_units(problems, config, done, sizes)
    total = len(plan_units(problems, config, set()))
    timeline = [e for e in store.timeline(config.name) if config.covers(e[1], e[2])]
    per_unit: dict[tuple[str, int], list[int]] = defaultdict(list)
    for _, strategy, budget, tokens in timeline:
        per_unit[(strategy, budget)].append(tokens)
    drawn = [int(s["tokens"]) for samples in pools.values() for s in samples if s.get("tokens") is not None]
    until_tokens = None
    if until is not None:
        first = {p.id for p in problems[:until]}
        until_tokens = _price([u for u in left if u.problem.id in first], config, sizes, drawn, per_unit)
    complete = sum(
        1
        for i, p in enumerate(problems)
        if sizes.get(p.id, 0) >= config.pool_samples
        and all((t, b, p.id) in done for t in config.templates for b in config.budgets_of(t) if config.covers(t, b, i))
    )
    return StudyStatus(
        questions=len(problems),
        complete=complete,
        units=total,
        units_done=total - len(left),
        tokens=sum(t for *_, t in timeline),
        remaining_tokens=_price(left, config, sizes, drawn, per_unit),
        rate=_rate(timeline),
        until=until,
        until_tokens=until_tokens,
    )
