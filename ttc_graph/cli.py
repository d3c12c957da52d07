"""The ``ttc`` command line: solve a question, run specs, evaluate, manage the embedded local model.

One name and one default per concept across commands (``--run``, ``--db``, ``--max-tokens``, ``--temperature``,
``--selection``, ``--verifier``, ``--limit``). Exit codes: 0 success, 1 the command ran but requests failed so an
answer (or a unit) is missing, 2 invalid input or setup, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ttc_graph.budget import COUNTERS, Budget
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.errors import ConfigurationError, TTCError
from ttc_graph.eval.sweep import VERIFIERS
from ttc_graph.scale.cli_support import POSTGRES_HELP, RAY_HELP, REPLICAS_HELP
from ttc_graph.selection import SELECTIONS
from ttc_graph.strategies import create_best_of_n
from ttc_graph.verifiers import ConfidenceVerifier, LLMJudgeVerifier, Verifier

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_LIMIT",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_SELECTION",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_VERIFIER",
    "app",
    "make_verifier",
]

# One default per concept, shared by every command that has the option.
DEFAULT_MAX_TOKENS = 400
DEFAULT_TEMPERATURE = 0.8
DEFAULT_SELECTION = "majority"
DEFAULT_VERIFIER = "confidence"
DEFAULT_DB = Path("results/eval.sqlite")
DEFAULT_LIMIT = 20

app = typer.Typer(help="Spend test-time compute for better answers: best-of-N, search and revisions on LangGraph.")
models_app = typer.Typer(help="The embedded local model (llama.cpp server on 127.0.0.1).")
spec_app = typer.Typer(help="Strategy specs: validate them and print their JSON Schema.")
app.add_typer(models_app, name="models")
app.add_typer(spec_app, name="spec")
console = Console()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ttc-graph")
    except PackageNotFoundError:  # a source tree that is not installed
        from ttc_graph import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ttc {_version()}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Spend test-time compute for better answers: best-of-N, search and revisions on LangGraph."""


def make_verifier(name: str, policy: Endpoint) -> Verifier | None:
    """The verifier a CLI name stands for (the names of ``ttc eval``); ``none`` is None."""
    if name not in VERIFIERS:
        raise ConfigurationError(f"verifier: unknown {name!r}; use one of {', '.join(VERIFIERS)}")
    if name == "confidence":
        return ConfidenceVerifier("mean")
    if name == "confidence-group":
        return ConfidenceVerifier("group")
    if name == "judge":
        return LLMJudgeVerifier(policy, mode="outcome")
    return None


def _check_solve_options(selection: str, verifier: str) -> None:
    """Fail on bad --selection / --verifier before any model starts."""
    if selection not in SELECTIONS:
        raise ConfigurationError(f"selection: unknown {selection!r}; use one of {', '.join(SELECTIONS)}")
    if verifier not in VERIFIERS:
        raise ConfigurationError(f"verifier: unknown {verifier!r}; use one of {', '.join(VERIFIERS)}")
    if selection != "majority" and verifier == "none":
        raise ConfigurationError(f"verifier: --selection {selection} needs a verifier; use --verifier confidence")


def _failure(out: dict[str, Any]) -> str | None:
    """Why a run produced no answer when the cause is a failure (requests or the run), else None."""
    if out.get("answer") is not None:
        return None
    failed = int((out.get("usage") or {}).get("failed_requests", 0) or 0)
    if failed:
        return f"{failed} request(s) failed"
    return "the run stopped on an error" if out.get("stop_reason") == "error" else None


def _exit_if_no_answer(out: dict[str, Any]) -> None:
    """Exit 1 when requests failed and no answer could be produced (unparsable samples alone exit 0)."""
    if reason := _failure(out):
        first = next(iter(out.get("errors") or []), "no detail")
        console.print(f"[red]error:[/] no answer: {reason}; first error: {first}")
        raise typer.Exit(1)


@contextlib.contextmanager
def policy_endpoint(base_url: str | None, model: str | None, parallel: int) -> Iterator[Endpoint]:
    """An endpoint from ``--base-url``/``TTC_BASE_URL``, else the embedded local model for the duration."""
    url = base_url or os.environ.get("TTC_BASE_URL")
    if url:
        yield OpenAIEndpoint(url, model or os.environ.get("TTC_MODEL"), os.environ.get("TTC_API_KEY"))
        return
    from ttc_graph.local import LocalModelServer, find_llama_server

    with console.status("Preparing llama-server (the first build takes 6-10 minutes)...") as status:
        find_llama_server(progress=lambda line: status.update(f"Building llama-server: {line[:80]}"))
    with console.status("Starting the embedded local model on 127.0.0.1..."):
        server = LocalModelServer(model, parallel=parallel)
        server.start()
    console.print(f"[dim]local model {server.model_name} at {server.base_url} (ready in {server.started_in:.1f}s)[/]")
    try:
        yield server.endpoint()
    finally:
        server.stop()


