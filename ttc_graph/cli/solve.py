"""``ttc solve``: answer one question with best-of-N on an endpoint or the embedded local model."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from ttc_graph.budget import Budget
from ttc_graph.cli.common import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_SELECTION,
    DEFAULT_TEMPERATURE,
    DEFAULT_VERIFIER,
    check_gguf,
    console,
    exit_if_no_answer,
    print_output,
)
from ttc_graph.cli.options import BaseUrlOption, GgufOption, ParallelOption, ThreadsOption
from ttc_graph.cli.progress import run_with_progress
from ttc_graph.cli.runtime import runtime_of
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError, TTCError
from ttc_graph.selection import SELECTIONS
from ttc_graph.strategies import create_best_of_n
from ttc_graph.verifiers.base import Verifier
from ttc_graph.verifiers.registry import VERIFIER_NAMES, named_verifier

__all__ = ["make_verifier", "solve"]


def make_verifier(name: str, policy: Endpoint) -> Verifier | None:
    """The verifier a CLI name stands for (the names of ``ttc eval``); ``none`` is None."""
    return named_verifier(name, policy)


def _check_solve_options(selection: str, verifier: str) -> None:
    """Fail on bad --selection / --verifier before any model starts."""
    if selection not in SELECTIONS:
        raise ConfigurationError(f"selection: unknown {selection!r}; use one of {', '.join(SELECTIONS)}")
    if verifier not in VERIFIER_NAMES:
        raise ConfigurationError(f"verifier: unknown {verifier!r}; use one of {', '.join(VERIFIER_NAMES)}")
    if selection != "majority" and verifier == "none":
        raise ConfigurationError(f"verifier: --selection {selection} needs a verifier; use --verifier confidence")


def solve(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Samples (generations) to draw.")] = 4,
    selection: Annotated[str, typer.Option(help=f"One of {', '.join(SELECTIONS)}.")] = DEFAULT_SELECTION,
    verifier: Annotated[
        str,
        typer.Option(help=f"Verifier of weighted/naive selection: {', '.join(VERIFIER_NAMES)} (majority uses none)."),
    ] = DEFAULT_VERIFIER,
    budget: Annotated[int | None, typer.Option(min=1, help="Generation budget (defaults to n).")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Max tokens per sample.")] = DEFAULT_MAX_TOKENS,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature.")] = DEFAULT_TEMPERATURE,
    seed: Annotated[int | None, typer.Option(help="Base seed for reproducible sampling.")] = None,
    base_url: BaseUrlOption = None,
    model: Annotated[str | None, typer.Option(help="Model name at --base-url, or a GGUF path locally.")] = None,
    gguf: GgufOption = None,
    parallel: ParallelOption = 4,
    threads: ThreadsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the output state as JSON.")] = False,
) -> None:
    """Answer QUESTION with a best-of-N strategy on an endpoint or the embedded local model.

    Exits 1 when requests failed and no answer could be produced, 2 on invalid options.
    """
    try:
        _check_solve_options(selection, verifier)
        gguf = check_gguf(gguf, base_url)  # hf:REPO/FILE fetched from the hub
        with runtime_of(ctx).endpoint(base_url, model, gguf, parallel, threads) as policy:
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
    print_output(out, as_json)
    exit_if_no_answer(out)
