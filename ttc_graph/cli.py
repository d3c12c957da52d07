"""The ``ttc`` command line: solve a question, manage the embedded local model."""

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
from ttc_graph.errors import TTCError
from ttc_graph.selection import SELECTIONS
from ttc_graph.strategies import create_best_of_n

__all__ = ["app"]

app = typer.Typer(help="Spend test-time compute for better answers: best-of-N, search and revisions on LangGraph.")
models_app = typer.Typer(help="The embedded local model (llama.cpp server on 127.0.0.1).")
app.add_typer(models_app, name="models")
console = Console()


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
        async for mode, chunk in graph.astream({"question": question}, stream_mode=["custom", "values"]):
            if mode == "custom" and isinstance(chunk, dict) and chunk.get("event") == "ttc.round":
                progress.update(task, completed=chunk.get("drawn", 0), description=f"round {chunk.get('round', 0) + 1}")
            elif mode == "values":
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


@app.command()
def solve(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    n: Annotated[int, typer.Option("--n", "-n", help="Samples (generations) to draw.")] = 4,
    selection: Annotated[str, typer.Option(help=f"One of {', '.join(SELECTIONS)}.")] = "majority",
    budget: Annotated[int | None, typer.Option(help="Generation budget (defaults to n).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Max tokens per sample.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    seed: Annotated[int | None, typer.Option(help="Base seed for reproducible sampling.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible URL (or TTC_BASE_URL).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name at --base-url, or a GGUF path locally.")] = None,
    parallel: Annotated[int, typer.Option(help="Parallel slots of the local server.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print the output state as JSON.")] = False,
) -> None:
    """Answer QUESTION with a best-of-N strategy on an endpoint or the embedded local model."""
    try:
        with policy_endpoint(base_url, model, parallel) as policy:
            graph = create_best_of_n(
                policy,
                None,
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
    if as_json:
        console.print_json(json.dumps({k: v for k, v in out.items() if k != "messages"}, default=str))
    else:
        print_result(out)


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


if __name__ == "__main__":  # pragma: no cover
    app()
