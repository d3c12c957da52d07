"""``ttc data``: the data sets from their public sources into the local cache (``ttc data pull gsm8k``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ttc_graph.cli.common import console
from ttc_graph.errors import TTCError

__all__ = ["data_app"]

data_app = typer.Typer(help="Data sets (GSM8K, MATH-500, BFCL) from their public sources into the cache.")


@data_app.command("pull")
def data_pull(
    names: Annotated[list[str], typer.Argument(help="Data sets to download: gsm8k, math500, bfcl.")],
    cache: Annotated[
        Path | None, typer.Option(help="Folder to download into (default: ~/.cache/ttc_graph/data).")
    ] = None,
    mirror: Annotated[
        str | None, typer.Option(help="Base URL instead of raw.githubusercontent.com (or TTC_DATA_MIRROR).")
    ] = None,
) -> None:
    """Download data sets, sha256-checked and resumable; commands with --dataset then find them (after
    TTC_DATA_DIR)."""
    from ttc_graph.eval.fetch import pull
    from ttc_graph.eval.sources import data_cache_dir

    root = cache or data_cache_dir()
    for name in names:
        try:
            data, pulled = pull(name, cache=root, base=mirror)
        except TTCError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
        fetched = sum(p.downloaded for p in pulled)
        resumed = sum(1 for p in pulled if p.resumed_from)
        note = f", {resumed} resumed" if resumed else ""
        console.print(f"[green]{name}[/]: {len(pulled)} files in {root / name} ({fetched} downloaded{note})")
        console.print(f"  {data.description}")
        console.print(f"  licence: {data.licence}; source: {data.homepage}")


@data_app.command("list")
def data_list() -> None:
    """The data sets ttc data pull knows, their licences, and whether they are cached."""
    from ttc_graph.eval.sources import DATA_SETS, data_cache_dir

    table = Table()
    for col in ("name", "files", "licence", "cached", "source"):
        table.add_column(col)
    for data in DATA_SETS.values():
        cached = all((data_cache_dir() / f.path).is_file() for f in data.files)
        table.add_row(data.name, str(len(data.files)), data.licence, "yes" if cached else "no", data.homepage)
    console.print(table)