async def run_with_progress(graph: Any, question: str, total: int) -> dict[str, Any]:
    """Run ``graph`` streaming its custom progress events into a progress bar."""
    final: dict[str, Any] = {}
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("sampling", total=total)
        stream = graph.astream({"question": question}, stream_mode=["custom", "values"], subgraphs=True)
        async for namespace, mode, chunk in stream:  # subgraphs: a routed strategy's rounds show too
            if mode == "custom" and isinstance(chunk, dict) and chunk.get("event") == "ttc.round":
                done = chunk.get("drawn", chunk.get("finished", 0))
                progress.update(task, completed=done, description=f"round {chunk.get('round', 0) + 1}")
            elif mode == "values" and not namespace:
                final = chunk
        progress.update(task, completed=(final.get("usage") or {}).get("generations", 0))
    return final


def print_result(out: dict[str, Any]) -> None:
    table = Table(title="candidates", show_lines=False)
    for col in ("#", "answer", "score", "tokens", "solution (start)"):
        table.add_column(col)
    for i, c in enumerate(out.get("candidates", [])):
        score = "-" if c.get("score") is None else f"{c['score']:.3f}"
        snippet = " ".join(c["text"].split())[:70]
        table.add_row(str(i), str(c.get("answer")), score, str(c.get("tokens")), snippet)
    console.print(table)
    usage = out.get("usage", {})
    ledger = Table(title="usage")
    for col in ("kind", "generations", "requests", "prompt tokens", "completion tokens", "failed"):
        ledger.add_column(col)
    rows = [*usage.get("by_kind", {}).items(), ("total", usage)]
    for kind, u in rows:
        ledger.add_row(kind, *(str(u.get(k, 0)) for k in COUNTERS))
    console.print(ledger)
    console.print(f"wall time {usage.get('seconds', 0):.1f}s, stop reason: {out.get('stop_reason')}")
    for err in out.get("errors", [])[:5]:
        console.print(f"[yellow]warning:[/] {err}")
    console.print(f"[bold green]answer:[/] {out.get('answer')}")


def _print_output(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps({k: v for k, v in out.items() if k != "messages"}, default=str))
    else:
        print_result(out)


