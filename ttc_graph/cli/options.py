"""The options several commands take, declared once: where a command's policy runs (a URL, a GGUF, Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttc_graph.cli.runtime import RAY_HELP, REPLICAS_HELP

__all__ = [
    "BaseUrlOption",
    "GgufOption",
    "ModelOption",
    "ParallelOption",
    "RayOption",
    "ReplicasOption",
    "StopByOption",
    "ThreadsOption",
]

BaseUrlOption = Annotated[str | None, typer.Option(help="OpenAI-compatible URL (or TTC_BASE_URL).")]
ModelOption = Annotated[str | None, typer.Option(help="Model name at --base-url.")]
GgufOption = Annotated[
    Path | None, typer.Option(help="A GGUF file to serve locally with llama.cpp (or hf:OWNER/REPO/FILE.gguf).")
]
ParallelOption = Annotated[int, typer.Option(min=1, help="Parallel slots of the local server.")]
ThreadsOption = Annotated[int | None, typer.Option(min=1, help="llama.cpp threads with --gguf (default: all cores).")]
RayOption = Annotated[str | None, typer.Option(metavar="ADDRESS", help=RAY_HELP)]
ReplicasOption = Annotated[int | None, typer.Option(help=REPLICAS_HELP)]
StopByOption = Annotated[
    str | None,
    typer.Option(
        metavar="TIME",
        help="Start only units expected to finish by TIME (HH:MM, the next such local time, or an ISO date and"
        " time), by the longest time of their kind's latest 10 in the database; the rest are left for a rerun.",
    ),
]
