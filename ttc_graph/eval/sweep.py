"""Strategy × budget sweeps over a data set, resumable from SQLite, with sample reuse for best-of-N.

Best-of-N strategies (``best_of_n:majority``, ``best_of_n:weighted[:verifier]``, ``best_of_n:naive[:verifier]``)
share one pool of samples per question: the largest budget's samples are drawn once, scored by every verifier
in use, stored, and each smaller budget is evaluated on a prefix of the same draws (the paper's method). Other
families (``revisions:<selection>``, ``beam_search[:width]``, ``dvts[:width]``) run their graph per budget. A sweep
is a job of the one dataset driver (:mod:`ttc_graph.eval.dataset_driver`), which skips, runs, stores and reports.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from ttc_graph.defaults import DEFAULT_EVAL_MAX_TOKENS, DEFAULT_EVAL_TEMPERATURE
from ttc_graph.endpoints.base import Endpoint, EndpointWrapper, GenerationResult
from ttc_graph.errors import ConfigurationError, TTCError
from ttc_graph.eval.dataset_driver import DatasetReport, DatasetUnit, Key, UnitEvent, drive, graded_row, keys_of
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.grading import grade
from ttc_graph.eval.pool_samples import PoolSample, pool_candidate, pool_candidates, read_pool, write_pool
from ttc_graph.eval.store import ResultRow, ResultStore
from ttc_graph.nodes.verify import verify_candidates
from ttc_graph.scale.units import UnitOutcome, UnitRequest, UnitRunner, register_executor
from ttc_graph.selection import REVISION_SELECTIONS, SELECTIONS, select_answer
from ttc_graph.specs.build import build_graph
from ttc_graph.specs.io import parse_spec
from ttc_graph.specs.models import StrategySpec
from ttc_graph.state import Candidate
from ttc_graph.strategies import create_best_of_n
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.verifiers.registry import NAMED_VERIFIERS, VERIFIER_NAMES, named_verifier

__all__ = [
    "FAMILIES",
    "VERIFIERS",
    "CountingEndpoint",
    "Curve",
    "SweepConfig",
    "SweepEvent",
    "SweepReport",
    "SweepStrategy",
    "execute_unit",
    "parse_budgets",
    "parse_strategy",
    "pending",
    "run_sweep",
    "summarize",
    "sweep_spec",
    "wilson_interval",
]

FAMILIES = ("best_of_n", "revisions", "beam_search", "dvts")
VERIFIERS = VERIFIER_NAMES


# ------------------------------------------------------------------------------------------------ specs


@dataclass(frozen=True, slots=True)
class SweepStrategy:
    """A parsed ``family:option[:verifier]``; ``name`` is the canonical key stored in the database."""

    family: str
    option: str
    verifier: str

    @property
    def name(self) -> str:
        return f"{self.family}:{self.option}" + ("" if self.verifier == "none" else f":{self.verifier}")

    @property
    def reuses_samples(self) -> bool:
        return self.family == "best_of_n"


def parse_strategy(text: str, default_verifier: str = "confidence") -> SweepStrategy:
    """``best_of_n:{majority,weighted,naive}[:verifier]``, ``revisions:{majority,last,hierarchical}[:verifier]``,
    ``beam_search[:width][:verifier]`` or ``dvts[:width][:verifier]`` (width an integer or ``sqrt``)."""
    parts = [p.strip() for p in text.strip().split(":")]
    family, rest = parts[0], parts[1:]
    if family not in FAMILIES:
        raise ConfigurationError(f"strategy {text!r}: unknown family {family!r}; use one of {', '.join(FAMILIES)}")
    if len(rest) > 2:
        raise ConfigurationError(f"strategy {text!r}: expected family:option[:verifier]")
    if family in ("beam_search", "dvts"):
        option = rest[0] if rest and rest[0] else "sqrt"
        if option != "sqrt" and not (option.isdigit() and int(option) >= 1):
            raise ConfigurationError(f"strategy {text!r}: beam width must be an integer >= 1 or 'sqrt'")
        verifier = rest[1] if len(rest) > 1 else "judge"
        if verifier != "judge":
            raise ConfigurationError(f"strategy {text!r}: search needs a process verifier; use ':judge'")
        return SweepStrategy(family, option, verifier)
    allowed: tuple[str, ...] = SELECTIONS if family == "best_of_n" else REVISION_SELECTIONS
    option = rest[0] if rest and rest[0] else "majority"
    if option not in allowed:
        raise ConfigurationError(f"strategy {text!r}: unknown selection {option!r}; use one of {', '.join(allowed)}")
    scored = option in ("weighted", "naive", "hierarchical")
    verifier = rest[1] if len(rest) > 1 else (default_verifier if scored else "none")
    if verifier not in VERIFIERS:
        raise ConfigurationError(f"strategy {text!r}: unknown verifier {verifier!r}; use one of {', '.join(VERIFIERS)}")
    if scored and verifier == "none":
        raise ConfigurationError(f"strategy {text!r}: selection {option!r} needs a verifier")
    if option == "majority":  # votes ignore scores
        verifier = "none"
    if family == "revisions" and verifier.startswith("confidence"):
        raise ConfigurationError(f"strategy {text!r}: revisions do not request logprobs; use ':judge'")
    return SweepStrategy(family, option, verifier)


def parse_budgets(budgets: str | Iterable[int]) -> tuple[int, ...]:
    """``"1,2,4"`` or integers, as sorted unique positive budgets; zero, negatives or junk raise."""
    if isinstance(budgets, str):
        items: list[Any] = [b for b in budgets.replace(" ", "").split(",") if b]
    else:
        items = list(budgets)
    if not items:
        raise ConfigurationError("budgets: give at least one budget, e.g. 1,2,4")
    out: set[int] = set()
    for b in items:
        try:
            value = int(b)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"budgets: {b!r} is not an integer") from exc
        if value < 1 or isinstance(b, bool) or (isinstance(b, float) and not b.is_integer()):
            raise ConfigurationError(f"budgets: each budget must be an integer >= 1, got {b!r}")
        out.add(value)
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class SweepConfig:
    """What to run; ``sampling()`` are the settings a resumed run must keep."""

    run: str
    dataset: str
    strategies: tuple[SweepStrategy, ...]
    budgets: tuple[int, ...]
    max_tokens: int = DEFAULT_EVAL_MAX_TOKENS
    temperature: float = DEFAULT_EVAL_TEMPERATURE
    seed: int | None = None
    concurrency: int = 2
    model: str | None = None

    @classmethod
    def make(
        cls,
        run: str,
        dataset: str,
        strategies: Sequence[str | SweepStrategy],
        budgets: str | Iterable[int],
        *,
        default_verifier: str = "confidence",
        **kwargs: Any,
    ) -> SweepConfig:
        """A validated config (every error a :class:`ConfigurationError`, raised before any model call)."""
        if not run or not run.strip():
            raise ConfigurationError("run: give the sweep a name")
        specs = tuple(s if isinstance(s, SweepStrategy) else parse_strategy(s, default_verifier) for s in strategies)
        if not specs:
            raise ConfigurationError("strategies: give at least one, e.g. best_of_n:majority")
        specs = tuple(dict.fromkeys(specs))
        config = cls(run.strip(), dataset, specs, parse_budgets(budgets), **kwargs)
        if config.max_tokens < 1:
            raise ConfigurationError(f"max_tokens: must be >= 1, got {config.max_tokens}")
        if config.temperature < 0:
            raise ConfigurationError(f"temperature: must be >= 0, got {config.temperature}")
        if config.concurrency < 1:
            raise ConfigurationError(f"concurrency: must be >= 1, got {config.concurrency}")
        for spec in specs:  # build every graph once: invalid widths or splits fail here
            for b in config.budgets:
                _graph(spec, b, _probe(), _probe(), config)
        return config

    def as_data(self) -> dict[str, Any]:
        """The config as JSON-able data; :meth:`from_data` validates it again (how a unit travels to a worker)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return data | {"strategies": [s.name for s in self.strategies], "budgets": list(self.budgets)}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> SweepConfig:
        """The config :meth:`as_data` describes, validated like :meth:`make`."""
        rest = {k: v for k, v in data.items() if k not in ("run", "dataset", "strategies", "budgets")}
        return cls.make(data["run"], data["dataset"], data["strategies"], data["budgets"], **rest)

    def sampling(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "model": self.model,
        }