@app.command()
def solve(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    n: Annotated[int, typer.Option("--n", "-n", help="Samples (generations) to draw.")] = 4,
    selection: Annotated[str, typer.Option(help=f"One of {', '.join(SELECTIONS)}.")] = DEFAULT_SELECTION,
    verifier: Annotated[
        str, typer.Option(help=f"Verifier of weighted/naive selection: {', '.join(VERIFIERS)} (majority uses none).")
    ] = DEFAULT_VERIFIER,
    budget: Annotated[int | None, typer.Option(help="Generation budget (defaults to n).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Max tokens per sample.")] = DEFAULT_MAX_TOKENS,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = DEFAULT_TEMPERATURE,
    seed: Annotated[int | None, typer.Option(help="Base seed for reproducible sampling.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible URL (or TTC_BASE_URL).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name at --base-url, or a GGUF path locally.")] = None,
    gguf: Annotated[Path | None, typer.Option(help="A GGUF file to serve locally with llama.cpp.")] = None,
    parallel: Annotated[int, typer.Option(help="Parallel slots of the local server.")] = 4,
    threads: Annotated[int | None, typer.Option(help="llama.cpp threads with --gguf (default: all cores).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the output state as JSON.")] = False,
) -> None:
    """Answer QUESTION with a best-of-N strategy on an endpoint or the embedded local model.

    Exits 1 when requests failed and no answer could be produced, 2 on invalid options.
    """
    try:
        _check_solve_options(selection, verifier)
        _check_gguf(gguf, base_url)
        with _eval_endpoint(base_url, model, gguf, parallel, threads) as policy:
            graph = create_best_of_n(
                policy,
                make_verifier(verifier, policy) if selection != "majority" else None,
                n=n,
                selection=selection,  # type: ignore[arg-type]
                budget=Budget(generations=budget) if budget else None,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
            ).compile()
            out = asyncio.run(run_with_progress(graph, question, n))
    except TTCError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    _print_output(out, as_json)
    _exit_if_no_answer(out)


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="A strategy spec (YAML).")],
    question: Annotated[str | None, typer.Argument(help="The question to answer (or use --dataset).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Run over a data set instead: gsm8k or math500.")] = None,
    limit: Annotated[int, typer.Option(help="Questions of the data set to run.")] = DEFAULT_LIMIT,
    db: Annotated[Path, typer.Option(help="SQLite results file for data-set runs (resumable).")] = DEFAULT_DB,
    run_name: Annotated[str | None, typer.Option("--run", help="Run name in the SQLite file (default: spec name).")] = (
        None
    ),
    run_name_alias: Annotated[str | None, typer.Option("--run-name", hidden=True)] = None,
    concurrency: Annotated[int, typer.Option(help="Questions in flight at once.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the output state as JSON.")] = False,
    postgres: Annotated[str | None, typer.Option(metavar="URL", help=POSTGRES_HELP)] = None,
    thread: Annotated[str | None, typer.Option(help="Thread of a --postgres run (default: spec + question).")] = None,
    ray: Annotated[str | None, typer.Option(metavar="ADDRESS", help=f"With --dataset: {RAY_HELP}")] = None,
    replicas: Annotated[
        int | None, typer.Option(help="With --ray: K actors, each owning the spec's policy (its URL or model).")
    ] = None,
) -> None:
    """Answer QUESTION, or every question of --dataset, with the strategy a SPEC file describes.

    The spec is validated before any model call; a data-set run saves each question as it finishes and skips
    finished ones when run again. Exits 1 when requests failed and left a question without an answer.
    """
    from ttc_graph.local.lazy import stop_shared_servers
    from ttc_graph.specs import build_graph, load_spec

    if (question is None) == (dataset is None):
        console.print("[red]error:[/] give either QUESTION or --dataset")
        raise typer.Exit(2)
    if (postgres is not None or thread is not None) and question is None:
        console.print("[red]error:[/] --postgres and --thread checkpoint one QUESTION's run, not a --dataset")
        raise typer.Exit(2)
    if (ray is not None or replicas is not None) and dataset is None:
        console.print("[red]error:[/] --ray and --replicas run a --dataset's questions, not one QUESTION")
        raise typer.Exit(2)
    try:
        _check_ray(ray, replicas)
        strategy = load_spec(spec)
        graph = build_graph(strategy).compile()
        total = getattr(strategy, "n", 1)
        if dataset is not None:
            on_ray = None if ray is None else (ray, replicas)
            run_dataset(graph, strategy, spec, dataset, limit, db, run_name or run_name_alias, concurrency, on_ray)
            return
        assert question is not None
        if postgres is not None:
            out = _run_durable(strategy, question, postgres, thread)
        else:
            with console.status(f"{strategy.kind} from {spec.name}..."):
                out = asyncio.run(run_with_progress(graph, question, total))
    except TTCError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    finally:
        stop_shared_servers()
    _print_output(out, as_json)
    _exit_if_no_answer(out)


def _run_durable(strategy: Any, question: str, url: str, thread: str | None) -> dict[str, Any]:
    """``ttc run --postgres``: a run checkpointed round by round, resumed if its thread is unfinished."""
    from ttc_graph.scale.durable import default_thread, solve_durable

    thread_id = thread or default_thread(strategy.model_dump_json(), question)
    console.print(f"[dim]durable run: thread {thread_id}; rerun the same command to resume it[/]")
    with console.status(f"{strategy.kind} (checkpointed in Postgres)..."):
        out: dict[str, Any] = asyncio.run(solve_durable(strategy, question, url, thread_id))
    return out


