"""``ttc run SPEC``: one question, or every question of a data set, with the strategy a spec file describes."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from ttc_graph.cli.common import (
    DEFAULT_DB,
    DEFAULT_LIMIT,
    check_gguf,
    check_ray,
    console,
    exit_if_no_answer,
    print_output,
)
from ttc_graph.cli.progress import ProgressBar, run_with_progress
from ttc_graph.cli.runtime import POSTGRES_HELP, RAY_HELP, Runtime, runtime_of
from ttc_graph.errors import ConfigurationError, TTCError

__all__ = ["run", "run_dataset", "with_policy"]


def run(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="A strategy spec (YAML).")],
    question: Annotated[str | None, typer.Argument(help="The question to answer (or use --dataset).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Run over a data set instead: gsm8k or math500.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Questions of the data set to run.")] = DEFAULT_LIMIT,
    db: Annotated[Path, typer.Option(help="SQLite results file for data-set runs (resumable).")] = DEFAULT_DB,
    run_name: Annotated[str | None, typer.Option("--run", help="Run name in the SQLite file (default: spec name).")] = (
        None
    ),
    run_name_alias: Annotated[str | None, typer.Option("--run-name", hidden=True)] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Questions in flight at once.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the output state as JSON.")] = False,
    postgres: Annotated[str | None, typer.Option(metavar="URL", help=POSTGRES_HELP)] = None,
    thread: Annotated[str | None, typer.Option(help="Thread of a --postgres run (default: spec + question).")] = None,
    ray: Annotated[str | None, typer.Option(metavar="ADDRESS", help=f"With --dataset: {RAY_HELP}")] = None,
    replicas: Annotated[
        int | None, typer.Option(help="With --ray: K actors, each owning the spec's policy (its URL or model).")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible URL to run the spec's policy on (with --model).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name at --base-url.")] = None,
    gguf: Annotated[Path | None, typer.Option(help="A GGUF file to run the spec's policy on locally.")] = None,
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
        check_ray(ray, replicas)
        strategy = with_policy(load_spec(spec), base_url, model, gguf)
        graph = build_graph(strategy).compile()
        total = getattr(strategy, "n", 1)
        if dataset is not None:
            on_ray = None if ray is None else (ray, replicas)
            options = (limit, db, run_name or run_name_alias, concurrency, on_ray)
            run_dataset(runtime_of(ctx), graph, strategy, spec, dataset, *options)
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
    print_output(out, as_json)
    exit_if_no_answer(out)


def with_policy(strategy: Any, base_url: str | None, model: str | None, gguf: Path | None) -> Any:
    """``strategy`` with its policy replaced by ``--base-url`` / ``--model`` or ``--gguf``, if given (checked
    before any server starts)."""
    from ttc_graph.specs.models import LocalEndpointSpec, OpenAIEndpointSpec

    if gguf is not None and (base_url or model):
        raise ConfigurationError("give either --gguf or --base-url / --model, not both")
    check_gguf(gguf, None)
    if gguf is not None:
        return strategy.model_copy(update={"policy": LocalEndpointSpec(model=str(gguf))})
    if base_url is None and model is None:
        return strategy
    if base_url is None or model is None:
        raise ConfigurationError("--base-url and --model go together: the URL of a server and a model it serves")
    policy = OpenAIEndpointSpec(base_url=base_url, model=model, api_key_env="TTC_API_KEY")
    return strategy.model_copy(update={"policy": policy})


def _run_durable(strategy: Any, question: str, url: str, thread: str | None) -> dict[str, Any]:
    """``ttc run --postgres``: a run checkpointed round by round, resumed if its thread is unfinished."""
    from ttc_graph.scale.durable import default_thread, solve_durable

    thread_id = thread or default_thread(strategy.model_dump_json(), question)
    console.print(f"[dim]durable run: thread {thread_id}; rerun the same command to resume it[/]")
    with console.status(f"{strategy.kind} (checkpointed in Postgres)..."):
        out: dict[str, Any] = asyncio.run(solve_durable(strategy, question, url, thread_id))
    return out


def run_dataset(
    runtime: Runtime,
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
    (address, replicas) runs the questions on ``runtime``'s Ray runner while this process writes the results."""
    from ttc_graph.eval.datasets import load_dataset
    from ttc_graph.eval.spec_runs import run_graph_over_dataset
    from ttc_graph.eval.store import ResultStore

    problems = load_dataset(dataset, limit=limit)
    name = strategy.name or spec.stem
    budget = int(getattr(strategy, "n", 0) or (strategy.budget.generations if strategy.budget else 0) or 0)
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(ResultStore(db))
        units = None
        done_before = {q for s, b, q in store.done(run_name or name) if s == name and b == budget}
        if on_ray is not None and any(p.id not in done_before for p in problems):
            from ttc_graph.eval.spec_units import replica_of

            units = stack.enter_context(runtime.units(*on_ray, replica_of(strategy), concurrency))
        bar = stack.enter_context(ProgressBar(name, len(problems)))
        bar.update(completed=sum(p.id in done_before for p in problems))
        options: dict[str, Any] = {
            "strategy": name, "budget": budget, "problems": problems, "dataset": dataset, "store": store,
            "run": run_name or name, "on_done": lambda _row: bar.advance(),
        }  # fmt: skip
        rows = asyncio.run(
            run_graph_over_dataset(graph, concurrency=concurrency, runner=units, spec=strategy, **options)
        )
    correct = sum(r.correct for r in rows)
    console.print(
        f"{name} on {dataset}: {correct}/{len(rows)} correct ({correct / max(1, len(rows)):.1%}), "
        f"mean generations {sum(r.generations for r in rows) / max(1, len(rows)):.1f}; saved in {db}"
    )
    failed = [r for r in rows if r.answer is None and r.stop_reason == "error"]  # what failure() sees in a row
    if failed:
        ids = ", ".join(r.question_id for r in failed[:5]) + (" ..." if len(failed) > 5 else "")
        console.print(f"[red]error:[/] {len(failed)} question(s) got no answer because requests failed: {ids}")
        raise typer.Exit(1)
