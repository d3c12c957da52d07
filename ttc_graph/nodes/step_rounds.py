"""The round engine of every step-wise search (beam search, lookahead, DVTS, particle filtering, MCTS).

One controller runs all of them: before each round it checks the cost (round 0), lets the search's
:class:`StepPolicy` look at the scored frontier (which beams retire, which to keep, whether it is done), applies the
budget's limits, turns the beams the policy chose into the round's expand requests (:func:`expand_tasks`, the one
place they are made), and on the last round writes the final candidates with their diagnostics. Every round emits
one ``ttc.round`` progress event. The searches differ only in their policy: beam search and DVTS
(:mod:`~ttc_graph.nodes.step_beam`), particle filtering (:mod:`~ttc_graph.nodes.step_particles`),
MCTS (:mod:`~ttc_graph.nodes.step_mcts`). The helpers below (:func:`split_frontier`, :func:`retire`,
:func:`limit_stop`, :func:`steps_of`) are the round rules those policies share.
"""

from __future__ import annotations

import logging
import math
import statistics
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from ttc_graph.answers import extract_answer
from ttc_graph.budget import Budget, remaining, usage_delta
from ttc_graph.errors import BudgetError
from ttc_graph.nodes.budget_controller import SamplingDefaults, holds_tokens, stop_reason_for
from ttc_graph.nodes.context import run_context
from ttc_graph.nodes.expand import Beam, ExpandTask, assign_slots, held_paths
from ttc_graph.progress import round_event
from ttc_graph.state import Candidate, TTCState

__all__ = [
    "PolicyCost",
    "StepPolicy",
    "StepRound",
    "StepSelection",
    "beam_to_candidate",
    "by_score",
    "expand_tasks",
    "id_key",
    "limit_stop",
    "make_step_controller",
    "retire",
    "split_frontier",
    "steps_distribution",
    "steps_of",
]

logger = logging.getLogger("ttc_graph.search")

Ranked = TypeVar("Ranked", Beam, Candidate)


class StepRound(ABC):
    """One round of a step-wise search as its selection sees it (built from the state before the round).

    ``stop`` is the selection's own verdict, checked before the budget's (``complete``, ``max_steps``, ``error``);
    ``retired`` the beams that finished this round, as candidates (recorded if the search goes on).
    """

    stop: str | None = None
    retired: list[Candidate]

    @abstractmethod
    def expansions(self) -> list[tuple[Beam, int]]:
        """The beams to expand and their numbers of children; asked only when neither the selection nor the
        budget stops the round. None left ends the search with :meth:`exhausted`."""

    def exhausted(self) -> str:
        """The stop reason when :meth:`expansions` finds nothing to expand."""
        return "complete"

    @abstractmethod
    def final(self, stop: str) -> tuple[list[Candidate], dict[str, Any]]:
        """The final candidates of a search stopping with ``stop``, and its diagnostics (at least ``finished``)."""

    @abstractmethod
    def event(self) -> dict[str, Any]:
        """The selection's fields of the round's progress event (asked last, after :meth:`final` if it stops)."""

    def frontier(self) -> list[Beam]:
        """The frontier the next round starts from (the children its expansions add come on top)."""
        return []


class StepPolicy(Protocol):
    """What makes a step-wise search what it is: which beams it keeps and expands each round."""

    @property
    def generations(self) -> int:
        """Generations the search costs (charged when it starts): ``n * (lookahead + 1)``."""
        ...

    def describe(self) -> str:
        """The search in a few words, for a budget error (``beam search (n=4, lookahead=1)``)."""
        ...

    def begin(self, state: TTCState, round_: int, seed: int | None, delimiter: str) -> StepRound:
        """The round about to be planned, from the state the last round left."""
        ...


StepSelection = StepPolicy
"""The name :class:`StepPolicy` had first."""


class PolicyCost:
    """The cost and description every policy of the five has, from its ``n``, ``lookahead`` and ``label``."""

    __slots__ = ()
    n: int
    lookahead: int

    @property
    def label(self) -> str:
        """The search's name, for messages (``beam search``)."""
        raise NotImplementedError

    @property
    def generations(self) -> int:
        """``n * (lookahead + 1)``, as the paper counts lookahead search."""
        return self.n * (self.lookahead + 1)

    def describe(self) -> str:
        return f"{self.label} (n={self.n}, lookahead={self.lookahead})"


@dataclass(frozen=True, slots=True)
class _RoundLimits:
    """What the budget allows for the next round: a stop reason, or a per-request token cap and timeout."""

    stop: str | None
    max_tokens: int | None
    timeout: float | None
    hold_tokens: bool = False  # a token budget is set: lost answers are charged and re-planned, not retried