def run_dataset(
    graph: Any,
    strategy: Any,
    spec: Path,
    dataset: str,
    limit: int,
    db: Path,
    run_name: str | None,
    concurrency: int,
    on_ray: tuple[str, int | None] | None = None,
) -> None:
    """``ttc run SPEC --dataset``: answer, grade and save every question, with a progress bar; ``on_ray``
    (address, replicas) runs the questions on Ray while this process writes the results."""
    from ttc_graph.eval.datasets import load_dataset
    from ttc_graph.eval.spec_runs import run_graph_over_dataset
    from ttc_graph.eval.store import ResultStore

    problems = load_dataset(dataset, limit=limit)
    name = strategy.name or spec.stem
    budget = int(getattr(strategy, "n", 0) or getattr(strategy, "generations", 0) or 0)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(ResultStore(db))
        units = None
        done_before = {q for s, b, q in store.done(run_name or name) if s == name and b == budget}
        if on_ray is not None and any(p.id not in done_before for p in problems):
            from ttc_graph.eval.spec_units import replica_of
            from ttc_graph.scale.cli_support import ray_units

            units = stack.enter_context(ray_units(console, *on_ray, replica_of(strategy), concurrency))
        progress = stack.enter_context(Progress(*columns, TimeElapsedColumn(), console=console))
        task = progress.add_task(name, total=len(problems))
        progress.update(task, completed=sum(p.id in done_before for p in problems))
        options: dict[str, Any] = {
            "strategy": name, "budget": budget, "problems": problems, "dataset": dataset, "store": store,
            "run": run_name or name, "on_done": lambda _row: progress.advance(task),
        }  # fmt: skip
        if units is not None:
            from ttc_graph.eval.spec_units import run_spec_on

            rows = asyncio.run(run_spec_on(units, strategy, **options))
        else:
            rows = asyncio.run(run_graph_over_dataset(graph, concurrency=concurrency, **options))
    correct = sum(r.correct for r in rows)
    console.print(
        f"{name} on {dataset}: {correct}/{len(rows)} correct ({correct / max(1, len(rows)):.1%}), "
        f"mean generations {sum(r.generations for r in rows) / max(1, len(rows)):.1f}; saved in {db}"
    )
    failed = [r for r in rows if r.answer is None and r.stop_reason == "error"]  # what _failure sees in a row
    if failed:
        ids = ", ".join(r.question_id for r in failed[:5]) + (" ..." if len(failed) > 5 else "")
        console.print(f"[red]error:[/] {len(failed)} question(s) got no answer because requests failed: {ids}")
        raise typer.Exit(1)


@spec_app.command("validate")
def spec_validate(specs: Annotated[list[Path], typer.Argument(help="Spec files to check.")]) -> None:
    """Validate spec files; each problem is reported with its field path."""
    from ttc_graph.specs import load_spec

    failed = False
    for path in specs:
        try:
            strategy = load_spec(path)
        except TTCError as exc:
            failed = True
            console.print(f"[red]invalid[/] {exc}")
        else:
            console.print(f"[green]ok[/] {path}: {strategy.kind}")
    if failed:
        raise typer.Exit(1)


@spec_app.command("schema")
def spec_schema() -> None:
    """Print the JSON Schema of a strategy spec."""
    from ttc_graph.specs import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))


@models_app.command("list")
def models_list() -> None:
    """List the GGUF models ttc_graph can serve locally."""
    from ttc_graph.local import list_models

    table = Table()
    for col in ("name", "size", "source", "path"):
        table.add_column(col)
    for m in list_models():
        table.add_row(m.name, f"{m.size_bytes / 1e6:.0f} MB", m.source, str(m.path))
    console.print(table)


@models_app.command("build")
def models_build() -> None:
    """Find llama-server, or build it from pinned llama.cpp sources into the cache (6-10 min on 2 cores)."""
    from ttc_graph.local import find_llama_server

    try:
        with console.status("Looking for llama-server...") as status:
            path = find_llama_server(progress=lambda line: status.update(f"Building llama-server: {line[:90]}"))
    except TTCError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"llama-server: {path}")


@models_app.command("serve")
def models_serve(
    model: Annotated[Path | None, typer.Option(help="A GGUF file (default: the bundled SmolLM2-135M).")] = None,
    parallel: Annotated[int, typer.Option(help="Parallel slots (-np).")] = 4,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
) -> None:
    """Start the local llama.cpp server and keep it running until Ctrl-C."""
    import time

    from ttc_graph.local import LocalModelServer

    try:
        with LocalModelServer(model, parallel=parallel, port=port) as server:
            console.print(f"serving {server.model_name} at [bold]{server.base_url}[/] (log: {server.log_path})")
            console.print("Ctrl-C to stop.")
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopped")
    except TTCError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


# -- evaluation: eval, replay, plot ---------------------------------------------------------------------------


def _fail(exc: TTCError) -> typer.Exit:
    console.print(f"[red]error:[/] {exc}")
    return typer.Exit(2)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so a killed run still stops the local server and keeps its results."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _eval_progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _print_curves(curves: list[Any], title: str) -> None:
    table = Table(title=title)
    for col in ("strategy", "budget", "questions", "accuracy", "95% interval", "gens/q", "tokens/q", "seconds/q"):
        table.add_column(col)
    for c in curves:
        table.add_row(
            c.strategy, str(c.budget), str(c.questions), f"{c.accuracy:.3f} ({c.correct}/{c.questions})",
            f"[{c.low:.3f}, {c.high:.3f}]", f"{c.generations:.1f}", f"{c.tokens:.0f}", f"{c.seconds:.1f}",
        )  # fmt: skip
    console.print(table)