# --------------------------------------------------------------------------------------------- endpoints


def _never_called(call: FakeCall, index: int) -> str:  # pragma: no cover - construction only
    raise RuntimeError("the validation probe is never called")


def _probe() -> ScriptedEndpoint:
    """Stands in for the policy while graphs are built for validation; never called."""
    return ScriptedEndpoint(_never_called)


class CountingEndpoint(EndpointWrapper):
    """Wraps an endpoint and counts the requests and generations that actually reach it."""

    def __init__(self, inner: Endpoint) -> None:
        super().__init__(inner)
        self.calls = 0
        self.generations = 0

    async def forward(self, request: Callable[[Endpoint], Awaitable[GenerationResult]], n: int) -> GenerationResult:
        self.calls += 1
        result = await request(self.inner)
        self.generations += len(result.generations)
        return result


def sweep_spec(spec: SweepStrategy, budget: int, config: SweepConfig) -> StrategySpec:
    """The strategy spec a sweep strategy runs at ``budget``: sweeps build graphs the way specs do."""
    data: dict[str, Any] = {"n": budget, "temperature": config.temperature, "seed": config.seed}
    verifier = NAMED_VERIFIERS.get(spec.verifier)
    if spec.family == "best_of_n":
        data |= {"kind": "best_of_n", "selection": spec.option, "max_tokens": config.max_tokens}
    elif spec.family == "revisions":
        data |= {"kind": "revisions", "chain_length": "sqrt", "selection": spec.option, "max_tokens": config.max_tokens}
    else:
        width: int | str = "sqrt" if spec.option == "sqrt" else int(spec.option)
        data |= {"kind": spec.family, "beam_width": width, "step_max_tokens": config.max_tokens}
        verifier = {"kind": "llm_judge", "mode": "process"}
    if verifier is not None:
        data["verifier"] = verifier
    return parse_spec(data, f"strategy {spec.name} at budget {budget}")


