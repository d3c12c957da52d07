"""``ttc study``: run (resumable, with progress), report and follow the compute-optimal study."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from ttc_graph.cli.common import (
    check_gguf,
    check_ray,
    console,
    drain_on_signal,
    exit_on_failures,
    fail,
    print_not_started,
    sigterm_as_interrupt,
    stop_instant,
)
from ttc_graph.cli.options import (
    BaseUrlOption,
    GgufOption,
    ModelOption,
    ParallelOption,
    RayOption,
    ReplicasOption,
    StopByOption,
    ThreadsOption,
)
from ttc_graph.cli.progress import ProgressBar
from ttc_graph.cli.runtime import runtime_of, split_runner
from ttc_graph.errors import ConfigurationError, TTCError

__all__ = ["study_app"]

study_app = typer.Typer(help="The compute-optimal study: every (question, template, budget) as a live run.")

_ConfigArgument = Annotated[Path, typer.Argument(help="Study config (YAML).", metavar="CONFIG")]
_DbOption = Annotated[Path | None, typer.Option(help="SQLite results (default: study.sqlite beside CONFIG).")]


def _db_of(config_path: Path, db: Path | None) -> Path:
    return db if db is not None else config_path.with_name("study.sqlite")


def _stored_db(config_path: Path, db: Path | None) -> Path:
    """The study's database, which a report or status needs to exist already."""
    path = _db_of(config_path, db)
    if not path.is_file():
        raise ConfigurationError(f"db: {path} does not exist; run `ttc study run {config_path}` first")
    return path


@study_app.command("run")
def run_command(
    ctx: typer.Context,
    config_path: _ConfigArgument,
    db: _DbOption = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    gguf: GgufOption = None,
    parallel: ParallelOption = 8,
    threads: ThreadsOption = None,
    slot_context: Annotated[
        int, typer.Option(help="Context tokens per slot with --gguf (revisions carry 4 earlier attempts).")
    ] = 4096,
    questions: Annotated[int | None, typer.Option(help="Only the first N questions of the config's set.")] = None,
    max_units: Annotated[int | None, typer.Option(help="Stop after this many units (a chunk).")] = None,
    stop_by: StopByOption = None,
    ray: RayOption = None,
    replicas: ReplicasOption = None,
) -> None:
    """Run every unit of the study not yet in the database; rerun to resume (finished units are never redone)."""
    from ttc_graph.eval.store import ResultStore
    from ttc_graph.study.config import load_study
    from ttc_graph.study.runner import plan_units, pool_sizes, run_study, study_problems

    try:
        gguf = check_gguf(gguf, base_url)  # hf:REPO/FILE fetched from the hub
        check_ray(ray, replicas)
        deadline = stop_instant(stop_by)
        config = load_study(config_path)
        problems = study_problems(config)[:questions]
        store = ResultStore(_db_of(config_path, db))
        units = plan_units(problems, config, store.done(config.name), pool_sizes(store, config.name))
    except TTCError as exc:
        raise fail(exc) from exc
    units = units[:max_units]
    console.print(
        f"study [bold]{config.name}[/] in {store.path}: {len(units)} unit(s) to run in this call;"
        f" templates {', '.join(config.templates)}; budgets {list(config.budgets)}"
    )
    if not units:
        return
    runtime = runtime_of(ctx)
    source: Any = runtime.endpoint(base_url, model, gguf, parallel, threads, slot_context * parallel)
    if ray is not None:
        source = runtime.ray(
            ray, replicas, config.concurrency, base_url=base_url, model=model, gguf=gguf, parallel=parallel,
            threads=threads, ctx_size=slot_context * parallel,
        )  # fmt: skip
    try:
        with (
            drain_on_signal() as stop,
            source as endpoint,
            ProgressBar("study", len(units)) as bar,
        ):
            runner, policy = split_runner(endpoint)
            report = asyncio.run(
                run_study(
                    policy, config, store, problems=problems, progress=bar.unit, limit=max_units, runner=runner,
                    stop=stop, deadline=deadline,
                )
            )  # fmt: skip
    except TTCError as exc:
        raise fail(exc) from exc
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted:[/] {len(store.done(config.name))} result rows kept; rerun to resume")
        raise typer.Exit(130) from None
    console.print(
        f"this call: {report.finished} unit(s) finished, {report.failed} failed, {report.skipped} already done; "
        f"{report.generations} generations, {report.tokens} tokens in {report.seconds:.0f}s"
    )
    print_not_started(report.not_started, stop_by, stop.is_set())
    store.close()
    exit_on_failures(report.failures, report.failed)


