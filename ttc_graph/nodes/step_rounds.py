"""What the controllers of step-wise sampling searches share (particle filtering, MCTS): the budget of a round,
its expand tasks, and the final candidates with their diagnostics."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from langgraph.types import Overwrite

from ttc_graph.budget import Budget, remaining, usage_delta
from ttc_graph.errors import BudgetError
from ttc_graph.nodes.budget_controller import stop_reason_for
from ttc_graph.nodes.expand import Beam, ExpandTask
from ttc_graph.nodes.search_controller import step_warnings, steps_distribution
from ttc_graph.state import Candidate, TTCState

__all__ = ["RoundLimits", "charge", "check_cost", "expand_tasks", "final_update", "id_key", "round_limits"]

logger = logging.getLogger("ttc_graph.search")


@dataclass(frozen=True, slots=True)
class RoundLimits:
    """What the budget allows for the next round: a stop reason, or a per-request token cap and timeout."""

    stop: str | None
    max_tokens: int | None
    timeout: float | None
    hold_tokens: bool = False  # a token budget is set: lost answers are charged and re-planned, not retried


def check_cost(limit: Budget | None, cost: int, what: str) -> None:
    """Refuse a run whose budget cannot pay for the search (before any request)."""
    if limit and limit.generations is not None and limit.generations < cost:
        raise BudgetError(f"budget: this {what} costs {cost} generations but the budget allows {limit.generations}")


def round_limits(
    limit: Budget | None, state: TTCState, round_: int, samples: int, max_tokens: int | None
) -> RoundLimits:
    """The budget of one round of at most ``samples`` step samples.

    Generations are charged up front (round 0), so later rounds see only tokens and seconds run out; each request's
    ``max_tokens`` is capped at its share of the tokens left and its timeout at the seconds left.
    """
    rem = remaining(limit, state.get("usage"), state.get("started_at"))
    stop = stop_reason_for(rem if round_ == 0 else replace(rem, generations=math.inf))
    if stop:
        return RoundLimits(stop, None, None)
    cap = rem.max_tokens_each(samples, max_tokens)
    if cap is not None and cap < 1:
        return RoundLimits("budget:tokens", None, None)
    timeout = None if math.isinf(rem.seconds) else rem.seconds
    return RoundLimits(None, cap, timeout, limit is not None and limit.tokens is not None)


def charge(generations: int) -> dict[str, Any]:
    """The ledger entry of a search's generations, charged when it starts (as beam search charges them)."""
    return usage_delta("propose", generations=generations)


def expand_tasks(
    question: str,
    expansions: Sequence[tuple[Beam, int]],
    round_: int,
    temperature: float,
    limits: RoundLimits,
    seed: int | None,
) -> list[ExpandTask]:
    """One expand task per (beam, k); a task of k samples owns seeds [s, s + k), as in beam search."""
    tasks: list[ExpandTask] = []
    offset = 0
    for beam, k in expansions:
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
            )
        )
        offset += k
    return tasks


def final_update(pool: list[Candidate], delimiter: str, **diagnostics: Any) -> dict[str, Any]:
    """The state update of a finished search: its candidates, steps per candidate and the single-step warning."""
    distribution = steps_distribution(pool)
    warnings = step_warnings(distribution, delimiter)
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