def _graph(spec: SweepStrategy, budget: int, policy: Endpoint, judge: Endpoint, config: SweepConfig) -> Any:
    """The graph of ``spec`` at ``budget`` through :func:`~ttc_graph.specs.build_graph`; a judge verifier
    judges with ``judge`` (outcome mode for whole solutions, process mode for search)."""
    strategy = sweep_spec(spec, budget, config)
    mode: Literal["process", "outcome"] = "process" if spec.family in ("beam_search", "dvts") else "outcome"
    name = "judge" if mode == "process" else spec.verifier
    return build_graph(strategy, policy=policy, verifier=named_verifier(name, judge, mode=mode))


# ------------------------------------------------------------------------------------------------ report


SweepEvent = UnitEvent
"""Progress of a sweep: the driver's :class:`~ttc_graph.eval.dataset_driver.UnitEvent`."""


@dataclass(slots=True)
class SweepReport(DatasetReport):
    """What one call did (the driver's report); ``generations``/``requests`` count what reached the policy."""

    questions: int = 0

    @property
    def skipped_units(self) -> int:
        return self.skipped

    @property
    def finished_units(self) -> int:
        return self.finished

    @property
    def failed_units(self) -> int:
        return self.failed


# -------------------------------------------------------------------------------------------------- units


def _candidates_json(cands: Sequence[Candidate]) -> list[dict[str, Any]]:
    return [
        {"text": c["text"], "answer": c["answer"], "score": c["score"], "tokens": c["tokens"], "id": c["id"]}
        for c in cands
    ]