@study_app.command("report")
def report_command(
    config_path: _ConfigArgument,
    db: _DbOption = None,
    out: Annotated[Path | None, typer.Option(help="Folder of the report (default: beside CONFIG).")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples over questions.")] = 10_000,
    figures: Annotated[bool, typer.Option(help="Also draw the figures (PNG).")] = True,
) -> None:
    """Tables, figures and fitted policy tables from the study's database alone (no model call)."""
    from ttc_graph.eval.store import ResultStore
    from ttc_graph.study.config import load_study
    from ttc_graph.study.render import write_report
    from ttc_graph.study.report import analyze, load_study_data

    try:
        config = load_study(config_path)
        with ResultStore(_stored_db(config_path, db)) as store:
            data = load_study_data(store, config)
        try:
            analysis = analyze(data, resamples=resamples)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        paths = write_report(analysis, config, out or config_path.parent, figures=figures)
    except TTCError as exc:
        raise fail(exc) from exc
    console.print(f"{analysis.questions} complete questions; wrote {', '.join(str(p) for p in paths)}")


@study_app.command("rescore")
def rescore_command(
    ctx: typer.Context,
    config_path: Annotated[
        Path, typer.Argument(help="Study config (YAML) with a `rescore` verifier.", metavar="CONFIG")
    ],
    db: _DbOption = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    gguf: Annotated[Path | None, typer.Option(help="A GGUF file to serve locally with llama.cpp.")] = None,
    parallel: ParallelOption = 8,
    threads: ThreadsOption = None,
    max_questions: Annotated[int | None, typer.Option(min=1, help="Stop after this many questions (a chunk).")] = None,
) -> None:
    """Sample and store the rescore verifier's programs for every pool question that has none yet (resumable)."""
    from ttc_graph.eval.store import ResultStore
    from ttc_graph.study.config import load_study
    from ttc_graph.study.rescore import rescore_study
    from ttc_graph.study.runner import study_problems

    try:
        gguf = check_gguf(gguf, base_url)
        config = load_study(config_path)
        if config.rescore is None:
            raise ConfigurationError(f"rescore: {config_path} names no rescore verifier (`rescore: {{kind: program}}`)")
        problems = study_problems(config)
        store = ResultStore(_stored_db(config_path, db))
        runtime = runtime_of(ctx)
        source: Any = runtime.endpoint(base_url, model, gguf, parallel, threads, 1024 * parallel)
        with sigterm_as_interrupt(), source as endpoint:
            _, policy = split_runner(endpoint)
            report = asyncio.run(rescore_study(policy, config, store, problems, limit=max_questions))
    except TTCError as exc:
        raise fail(exc) from exc
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] the questions stored so far are kept; rerun to resume")
        raise typer.Exit(130) from None
    store.close()
    console.print(
        f"rescore: {report.stored} question(s) stored, {report.failed} failed, {report.skipped} already stored;"
        f" {report.tokens} completion tokens"
    )
    exit_on_failures(report.failures, report.failed)


@study_app.command("status")
def status_command(
    config_path: _ConfigArgument,
    db: _DbOption = None,
    until: Annotated[
        int | None, typer.Option(min=1, help="Also price what is left before the first UNTIL questions are complete.")
    ] = None,
) -> None:
    """Questions and units done, tokens spent, and the rest's cost at the recent rate (no model call)."""
    from ttc_graph.eval.store import ResultStore
    from ttc_graph.study.config import load_study
    from ttc_graph.study.runner import study_problems
    from ttc_graph.study.status import study_status

    try:
        config = load_study(config_path)
        with ResultStore(_stored_db(config_path, db)) as store:
            status = study_status(config, store, study_problems(config), until=until)
    except TTCError as exc:
        raise fail(exc) from exc
    s = status
    console.print(
        f"study [bold]{config.name}[/]: {s.complete} of {s.questions} questions complete;"
        f" {s.units_done} of {s.units} units; {s.tokens:,} completion tokens so far"
    )
    rate = "unknown" if s.rate is None else f"{s.rate:.1f} tokens/s"
    rest = "unknown" if s.remaining_tokens is None else f"about {s.remaining_tokens:,.0f} tokens"
    eta = s.eta_seconds
    when = "" if eta is None else f", about {eta / 3600:.1f} h at that rate"
    console.print(f"left: {rest}; recent rate {rate}{when}")
    if s.until is not None:
        part = "unknown" if s.until_tokens is None else f"about {s.until_tokens:,.0f} tokens"
        eta = s.until_eta_seconds
        when = "" if eta is None else f", about {eta / 3600:.1f} h at that rate"
        console.print(f"left before the first {s.until} questions are complete: {part}{when}")
