"""Scoring whole agent runs: a function of the run's final state or messages, a :class:`Verifier`, or an LLM judge."""

from __future__ import annotations

import asyncio
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage

from ttc_graph.endpoints.langchain import LangChainEndpoint
from ttc_graph.errors import ConfigurationError, VerifierError
from ttc_graph.messages import render_transcript
from ttc_graph.usage import RequestUsage
from ttc_graph.verifiers.base import Score, Verifier, VerifyItem
from ttc_graph.verifiers.deadline import run_until, verify_within
from ttc_graph.verifiers.function import in_verifier_pool
from ttc_graph.verifiers.judge import LLMJudgeVerifier

__all__ = [
    "AGENT_JUDGE_PROMPT",
    "AGENT_JUDGE_SYSTEM_PROMPT",
    "FunctionRunScorer",
    "RunOutcome",
    "RunScorer",
    "RunVerifier",
    "VerifierRunScorer",
    "as_run_scorer",
    "check_run_score",
    "render_transcript",
    "score_runs_within",
]

RunVerifier = Callable[[Any], float] | Callable[[Any], Awaitable[float]] | Verifier | BaseChatModel
"""What scores a run: ``(state) -> float`` or ``(messages) -> float`` (sync or async), a :class:`Verifier` given
the run's transcript as its solution, or a chat model used as an LLM judge of the transcript."""

AGENT_JUDGE_SYSTEM_PROMPT = "You check the work of an AI agent. Reply with one word: Yes or No."
AGENT_JUDGE_PROMPT = (
    "Task:\n{question}\n\n"
    "Transcript of the agent's run (its messages, tool calls and tool results):\n{solution}\n\n"
    "Did the agent complete the task correctly? Answer Yes or No."
)
"""The judge's prompt for a chat-model verifier. Placeholders: ``{question}``, ``{solution}`` (the transcript)."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A finished run as a verifier sees it: its final state, its whole conversation and the messages it added."""

    run_id: str
    question: str
    state: Mapping[str, Any]
    messages: Sequence[AnyMessage]
    new_messages: Sequence[AnyMessage]


def check_run_score(value: object, where: str) -> float:
    """``value`` as a float if it is a finite real number in [0, 1] (not a bool, not a numeric string); else a
    :class:`VerifierError` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise VerifierError(f"{where}: expected a real number in [0, 1], got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise VerifierError(f"{where}: expected a finite number in [0, 1], got {value!r}")
    return v


class RunScorer(ABC):
    """Scores finished runs; returns one :class:`Score` per run (``value=None`` with an error: unscored) and what
    scoring cost."""

    name: str

    @abstractmethod
    async def score(self, runs: Sequence[RunOutcome]) -> tuple[list[Score], RequestUsage]: ...


class FunctionRunScorer(RunScorer):
    """``fn(state)`` or, when its first parameter is named ``messages``, ``fn(messages)`` (the run's whole
    conversation), sync or async. Sync functions run in worker threads, so the runs are scored concurrently.

    A function that raises, or returns anything but a finite real number in [0, 1], is an error
    (:class:`VerifierError` naming the run), never a silent score.
    """

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        if not callable(fn):
            raise ConfigurationError(f"verifier: expected a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)
        try:
            params = [
                p
                for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            ]
        except (TypeError, ValueError):
            params = []
        self.takes_messages = bool(params) and params[0].name == "messages"
        plain = inspect.isfunction(fn) or inspect.ismethod(fn)
        self._is_async = inspect.iscoroutinefunction(fn if plain else type(fn).__call__)  # type: ignore[operator]

    async def _one(self, run: RunOutcome) -> Score:
        where = f"verifier {self.name} on {run.run_id}"
        arg: Any = list(run.messages) if self.takes_messages else run.state
        try:
            raw = await self.fn(arg) if self._is_async else await in_verifier_pool(self.fn, arg)
            if inspect.isawaitable(raw):
                raw = await raw
        except VerifierError:
            raise
        except Exception as exc:
            raise VerifierError(f"{where} raised {type(exc).__name__}: {exc}") from exc
        return Score(check_run_score(raw, where))

    async def score(self, runs: Sequence[RunOutcome]) -> tuple[list[Score], RequestUsage]:
        return list(await asyncio.gather(*(self._one(r) for r in runs))), RequestUsage()


class VerifierRunScorer(RunScorer):
    """A :class:`Verifier` (e.g. :class:`LLMJudgeVerifier`) scoring each run's transcript (the messages the run
    added, :func:`render_transcript`) as the solution to the question. An unscored run keeps the verifier's reason."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.name = getattr(verifier, "name", type(verifier).__name__)

    async def score(self, runs: Sequence[RunOutcome]) -> tuple[list[Score], RequestUsage]:
        items = [VerifyItem(r.question, (render_transcript(r.new_messages),)) for r in runs]
        result = await verify_within(self.verifier, items)  # bounded by the verifier's own timeout
        if len(result.scores) != len(items):
            raise VerifierError(f"verifier {self.name}: returned {len(result.scores)} scores for {len(items)} runs")
        scores = []
        for run, s in zip(runs, result.scores, strict=True):
            if s.value is None:
                scores.append(Score(None, error=f"verifier {self.name} on {run.run_id}: {s.error or 'unscored'}"))
            else:
                scores.append(Score(check_run_score(s.value, f"verifier {self.name} on {run.run_id}"), s.step_scores))
        return scores, result.usage


async def score_runs_within(
    scorer: RunScorer, runs: Sequence[RunOutcome], deadline: float | None
) -> tuple[list[Score], RequestUsage]:
    """``scorer.score(runs)`` ended at ``deadline`` (the run's, a ``time.time()`` value): past it the runs stay
    unscored, saying why, and the run keeps them (:func:`~ttc_graph.verifiers.deadline.run_until`)."""
    if deadline is None:
        return await scorer.score(runs)
    finished, got = await run_until(lambda: scorer.score(runs), deadline)
    if finished and got is not None:
        return got
    reason = f"verifier {scorer.name}: the run's seconds budget ran out"
    return [Score(None, error=f"{reason} ({r.run_id})") for r in runs], RequestUsage()


def as_run_scorer(verifier: RunVerifier | None) -> RunScorer | None:
    """The scorer for ``verifier``: a chat model becomes an outcome :class:`LLMJudgeVerifier` with the agent judge's
    prompts (P(Yes) that the run did the task), a :class:`Verifier` scores transcripts, a callable the final state."""
    if verifier is None:
        return None
    if isinstance(verifier, BaseChatModel):
        judge = LLMJudgeVerifier(
            LangChainEndpoint(verifier),
            mode="outcome",
            cache=False,
            system_prompt=AGENT_JUDGE_SYSTEM_PROMPT,
            prompt_template=AGENT_JUDGE_PROMPT,
        )
        return VerifierRunScorer(judge)
    if isinstance(verifier, Verifier):
        return VerifierRunScorer(verifier)
    if callable(verifier):
        return FunctionRunScorer(verifier)
    raise ConfigurationError(
        "verifier: expected a function of the run's final state or messages, a Verifier or a chat model,"
        f" got {type(verifier).__name__}"
    )