def _plan(problems: Sequence[Problem], config: SweepConfig, done: set[Key]) -> tuple[list[DatasetUnit], int]:
    """Units still to run, question by question (a killed sweep leaves whole questions), and how many are done."""
    bon = [s for s in config.strategies if s.reuses_samples]
    units: list[DatasetUnit] = []
    skipped = 0
    for p in problems:
        keys = [(s.name, b, p.id) for s in bon for b in config.budgets]
        if keys and all(k in done for k in keys):
            skipped += 1
        elif keys:
            units.append(DatasetUnit(p))
        for s in config.strategies:
            if s.reuses_samples:
                continue
            for b in config.budgets:
                if (s.name, b, p.id) in done:
                    skipped += 1
                else:
                    units.append(DatasetUnit(p, 0, s.name, b))
    return units, skipped


def pending(problems: Sequence[Problem], config: SweepConfig, store: ResultStore) -> tuple[int, int]:
    """``(units to run, units already finished)`` for ``config`` in ``store``; a unit is one question's best-of-N
    pool (every best-of-N strategy and budget) or one (strategy, budget, question) of another family."""
    units, skipped = _plan(problems, config, store.done(config.run))
    return len(units), skipped


@dataclass(slots=True)
class _Endpoints:
    """One unit's policy and judge, each counting what reaches it."""

    policy: CountingEndpoint
    judge: CountingEndpoint