def _round_limits(
    limit: Budget | None, state: TTCState, round_: int, samples: int, max_tokens: int | None
) -> _RoundLimits:
    """The budget of one round of at most ``samples`` step samples (rollout steps included).

    Generations are charged up front (round 0), so later rounds see only tokens and seconds run out; each request's
    ``max_tokens`` is capped at its share of the tokens left and its timeout at the seconds left.
    """
    rem = remaining(limit, state.get("usage"), state.get("started_at"))
    stop = stop_reason_for(rem if round_ == 0 else replace(rem, generations=math.inf))
    if stop:
        return _RoundLimits(stop, None, None)
    cap = rem.max_tokens_each(samples, max_tokens)
    if cap is not None and cap < 1:
        return _RoundLimits(f"budget:{rem.short_of(samples)}", None, None)
    timeout = None if math.isinf(rem.seconds) else rem.seconds
    return _RoundLimits(None, cap, timeout, holds_tokens(limit))


def expand_tasks(
    question: str,
    expansions: Sequence[tuple[Beam, int]],
    round_: int,
    temperature: float,
    limits: _RoundLimits,
    seed: int | None,
    slots: int | None = None,
    held: Mapping[int, Sequence[str]] | None = None,
    started_at: float | None = None,
    owner: str | None = None,
) -> list[ExpandTask]:
    """One expand task per (beam, k); a task of k samples owns seeds [s, s + k), so endpoints that fan a request
    out into k single ones never repeat a seed within a round. With ``slots`` (the endpoint takes slot hints) every
    sample gets a server slot (:func:`~ttc_graph.nodes.expand.assign_slots`: a beam's first child on its parent's,
    its siblings where ``held``, the slots' last paths, shares most of its prefix), numbered as run ``owner``'s own
    (the endpoint leases them to server slots)."""
    tasks: list[ExpandTask] = []
    offset = 0
    placed = assign_slots(expansions, slots, held=held) if slots else None
    for i, (beam, k) in enumerate(expansions):
        tasks.append(
            ExpandTask(
                question=question,
                beam=beam,
                k=k,
                round=round_ + 1,
                temperature=temperature,
                max_tokens=limits.max_tokens,
                seed=None if seed is None else seed + 7919 * round_ + offset,
                timeout=limits.timeout,
                hold_tokens=limits.hold_tokens,
                started_at=started_at,
            )
        )
        if placed is not None:
            tasks[-1]["slots"] = placed[i]
            tasks[-1]["slot_owner"] = owner
        offset += k
    return tasks


def beam_to_candidate(beam: Beam, delimiter: str, finish_reason: str | None = None) -> Candidate:
    """A finished (or, at a limit, live) beam as a candidate; ``meta.steps`` is its number of steps."""
    reason = finish_reason or ("stop" if beam["finished"] else "truncated")
    text = delimiter.join(beam["steps"])
    answer = beam["answer"] if beam["finished"] else extract_answer(text, strict=True)
    return Candidate(
        id=beam["id"],
        text=text,
        answer=answer,
        parsable=answer is not None,
        score=beam["score"],
        step_scores=beam["step_scores"],
        scored=beam["scored"],
        tokens=beam["tokens"],
        round=beam["round"],
        finish_reason=reason,
        meta={"steps": len(beam["steps"]), "group": beam["group"], "partial": bool(beam.get("partial"))},
    )


def by_score(items: Sequence[Ranked]) -> list[Ranked]:
    """Highest score first; unscored last; ties keep their order (the sort is stable)."""
    return sorted(items, key=lambda b: -(b["score"] if b["score"] is not None else -math.inf))


def steps_distribution(candidates: Sequence[Candidate]) -> dict[str, Any]:
    """How many steps the candidates have: a histogram, min, median and max."""
    counts = sorted(int(c.get("meta", {}).get("steps", 0)) for c in candidates)
    if not counts:
        return {"histogram": {}, "min": None, "median": None, "max": None}
    histogram: dict[str, int] = {}
    for k in counts:
        histogram[str(k)] = histogram.get(str(k), 0) + 1
    return {"histogram": histogram, "min": counts[0], "median": statistics.median(counts), "max": counts[-1]}


def split_frontier(frontier: Sequence[Beam], at_limit: bool) -> tuple[list[Beam], list[Beam]]:
    """``(ending, live)``: the finished beams end, and at the step limit every beam does."""
    ending = [b for b in frontier if b["finished"] or at_limit]
    return ending, [b for b in frontier if not (b["finished"] or at_limit)]


def retire(ending: Sequence[Beam], delimiter: str) -> list[Candidate]:
    """The ending beams as candidates: a finished one stops, an open one was cut short by ``max_steps``."""
    return [beam_to_candidate(b, delimiter, None if b["finished"] else "max_steps") for b in ending]


def limit_stop(ending: Sequence[Beam]) -> str:
    """The stop reason at the step limit: ``max_steps`` if a beam was still open, else ``complete``."""
    return "max_steps" if any(not b["finished"] for b in ending) else "complete"


