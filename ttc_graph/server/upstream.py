"""The model behind ttc serve: an OpenAI-compatible server (or the embedded llama.cpp model), as strategy endpoints
and as a pass-through target."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from ttc_graph.endpoints.base import Endpoint, EndpointWrapper, GenerationResult
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.endpoints.retry import RETRYABLE_STATUS, RetryConfig, call_with_retries
from ttc_graph.errors import EndpointError
from ttc_graph.local import LocalModelServer
from ttc_graph.server.allowance import current_allowance

__all__ = ["EmbeddedUpstream", "TrackedEndpoint", "Upstream", "track_failures"]

_FAILURES: contextvars.ContextVar[list[EndpointError] | None] = contextvars.ContextVar("ttc_serve_failed", default=None)
_MODELS_TTL = 60.0


def track_failures() -> list[EndpointError]:
    """Start recording, for the current task and the tasks it starts, every request that failed for good."""
    failures: list[EndpointError] = []
    _FAILURES.set(failures)
    return failures


class TrackedEndpoint(EndpointWrapper):
    """An endpoint that records the failures of its ``generate`` (see :func:`track_failures`) so a run can tell a
    client why; every other attribute (``native_n``, ``continuation``, ``max_concurrency``, ...) is the inner one's."""

    async def forward(self, request: Callable[[Endpoint], Awaitable[GenerationResult]], n: int) -> GenerationResult:
        # an endpoint that gates each of its requests itself (OpenAIEndpoint) is not admitted twice
        allowance = None if getattr(self.inner, "gates_requests", False) else current_allowance()
        try:
            if allowance is not None:
                await allowance.admit(1 if getattr(self.inner, "native_n", None) else n)
            try:
                result = await request(self.inner)
            except EndpointError as exc:
                if allowance is not None:
                    allowance.settle(exc.usage, exc)
                raise
        except EndpointError as exc:
            failures = _FAILURES.get()
            if failures is not None:
                failures.append(exc)
            raise
        if allowance is not None:
            allowance.settle(result.usage)
        return result


class Upstream:
    """An OpenAI-compatible server: strategy endpoints per model, its model list, and pass-through requests.

    ``api_key`` is sent upstream, never the client's key. ``native_n`` is given to the strategy endpoints (None:
    they find out). ``models`` fixes the model list (None: asked from ``GET /models``, cached for a minute).
    ``endpoint_factory`` and ``transport`` replace the strategy endpoints and the pass-through HTTP transport
    (tests). ``timeout`` bounds each upstream attempt.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        native_n: bool | None = None,
        timeout: float = 600.0,
        max_concurrency: int = 16,
        models: Sequence[str] | None = None,
        endpoint_factory: Callable[[str], Endpoint] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryConfig | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.default_model = model
        self.api_key = api_key
        self.native_n = native_n
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryConfig.model_validate({})
        self._fixed_models = tuple(models) if models is not None else None
        self._factory = endpoint_factory
        self._transport = transport
        self._endpoints: dict[str, TrackedEndpoint] = {}
        self._http: httpx.AsyncClient | None = None
        self._models: tuple[str, ...] | None = None
        self._models_at = -_MODELS_TTL

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.default_model!r})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never be shown to a client or written to a log."""
        return (self.api_key,) if self.api_key and self.api_key not in ("EMPTY", "local") else ()

    async def start(self) -> None:
        """Get ready to serve (a remote upstream needs nothing; the embedded one starts its model)."""

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        """The pass-through client (made on first use, in the serving event loop)."""
        if self._http is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._http = httpx.AsyncClient(timeout=self.timeout, transport=self._transport, headers=headers)
        return self._http

    # -- strategies -------------------------------------------------------------------------------------------

    def _make_endpoint(self, model: str) -> Endpoint:
        if self._factory is not None:
            return self._factory(model)
        return OpenAIEndpoint(
            self.base_url,
            model,
            self.api_key,
            native_n=self.native_n,
            timeout=self.timeout,
            max_concurrency=self.max_concurrency,
        )

    def endpoint(self, model: str) -> TrackedEndpoint:
        """The strategy endpoint of ``model`` (one per model, so its concurrency limit and findings are shared)."""
        if model not in self._endpoints:
            self._endpoints[model] = TrackedEndpoint(self._make_endpoint(model))
        return self._endpoints[model]

    # -- models ---------------------------------------------------------------------------------------------------

    async def models(self) -> tuple[str, ...] | None:
        """The upstream's model ids (None when it does not say)."""
        if self._fixed_models is not None:
            return self._fixed_models
        if time.monotonic() - self._models_at < _MODELS_TTL:
            return self._models
        self._models_at = time.monotonic()
        try:
            resp = await self.http.get(f"{self.base_url}/models", timeout=10.0)
            resp.raise_for_status()
            ids = tuple(str(m["id"]) for m in resp.json().get("data", []) if isinstance(m, dict) and "id" in m)
            self._models = ids or None
        except (httpx.HTTPError, ValueError, KeyError, AttributeError):
            self._models = None
        return self._models

    # -- pass-through ---------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open(self, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """``POST /chat/completions`` with ``body`` as is, retried like a strategy request; the open response.

        Retried: 408, 409, 429, 5xx, timeouts and connection errors (before any byte is passed on). A final
        failure is an :class:`EndpointError`; any other status comes back for the caller to pass on.
        """
        url = f"{self.base_url}/chat/completions"

        async def send() -> httpx.Response:
            request = self.http.build_request("POST", url, json=body)
            resp = await self.http.send(request, stream=True)
            if resp.status_code in RETRYABLE_STATUS or resp.status_code >= 500:
                text = (await resp.aread()).decode("utf-8", "replace")[:300]
                await resp.aclose()
                raise httpx.HTTPStatusError(f"HTTP {resp.status_code}: {text}", request=request, response=resp)
            return resp

        resp = await call_with_retries(send, self.retry, f"chat completion on {self.base_url}")
        try:
            yield resp
        finally:
            await resp.aclose()


class EmbeddedUpstream(Upstream):
    """The embedded llama.cpp model (``gguf``, default: the bundled SmolLM2-135M), started and stopped with the app."""

    def __init__(
        self,
        gguf: str | Path | None = None,
        *,
        parallel: int = 4,
        threads: int | None = None,
        timeout: float = 600.0,
        retry: RetryConfig | None = None,
    ) -> None:
        super().__init__("", "", api_key="local", timeout=timeout, retry=retry)
        self.server = LocalModelServer(gguf, parallel=parallel, threads=threads)

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)
        self.base_url = self.server.base_url
        self.default_model = self.server.model_name
        self._fixed_models = (self.server.model_name,)
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        await asyncio.to_thread(self.server.stop)

    def _make_endpoint(self, model: str) -> Endpoint:
        return self.server.endpoint(timeout=self.timeout)
