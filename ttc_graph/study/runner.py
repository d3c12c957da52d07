"""Run a study: one live run per (question, template, budget), resumable, each result committed at once.

Best-of-N templates share one pool of samples per question (the paper's reuse): copied from a stored pool file
when it was drawn with the study's settings, else drawn live once (``pool_size`` samples: half score best-of-N,
half bin the question). Every other template
runs its graph, built from its spec by :func:`ttc_graph.specs.build_graph`, once per budget.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ttc_graph.answers import extract_answer
from ttc_graph.budget import policy_generations, policy_tokens
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError, TTCError
from ttc_graph.eval.datasets import Problem, data_dir, load_dataset
from ttc_graph.eval.grading import grade
from ttc_graph.eval.store import ResultRow, ResultStore
from ttc_graph.eval.units import scratch_store, take_outcome
from ttc_graph.nodes.verify import verify_candidates
from ttc_graph.scale.units import UnitOutcome, UnitRequest, UnitRunner, register_executor
from ttc_graph.selection import select_answer, select_revisions
from ttc_graph.specs.build import build_graph, build_verifier
from ttc_graph.state import Candidate
from ttc_graph.strategies import create_best_of_n
from ttc_graph.strategies.revisions import split_budget
from ttc_graph.study.config import StudyConfig

__all__ = [
    "StudyEvent",
    "StudyReport",
    "StudyUnit",
    "derive_nested",
    "execute_unit",
    "longest_first",
    "plan_units",
    "run_study",
    "sample_candidate",
    "stored_candidate",
    "study_problems",
]

POOL = "__pool__"
_ATTEMPT_ID = re.compile(r"ch(\d+)-a(\d+)")  # a revision attempt: chain, position


@dataclass(frozen=True, slots=True)
class StudyUnit:
    """One question's best-of-N pool (``template`` None) or one (template, budget) run of it."""

    problem: Problem
    index: int
    template: str | None = None
    budget: int = 0

    @property
    def label(self) -> str:
        what = "best-of-N pool" if self.template is None else f"{self.template} b={self.budget}"
        return f"q{self.problem.id} {what}"


@dataclass(frozen=True, slots=True)
class StudyEvent:
    """Progress: ``plan`` (``total`` units to run, ``skipped`` finished), ``done`` or ``failed`` per unit."""

    kind: Literal["plan", "done", "failed"]
    label: str = ""
    total: int = 0
    skipped: int = 0
    generations: int = 0
    tokens: int = 0
    message: str = ""


@dataclass(slots=True)
class StudyReport:
    units: int = 0
    skipped: int = 0
    finished: int = 0
    failed: int = 0
    generations: int = 0
    tokens: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def study_problems(config: StudyConfig) -> list[Problem]:
    """The study's questions; a row that does not parse is skipped and counted (the loader warns)."""
    problems = load_dataset(config.dataset, limit=config.questions)
    if not problems:
        raise ConfigurationError(f"dataset: {config.dataset} gave no questions")
    return list(problems)


def plan_units(problems: Sequence[Problem], config: StudyConfig, done: set[tuple[str, int, str]]) -> list[StudyUnit]:
    """What is left, question by question, so that a stopped study holds whole questions first."""
    units: list[StudyUnit] = []
    pooled = config.pool_templates()
    for i, p in enumerate(problems):
        if pooled and not all((t, b, p.id) in done for t in pooled for b in config.budgets):
            units.append(StudyUnit(p, i))
        for name in config.live_templates():
            for b in config.budgets:
                source = config.nested_in(name, b)
                if (name, b, p.id) in done or (source is not None and (name, source, p.id) not in done):
                    continue  # done, or derived when its source runs
                units.append(StudyUnit(p, i, name, b))
    return units


