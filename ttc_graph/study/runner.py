"""Run a study: one live run per (question, template, budget), resumable, each result committed at once.

Best-of-N templates share one pool of samples per question (the paper's reuse): copied from a stored pool file
when it was drawn with the study's settings, else drawn live once (``pool_size`` samples: half score best-of-N,
half bin the question). Every other template runs its graph, built from its spec by
:func:`ttc_graph.specs.build_graph`, once per budget. The study is a job of the one dataset driver
(:mod:`ttc_graph.eval.dataset_driver`): it plans its units and runs one; the driver skips, runs, stores and reports.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

from ttc_graph._files import existing_file
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError, TTCError
from ttc_graph.eval.dataset_driver import (
    DatasetReport,
    DatasetUnit,
    Key,
    UnitEvent,
    drive,
    graded_row,
    keys_of,
    measured_seconds,
    outcome_of,
)
from ttc_graph.eval.datasets import Problem, data_dir, load_dataset
from ttc_graph.eval.grading import grade
from ttc_graph.eval.pool_samples import PoolSample, pool_candidate, pool_candidates, read_pool, write_pool
from ttc_graph.eval.store import ResultRow, ResultStore
from ttc_graph.nodes.verify import verify_candidates
from ttc_graph.scale.units import UnitOutcome, UnitRequest, UnitRunner, register_executor
from ttc_graph.selection import select_answer, select_revisions
from ttc_graph.specs.build import build_graph, build_verifier
from ttc_graph.specs.models import RevisionsSpec
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
    "stored_candidate",
    "study_problems",
]

POOL = "__pool__"
_ATTEMPT_ID = re.compile(r"ch(\d+)-a(\d+)")  # a revision attempt: chain, position


@dataclass(frozen=True, slots=True)
class StudyUnit(DatasetUnit):
    """One question's best-of-N pool (``template`` None) or one (template, budget) run of it."""

    @property
    def template(self) -> str | None:
        return self.strategy


StudyEvent = UnitEvent
"""Progress of a study: the driver's :class:`~ttc_graph.eval.dataset_driver.UnitEvent`."""

StudyReport = DatasetReport
"""What one call of :func:`run_study` did: the driver's :class:`~ttc_graph.eval.dataset_driver.DatasetReport`."""


def study_problems(config: StudyConfig) -> list[Problem]:
    """The study's questions; a row that does not parse is skipped and counted (the loader warns)."""
    problems = load_dataset(config.dataset, limit=config.questions)
    if not problems:
        raise ConfigurationError(f"dataset: {config.dataset} gave no questions")
    return list(problems)


def plan_units(
    problems: Sequence[Problem],
    config: StudyConfig,
    done: set[tuple[str, int, str]],
    pooled: Mapping[str, int] | None = None,
) -> list[StudyUnit]:
    """What is left, question by question: each question's best-of-N pool (best-of-N and its difficulty bin read
    it), then its other templates, so that a stopped study holds whole questions and its report grows with every
    chunk. A pool is planned while a best-of-N row of it is missing or while it holds fewer than ``pool_samples``
    samples (``pooled``: samples stored per question id; None: not checked)."""
    units: list[StudyUnit] = []
    templates = config.pool_templates()
    for i, p in enumerate(problems):
        missing = any(
            (t, b, p.id) not in done for t in templates for b in config.budgets_of(t) if config.covers(t, b, i)
        )
        short = pooled is not None and pooled.get(p.id, 0) < config.pool_samples
        if templates and (missing or short):
            units.append(StudyUnit(p, i))
        for name in config.live_templates():
            for b in config.budgets_of(name):
                if not config.covers(name, b, i):
                    continue
                source = config.source_of(name, b)
                if (name, b, p.id) in done or (source is not None and (*source, p.id) not in done):
                    continue  # done, or derived when its source runs
                units.append(StudyUnit(p, i, name, b))
    return units


def pool_sizes(store: ResultStore, run: str) -> dict[str, int]:
    """Samples stored in each question's pool of ``run``."""
    return {q: len(samples) for q, samples in store.pools(run).items()}


PLAN_WINDOW = 4
"""Units in flight times this: the plan's window within which :func:`longest_first` reorders a run without a unit
limit (a time box), so that it still finishes questions in plan order."""


def longest_first(
    config: StudyConfig, units: Sequence[StudyUnit], rows: Sequence[ResultRow], window: int | None = None
) -> list[StudyUnit]:
    """``units`` with the longest expected first within each run of ``window`` of them in plan order (None: all of
    them), by the recent mean wall seconds of the unit's template and budget
    (:func:`~ttc_graph.eval.dataset_driver.measured_seconds`; one never measured counts as longest, a pool draw or a
    replayed run as shortest), so that a chunk does not end waiting on one long unit while the server's other slots
    idle. Ties keep plan order."""
    seconds = measured_seconds(rows)

    def expected(unit: StudyUnit) -> float:
        if unit.template is None or config.source_of(unit.template, unit.budget) is not None:
            return 0.0
        return seconds.get((unit.template, unit.budget), math.inf)

    size = max(1, window or len(units))
    return [u for i in range(0, len(units), size) for u in sorted(units[i : i + size], key=lambda u: -expected(u))]


