"""The study's second verifier, offline: the program verifier's programs for every pool question, stored once.

The program-checked verifier (:class:`~ttc_graph.verifiers.program.ProgramVerifier`, the config's ``rescore``) is an
outcome verifier: a candidate's score is the agreement of its final answer with the answers of programs the model
writes for the question, so one set of programs per question scores every candidate of it (every pool sample and
every template's final candidates) without another model call. ``ttc study rescore`` samples and runs each pool
question's programs once and stores their replies and answers in the database (table ``checks``, keyed by run,
verifier settings and question), question by question, each committed at once: a stopped pass resumes where it
stopped. The report (:func:`ttc_graph.study.report.analyze`) then scores best-of-N weighted with the study's verifier
times the program verifier beside the study's verifier alone. Search keeps the study's verifier for its steps (a
program verifier scores no prefix).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.store import ResultStore
from ttc_graph.specs.models import ProgramVerifierSpec
from ttc_graph.study.config import StudyConfig
from ttc_graph.verifiers.program import ProgramVerifier, agreement_score
from ttc_graph.verifiers.sandbox import Sandbox

__all__ = ["RescoreReport", "checked_score", "rescore_key", "rescore_study", "stored_programs"]


def rescore_key(config: StudyConfig) -> str:
    """The stored programs' key: the config's ``rescore`` verifier settings (other settings, other programs)."""
    if config.rescore is None:
        raise ValueError("the config names no rescore verifier")
    spec = ProgramVerifierSpec.model_validate(config.rescore)
    return json.dumps(spec.model_dump(mode="json", exclude={"endpoint"}), sort_keys=True)


def stored_programs(store: ResultStore, config: StudyConfig) -> dict[str, tuple[str | None, ...]]:
    """Each rescored question's program answers (None: a program that gave no number); empty without
    ``rescore``."""
    if config.rescore is None:
        return {}
    return {q: tuple(d["answers"]) for q, d in store.checks(config.name, rescore_key(config)).items()}


def checked_score(
    config: StudyConfig, score: float | None, answer: str | None, programs: Sequence[str | None]
) -> float | None:
    """A candidate's score under the study's verifier times the program verifier (a product, as a combined
    verifier's): ``score`` (the study's; None stays unscored) times its answer's agreement with ``programs``."""
    if score is None:
        return None
    spec = ProgramVerifierSpec.model_validate(config.rescore)
    return float(score) * agreement_score(answer, programs, prior=spec.prior, prior_weight=spec.prior_weight)


@dataclass(slots=True)
class RescoreReport:
    """What one rescore pass did: questions whose programs it stored, failed, or found already stored."""

    stored: int = 0
    failed: int = 0
    skipped: int = 0
    tokens: int = 0
    failures: list[str] = field(default_factory=list)


async def rescore_study(
    policy: Endpoint,
    config: StudyConfig,
    store: ResultStore,
    problems: Sequence[Problem],
    *,
    limit: int | None = None,
    sandbox: Sandbox | None = None,
    progress: Callable[[str], None] | None = None,
) -> RescoreReport:
    """Sample and run the programs of every question of ``problems`` that has a stored pool and no programs yet
    (at most ``limit`` of them, in question order), ``config.concurrency`` questions at a time, each stored at once.
    A question whose program request fails is reported and left for the next pass."""
    if config.rescore is None:
        raise ValueError("rescore: the config names no rescore verifier (a `rescore: {kind: program}` entry)")
    spec = ProgramVerifierSpec.model_validate(config.rescore)
    key = rescore_key(config)
    done = set(store.checks(config.name, key))
    pooled = set(store.pools(config.name))
    todo = [p for p in problems if p.id in pooled and p.id not in done]
    report = RescoreReport(skipped=sum(p.id in done for p in problems))
    todo = todo[:limit] if limit is not None else todo
    verifier = ProgramVerifier(
        policy, programs=spec.programs, temperature=spec.temperature, max_tokens=spec.max_tokens, prior=spec.prior,
        prior_weight=spec.prior_weight, sandbox=sandbox, cache_size=None,
    )  # fmt: skip
    gate = asyncio.Semaphore(config.concurrency)

    async def one(problem: Problem) -> None:
        async with gate:
            found = await verifier.sample(problem.question)
        if found.error is not None:
            report.failed += 1
            report.failures.append(f"question {problem.id}: {found.error}")
            return
        data: Mapping[str, Any] = {
            "replies": list(found.replies),
            "answers": list(found.answers),
            "completion_tokens": found.usage.completion_tokens,
        }
        store.save_check(config.name, key, problem.id, data)
        report.stored += 1
        report.tokens += found.usage.completion_tokens or 0
        if progress is not None:
            progress(f"question {problem.id}: {sum(a is not None for a in found.answers)} of {len(found.answers)}")

    await asyncio.gather(*(one(p) for p in todo))
    return report