def _check_ray(ray: str | None, replicas: int | None) -> None:
    if ray is not None or replicas is not None:
        from ttc_graph.scale.cli_support import check_ray_options

        check_ray_options(ray, replicas)


def _ray_source(
    ray: str,
    replicas: int | None,
    concurrency: int,
    base_url: str | None,
    model: str | None,
    gguf: Path | None,
    parallel: int,
    threads: int | None,
    ctx_size: int | None = None,
) -> Any:
    """The Ray runner as a context manager, in place of the endpoint (``split_runner`` tells them apart)."""
    from ttc_graph.scale.cli_support import ray_source

    return ray_source(
        console, ray, replicas, concurrency, base_url=base_url, model=model, gguf=gguf, parallel=parallel,
        threads=threads, ctx_size=ctx_size,
    )  # fmt: skip


def _check_gguf(gguf: Path | None, base_url: str | None) -> None:
    if gguf is not None and (base_url or os.environ.get("TTC_BASE_URL")):
        raise ConfigurationError("give either --gguf or --base-url / TTC_BASE_URL, not both")
    if gguf is not None and not gguf.is_file():
        raise ConfigurationError(f"--gguf: {gguf} is not a file")


@contextlib.contextmanager
def _eval_endpoint(
    base_url: str | None,
    model: str | None,
    gguf: Path | None,
    parallel: int,
    threads: int | None,
    ctx_size: int | None = None,
) -> Iterator[Endpoint]:
    """``policy_endpoint``, except that ``--gguf`` starts that file locally with ``threads`` llama.cpp threads."""
    if gguf is None:
        with policy_endpoint(base_url, model, parallel) as endpoint:
            yield endpoint
        return
    from ttc_graph.local import LocalModelServer, find_llama_server

    with console.status("Preparing llama-server (the first build takes 6-10 minutes)...") as status:
        find_llama_server(progress=lambda line: status.update(f"Building llama-server: {line[:80]}"))
    server = LocalModelServer(gguf, parallel=parallel, threads=threads, ctx_size=ctx_size)
    try:
        with console.status(f"Starting {gguf.name} on 127.0.0.1..."):
            server.start()
        console.print(f"[dim]local model {server.model_name} at {server.base_url} ({server.started_in:.1f}s)[/]")
        yield server.endpoint()
    finally:
        server.stop()


def _run_eval_sweep(config: Any, problems: Any, store: Any, todo: int, endpoint: Any) -> Any:
    """Run the pending units under a progress bar; None when nothing was pending."""
    import time

    from ttc_graph.eval import run_sweep

    if not todo:
        return None
    try:
        with (
            _sigterm_as_interrupt(),
            endpoint as source,
            _eval_progress() as progress,
        ):
            from ttc_graph.scale.cli_support import split_runner

            runner, policy = split_runner(source)
            bar = progress.add_task("sweep", total=todo, info="")
            drawn, started = 0, time.monotonic()

            def on_event(event: Any) -> None:
                nonlocal drawn
                if event.kind in ("done", "failed"):
                    drawn += event.generations
                    progress.update(bar, advance=1, info=f"{drawn} generations; last: {event.label}")
                    if not progress.console.is_terminal:  # logs get one line per finished unit
                        done = int(progress.tasks[0].completed)
                        progress.console.print(
                            f"[{done}/{todo}] {event.kind} {event.label}: +{event.generations} generations"
                            f" ({drawn} in this call, {time.monotonic() - started:.0f}s)"
                        )
                if event.kind == "failed":
                    progress.console.print(f"[yellow]failed:[/] {event.label}: {event.message}")

            return asyncio.run(run_sweep(policy, problems, config, store, progress=on_event, runner=runner))
    except TTCError as exc:
        raise _fail(exc) from exc
    except KeyboardInterrupt:
        rows = len(store.done(config.run))
        console.print(f"[yellow]interrupted:[/] run {config.run!r} keeps its {rows} result rows; rerun to resume")
        raise typer.Exit(130) from None


