"""Where the commands get their models from: endpoints and servers opened for a command's duration, and Ray runners.

A :class:`Runtime` opens them; every command that needs a model asks the runtime of its invocation
(:func:`runtime_of` its ``typer.Context``), the default one unless the caller passes another as the context's
``obj`` (``CliRunner().invoke(app, args, obj=runtime)``): tests and programs inject endpoints or runners there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.scale.replicas import EmbeddedServerSpec
from ttc_graph.scale.units import UnitRunner
from ttc_graph.specs.models import OpenAIEndpointSpec

__all__ = [
    "POSTGRES_HELP",
    "RAY_HELP",
    "REPLICAS_HELP",
    "Runtime",
    "StaticRuntime",
    "check_ray_options",
    "open_endpoint",
    "policy_endpoint",
    "ray_units",
    "replica_from_options",
    "runtime_of",
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


# -- endpoints ----------------------------------------------------------------------------------------------------


def _prepare_llama_server(console: Console) -> None:
    from ttc_graph.local import find_llama_server

    with console.status("Preparing llama-server (the first build takes 6-10 minutes)...") as status:
        find_llama_server(progress=lambda line: status.update(f"Building llama-server: {line[:80]}"))


@contextlib.contextmanager
def policy_endpoint(base_url: str | None, model: str | None, parallel: int, console: Console) -> Iterator[Endpoint]:
    """An endpoint from ``--base-url``/``TTC_BASE_URL``, else the embedded local model for the duration."""
    url = base_url or os.environ.get("TTC_BASE_URL")
    if url:
        yield OpenAIEndpoint(url, model or os.environ.get("TTC_MODEL"), os.environ.get("TTC_API_KEY"))
        return
    from ttc_graph.local import LocalModelServer

    _prepare_llama_server(console)
    with console.status("Starting the embedded local model on 127.0.0.1..."):
        server = LocalModelServer(model, parallel=parallel)
        server.start()
    console.print(f"[dim]local model {server.model_name} at {server.base_url} (ready in {server.started_in:.1f}s)[/]")
    try:
        yield server.endpoint()
    finally:
        server.stop()


@contextlib.contextmanager
def open_endpoint(
    console: Console,
    base_url: str | None,
    model: str | None,
    gguf: Path | None,
    parallel: int,
    threads: int | None,
    ctx_size: int | None = None,
) -> Iterator[Endpoint]:
    """:func:`policy_endpoint`, except that ``--gguf`` starts that file locally with ``threads`` llama.cpp threads."""
    if gguf is None:
        with policy_endpoint(base_url, model, parallel, console) as endpoint:
            yield endpoint
        return
    from ttc_graph.local import LocalModelServer

    _prepare_llama_server(console)
    server = LocalModelServer(gguf, parallel=parallel, threads=threads, ctx_size=ctx_size)
    try:
        with console.status(f"Starting {gguf.name} on 127.0.0.1..."):
            server.start()
        console.print(f"[dim]local model {server.model_name} at {server.base_url} ({server.started_in:.1f}s)[/]")
        yield server.endpoint()
    finally:
        server.stop()


# -- Ray ------------------------------------------------------------------------------------------------------------


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
) -> Iterator[UnitRunner]:
    """Start the Ray runner (connect, check versions, start the replicas) and stop it afterwards."""
    from ttc_graph.scale.ray_runner import RayUnits

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


class _NotHere:
    """The driver's policy when units run elsewhere: never called."""

    name = "elsewhere"

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("units run on the runner; the driver's policy is never called")


def split_runner(source: Endpoint | UnitRunner) -> tuple[UnitRunner | None, Endpoint]:
    """``(runner, driver policy)`` for what a command's model source yielded: an endpoint, or a unit runner."""
    if hasattr(source, "generate"):
        return None, source  # type: ignore[return-value]
    return source, getattr(source, "driver_policy", None) or _NotHere()  # type: ignore[return-value]


# -- the runtime ------------------------------------------------------------------------------------------------


class Runtime:
    """Opens what the commands run on. Subclass it (or pass other context managers) to run them on something else."""

    def __init__(self, console: Console | None = None) -> None:
        from ttc_graph.cli.common import console as shared

        self.console = console or shared

    def endpoint(
        self,
        base_url: str | None,
        model: str | None,
        gguf: Path | None,
        parallel: int,
        threads: int | None,
        ctx_size: int | None = None,
    ) -> contextlib.AbstractContextManager[Endpoint]:
        """The policy of ``ttc solve``, ``ttc eval`` and ``ttc study run`` for the command's duration."""
        return open_endpoint(self.console, base_url, model, gguf, parallel, threads, ctx_size)

    def ray(
        self,
        address: str,
        replicas: int | None,
        concurrency: int,
        *,
        base_url: str | None,
        model: str | None,
        gguf: Path | None,
        parallel: int,
        threads: int | None,
        ctx_size: int | None = None,
    ) -> contextlib.AbstractContextManager[UnitRunner]:
        """The Ray runner of ``--ray`` for a command's endpoint options, in place of :meth:`endpoint`."""
        replica = replica_from_options(base_url, model, gguf, parallel, threads, ctx_size)
        return self.units(address, replicas, replica, concurrency)

    def units(
        self, address: str, replicas: int | None, replica: OpenAIEndpointSpec | EmbeddedServerSpec, concurrency: int
    ) -> contextlib.AbstractContextManager[UnitRunner]:
        """The Ray runner whose replicas serve ``replica`` (``ttc run SPEC --dataset --ray``)."""
        return ray_units(self.console, address, replicas, replica, concurrency)


def runtime_of(ctx: typer.Context) -> Runtime:
    """The runtime of the running command: the context's ``obj`` when it is one, else the default runtime."""
    found = ctx.find_object(Runtime)
    return found if found is not None else Runtime()


class StaticRuntime(Runtime):
    """A runtime that hands every command the same ``endpoint`` (and ``runner`` for ``--ray``) and opens nothing:
    a program that already has its model, or a test with a fake one."""

    def __init__(self, endpoint: Any = None, runner: Any = None, console: Console | None = None) -> None:
        super().__init__(console)
        self.endpoint_ = endpoint
        self.runner = runner
        self.asked: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    @contextlib.contextmanager
    def _give(self, what: str, value: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if value is None:
            raise ConfigurationError(f"this runtime has no {what}")
        self.asked.append((what, args, kwargs))
        yield value

    def endpoint(self, *args: Any, **kwargs: Any) -> contextlib.AbstractContextManager[Endpoint]:
        return self._give("endpoint", self.endpoint_, *args, **kwargs)

    def ray(self, *args: Any, **kwargs: Any) -> contextlib.AbstractContextManager[UnitRunner]:
        return self._give("ray", self.runner, *args, **kwargs)

    def units(self, *args: Any, **kwargs: Any) -> contextlib.AbstractContextManager[UnitRunner]:
        return self._give("units", self.runner, *args, **kwargs)
