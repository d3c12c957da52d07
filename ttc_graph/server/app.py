"""The ASGI app of ``ttc serve``: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.server.auth import authorize
from ttc_graph.server.config import ServeConfig
from ttc_graph.server.disconnect import until_disconnect
from ttc_graph.server.errors import APIError, from_endpoint_error, redact
from ttc_graph.server.metrics import NO_PRESET, PASSTHROUGH, ServeMetrics
from ttc_graph.server.planning import RunPlan, plan_run, price_budget
from ttc_graph.server.presets import resolve_model
from ttc_graph.server.protocol import ChatRequest, completion, new_completion_id, parse_json, parse_request
from ttc_graph.server.runs import Outcome, StrategyRun, openai_usage
from ttc_graph.server.streaming import GuardedResponse, outcome_meta, passthrough_events, run_events
from ttc_graph.server.upstream import Upstream
from ttc_graph.specs import build_graph
from ttc_graph.tracing import context_from_headers

__all__ = ["create_app"]

logger = logging.getLogger("ttc_graph.server")
_GRAPH_CACHE = 64
_HARD_STOP_GRACE = 30.0
_CLIENT_GONE = 499


class _Server:
    """The state behind the routes: config, upstream, run slots and compiled graphs."""

    def __init__(self, config: ServeConfig, upstream: Upstream) -> None:
        self.config = config
        self.upstream = upstream
        self.active = 0
        self.metrics = ServeMetrics()
        self._graphs: OrderedDict[tuple[str, str, bool | None], Any] = OrderedDict()

    @property
    def secrets(self) -> tuple[str, ...]:
        return (*self.config.api_keys, *self.upstream.secrets)

    # -- plumbing -------------------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take a run slot, or refuse with a 429 (single event loop: no lock needed)."""
        limits = self.config.limits
        if self.active >= limits.concurrent_runs:
            raise APIError(
                429,
                f"The server is running its limit of {limits.concurrent_runs} requests; retry later.",
                code="too_many_requests",
                headers={"Retry-After": str(limits.retry_after)},
            )
        self.active += 1
        self.metrics.in_flight.set(self.active)

    async def release(self) -> None:
        self.active -= 1
        self.metrics.in_flight.set(self.active)

    async def read_body(self, request: Request) -> bytes:
        limit = self.config.limits.body_bytes
        declared = request.headers.get("content-length", "")
        too_big = APIError(413, f"The request body is over the server's limit of {limit} bytes.", code="body_too_large")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise too_big
            parts.append(part)
        return b"".join(parts)

    def graph(self, plan: RunPlan) -> Any:
        """The compiled graph of a plan (cached: compiled graphs are reusable across concurrent runs).

        The key holds what the endpoint knows of ``n``: once it finds the upstream serves samples one per request,
        new graphs plan one task per sample, so each sample is reported as it finishes.
        """
        policy = self.upstream.endpoint(plan.model)
        key = (plan.spec.model_dump_json(), plan.model, getattr(policy, "native_n", None))
        graph = self._graphs.get(key)
        if graph is None:
            try:
                graph = build_graph(plan.spec, policy=policy, history="all").compile()
            except ConfigurationError as exc:
                raise APIError(400, f"The preset cannot run: {exc}", code="invalid_spec") from exc
            self._graphs[key] = graph
            while len(self._graphs) > _GRAPH_CACHE:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        return graph

    def log(
        self,
        rid: str,
        model: str,
        status: int,
        started: float,
        usage: dict[str, Any] | None = None,
        *,
        preset: str = PASSTHROUGH,
        strategy: str = "none",
    ) -> None:
        """Log an answered request and count it in the metrics."""
        seconds = time.monotonic() - started
        spent = (
            f" prompt={usage.get('prompt_tokens', 0)} completion={usage.get('completion_tokens', 0)}" if usage else ""
        )
        logger.info("%s model=%s status=%d %.2fs%s", rid, model, status, seconds, spent)
        self.metrics.record(preset, strategy, status, seconds, usage)

    # -- routes ---------------------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "runs": self.active,
                "max_runs": self.config.limits.concurrent_runs,
                "presets": len(self.config.presets),
                "upstream_model": self.upstream.default_model,
            }
        )

    async def scrape(self, request: Request) -> Response:
        body, media = self.metrics.exposition()
        return Response(body, media_type=media)

    async def models(self, request: Request) -> Response:
        authorize(request.headers.get("authorization"), self.config.api_keys)
        default = self.upstream.default_model
        upstream = await self.upstream.models() or (default,)
        data: list[dict[str, Any]] = [
            {
                "id": f"{name}/{default}",
                "object": "model",
                "created": 0,
                "owned_by": "ttc",
                "ttc": {"preset": name, "strategy": p.spec.kind, "description": p.spec.description or p.spec.name},
            }
            for name, p in sorted(self.config.presets.items())
        ]
        data += [{"id": m, "object": "model", "created": 0, "owned_by": "upstream"} for m in upstream]
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Request) -> Response:
        started = time.monotonic()
        request.state.ttc_started = started
        rid = new_completion_id()
        authorize(request.headers.get("authorization"), self.config.api_keys)
        data = parse_json(await self.read_body(request))
        req = parse_request(data)
        plan = self.resolve(req, await self.upstream.models())
        if plan is None:
            return await self.pass_through(request, req, data, rid, started)
        model = req.model
        request.state.ttc_labels = labels = {"preset": plan.preset.name, "strategy": plan.spec.kind}
        graph = self.graph(plan)
        price_budget(plan.context, self.upstream.endpoint(plan.model))
        self.acquire()
        budget = plan.context.budget
        limit = (budget.seconds if budget and budget.seconds else self.config.limits.seconds) + _HARD_STOP_GRACE
        run = StrategyRun(graph, plan, time_limit=limit, limits=self.config.limits)
        run.task_context = context_from_headers(request.headers.items())  # continue the caller's traceparent
        meta = {"preset": plan.preset.name, "strategy": plan.spec.kind, "upstream_model": plan.model}
        if req.stream:

            def done(outcome: Outcome) -> None:
                self.log(rid, model, 200, started, outcome.usage, **labels)

            events = self.timed(
                run_events(
                    run, rid, model, include_usage=req.include_usage, meta=meta, secrets=self.secrets, on_outcome=done
                ),
                plan.preset.name,
                started,
            )
            sse = EventSourceResponse(
                events,
                ping=self.config.ping_seconds,
                shutdown_grace_period=self.config.shutdown_grace,
                headers={"x-request-id": rid},
            )
            return GuardedResponse(sse, self.release)
        try:
            outcome = await self.until_disconnect(request, run)
        finally:
            await self.release()
        if outcome is None:
            self.log(rid, model, _CLIENT_GONE, started, None, **labels)
            return Response(status_code=_CLIENT_GONE)
        self.log(rid, model, 200, started, outcome.usage, **labels)
        usage = openai_usage(outcome.usage, outcome.chosen_tokens)
        body = completion(
            rid, model, outcome.content, outcome.finish_reason, usage, {**meta, **outcome_meta(outcome)},
            outcome.tool_calls,
        )  # fmt: skip
        return JSONResponse(body, headers={"x-request-id": rid})

    async def timed(self, events: AsyncIterator[Any], preset: str, started: float) -> AsyncIterator[Any]:
        """``events`` as they come; the first one's delay goes to the time-to-first-event histogram."""
        first = True
        async for event in events:
            if first:
                self.metrics.first_event(preset, time.monotonic() - started)
                first = False
            yield event

    def resolve(self, req: ChatRequest, known: tuple[str, ...] | None) -> RunPlan | None:
        """The checked run plan of a preset request; None for a pass-through (whose checks are done here too)."""
        target = resolve_model(req.model, self.config.presets, self.upstream.default_model, known)
        if target.preset is not None:
            return plan_run(target.preset, target.model, req, self.config.limits)
        if req.ttc is not None:
            raise APIError(
                400, f"ttc: spec overrides need a preset ('<preset>/{req.model}'); see GET /v1/models",
                param="ttc", code="unsupported_parameter",
            )  # fmt: skip
        limits = self.config.limits
        n = req.n or 1
        if n > limits.generations:
            raise APIError(
                400, f"n: {n} is over the server's cap of {limits.generations}", param="n", code="cap_exceeded"
            )
        if req.length and n * req.length > limits.tokens:
            raise APIError(
                400, f"max_tokens: n x max_tokens = {n * req.length} is over the server's cap of {limits.tokens}",
                param="max_tokens", code="cap_exceeded",
            )  # fmt: skip
        return None

    async def until_disconnect(self, request: Request, run: StrategyRun) -> Outcome | None:
        """The run's outcome, or None when the client went away first (the run, and its requests, cancelled)."""

        async def outcome() -> Outcome:
            async with run:
                return await run.outcome()

        return await until_disconnect(request, outcome, reraise=(APIError,))

    async def pass_through(
        self, request: Request, req: ChatRequest, body: dict[str, Any], rid: str, started: float
    ) -> Response:
        """Forward the request unchanged to the upstream and its answer unchanged to the client."""
        self.acquire()
        stack = contextlib.AsyncExitStack()
        try:
            resp = await stack.enter_async_context(self.upstream.open(body))
        except EndpointError as exc:
            await stack.aclose()
            await self.release()
            raise from_endpoint_error(exc) from exc
        except BaseException:
            await stack.aclose()
            await self.release()
            raise

        async def close() -> None:
            await stack.aclose()

        if not req.stream or resp.status_code != 200:
            try:
                content = await resp.aread()
            finally:
                await close()
                await self.release()
            if resp.status_code in (401, 403):
                raise APIError(502, f"the upstream rejected the server's credentials (HTTP {resp.status_code})")
            self.log(rid, req.model, resp.status_code, started)
            text = redact(content.decode("utf-8", "replace"), self.secrets)
            media = resp.headers.get("content-type", "application/json")
            return Response(text, status_code=resp.status_code, media_type=media.split(";")[0])
        sse = EventSourceResponse(passthrough_events(resp, close), ping=self.config.ping_seconds)

        async def finish() -> None:
            await close()
            await self.release()
            self.log(rid, req.model, 200, started)

        return GuardedResponse(sse, finish)

    # -- errors ---------------------------------------------------------------------------------------------

    def count_failure(self, request: Request, status: int) -> None:
        """Count a chat request answered with an error (the preset and strategy when they were known)."""
        started = getattr(request.state, "ttc_started", None)
        if started is None:
            return
        labels = getattr(request.state, "ttc_labels", None) or {"preset": NO_PRESET, "strategy": "none"}
        self.metrics.record(labels["preset"], labels["strategy"], status, time.monotonic() - started, None)

    async def on_api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        logger.info("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.code or exc.type)
        self.count_failure(request, exc.status)
        return JSONResponse(exc.body(self.secrets), status_code=exc.status, headers=exc.headers)

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code="not_found"
                         if exc.status_code == 404 else None)  # fmt: skip
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)

    async def on_crash(self, request: Request, exc: Exception) -> Response:
        logger.error("%s %s failed: %s", request.method, request.url.path, redact(repr(exc), self.secrets))
        self.count_failure(request, 500)
        error = APIError(500, f"The server failed: {type(exc).__name__}", code="internal_error")
        return JSONResponse(error.body(), status_code=500)


def create_app(config: ServeConfig, upstream: Upstream) -> Starlette:
    """The ASGI app; the upstream starts with it (the embedded model too) and stops after the last request."""
    server = _Server(config, upstream)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await upstream.start()
        logger.info(
            "serving %d presets on %s (model %s)", len(config.presets), upstream.base_url, upstream.default_model
        )
        try:
            yield
        finally:
            await upstream.stop()

    app = Starlette(
        routes=[
            Route("/health", server.health, methods=["GET"]),
            Route("/metrics", server.scrape, methods=["GET"]),
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/v1/chat/completions", server.chat, methods=["POST"]),
        ],
        exception_handlers={
            APIError: server.on_api_error,
            HTTPException: server.on_http_error,
            Exception: server.on_crash,
        },
        lifespan=lifespan,
    )
    app.state.ttc = server
    return app
