"""What ``ttc eval --ray`` and ``ttc study run --ray`` share: the replica spec from the command's options, and the
runner as a context manager that reports what it started."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.scale.ray_runner import RayUnits
from ttc_graph.scale.replicas import EmbeddedServerSpec
from ttc_graph.scale.units import UnitRunner
from ttc_graph.specs.models import OpenAIEndpointSpec

__all__ = [
    "POSTGRES_HELP",
    "RAY_HELP",
    "REPLICAS_HELP",
    "check_ray_options",
    "ray_source",
    "ray_units",
    "replica_from_options",
    "split_runner",
]

RAY_HELP = (
    "Run the units on Ray: local (a private instance on this machine), auto (RAY_ADDRESS or this machine's"
    " cluster), HOST:PORT or ray://HOST:PORT. Needs Ray (the ttc-graph ray extra); see docs/scaling.md."
)
POSTGRES_HELP = (
    "Checkpoint the run's rounds in Postgres (postgresql://USER@HOST:PORT/DB; needs the ttc-graph postgres extra):"
    " a run killed mid-way resumes when the same command runs again."
)
REPLICAS_HELP = (
    "With --ray: K actors, each owning one endpoint (an embedded llama.cpp server, or the --base-url of its node);"
    " --concurrency units in flight per replica. Without it a --base-url run goes out as Ray tasks."
)


def check_ray_options(ray: str | None, replicas: int | None) -> None:
    """``--replicas`` needs ``--ray`` and is at least 1."""
    if replicas is not None and ray is None:
        raise ConfigurationError("--replicas: only with --ray ADDRESS (e.g. --ray local)")
    if replicas is not None and replicas < 1:
        raise ConfigurationError(f"--replicas: must be >= 1, got {replicas}")


def replica_from_options(
    base_url: str | None,
    model: str | None,
    gguf: Path | None,
    parallel: int,
    threads: int | None,
    ctx_size: int | None = None,
) -> OpenAIEndpointSpec | EmbeddedServerSpec:
    """The URL (``--base-url`` / ``TTC_BASE_URL``; the key is read from ``TTC_API_KEY`` where the replica runs), else
    an embedded server of ``--gguf`` (a path on every node) or of the bundled model."""
    url = None if gguf is not None else base_url or os.environ.get("TTC_BASE_URL")
    if url:
        name = model or os.environ.get("TTC_MODEL")
        if not name:
            raise ConfigurationError("--model: a model name is required with --base-url (or set TTC_MODEL)")
        return OpenAIEndpointSpec(base_url=url, model=name, api_key_env="TTC_API_KEY")
    path = str(gguf.resolve()) if gguf is not None else None
    return EmbeddedServerSpec(model=path, parallel=parallel, threads=threads, ctx_size=ctx_size)


@contextlib.contextmanager
def ray_units(
    console: Console,
    address: str,
    replicas: int | None,
    replica: OpenAIEndpointSpec | EmbeddedServerSpec,
    concurrency: int,
) -> Iterator[RayUnits]:
    """Start the runner (connect, check versions, start the replicas) and stop it afterwards."""
    if replicas is None and isinstance(replica, EmbeddedServerSpec):
        replicas = 1
    units = RayUnits(replica, replicas=replicas, concurrency=concurrency, address=address)
    what = f"{replicas} replica(s)" if replicas else "Ray tasks"
    with console.status(f"Ray ({address}): starting {what}..."):
        units.start()
    try:
        where = ", ".join(str(i["base_url"]) for i in units.infos) or getattr(replica, "base_url", "")
        console.print(f"[dim]ray {address}: {what}, {units.slots} unit(s) in flight; {where}[/]")
        yield units
    finally:
        units.stop()
        for lost in units.lost:
            console.print(f"[yellow]ray:[/] {lost}")


def split_runner(source: Endpoint | RayUnits) -> tuple[UnitRunner | None, Endpoint]:
    """``(runner, driver policy)`` for what a command's endpoint context yielded."""
    if isinstance(source, RayUnits):
        return source, source.driver_policy
    return None, source


def ray_source(
    console: Console,
    ray: str,
    replicas: int | None,
    concurrency: int,
    **options: Any,
) -> contextlib.AbstractContextManager[RayUnits]:
    """:func:`ray_units` for a command's endpoint options (``base_url``, ``model``, ``gguf``, ``parallel``, ...)."""
    return ray_units(console, ray, replicas, replica_from_options(**options), concurrency)