def longest_first(config: StudyConfig, units: Sequence[StudyUnit], rows: Sequence[ResultRow]) -> list[StudyUnit]:
    """``units`` with the longest expected first (mean measured wall seconds of the unit's template and budget;
    one never measured counts as longest, a pool draw or a replayed run as shortest), so that a chunk does not end
    waiting on one long unit while the server's other slots idle. Ties keep plan order."""
    seconds: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        if not r.reused:
            seconds.setdefault((r.strategy, r.budget), []).append(r.seconds)

    def expected(unit: StudyUnit) -> float:
        if unit.template is None or config.nested_in(unit.template, unit.budget) is not None:
            return 0.0
        measured = seconds.get((unit.template, unit.budget))
        return statistics.fmean(measured) if measured else math.inf

    return sorted(units, key=lambda u: -expected(u))


def derive_nested(config: StudyConfig, source: ResultRow, budget: int) -> ResultRow:
    """The row of ``source``'s template at a smaller ``budget``, replayed from ``source``'s chains: its first
    chains, each cut to the smaller budget's length, selected as a run at that budget selects (no model call)."""
    spec = config.spec_for(source.strategy, budget)
    chains, length = split_budget(spec.n, spec.chain_length)  # type: ignore[union-attr]
    kept: list[dict[str, Any]] = []
    cands: list[Candidate] = []
    for c in source.candidates:
        cand = stored_candidate(c)
        if "chain" not in cand["meta"]:
            raise TTCError(f"{source.strategy} b={source.budget}: candidate id {c['id']!r} names no chain")
        if cand["meta"]["chain"] < chains and cand["meta"]["position"] < length:
            kept.append(c)
            cands.append(cand)
    chosen = select_revisions(cands, spec.selection)  # type: ignore[union-attr]
    return ResultRow(
        source.run, source.strategy, budget, source.question_id, source.dataset, chosen.answer, source.reference,
        grade(config.dataset, chosen.answer, source.reference), len(kept), sum(c.get("tokens") or 0 for c in kept),
        0.0, "complete", kept, reused=True,
        details={"derived_from": source.budget, "sources": ["replay"], "seconds_measured": False,
                 "seed": source.details.get("seed")},
    )  # fmt: skip


def _candidates_json(cands: Sequence[Candidate]) -> list[dict[str, Any]]:
    keep = ("id", "answer", "score", "tokens", "finish_reason")
    return [{**{k: c.get(k) for k in keep}, "steps": c.get("meta", {}).get("steps")} for c in cands]


def stored_candidate(stored: Mapping[str, Any]) -> Candidate:
    """A run's stored candidate as a candidate again (no text), with its chain and position when its id is a
    revision attempt's, so that the selections replay on it."""
    match = _ATTEMPT_ID.fullmatch(str(stored["id"]))
    meta = {"chain": int(match[1]), "position": int(match[2])} if match else {}
    return {**stored, "text": "", "parsable": stored["answer"] is not None, "scored": stored["score"] is not None,
            "meta": meta}  # type: ignore[typeddict-item]  # fmt: skip


def sample_candidate(i: int, sample: dict[str, Any]) -> Candidate:
    """A pool sample as a candidate (its answer by the full extraction chain, its stored score if any)."""
    answer = extract_answer(sample["text"])
    score = sample.get("score")
    cand: Candidate = {
        "id": f"s{i}",
        "text": sample["text"],
        "answer": answer,
        "parsable": answer is not None,
        "score": score,
        "step_scores": None,
        "scored": score is not None,
        "tokens": sample.get("tokens"),
        "round": 1,
        "finish_reason": None,
    }
    if sample.get("mean_lp") is not None:  # the confidence verifier's ``mean`` reads nothing but this mean
        cand["token_logprobs"] = [float(sample["mean_lp"])]
    return cand


def _stored_pool(config: StudyConfig) -> dict[str, list[dict[str, Any]]]:
    """The configured pool file's samples per question id (its ``idx``), when its settings match the study's."""
    if config.pool is None or not config.reuses_pool():
        return {}
    path = Path(config.pool.path)
    file = path if path.is_absolute() else data_dir() / path
    if not file.is_file():
        raise ConfigurationError(f"pool.path: {file} does not exist")
    out: dict[str, list[dict[str, Any]]] = {}
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[str(row["idx"])] = [
                {"text": s["text"], "tokens": s.get("tokens"), "mean_lp": s.get("mean_lp"), "source": file.name}
                for s in row["samples"]
            ]
    return out


