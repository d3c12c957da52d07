"""``ttc eval``, ``ttc replay`` and ``ttc plot``: sweeps over data sets, best-of-N from stored samples, curves."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ttc_graph._files import existing_file
from ttc_graph.cli.common import (
    DEFAULT_DB,
    DEFAULT_LIMIT,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SELECTION,
    DEFAULT_TEMPERATURE,
    DEFAULT_VERIFIER,
    check_gguf,
    check_ray,
    console,
    drain_on_signal,
    fail,
    print_curves,
    print_not_started,
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
from ttc_graph.verifiers.registry import VERIFIER_NAMES

__all__ = ["eval_command", "plot_command", "replay_command"]

_VERIFIERS = ", ".join(VERIFIER_NAMES)


def _run_eval_sweep(
    config: Any,
    problems: Any,
    store: Any,
    todo: int,
    endpoint: Any,
    stop_by: str | None = None,
    deadline: float | None = None,
) -> Any:
    """Run the pending units under a progress bar (starting none past ``stop_by``); None when nothing was pending."""
    from ttc_graph.eval import run_sweep

    if not todo:
        return None
    try:
        with (
            drain_on_signal() as stop,
            endpoint as source,
            ProgressBar("sweep", todo) as bar,
        ):
            runner, policy = split_runner(source)
            report = asyncio.run(
                run_sweep(
                    policy, problems, config, store, progress=bar.unit, runner=runner, stop=stop,
                    deadline=deadline,
                )
            )  # fmt: skip
        print_not_started(report.not_started, stop_by, stop.is_set())
        return report
    except TTCError as exc:
        raise fail(exc) from exc
    except KeyboardInterrupt:
        rows = len(store.done(config.run))
        console.print(f"[yellow]interrupted:[/] run {config.run!r} keeps its {rows} result rows; rerun to resume")
        raise typer.Exit(130) from None


def eval_command(
    ctx: typer.Context,
    run: Annotated[str, typer.Option(help="Run name: rerunning the same name resumes it.")],
    dataset: Annotated[str, typer.Option(help="gsm8k, math500 or jsonl (with --path and the field names).")] = "gsm8k",
    path: Annotated[Path | None, typer.Option(help="Data file (default: the shared data folder).")] = None,
    question_field: Annotated[str | None, typer.Option(help="Question field of a jsonl data set.")] = None,
    answer_field: Annotated[str | None, typer.Option(help="Answer field of a jsonl data set.")] = None,
    limit: Annotated[int, typer.Option(help="Questions to evaluate.")] = DEFAULT_LIMIT,
    offset: Annotated[int, typer.Option(help="Lines of the data file to skip first.")] = 0,
    strategy: Annotated[
        list[str] | None,
        typer.Option(help="family:option[:verifier], repeatable, e.g. best_of_n:majority, best_of_n:weighted."),
    ] = None,
    budgets: Annotated[str, typer.Option(help="Generation budgets, comma separated.")] = "1,2,4",
    verifier: Annotated[
        str,
        typer.Option(help=f"Verifier of weighted/naive selection when a strategy names none: {_VERIFIERS}."),
    ] = DEFAULT_VERIFIER,
    db: Annotated[Path, typer.Option(help="SQLite results file (created if missing).")] = DEFAULT_DB,
    max_tokens: Annotated[int, typer.Option(help="Max tokens per sample.")] = DEFAULT_MAX_TOKENS,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = DEFAULT_TEMPERATURE,
    seed: Annotated[int | None, typer.Option(help="Base seed for reproducible sampling.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Questions in flight at once.")] = 2,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    gguf: GgufOption = None,
    parallel: ParallelOption = 4,
    threads: ThreadsOption = None,
    plot: Annotated[Path | None, typer.Option(help="Also write the curves to this PNG (and SVG).")] = None,
    stop_by: StopByOption = None,
    ray: RayOption = None,
    replicas: ReplicasOption = None,
) -> None:
    """Sweep strategies × budgets over a data set; every finished question is stored at once (resumable)."""
    import warnings

    from ttc_graph.eval import ResultStore, SweepConfig, load_dataset, pending, summarize

    try:
        gguf = check_gguf(gguf, base_url)  # hf:REPO/FILE fetched from the hub
        check_ray(ray, replicas)
        deadline = stop_instant(stop_by)  # a bad TIME fails before any model starts
        name = gguf.name if gguf else (model or os.environ.get("TTC_MODEL") or (None if base_url else "default"))
        config = SweepConfig.make(
            run, dataset, strategy or [f"best_of_n:{DEFAULT_SELECTION}"], budgets, default_verifier=verifier,
            max_tokens=max_tokens, temperature=temperature, seed=seed, concurrency=concurrency, model=name,
        )  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            problems = load_dataset(
                dataset, path=path, limit=limit, offset=offset, question_field=question_field, answer_field=answer_field
            )
        for w in caught:
            console.print(f"[yellow]warning:[/] {w.message}")
        if not problems:
            raise ConfigurationError("dataset: the slice holds no questions")
        store = ResultStore(db)
        store.check_run(config.run, config.sampling())
        todo, finished = pending(problems, config, store)
    except TTCError as exc:
        raise fail(exc) from exc
    console.print(
        f"run [bold]{config.run}[/] in {db}: {len(problems)} questions, strategies "
        f"{', '.join(s.name for s in config.strategies)}, budgets {list(config.budgets)}; "
        f"{finished} unit(s) already finished, {todo} to run"
    )
    runtime = runtime_of(ctx)
    source: Any = runtime.endpoint(base_url, model, gguf, parallel, threads)
    if ray is not None:
        source = runtime.ray(
            ray, replicas, concurrency, base_url=base_url, model=model, gguf=gguf, parallel=parallel, threads=threads
        )
    report = _run_eval_sweep(config, problems, store, todo, source, stop_by, deadline)
    ids = {p.id for p in problems}
    names = {s.name for s in config.strategies}
    rows = [r for r in store.rows(config.run) if r.question_id in ids and r.strategy in names]
    rows = [r for r in rows if r.budget in config.budgets]
    print_curves(summarize(rows), f"run {config.run} (accuracy with Wilson 95% intervals)")
    if report is not None:
        console.print(
            f"this call: {report.finished_units} unit(s) run, {report.skipped_units} skipped as finished, "
            f"{report.failed_units} failed; {report.generations} generations in {report.requests} policy requests; "
            f"{report.rows_written} rows written in {report.seconds:.0f}s"
        )
        for failure in report.failures[:5]:
            console.print(f"[yellow]failed:[/] {failure}")
    else:
        console.print("this call: nothing to run, every unit was already finished (0 generations)")
    console.print(f"{db}: run {config.run!r} holds {len(store.done(config.run))} result rows")
    if plot is not None:
        from ttc_graph.eval.plots import plot_curves

        paths = plot_curves(summarize(rows), plot, title=f"{dataset} · run {config.run} · {name}")
        console.print(f"plot: {', '.join(map(str, paths))}")
    store.close()
    if report is not None and report.failed_units:
        raise typer.Exit(1)


def replay_command(
    pool: Annotated[Path, typer.Argument(help="A pool .jsonl, or a sweep's SQLite file (with --run).")],
    budgets: Annotated[str, typer.Option(help="Budgets b <= N, comma separated.")] = "1,2,4,8",
    trials: Annotated[int, typer.Option(help="Random subsets per question and budget.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the subsampling and the bootstrap.")] = 0,
    ci: Annotated[str, typer.Option(help="bootstrap (over questions) or normal (across questions).")] = "bootstrap",
    methods: Annotated[str, typer.Option(help="naive, weighted, majority, oracle (pass@b).")] = (
        "naive,weighted,majority,oracle"
    ),
    score: Annotated[str, typer.Option(help="Pool files: exp(mean_lp) or exp(min_lp) as the score.")] = "mean_lp",
    run: Annotated[str | None, typer.Option(help="Run name when POOL is a sweep's SQLite file.")] = None,
    verifier: Annotated[str, typer.Option(help="Which stored scores of a sweep pool to use.")] = DEFAULT_VERIFIER,
    compare: Annotated[
        str | None, typer.Option(help="Two methods, e.g. weighted,majority: their paired difference per budget.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the curves to this PNG (and SVG).")] = None,
) -> None:
    """Best-of-N accuracy at every budget from stored samples, by subsampling (no model calls)."""
    from ttc_graph.eval import ResultStore, load_pool, parse_budgets, pool_from_samples, replay
    from ttc_graph.eval.replay import paired_difference

    try:
        if pool.suffix in (".sqlite", ".db", ".sqlite3"):
            if not run:
                raise ConfigurationError("replay: a SQLite pool needs --run")
            existing_file(pool, "replay")
            with ResultStore(pool) as store:
                questions = pool_from_samples(store.pools(run), verifier)
        else:
            questions = load_pool(pool, score=score)  # type: ignore[arg-type]
        wanted = parse_budgets(budgets)
        chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
        pair = tuple(m.strip() for m in (compare or "").split(",") if m.strip())
        if compare is not None and len(pair) != 2:
            raise ConfigurationError("--compare: give two methods, e.g. weighted,majority")
        total = len(wanted) * len(questions)
        with ProgressBar("subsampling", total, transient=True) as bar:
            result = replay(
                questions, wanted, methods=chosen, trials=trials, seed=seed, ci=ci,  # type: ignore[arg-type]
                progress=lambda done, _: bar.update(completed=done),
            )  # fmt: skip
    except TTCError as exc:
        raise fail(exc) from exc
    sizes = sorted({q.n for q in questions})
    table = Table(title=f"{pool.name}: {len(questions)} questions, N={'/'.join(map(str, sizes))} samples each")
    for col in ("budget", "method", "accuracy", f"95% {ci} interval", "exact", "tokens/q"):
        table.add_column(col)
    for e in sorted(result.estimates, key=lambda e: (e.budget, chosen.index(e.method))):
        exact = "-" if e.exact is None else f"{e.exact:.3f}"
        tokens = "-" if e.tokens is None else f"{e.tokens:.0f}"
        table.add_row(str(e.budget), e.method, f"{e.accuracy:.3f}", f"[{e.low:.3f}, {e.high:.3f}]", exact, tokens)
    console.print(table)
    console.print(f"{trials} subsets per question and budget, seed {seed}; no model calls")
    for b in wanted if pair else ():
        diff, low, high = paired_difference(questions, b, pair[0], pair[1], seed=seed)  # type: ignore[arg-type]
        interval = f"[{low:+.3f}, {high:+.3f}]"
        console.print(f"b={b}: {pair[0]} - {pair[1]} = {diff:+.3f} (exact), paired bootstrap 95% {interval}")
    if plot is not None:
        from ttc_graph.eval.plots import plot_replay

        paths = plot_replay(result, plot, title=f"best-of-N replay: {pool.name}")
        console.print(f"plot: {', '.join(map(str, paths))}")


def plot_command(
    run: Annotated[str, typer.Option(help="Run name in the SQLite file.")],
    db: Annotated[Path, typer.Option(help="SQLite results file.")] = DEFAULT_DB,
    out: Annotated[Path, typer.Option(help="Output PNG (an SVG is written beside it).")] = Path("results/curves.png"),
    title: Annotated[str | None, typer.Option(help="Figure title.")] = None,
) -> None:
    """Plot a run's accuracy vs budget (log2 axis) and accuracy vs tokens per strategy, as PNG and SVG."""
    from ttc_graph.eval import ResultStore, summarize

    try:
        existing_file(db, "plot")
        with console.status("plotting..."), ResultStore(db) as store:
            rows = store.rows(run)
            if not rows:
                known = ", ".join(store.runs()) or "none"
                raise ConfigurationError(f"plot: run {run!r} has no results in {db} (runs: {known})")
            from ttc_graph.eval.plots import plot_curves

            curves = summarize(rows)
            paths = plot_curves(curves, out, title=title or f"run {run} ({rows[0].dataset})")
    except TTCError as exc:
        raise fail(exc) from exc
    print_curves(curves, f"run {run}")
    console.print(f"plot: {', '.join(map(str, paths))}")
