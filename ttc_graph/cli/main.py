"""The ``ttc`` command line: the parser and its commands, one module per command group.

One name and one default per concept across commands (``--run``, ``--db``, ``--max-tokens``, ``--temperature``,
``--selection``, ``--verifier``, ``--limit``). Exit codes: 0 success, 1 the command ran but requests failed so an
answer (or a unit) is missing, 2 invalid input or setup, 130 interrupted. The commands open models through the
:class:`~ttc_graph.cli.runtime.Runtime` passed as the context's ``obj`` (the default one otherwise).
"""

from __future__ import annotations

from typing import Annotated

import typer

from ttc_graph.cli.data import data_app
from ttc_graph.cli.eval import eval_command, plot_command, replay_command
from ttc_graph.cli.models import models_app
from ttc_graph.cli.run import run
from ttc_graph.cli.serve import serve_command
from ttc_graph.cli.solve import solve
from ttc_graph.cli.spec import spec_app
from ttc_graph.cli.study import study_app

__all__ = ["app", "main"]

app = typer.Typer(help="Spend test-time compute for better answers: best-of-N, search and revisions on LangGraph.")
app.add_typer(models_app, name="models")
app.add_typer(spec_app, name="spec")
app.add_typer(data_app, name="data")


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
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Spend test-time compute for better answers: best-of-N, search and revisions on LangGraph."""


app.command()(solve)
app.command()(run)
app.command("eval")(eval_command)
app.command("replay")(replay_command)
app.command("plot")(plot_command)
app.add_typer(study_app, name="study")
app.command("serve")(serve_command)  # imports its web stack only when it runs


def main() -> None:
    """The ``ttc`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
