"""``ttc models``: the embedded local model (list, build llama-server, serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ttc_graph.cli.common import check_gguf, console, fail
from ttc_graph.errors import ConfigurationError, TTCError

__all__ = ["models_app"]

models_app = typer.Typer(help="The embedded local model (llama.cpp server on 127.0.0.1).")


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


@models_app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def models_serve(
    ctx: typer.Context,
    gguf: Annotated[Path | None, typer.Option(help="A GGUF file (default: the bundled SmolLM2-135M).")] = None,
    model: Annotated[Path | None, typer.Option("--model", hidden=True)] = None,
    parallel: Annotated[int, typer.Option(min=1, help="Parallel slots (-np).")] = 4,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: all cores).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port on 127.0.0.1 (default: a free one).")] = None,
) -> None:
    """Start the local llama.cpp server and keep it running until Ctrl-C.

    Arguments after ``--`` go to llama-server as they are, e.g. ``ttc models serve --gguf m.gguf -- --metrics``."""
    import time

    from ttc_graph.local import LocalModelServer

    extra = list(ctx.args)
    try:
        if model is not None and gguf is not None:
            raise ConfigurationError("give --gguf only (--model is its old name)")
        path = gguf if gguf is not None else model
        check_gguf(path, None)
        if any(not a.startswith("-") for a in extra[:1]):
            raise ConfigurationError(f"unexpected argument {extra[0]!r}; put llama-server arguments after --")
        with LocalModelServer(path, parallel=parallel, port=port, threads=threads, extra_args=extra) as server:
            console.print(f"serving {server.model_name} at [bold]{server.base_url}[/] (log: {server.log_path})")
            console.print("Ctrl-C to stop.")
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopped")
    except TTCError as exc:
        raise fail(exc) from exc
