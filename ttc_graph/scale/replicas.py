"""What a replica serves, as a validated spec: an upstream OpenAI-compatible URL or an embedded llama.cpp server."""

from __future__ import annotations

import functools
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.specs.models import OpenAIEndpointSpec

__all__ = ["EmbeddedServerSpec", "ReplicaSpec", "open_replica", "parse_replica"]


class EmbeddedServerSpec(BaseModel):
    """A llama.cpp server started inside the replica (one model copy per replica), on that node's loopback.

    ``model`` is a GGUF path on the node that runs the replica (default: the bundled SmolLM2-135M); ``threads``
    defaults to every core of that node and ``ctx_size`` to 2048 tokens per slot; ``max_concurrency`` bounds the
    requests in flight to the server (default: its ``parallel`` slots). llama.cpp's numbers move slightly with what
    it batches and what it reuses from earlier prompts: ``max_concurrency=1`` with ``cache_prompt=False`` makes each
    request's output a function of the request alone (reproducible runs, at some speed).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["embedded"] = "embedded"
    model: str | None = None
    parallel: int = Field(4, ge=1)
    threads: int | None = Field(None, ge=1)
    ctx_size: int | None = Field(None, ge=16)
    startup_timeout: float = Field(120.0, gt=0)
    max_concurrency: int | None = Field(None, ge=1)
    cache_prompt: bool = True


ReplicaSpec = Annotated[OpenAIEndpointSpec | EmbeddedServerSpec, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[OpenAIEndpointSpec | EmbeddedServerSpec] = TypeAdapter(ReplicaSpec)


def parse_replica(data: Any) -> OpenAIEndpointSpec | EmbeddedServerSpec:
    """A replica spec from data (``kind: openai`` or ``kind: embedded``); errors name the field."""
    if isinstance(data, OpenAIEndpointSpec | EmbeddedServerSpec):
        return data
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"replica: {problems}") from exc


def open_replica(spec: OpenAIEndpointSpec | EmbeddedServerSpec) -> tuple[Endpoint, Any]:
    """The replica's endpoint, and its started :class:`~ttc_graph.local.LocalModelServer` (None for a URL)."""
    if isinstance(spec, OpenAIEndpointSpec):
        from ttc_graph.specs.build import build_endpoint

        return build_endpoint(spec), None
    from ttc_graph.local import LocalModelServer

    server = LocalModelServer(
        spec.model,
        parallel=spec.parallel,
        threads=spec.threads,
        ctx_size=spec.ctx_size,
        startup_timeout=spec.startup_timeout,
        binary=_guarded_binary(),
    )
    server.start()
    options: dict[str, Any] = {"max_concurrency": spec.max_concurrency} if spec.max_concurrency else {}
    if not spec.cache_prompt:
        options["extra_body"] = {"cache_prompt": False}
    return server.endpoint(**options), server


@functools.cache
def _guarded_binary() -> str | None:
    """``llama-server`` behind ``setpriv --pdeathsig TERM``, so it stops when its watchdog does: Ray kills the child
    processes of a worker it kills, and the watchdog is one. None (the plain binary) where setpriv is missing."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    from ttc_graph.local import find_llama_server

    real = find_llama_server()
    wrapper = Path(tempfile.mkdtemp(prefix="ttc-replica-")) / "llama-server"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(setpriv)} --pdeathsig TERM -- {shlex.quote(str(real))} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)