def steps_of(beams: Sequence[Beam], delimiter: str, otherwise: Sequence[Candidate] = ()) -> dict[str, Any]:
    """The steps distribution of ``beams`` (of ``otherwise`` when there is none), for a round's progress event."""
    return steps_distribution([beam_to_candidate(b, delimiter) for b in beams] or otherwise)


def _step_warnings(distribution: dict[str, Any], delimiter: str) -> list[str]:
    """A warning when the median candidate has a single step: the model never wrote the step delimiter."""
    if distribution["median"] is not None and distribution["median"] <= 1:
        return [
            f"search: the median candidate has {distribution['median']:g} step(s); the model rarely writes the step"
            f" delimiter {delimiter!r}, so this search behaves like best-of-N over whole solutions"
        ]
    return []


def _final_update(pool: list[Candidate], delimiter: str, **diagnostics: Any) -> dict[str, Any]:
    """The state update of a finished search: its candidates, steps per candidate and the single-step warning.

    ``diagnostics`` adds to (or overrides) ``finished``, the number of candidates that finished their solution.
    """
    distribution = steps_distribution(pool)
    warnings = _step_warnings(distribution, delimiter)
    for warning in warnings:
        logger.warning(warning)
    return {
        "candidates": Overwrite(pool),
        "diagnostics": {
            "steps_per_candidate": distribution,
            "finished": sum(1 for c in pool if c["finish_reason"] == "stop"),
            "warnings": warnings,
            **diagnostics,
        },
    }


def id_key(node_id: str) -> tuple[Any, ...]:
    """A sort key for dotted ids (``p.10.2`` after ``p.9.0``), so every ordering is reproducible."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in node_id.split("."))


def _runner_task(target: str, state: TTCState, tasks: list[ExpandTask]) -> dict[str, Any]:
    """The one plan entry that hands a first round's ``tasks`` to the node ``target`` (it runs them to the end)."""
    return {
        "target": target,
        "question": state["question"],
        "k": sum(t["k"] for t in tasks),
        "roots": tasks,
        "usage": state.get("usage"),
        "started_at": state.get("started_at"),
    }


def make_step_controller(
    keep: StepPolicy,
    defaults: SamplingDefaults,
    delimiter: str,
    slots: int | None = None,
    runner: str | None = None,
) -> Callable[[TTCState, Runtime[Any]], Awaitable[dict[str, Any]]]:
    """The budget controller of a step-wise search: ``keep`` decides what to keep and expand, this decides
    whether the budget allows it, plans it, and records the outcome (see the module docstring). ``slots``: the
    policy endpoint's server slots, when it takes slot hints (each expand request then names its samples' slots).
    ``runner``: a node that runs the whole search from its first round's tasks (DVTS's ``subtrees``): round 0 then
    plans one task for it, and the next round ends the search with what it left."""

    async def control(state: TTCState, runtime: Runtime[Any]) -> dict[str, Any]:
        temperature, max_tokens, seed, limit = defaults.resolve(run_context(runtime))
        round_ = state.get("round", 0)
        if round_ == 0 and limit and limit.generations is not None and limit.generations < keep.generations:
            raise BudgetError(
                f"budget: this {keep.describe()} costs {keep.generations} generations but the budget allows"
                f" {limit.generations}"
            )
        step = keep.begin(state, round_, seed, delimiter)
        limits = _round_limits(limit, state, round_, keep.generations, max_tokens)
        stop = step.stop or limits.stop
        tasks: list[ExpandTask] = []
        if stop is None:
            expansions = step.expansions()
            if expansions:
                held = held_paths(state.get("frontier", [])) if slots else None  # type: ignore[arg-type]
                tasks = expand_tasks(
                    state["question"], expansions, round_, temperature, limits, seed, slots, held,
                    state.get("started_at"), state.get("run_key"),
                )  # fmt: skip
                if runner is not None and round_ == 0:
                    tasks = [_runner_task(runner, state, tasks)]  # type: ignore[list-item]
            else:
                stop = step.exhausted()
        update: dict[str, Any] = {}
        if stop:
            pool, diagnostics = step.final(stop)
            update.update(_final_update(pool, delimiter, **diagnostics))
        elif step.retired:
            update["candidates"] = step.retired
        if round_ == 0 and tasks:
            update["usage"] = usage_delta("propose", generations=keep.generations)  # charged up front
        details = step.event()
        runtime.stream_writer(
            round_event(
                round_,
                drawn=int(details.get("finished", 0)),
                total=keep.generations,
                planned=sum(t["k"] for t in tasks),
                stop=stop,
                usage=state.get("usage"),
                **details,
            )
        )
        update["frontier"] = Overwrite(step.frontier())
        update["plan"] = tasks
        update["round"] = round_ + 1 if tasks else round_
        if stop:
            update["stop_reason"] = stop
        return update

    return control
