"""``ttc serve``: the command that starts the server (its web stack is imported only when it runs)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from ttc_graph.cli.common import check_gguf
from ttc_graph.errors import TTCError

__all__ = ["UPSTREAM_KEY_ENVS", "serve_command"]

UPSTREAM_KEY_ENVS = ("TTC_UPSTREAM_API_KEY", "OPENAI_API_KEY")
"""Where the key sent to the upstream comes from, the first set wins (never from the command line)."""


def serve_command(
    upstream: Annotated[
        str | None, typer.Option(help="Base URL of an OpenAI-compatible upstream (default: the embedded model).")
    ] = None,
    upstream_model: Annotated[
        str | None, typer.Option(help="The upstream model used when a request names a preset alone.")
    ] = None,
    native_n: Annotated[
        str, typer.Option(help="Whether the upstream counts n>1 usage exactly: auto (find out), on, off.")
    ] = "auto",
    gguf: Annotated[Path | None, typer.Option(help="GGUF of the embedded model (default: SmolLM2-135M).")] = None,
    parallel: Annotated[int, typer.Option(min=1, help="Parallel slots of the embedded model.")] = 4,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads of the embedded model.")] = None,
    presets: Annotated[
        list[Path] | None, typer.Option("--presets", help="A directory of preset specs (YAML); repeatable.")
    ] = None,
    shipped: Annotated[bool, typer.Option(help="Serve the shipped example specs as presets too.")] = True,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="An accepted bearer key (repeatable; prefer TTC_SERVE_API_KEYS)."),
    ] = None,
    max_generations: Annotated[int, typer.Option(min=1, help="Cap on a request's policy generations.")] = 64,
    max_run_tokens: Annotated[
        int, typer.Option(help="Cap on a request's completion tokens (policy's, checked up front; verifier's too).")
    ] = 131_072,
    max_run_requests: Annotated[
        int, typer.Option(help="Cap on a request's upstream requests of every kind (policy, verifier, retries).")
    ] = 1024,
    max_seconds: Annotated[float, typer.Option(help="Cap on a request's wall seconds.")] = 600.0,
    max_run_dollars: Annotated[
        float | None, typer.Option(help="Cap on a request's cost in dollars, at the upstream model's price.")
    ] = None,
    max_runs: Annotated[int, typer.Option(min=1, help="Requests running at once; more get a 429.")] = 8,
    max_body: Annotated[int, typer.Option(min=1, help="Largest request body in bytes.")] = 1_048_576,
    max_verifier_samples: Annotated[
        int, typer.Option(help="Cap on a verifier's judge samples per candidate or programs per question.")
    ] = 16,
    shutdown_timeout: Annotated[float, typer.Option(help="Seconds in-flight runs get to finish on shutdown.")] = 30.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve strategies as an OpenAI-compatible API: model '<preset>/<upstream-model>' runs a preset on the
    upstream model, a plain model name passes through. Keys: --api-key or TTC_SERVE_API_KEYS (none: no auth)."""
    try:
        import uvicorn

        from ttc_graph.server.app import create_app
        from ttc_graph.server.config import Limits, ServeConfig, api_keys_from
        from ttc_graph.server.presets import load_presets
        from ttc_graph.server.upstream import EmbeddedUpstream, Upstream
    except ImportError as exc:
        typer.echo(f"error: ttc serve needs its extra: pip install 'ttc-graph[serve]' ({exc})", err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):  # one line per upstream request
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        if native_n not in ("auto", "on", "off"):
            raise TTCError(f"native-n: expected auto, on or off, got {native_n!r}")
        limits = Limits(
            max_generations,
            max_run_tokens,
            max_seconds,
            max_runs,
            max_body,
            verifier_samples=max_verifier_samples,
            dollars=max_run_dollars,
            run_requests=max_run_requests,
        )
        config = ServeConfig(
            load_presets(presets or (), shipped=shipped),
            api_keys_from(api_key or ()),
            limits,
            shutdown_grace=max(0.0, shutdown_timeout - 1.0),
        )
        model: Upstream
        if upstream:
            if not upstream_model:
                raise TTCError("upstream-model: --upstream needs --upstream-model NAME")
            key = next((os.environ[e] for e in UPSTREAM_KEY_ENVS if os.environ.get(e)), None)
            flag = None if native_n == "auto" else native_n == "on"
            model = Upstream(upstream, upstream_model, api_key=key, native_n=flag, timeout=max_seconds)
        else:
            gguf = check_gguf(gguf, None)  # hf:REPO/FILE fetched from the hub
            model = EmbeddedUpstream(gguf, parallel=parallel, threads=threads, timeout=max_seconds)
    except TTCError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if host not in ("127.0.0.1", "localhost", "::1") and not config.api_keys:
        logging.getLogger("ttc_graph.server").warning("listening on %s without API keys: anyone can spend", host)
    uvicorn.run(
        create_app(config, model),
        host=host,
        port=port,
        timeout_graceful_shutdown=max(1, round(shutdown_timeout)),
        log_level=log_level,
    )