class _SweepJob:
    """A sweep as a :class:`~ttc_graph.eval.dataset_driver.DatasetJob`: its units and how one runs."""

    def __init__(
        self, policy: Endpoint, problems: Sequence[Problem], config: SweepConfig, judge_policy: Endpoint | None = None
    ) -> None:
        self.policy, self.judge_policy = policy, judge_policy or policy
        self.problems, self.config = problems, config
        self.run, self.concurrency = config.run, config.concurrency
        self.bon = [s for s in config.strategies if s.reuses_samples]
        self.strategies = {s.name: s for s in config.strategies}

    @property
    def settings(self) -> dict[str, Any]:
        return self.config.sampling()

    def plan(self, store: ResultStore, done: set[Key]) -> tuple[list[DatasetUnit], int]:
        return _plan(self.problems, self.config, done)

    def request(self, unit: DatasetUnit, store: ResultStore, done: set[Key]) -> UnitRequest:
        cfg, p = self.config, unit.problem
        return UnitRequest(
            "sweep", unit.label, cfg.as_data(), asdict(p), unit.strategy, unit.budget,
            pool=store.pool(cfg.run, p.id) if unit.strategy is None else [], done=keys_of(done, p.id),
        )  # fmt: skip

    async def run_here(self, unit: DatasetUnit, store: ResultStore, done: set[Key]) -> UnitOutcome:
        return await self.run_unit(unit, store.pool(self.run, unit.problem.id) if unit.strategy is None else [], done)

    async def run_unit(self, unit: DatasetUnit, pool: list[dict[str, Any]], done: Collection[Key]) -> UnitOutcome:
        """Run ``unit`` from its question's stored ``pool``; what reached the endpoints is counted, failed or not."""
        ends = _Endpoints(CountingEndpoint(self.policy), CountingEndpoint(self.judge_policy))
        try:
            if unit.strategy is None:
                outcome = await self.run_pool(unit, pool, done, ends)
            else:
                outcome = await self.run_graph(unit, ends)
        except TTCError as exc:
            outcome = UnitOutcome(error=str(exc))
        drawn = ends.policy.generations
        return replace(
            outcome, verifier_requests=ends.judge.calls, requests=ends.policy.calls, generations=drawn,
            policy_generations=drawn,
        )  # fmt: skip

    # -- one graph per budget -------------------------------------------------------------------------------

    async def run_graph(self, unit: DatasetUnit, ends: _Endpoints) -> UnitOutcome:
        assert unit.strategy is not None
        cfg, p = self.config, unit.problem
        graph = _graph(self.strategies[unit.strategy], unit.budget, ends.policy, ends.judge, cfg).compile()
        out = await graph.ainvoke({"question": p.question})
        seconds = float((out.get("usage") or {}).get("seconds", 0.0))
        candidates = _candidates_json(out.get("candidates") or [])
        row = graded_row(
            out, p, run=cfg.run, strategy=unit.strategy, budget=unit.budget, dataset=cfg.dataset, seconds=seconds,
            candidates=candidates,
        )  # fmt: skip
        return UnitOutcome([row], tokens=row.tokens)

    # -- best-of-N from one pool ----------------------------------------------------------------------------

    async def draw(
        self, p: Problem, k: int, have: int, ends: _Endpoints, logprobs: bool
    ) -> tuple[list[PoolSample], list[str]]:
        cfg = self.config
        seed = None if cfg.seed is None else cfg.seed + 7919 * have  # fresh seeds for samples added later
        graph = create_best_of_n(
            ends.policy, None, n=k, selection="majority", max_tokens=cfg.max_tokens,
            temperature=cfg.temperature, seed=seed, logprobs=logprobs,
        ).compile()  # fmt: skip
        t0 = time.monotonic()
        out = await graph.ainvoke({"question": p.question})
        cands = out.get("candidates") or []
        each = (time.monotonic() - t0) / max(1, len(cands))
        samples = [
            PoolSample(
                c["answer"], None, grade(cfg.dataset, c["answer"], p.reference), c["tokens"], c["text"],
                round(each, 3), c["finish_reason"], {},
                [round(x, 5) for x in c["token_logprobs"]] if c.get("token_logprobs") else None,
            )
            for c in cands
        ]  # fmt: skip
        return samples, list(out.get("errors") or [])

    async def score(self, p: Problem, samples: list[PoolSample], verifiers: dict[str, Any]) -> None:
        for name, verifier in verifiers.items():
            if verifier is None:
                continue
            todo = [i for i, s in enumerate(samples) if name not in (s.scores or {})]
            if not todo:
                continue
            if getattr(verifier, "needs_logprobs", False) and any(not samples[i].token_logprobs for i in todo):
                raise TTCError(f"verifier {name!r} needs token logprobs and some samples have none")
            update = await verify_candidates(verifier, p.question, [pool_candidate(i, samples[i], name) for i in todo])
            for i, cand in zip(todo, update["candidates"], strict=True):
                samples[i] = samples[i].with_score(cand["score"], name)

    async def run_pool(
        self, unit: DatasetUnit, stored: list[dict[str, Any]], done: Collection[Key], ends: _Endpoints
    ) -> UnitOutcome:
        cfg, p = self.config, unit.problem
        verifiers = {name: named_verifier(name, ends.judge) for name in dict.fromkeys(s.verifier for s in self.bon)}
        need = max(cfg.budgets)
        samples = read_pool(stored)
        errors: list[str] = []
        have = len(samples)
        if have < need:
            logprobs = any(getattr(v, "needs_logprobs", False) for v in verifiers.values())
            new, errors = await self.draw(p, need - have, have, ends, logprobs)
            samples = samples + new
        await self.score(p, samples, verifiers)
        rows = [
            self.pool_row(spec, b, p, samples[:b])
            for spec in self.bon
            for b in cfg.budgets
            if b <= len(samples) and (spec.name, b, p.id) not in done
        ]
        pool = write_pool(samples)
        error = None
        if len(samples) < need:
            error = f"drew {len(samples)} of {need} samples ({'; '.join(errors[:2])}); rerun to finish"
        tokens = sum(s.tokens or 0 for s in samples[have:])
        return UnitOutcome(rows, None if pool == stored else pool, tokens=tokens, error=error)

    def pool_row(self, spec: SweepStrategy, b: int, p: Problem, prefix: list[PoolSample]) -> ResultRow:
        cfg = self.config
        cands = pool_candidates(prefix, spec.verifier)
        chosen = select_answer(cands, spec.option)  # type: ignore[arg-type]
        kept = [
            {"i": i, "answer": s.answer, "score": c["score"], "tokens": s.tokens, "correct": s.correct}
            for i, (s, c) in enumerate(zip(prefix, cands, strict=True))
        ]
        return ResultRow(
            cfg.run, spec.name, b, p.id, cfg.dataset, chosen.answer, p.reference,
            grade(cfg.dataset, chosen.answer, p.reference), b, sum(s.tokens or 0 for s in prefix),
            round(sum(s.seconds or 0.0 for s in prefix), 3), "complete", kept, reused=True,
        )  # fmt: skip