def derive_same(source: ResultRow, template: str) -> ResultRow:
    """``source`` (a run of a template with the very same spec, :meth:`StudyConfig.same_as`) as ``template``'s."""
    details = {"same_as": source.strategy, "sources": ["replay"], "seconds_measured": False,
               "seed": source.details.get("seed")}  # fmt: skip
    return replace(source, strategy=template, reused=True, details=details)


def derive_nested(config: StudyConfig, source: ResultRow, budget: int) -> ResultRow:
    """The row of ``source``'s template at a smaller ``budget``, replayed from ``source``'s chains: its first
    chains, each cut to the smaller budget's length, selected as a run at that budget selects (no model call)."""
    spec = config.spec_for(source.strategy, budget)
    if not isinstance(spec, RevisionsSpec):
        raise TTCError(f"{source.strategy}: only revisions replay from a larger budget's chains, not {spec.kind}")
    chains, length = split_budget(spec.n, spec.chain_length)
    kept: list[dict[str, Any]] = []
    cands: list[Candidate] = []
    for c in source.candidates:
        cand = stored_candidate(c)
        if "chain" not in cand["meta"]:
            raise TTCError(f"{source.strategy} b={source.budget}: candidate id {c['id']!r} names no chain")
        if cand["meta"]["chain"] < chains and cand["meta"]["position"] < length:
            kept.append(c)
            cands.append(cand)
    chosen = select_revisions(cands, spec.selection)
    return ResultRow(
        source.run, source.strategy, budget, source.question_id, source.dataset, chosen.answer, source.reference,
        grade(config.dataset, chosen.answer, source.reference or ""), len(kept),
        sum(c.get("tokens") or 0 for c in kept), 0.0, "complete", kept, reused=True,
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
    restored = {**stored, "text": "", "parsable": stored["answer"] is not None, "scored": stored["score"] is not None,
                "meta": meta}  # fmt: skip
    return cast(Candidate, restored)


def _stored_pool(config: StudyConfig) -> dict[str, list[dict[str, Any]]]:
    """The configured pool file's samples per question id (its ``idx``), when its settings match the study's."""
    if config.pool is None or not config.reuses_pool():
        return {}
    path = Path(config.pool.path)
    file = path if path.is_absolute() else data_dir() / path
    existing_file(file, "pool.path")
    out: dict[str, list[dict[str, Any]]] = {}
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[str(row["idx"])] = [
                {"text": s["text"], "tokens": s.get("tokens"), "mean_lp": s.get("mean_lp"), "source": file.name}
                for s in row["samples"]
            ]
    return out


class _StudyJob:
    """A study as a :class:`~ttc_graph.eval.dataset_driver.DatasetJob`: its units and how one runs."""

    def __init__(
        self,
        policy: Endpoint,
        config: StudyConfig,
        problems: Sequence[Problem] = (),
        limit: int | None = None,
        stored: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        self.policy, self.config, self.problems, self.limit = policy, config, problems, limit
        self.run, self.concurrency = config.name, config.concurrency
        self.verifier = build_verifier(config.spec_for(config.baseline, config.budgets[0]).verifier, policy)  # type: ignore[union-attr]
        self.stored = _stored_pool(config) if stored is None else stored

    @property
    def settings(self) -> dict[str, Any]:
        cfg = self.config
        return {"model": cfg.model, "dataset": cfg.dataset, "temperature": cfg.temperature,
                "max_tokens": cfg.max_tokens, "seed": cfg.seed}  # fmt: skip

    def plan(self, store: ResultStore, done: set[Key]) -> tuple[list[StudyUnit], int]:
        pending = plan_units(self.problems, self.config, done, pool_sizes(store, self.run))
        window = None if self.limit else PLAN_WINDOW * self.concurrency
        units = longest_first(self.config, pending[: self.limit], store.rows(self.run), window)
        return units, len(plan_units(self.problems, self.config, set())) - len(pending)

    def derived(self, unit: StudyUnit) -> bool:
        return unit.template is not None and self.config.source_of(unit.template, unit.budget) is not None

    def pool_of(self, unit: StudyUnit, store: ResultStore) -> list[dict[str, Any]]:
        """The question's pool as stored, else as the configured pool file holds it (none for a template's unit)."""
        if unit.template is not None:
            return []
        return store.pool(self.run, unit.problem.id) or [dict(s) for s in self.stored.get(unit.problem.id, [])]

    def request(self, unit: StudyUnit, store: ResultStore, done: set[Key]) -> UnitRequest | None:
        if self.derived(unit):  # a derived unit needs no model: it is replayed here
            return None
        cfg, p = self.config, unit.problem
        return UnitRequest(
            "study", unit.label, cfg.model_dump(mode="json"), asdict(p), unit.template, unit.budget, unit.index,
            pool=self.pool_of(unit, store), done=keys_of(done, p.id),
        )  # fmt: skip

    async def run_here(self, unit: StudyUnit, store: ResultStore, done: set[Key]) -> UnitOutcome:
        if self.derived(unit):
            return self.derive(unit, store)
        return await self.run_unit(unit, self.pool_of(unit, store), done)

    async def run_unit(self, unit: StudyUnit, pool: list[dict[str, Any]], done: Collection[Key]) -> UnitOutcome:
        """Run ``unit`` from its question's ``pool`` (stored JSON samples)."""
        return await (self.run_pool(unit, pool, done) if unit.template is None else self.run_live(unit, done))

    def seed(self, unit: StudyUnit) -> int:
        return self.config.seed + 1_000_003 * unit.index

    def derive(self, unit: StudyUnit, store: ResultStore) -> UnitOutcome:
        """A unit whose source run is stored: replayed from it (no model call)."""
        assert unit.template is not None
        cfg, p = self.config, unit.problem
        source = cfg.source_of(unit.template, unit.budget)
        assert source is not None
        rows = [r for r in store.rows(cfg.name) if (r.strategy, r.budget, r.question_id) == (*source, p.id)]
        if not rows:
            raise TTCError(f"{unit.label}: its source run {source[0]} at budget {source[1]} is not stored")
        if source[0] != unit.template:
            return UnitOutcome([derive_same(rows[0], unit.template)])
        return UnitOutcome([derive_nested(cfg, rows[0], unit.budget)])

    async def run_live(self, unit: StudyUnit, done: Collection[Key] = ()) -> UnitOutcome:
        """Run one (template, budget) live: its row, and the smaller budgets nested in it not yet ``done``."""
        assert unit.template is not None
        cfg, p = self.config, unit.problem
        spec = cfg.spec_for(unit.template, unit.budget).model_copy(update={"seed": self.seed(unit)})
        graph = build_graph(spec, policy=self.policy).compile(name=unit.template)
        t0 = time.monotonic()
        out = await graph.ainvoke({"question": p.question})
        seconds = time.monotonic() - t0
        details = {
            "usage": out.get("usage") or {},
            "diagnostics": out.get("diagnostics") or {},
            "errors": (out.get("errors") or [])[:5],
            "seed": spec.seed,
            "wall_seconds": round(seconds, 3),
        }
        candidates = _candidates_json(out.get("candidates") or [])
        row = graded_row(
            out, p, run=cfg.name, strategy=unit.template, budget=unit.budget, dataset=cfg.dataset,
            seconds=round(seconds, 3), candidates=candidates, details=details,
        )  # fmt: skip
        nested = [
            derive_nested(cfg, row, b)
            for b in cfg.budgets_of(unit.template)
            if cfg.nested_in(unit.template, b) == unit.budget and (unit.template, b, p.id) not in done
        ]
        same = [
            derive_same(row, other)
            for other in cfg.live_templates()
            if cfg.covers(other, unit.budget, unit.index)
            and cfg.same_as(other, unit.budget) == unit.template
            and (other, unit.budget, p.id) not in done
        ]
        return UnitOutcome([row, *nested, *same], generations=row.generations, tokens=row.tokens)

    # -- best-of-N from one pool per question ----------------------------------------------------------------

    async def draw(self, unit: StudyUnit, k: int, start: int = 0) -> list[PoolSample]:
        """``k`` new samples drawn live by majority best-of-N (no verifier call), with log-probabilities when
        the verifier reads them. Sample ``i`` of a pool is drawn with seed ``pool seed + i``: the samples after
        ``start`` ones already stored are new draws, not repeats of the first (a pool drawn whole and a pool
        extended later hold the same samples)."""
        cfg = self.config
        graph = create_best_of_n(
            self.policy, None, n=k, selection="majority", temperature=cfg.temperature, max_tokens=cfg.max_tokens,
            seed=self.seed(unit) + 7919 + start, system_prompt=cfg.system_prompt,
            logprobs=bool(getattr(self.verifier, "needs_logprobs", False)),
        ).compile()  # fmt: skip
        t0 = time.monotonic()
        out = await graph.ainvoke({"question": unit.problem.question})
        each = (time.monotonic() - t0) / max(1, len(out.get("candidates") or []))
        samples = []
        for c in out.get("candidates") or []:
            lps = c.get("token_logprobs") or []
            samples.append(PoolSample.from_json({
                "text": c["text"], "tokens": c["tokens"], "seconds": round(each, 3), "source": "live",
                "mean_lp": math.fsum(lps) / len(lps) if lps else None,
            }))  # fmt: skip
        return samples

    async def score(self, question: str, samples: list[PoolSample]) -> None:
        """Verifier scores of the samples not yet scored (a pool sample's mean log-probability stands for its
        token log-probabilities: the confidence verifier's ``mean`` depends on nothing else)."""
        todo = [i for i, s in enumerate(samples) if s.score is None]
        if not todo or self.verifier is None:
            return
        update = await verify_candidates(self.verifier, question, [pool_candidate(i, samples[i]) for i in todo])
        for i, cand in zip(todo, update["candidates"], strict=True):
            samples[i] = samples[i].with_score(cand["score"])

    async def run_pool(self, unit: StudyUnit, stored: list[dict[str, Any]], done: Collection[Key]) -> UnitOutcome:
        cfg, p = self.config, unit.problem
        need = max(*cfg.budgets, cfg.pool_samples)  # half scores best-of-N, half bins
        samples = read_pool(stored)  # a stored pool is extended, never redrawn: its samples stay first
        new: list[PoolSample] = []
        if len(samples) < need:
            new = await self.draw(unit, need - len(samples), start=len(samples))
            samples = samples + new
        await self.score(p.question, samples)
        rows = []
        for name in cfg.pool_templates():
            selection = cfg.templates[name].get("selection", "weighted")
            for b in cfg.budgets_of(name):
                if b > len(samples) or (name, b, p.id) in done or not cfg.covers(name, b, unit.index):
                    continue
                prefix = samples[:b]
                cands = pool_candidates(prefix)
                chosen = select_answer(cands, selection)
                measured = [s.seconds for s in prefix if s.seconds is not None]
                rows.append(ResultRow(
                    cfg.name, name, b, p.id, cfg.dataset, chosen.answer, p.reference,
                    grade(cfg.dataset, chosen.answer, p.reference), b, sum(s.tokens or 0 for s in prefix),
                    round(sum(measured), 3) if len(measured) == len(prefix) else 0.0, "complete",
                    [{"id": c["id"], "answer": c["answer"], "score": c["score"], "tokens": c["tokens"],
                      "correct": grade(cfg.dataset, c["answer"], p.reference)} for c in cands],
                    reused=True,
                    details={"sources": sorted({str(s.source) for s in prefix}),
                             "seconds_measured": len(measured) == len(prefix)},
                ))  # fmt: skip
        pool = write_pool(samples)
        error = None if len(samples) >= need else f"drew {len(samples)} of {need} samples; rerun to finish"
        return UnitOutcome(
            rows, None if pool == stored else pool, len(new), sum(s.tokens or 0 for s in new), error=error
        )


async def execute_unit(policy: Endpoint, request: UnitRequest) -> UnitOutcome:
    """Run one study unit a driver sent (see :mod:`ttc_graph.scale`) with the local path's code and ``policy``; its
    rows come back for the driver to write. A :class:`TTCError` becomes the outcome's ``error``, as a local unit's."""
    job = _StudyJob(policy, StudyConfig.model_validate(request.config), stored={})
    unit = StudyUnit(Problem(**request.problem), request.index, request.strategy, request.budget)
    return await outcome_of(job.run_unit(unit, request.pool, {tuple(k) for k in request.done}))  # type: ignore[misc]


async def run_study(
    policy: Endpoint,
    config: StudyConfig,
    store: ResultStore,
    *,
    problems: Sequence[Problem] | None = None,
    progress: Callable[[StudyEvent], None] | None = None,
    limit: int | None = None,
    runner: UnitRunner | None = None,
    stop: threading.Event | None = None,
    deadline: float | None = None,
) -> StudyReport:
    """Run every unit of ``config`` not yet in ``store`` (at most ``limit``, in plan order); a unit that fails is
    reported and left for a rerun. ``runner`` (e.g. :class:`ttc_graph.scale.RayUnits`) runs the units elsewhere with
    its own endpoints (``policy`` is then never called) while this call stays the single writer of ``store``.
    ``stop``, once set, drains the run: the units in flight finish and are stored, no other starts; with
    ``deadline`` (a :func:`time.time` instant) only units expected to finish by then start (:func:`drive`)."""
    items = list(problems) if problems is not None else study_problems(config)
    job = _StudyJob(policy, config, items, limit)
    return await drive(job, store, runner=runner, progress=progress, stop=stop, deadline=deadline)


register_executor("study", execute_unit)  # scale runs study units without importing this package
