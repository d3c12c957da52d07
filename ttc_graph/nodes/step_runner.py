"""What the step-search nodes without a round barrier share: DVTS's ``subtrees`` and MCTS's ``tree``.

Such a node is built from :class:`RunnerParts` and, for each call, runs a :class:`StepRunner` subclass: the run's
sampling settings and deadline resolved once, the budget of the next request from all the spend so far (as a
round's would be computed), the scoring of arrived children and the state update handed back to the round engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NotRequired

from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from ttc_graph.budget import Budget, merge_usage, usage_delta
from ttc_graph.endpoints.base import ChatMessage
from ttc_graph.nodes.adaptive import _durable
from ttc_graph.nodes.budget_controller import SamplingDefaults
from ttc_graph.nodes.context import run_context
from ttc_graph.nodes.expand import Beam, ExpandTask
from ttc_graph.nodes.step_rounds import _round_limits
from ttc_graph.nodes.step_verify import ScoredBeams, score_beams
from ttc_graph.nodes.verify import state_deadline
from ttc_graph.verifiers.base import Aggregation, Verifier

__all__ = ["RunnerNode", "RunnerParts", "StepRunner", "SubtreesTask"]


class SubtreesTask(TypedDict):
    """The plan entry that hands a first round's tasks to a runner node: their roots' expand tasks."""

    target: str
    question: str
    k: int
    roots: list[ExpandTask]
    usage: dict[str, Any] | None
    started_at: float | None
    history: NotRequired[list[ChatMessage]]


RunnerNode = Callable[[SubtreesTask, Runtime[Any]], Awaitable[dict[str, Any]]]
"""A runner node: ``(task, runtime) -> state update``."""


@dataclass(frozen=True, slots=True)
class RunnerParts:
    """What a runner node is built from: the search's plan, the expand node's function, the verifier, the sampling
    defaults, the endpoint's server ``slots`` (when it takes slot hints) and the strategy's ``budget``."""

    plan: Any
    expand: Callable[[ExpandTask], Awaitable[dict[str, Any]]]
    verifier: Verifier
    aggregation: Aggregation
    defaults: SamplingDefaults
    slots: int | None = None
    budget: Budget | None = None


class StepRunner:
    """One call of a runner node: the parts, the run's limits and deadline, the spend so far and its durable log."""

    def __init__(self, parts: RunnerParts, task: SubtreesTask, runtime: Runtime[Any]) -> None:
        _, self.max_tokens, self.seed, self.limit = parts.defaults.resolve(run_context(runtime))
        self.deadline = state_deadline({"started_at": task.get("started_at")}, runtime, parts.budget)
        self.parts, self.task, self.plan, self.slots = parts, task, parts.plan, parts.slots
        self.emit: Callable[[dict[str, Any]], None] = runtime.stream_writer
        self.spent: dict[str, Any] = {}
        self.durable = _durable()

    def limits(self) -> Any:
        """The budget of the next request, from all the spend so far (as a round's would be computed)."""
        state = {"usage": merge_usage(self.task.get("usage"), self.spent), "started_at": self.task.get("started_at")}
        return _round_limits(self.limit, state, 1, self.plan.generations, self.max_tokens)  # type: ignore[arg-type]

    async def score(self, children: list[Beam]) -> ScoredBeams:
        """``children`` scored by the verifier, ending at the run's deadline."""
        parts = self.parts
        return await score_beams(
            parts.verifier, parts.aggregation, self.task["question"], children, deadline=self.deadline
        )

    def update(self, frontier: list[Beam], errors: list[str], **more: Any) -> dict[str, Any]:
        """The state update the round engine gets back: ``more``, the ``frontier``, the spend and any ``errors``."""
        update: dict[str, Any] = {**more, "frontier": frontier, "usage": self.spent or usage_delta("propose")}
        if errors:
            update["errors"] = errors
        return update