@app.command("eval")
def eval_command(
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
        typer.Option(help=f"Verifier of weighted/naive selection when a strategy names none: {', '.join(VERIFIERS)}."),
    ] = DEFAULT_VERIFIER,
    db: Annotated[Path, typer.Option(help="SQLite results file (created if missing).")] = DEFAULT_DB,
    max_tokens: Annotated[int, typer.Option(help="Max tokens per sample.")] = DEFAULT_MAX_TOKENS,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = DEFAULT_TEMPERATURE,
    seed: Annotated[int | None, typer.Option(help="Base seed for reproducible sampling.")] = None,
    concurrency: Annotated[int, typer.Option(help="Questions in flight at once.")] = 2,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible URL (or TTC_BASE_URL).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name at --base-url.")] = None,
    gguf: Annotated[Path | None, typer.Option(help="A GGUF file to serve locally with llama.cpp.")] = None,
    parallel: Annotated[int, typer.Option(help="Parallel slots of the local server.")] = 4,
    threads: Annotated[int | None, typer.Option(help="llama.cpp threads with --gguf (default: all cores).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also write the curves to this PNG (and SVG).")] = None,
    ray: Annotated[str | None, typer.Option(metavar="ADDRESS", help=RAY_HELP)] = None,
    replicas: Annotated[int | None, typer.Option(help=REPLICAS_HELP)] = None,
) -> None:
    """Sweep strategies × budgets over a data set; every finished question is stored at once (resumable)."""
    import warnings

    from ttc_graph.eval import ResultStore, SweepConfig, load_dataset, pending, summarize

    try:
        _check_gguf(gguf, base_url)
        _check_ray(ray, replicas)
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
        raise _fail(exc) from exc
    console.print(
        f"run [bold]{config.run}[/] in {db}: {len(problems)} questions, strategies "
        f"{', '.join(s.name for s in config.strategies)}, budgets {list(config.budgets)}; "
        f"{finished} unit(s) already finished, {todo} to run"
    )
    source = _eval_endpoint(base_url, model, gguf, parallel, threads)
    if ray is not None:
        source = _ray_source(ray, replicas, concurrency, base_url, model, gguf, parallel, threads)
    report = _run_eval_sweep(config, problems, store, todo, source)
    ids = {p.id for p in problems}
    names = {s.name for s in config.strategies}
    rows = [r for r in store.rows(config.run) if r.question_id in ids and r.strategy in names]
    rows = [r for r in rows if r.budget in config.budgets]
    _print_curves(summarize(rows), f"run {config.run} (accuracy with Wilson 95% intervals)")
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


@app.command("replay")
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
            if not pool.is_file():
                raise ConfigurationError(f"replay: {pool} does not exist")
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
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("subsampling", total=total)
            result = replay(
                questions, wanted, methods=chosen, trials=trials, seed=seed, ci=ci,  # type: ignore[arg-type]
                progress=lambda done, _: progress.update(task, completed=done),
            )  # fmt: skip
    except TTCError as exc:
        raise _fail(exc) from exc
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


@app.command("plot")
def plot_command(
    run: Annotated[str, typer.Option(help="Run name in the SQLite file.")],
    db: Annotated[Path, typer.Option(help="SQLite results file.")] = DEFAULT_DB,
    out: Annotated[Path, typer.Option(help="Output PNG (an SVG is written beside it).")] = Path("results/curves.png"),
    title: Annotated[str | None, typer.Option(help="Figure title.")] = None,
) -> None:
    """Plot a run's accuracy vs budget (log2 axis) and accuracy vs tokens per strategy, as PNG and SVG."""
    from ttc_graph.eval import ResultStore, summarize

    try:
        if not db.is_file():
            raise ConfigurationError(f"plot: {db} does not exist")
        with console.status("plotting..."), ResultStore(db) as store:
            rows = store.rows(run)
            if not rows:
                known = ", ".join(store.runs()) or "none"
                raise ConfigurationError(f"plot: run {run!r} has no results in {db} (runs: {known})")
            from ttc_graph.eval.plots import plot_curves

            curves = summarize(rows)
            paths = plot_curves(curves, out, title=title or f"run {run} ({rows[0].dataset})")
    except TTCError as exc:
        raise _fail(exc) from exc
    _print_curves(curves, f"run {run}")
    console.print(f"plot: {', '.join(map(str, paths))}")


from ttc_graph.study.cli import study_app  # noqa: E402  (registered last: it reuses this module's helpers)

app.add_typer(study_app, name="study")

from ttc_graph.server.command import serve_command  # noqa: E402  (imports its web stack only when it runs)

app.command("serve")(serve_command)


if __name__ == "__main__":  # pragma: no cover
    app()
