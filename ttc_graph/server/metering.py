"""A metering proxy: forwards every request to an OpenAI-compatible server and counts what that server served.

Put it between a client (ttc serve, optillm, a graph) and the model server to check a client's reported usage
against the server's own answers, and to watch how many requests are started and still in flight.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ttc_graph.server.disconnect import until_disconnect

__all__ = ["Meter", "MeteringProxy", "serve_in_thread"]

_FORWARDED = ("content-type", "authorization", "accept")


@dataclass
class Meter:
    """What the model server served through the proxy (generation requests only).

    ``completion_tokens`` sums each response's usage; a response with several choices (llama.cpp reports one
    choice's tokens) counts ``max_tokens`` per choice when every choice was cut at that length, else it is
    counted from usage and added to ``uncounted``.
    """

    requests: int = 0
    answered: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    uncounted: int = 0
    finished_at: list[float] = field(default_factory=list)

    def snapshot(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "answered": self.answered,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "uncounted": self.uncounted,
        }

    def since(self, before: dict[str, int]) -> dict[str, int]:
        """The counters' growth since ``before`` (a :meth:`snapshot`)."""
        now = self.snapshot()
        return {k: now[k] - before[k] for k in now}

    def count(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        usage = response.get("usage") or {}
        choices = response.get("choices") or []
        completion = int(usage.get("completion_tokens") or 0)
        if len(choices) > 1:
            cap = request.get("max_tokens") or request.get("max_completion_tokens")
            if cap and all(c.get("finish_reason") == "length" for c in choices):
                completion = max(completion, int(cap) * len(choices))
            else:
                self.uncounted += 1
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += completion
        self.answered += 1
        self.finished_at.append(time.monotonic())


class MeteringProxy:
    """An ASGI app (``.app``) forwarding to ``target`` (a server root, without ``/v1``) and counting in ``.meter``.

    A client that disconnects cancels its forwarded request, as a model server would see it.
    """

    def __init__(self, target: str, *, timeout: float = 600.0) -> None:
        self.target = target.rstrip("/")
        self.meter = Meter()
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout, trust_env=False)
        return self._http

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        generating = request.method == "POST" and request.url.path.endswith("completions")
        payload: dict[str, Any] = {}
        if generating:
            with contextlib.suppress(ValueError):
                payload = json.loads(body)
            self.meter.requests += 1
            self.meter.in_flight += 1
        headers = {k: v for k, v in request.headers.items() if k in _FORWARDED}
        upstream = self.http.build_request(
            request.method, self.target + request.url.path, content=body, headers=headers, params=request.query_params
        )
        done = False
        try:
            if payload.get("stream"):
                resp = await self.http.send(upstream, stream=True)
                done = True

                async def relay() -> AsyncIterator[bytes]:
                    try:
                        async for part in resp.aiter_raw():
                            yield part
                    finally:
                        self.meter.in_flight -= 1
                        with anyio.CancelScope(shield=True):
                            await resp.aclose()

                return StreamingResponse(relay(), resp.status_code, media_type=resp.headers.get("content-type"))
            answer = await until_disconnect(request, lambda: self.http.send(upstream))
            if answer is None:
                return Response(status_code=499)
            if generating and answer.status_code == 200:
                self.meter.count(payload, answer.json())
            return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))
        finally:
            if generating and not done:
                self.meter.in_flight -= 1


@contextlib.contextmanager
def serve_in_thread(app: Any, *, graceful: int = 5, log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a background thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=graceful))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the server on port {port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(graceful + 30)
        sock.close()
