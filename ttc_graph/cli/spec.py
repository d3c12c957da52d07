"""``ttc spec``: validate strategy specs and print their JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ttc_graph.cli.common import console
from ttc_graph.errors import TTCError

__all__ = ["spec_app"]

spec_app = typer.Typer(help="Strategy specs: validate them and print their JSON Schema.")


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