class _Study:
    def __init__(
        self,
        policy: Endpoint,
        config: StudyConfig,
        store: ResultStore,
        progress: Callable[[StudyEvent], None],
        runner: UnitRunner | None = None,
        stored: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        self.runner = runner
        self.policy = policy
        self.config = config
        self.store = store
        self.progress = progress
        self.report = StudyReport()
        self.verifier = build_verifier(config.spec_for(config.baseline, config.budgets[0]).verifier, policy)  # type: ignore[union-attr]
        self.stored = _stored_pool(config) if stored is None else stored

    def seed(self, unit: StudyUnit) -> int:
        return self.config.seed + 1_000_003 * unit.index

    async def run(self, problems: Sequence[Problem], limit: int | None) -> StudyReport:
        t0 = time.monotonic()
        cfg = self.config
        self.store.check_run(cfg.name, {"model": cfg.model, "dataset": cfg.dataset, "temperature": cfg.temperature,
                                        "max_tokens": cfg.max_tokens, "seed": cfg.seed})  # fmt: skip
        done = self.store.done(cfg.name)
        pending = plan_units(problems, cfg, done)
        units = longest_first(cfg, pending[:limit], self.store.rows(cfg.name))
        total = len(plan_units(problems, cfg, set()))
        self.report.units, self.report.skipped = len(units), total - len(pending)
        self.progress(StudyEvent("plan", total=len(units), skipped=self.report.skipped))
        queue = iter(units)

        async def worker() -> None:
            for unit in queue:
                await self.run_unit(unit, done)

        try:
            slots = cfg.concurrency if self.runner is None else self.runner.slots
            await asyncio.gather(*(worker() for _ in range(min(slots, max(1, len(units))))))
        finally:
            self.report.seconds = time.monotonic() - t0
        return self.report

    async def run_unit(self, unit: StudyUnit, done: set[tuple[str, int, str]]) -> None:
        derived = unit.template is not None and self.config.nested_in(unit.template, unit.budget) is not None
        if self.runner is not None and not derived:  # a derived unit needs no model: it is replayed here
            await self.run_elsewhere(self.runner, unit, done)
            return
        try:
            if unit.template is None:
                generations, tokens = await self.run_pool(unit, done)
            elif derived:
                generations, tokens = self.derive(unit)
            else:
                generations, tokens = await self.run_live(unit, done)
        except TTCError as exc:
            self.report.failed += 1
            self.report.failures.append(f"{unit.label}: {exc}")
            self.progress(StudyEvent("failed", unit.label, message=str(exc)))
            return
        self.report.finished += 1
        self.report.generations += generations
        self.report.tokens += tokens
        self.progress(StudyEvent("done", unit.label, generations=generations, tokens=tokens))

    async def run_elsewhere(self, runner: UnitRunner, unit: StudyUnit, done: set[tuple[str, int, str]]) -> None:
        """The runner runs the unit where the model is; this driver writes what comes back, once."""
        cfg, p = self.config, unit.problem
        pool: list[dict[str, Any]] = []
        if unit.template is None:
            pool = self.store.pool(cfg.name, p.id) or [dict(s) for s in self.stored.get(p.id, [])]
        request = UnitRequest(
            "study", unit.label, cfg.model_dump(mode="json"), asdict(p), unit.template, unit.budget, unit.index,
            pool=pool, done=[k for k in done if k[2] == p.id],
        )  # fmt: skip
        outcome = await runner.run(request)
        self.store.save(outcome.rows, pool=None if outcome.pool is None else (cfg.name, p.id, outcome.pool))
        if outcome.error is not None:
            self.report.failed += 1
            self.report.failures.append(f"{unit.label}: {outcome.error}")
            self.progress(StudyEvent("failed", unit.label, message=outcome.error))
            return
        self.report.finished += 1
        self.report.generations += outcome.generations
        self.report.tokens += outcome.tokens
        self.progress(StudyEvent("done", unit.label, generations=outcome.generations, tokens=outcome.tokens))

    def derive(self, unit: StudyUnit) -> tuple[int, int]:
        """A nested unit whose source run is stored: replayed from it (no model call)."""
        assert unit.template is not None
        cfg, p = self.config, unit.problem
        source = cfg.nested_in(unit.template, unit.budget)
        rows = [
            r
            for r in self.store.rows(cfg.name)
            if (r.strategy, r.budget, r.question_id) == (unit.template, source, p.id)
        ]
        if not rows:
            raise TTCError(f"{unit.label}: its source run at budget {source} is not stored")
        self.store.save([derive_nested(cfg, rows[0], unit.budget)])
        return 0, 0

    async def run_live(self, unit: StudyUnit, done: Collection[tuple[str, int, str]] = ()) -> tuple[int, int]:
        """Run one (template, budget) live; store it, and the smaller budgets nested in it not yet ``done``."""
        assert unit.template is not None
        cfg, p = self.config, unit.problem
        spec = cfg.spec_for(unit.template, unit.budget).model_copy(update={"seed": self.seed(unit)})
        graph = build_graph(spec, policy=self.policy).compile(name=unit.template)
        t0 = time.monotonic()
        out = await graph.ainvoke({"question": p.question})
        seconds = time.monotonic() - t0
        cands = out.get("candidates") or []
        usage = out.get("usage") or {}
        if not cands and out.get("stop_reason") == "error":
            raise TTCError("; ".join((out.get("errors") or ["every request failed"])[:2]))
        answer = out.get("answer")
        details = {
            "usage": usage,
            "diagnostics": out.get("diagnostics") or {},
            "errors": (out.get("errors") or [])[:5],
            "seed": spec.seed,
            "wall_seconds": round(seconds, 3),
        }
        row = ResultRow(
            cfg.name, unit.template, unit.budget, p.id, cfg.dataset, answer, p.reference,
            grade(cfg.dataset, answer, p.reference), policy_generations(usage), policy_tokens(usage),
            round(seconds, 3), out.get("stop_reason"), _candidates_json(cands), details=details,
        )  # fmt: skip
        nested = [
            derive_nested(cfg, row, b)
            for b in cfg.budgets
            if cfg.nested_in(unit.template, b) == unit.budget and (unit.template, b, p.id) not in done
        ]
        self.store.save([row, *nested])
        return row.generations, row.tokens

    # -- best-of-N from one pool per question ----------------------------------------------------------------

    async def draw(self, unit: StudyUnit, k: int) -> list[dict[str, Any]]:
        """``k`` new samples drawn live by majority best-of-N (no verifier call), with log-probabilities when
        the verifier reads them."""
        cfg = self.config
        graph = create_best_of_n(
            self.policy, None, n=k, selection="majority", temperature=cfg.temperature, max_tokens=cfg.max_tokens,
            seed=self.seed(unit) + 7919, system_prompt=cfg.system_prompt,
            logprobs=bool(getattr(self.verifier, "needs_logprobs", False)),
        ).compile()  # fmt: skip
        t0 = time.monotonic()
        out = await graph.ainvoke({"question": unit.problem.question})
        each = (time.monotonic() - t0) / max(1, len(out.get("candidates") or []))
        samples = []
        for c in out.get("candidates") or []:
            lps = c.get("token_logprobs") or []
            samples.append({"text": c["text"], "tokens": c["tokens"], "seconds": round(each, 3), "source": "live",
                            "mean_lp": math.fsum(lps) / len(lps) if lps else None})  # fmt: skip
        return samples

    async def score(self, question: str, samples: list[dict[str, Any]]) -> None:
        """Verifier scores of the samples not yet scored (a pool sample's mean log-probability stands for its
        token log-probabilities: the confidence verifier's ``mean`` depends on nothing else)."""
        todo = [i for i, s in enumerate(samples) if "score" not in s]
        if not todo or self.verifier is None:
            return
        cands = [sample_candidate(i, samples[i]) for i in todo]
        update = await verify_candidates(self.verifier, question, cands)
        for i, cand in zip(todo, update["candidates"], strict=True):
            samples[i]["score"] = cand["score"]

    async def run_pool(self, unit: StudyUnit, done: set[tuple[str, int, str]]) -> tuple[int, int]:
        cfg, p = self.config, unit.problem
        need = max(*cfg.budgets, cfg.pool_samples)  # half scores best-of-N, half bins
        samples = self.store.pool(cfg.name, p.id)
        if not samples and p.id in self.stored:
            samples = [dict(s) for s in self.stored[p.id]]
        new: list[dict[str, Any]] = []
        if len(samples) < need:
            new = await self.draw(unit, need - len(samples))
            samples = samples + new
        await self.score(p.question, samples)
        rows = []
        for name in cfg.pool_templates():
            selection = cfg.templates[name].get("selection", "weighted")
            for b in cfg.budgets:
                if b > len(samples) or (name, b, p.id) in done:
                    continue
                prefix = samples[:b]
                cands = [sample_candidate(i, s) for i, s in enumerate(prefix)]
                chosen = select_answer(cands, selection)
                measured = [s["seconds"] for s in prefix if s.get("seconds") is not None]
                rows.append(ResultRow(
                    cfg.name, name, b, p.id, cfg.dataset, chosen.answer, p.reference,
                    grade(cfg.dataset, chosen.answer, p.reference), b, sum(s.get("tokens") or 0 for s in prefix),
                    round(sum(measured), 3) if len(measured) == len(prefix) else 0.0, "complete",
                    [{"id": c["id"], "answer": c["answer"], "score": c["score"], "tokens": c["tokens"],
                      "correct": grade(cfg.dataset, c["answer"], p.reference)} for c in cands],
                    reused=True,
                    details={"sources": sorted({str(s.get("source")) for s in prefix}),
                             "seconds_measured": len(measured) == len(prefix)},
                ))  # fmt: skip
        self.store.save(rows, pool=(cfg.name, p.id, samples))
        if len(samples) < need:
            raise TTCError(f"drew {len(samples)} of {need} samples; rerun to finish")
        return len(new), sum(s.get("tokens") or 0 for s in new)


async def execute_unit(policy: Endpoint, request: UnitRequest) -> UnitOutcome:
    """Run one study unit a driver sent (see :mod:`ttc_graph.scale`) with the local path's code and ``policy``; its
    rows come back for the driver to write. A :class:`TTCError` becomes the outcome's ``error``, as a local unit's."""
    config = StudyConfig.model_validate(request.config)
    problem = Problem(**request.problem)
    store = scratch_store(config.name, problem.id, request.pool)
    study = _Study(policy, config, store, lambda event: None, stored={})
    unit = StudyUnit(problem, request.index, request.strategy, request.budget)
    generations = tokens = 0
    error = None
    try:
        generations, tokens = await (
            study.run_pool(unit, set(request.done)) if unit.template is None else study.run_live(unit, request.done)
        )
    except TTCError as exc:
        error = str(exc)
    return take_outcome(store, config.name, request, generations=generations, tokens=tokens, error=error)


async def run_study(
    policy: Endpoint,
    config: StudyConfig,
    store: ResultStore,
    *,
    problems: Sequence[Problem] | None = None,
    progress: Callable[[StudyEvent], None] | None = None,
    limit: int | None = None,
    runner: UnitRunner | None = None,
) -> StudyReport:
    """Run every unit of ``config`` not yet in ``store`` (at most ``limit``, in plan order); a unit that fails is
    reported and left for a rerun. ``runner`` (e.g. :class:`ttc_graph.scale.RayUnits`) runs the units elsewhere with
    its own endpoints (``policy`` is then never called) while this call stays the single writer of ``store``."""
    items = list(problems) if problems is not None else study_problems(config)
    return await _Study(policy, config, store, progress or (lambda event: None), runner).run(items, limit)


register_executor("study", execute_unit)  # scale runs study units without importing this package