async def execute_unit(policy: Endpoint, request: UnitRequest) -> UnitOutcome:
    """Run one sweep unit a driver sent (see :mod:`ttc_graph.scale`) with the local path's code and ``policy``; its
    rows come back for the driver to write. A :class:`TTCError` becomes the outcome's ``error``, as a local unit's."""
    config = SweepConfig.from_data(request.config)
    problem = Problem(**request.problem)
    job = _SweepJob(policy, [problem], config)
    unit = DatasetUnit(problem, 0, request.strategy, request.budget)
    return await job.run_unit(unit, request.pool, {tuple(k) for k in request.done})  # type: ignore[misc]


register_executor("sweep", execute_unit)


async def run_sweep(
    policy: Endpoint,
    problems: Sequence[Problem],
    config: SweepConfig,
    store: ResultStore,
    *,
    progress: Callable[[SweepEvent], None] | None = None,
    judge_policy: Endpoint | None = None,
    runner: UnitRunner | None = None,
    stop: threading.Event | None = None,
    deadline: float | None = None,
) -> SweepReport:
    """Run every (strategy, budget, question) of ``config`` not yet in ``store`` with
    :func:`~ttc_graph.eval.dataset_driver.drive`; each result commits at once.

    At most ``config.concurrency`` questions run at a time. A unit that fails with a :class:`TTCError` is
    reported and left for the next call; any other exception (or cancellation) stops the sweep, keeping what
    finished. ``judge_policy`` serves ``judge`` verifiers (default: the policy itself).

    ``runner`` (e.g. :class:`ttc_graph.scale.RayUnits`) runs the units elsewhere, with its own endpoints (``policy`` is
    then never called): this call stays the single writer of ``store``, ``runner.slots`` units at a time.
    ``stop``, once set, drains the sweep: the units in flight finish and are stored, no other starts; with
    ``deadline`` (a :func:`time.time` instant) only units expected to finish by then start (:func:`drive`).
    """
    if not problems:
        raise ConfigurationError("problems: the data set slice is empty")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ConfigurationError("problems: question ids must be unique")
    if runner is not None and judge_policy is not None:
        raise ConfigurationError("judge_policy: units run by a runner judge with the runner's endpoints")
    job = _SweepJob(policy, problems, config, judge_policy)
    report = SweepReport(questions=len(problems))
    await drive(job, store, runner=runner, progress=progress, report=report, stop=stop, deadline=deadline)
    return report


# ----------------------------------------------------------------------------------------------- summary


def wilson_interval(hits: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if hits == 0 else max(0.0, centre - half)
    return low, 1.0 if hits == n else min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Curve:
    """Accuracy of one strategy at one budget over the finished questions, with a Wilson 95% interval."""

    strategy: str
    budget: int
    questions: int
    correct: int
    accuracy: float
    low: float
    high: float
    generations: float
    tokens: float
    seconds: float


def summarize(rows: Iterable[ResultRow]) -> list[Curve]:
    """One :class:`Curve` point per (strategy, budget), sorted; means are per question."""
    groups: dict[tuple[str, int], list[ResultRow]] = {}
    for r in rows:
        groups.setdefault((r.strategy, r.budget), []).append(r)
    curves = []
    for (strategy, budget), rs in sorted(groups.items()):
        n, hits = len(rs), sum(r.correct for r in rs)
        low, high = wilson_interval(hits, n)
        curves.append(
            Curve(
                strategy, budget, n, hits, hits / n, low, high, sum(r.generations for r in rs) / n,
                sum(r.tokens for r in rs) / n, sum(r.seconds for r in rs) / n,
            )
        )  # fmt: skip
    return curves
