"""An endpoint on the embedded model that starts its server on first use, shared across graphs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ttc_graph.endpoints.base import Endpoint, EndpointWrapper, GenerationResult
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.local.server import LocalModelServer

__all__ = ["LocalEndpoint", "shared_server", "stop_shared_servers"]

_SERVERS: dict[tuple[str, int], LocalModelServer] = {}
_LOCK = threading.Lock()


def shared_server(model: str | Path | None = None, parallel: int = 4) -> LocalModelServer:
    """The process-wide server for ``(model, parallel)``, started if it is not running."""
    key = (str(model or ""), parallel)
    with _LOCK:
        server = _SERVERS.get(key)
        if server is None or not server.running:
            server = LocalModelServer(model, parallel=parallel)
            server.start()
            _SERVERS[key] = server
        return server


def stop_shared_servers() -> None:
    with _LOCK:
        for server in _SERVERS.values():
            server.stop()
        _SERVERS.clear()


class LocalEndpoint(EndpointWrapper):
    """The embedded llama.cpp model as a policy; its server starts on the first request (about a second), and every
    request goes to its endpoint (no ``inner`` until then: it is resolved per request).

    Graphs built from specs or served by ``langgraph dev`` use it so that building a graph costs nothing.
    """

    native_n = False
    continuation = "prefill"

    def __init__(self, model: str | Path | None = None, *, parallel: int = 4, **endpoint_options: Any) -> None:
        self.model = model
        self.parallel = parallel
        self.endpoint_options = endpoint_options
        self._server: LocalModelServer | None = None
        self._endpoint: OpenAIEndpoint | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"local:{self.model or 'default'}"

    async def resolve(self) -> OpenAIEndpoint:
        """The endpoint of the running server; concurrent first calls (from any thread or loop) share one."""
        endpoint, server = self._endpoint, self._server
        if endpoint is not None and server is not None and server.running:
            return endpoint
        return await asyncio.to_thread(self._start)

    def _start(self) -> OpenAIEndpoint:
        with self._lock:
            if self._endpoint is None or self._server is None or not self._server.running:
                self._server = shared_server(self.model, self.parallel)
                self._endpoint = self._server.endpoint(**self.endpoint_options)
            return self._endpoint

    async def forward(self, request: Callable[[Endpoint], Awaitable[GenerationResult]], n: int) -> GenerationResult:
        """``request`` sent to the running server's endpoint (started by the first request)."""
        return await request(await self.resolve())
