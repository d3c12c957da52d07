"""Server-sent events: a strategy run as chat-completion chunks, pass-through streams, and closing what a response
holds whatever way it ends."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import anyio
import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ttc_graph.server.errors import APIError
from ttc_graph.server.protocol import chunk
from ttc_graph.server.runs import Outcome, Progress, StrategyRun, openai_usage

__all__ = ["GuardedResponse", "outcome_meta", "passthrough_events", "run_events"]

logger = logging.getLogger("ttc_graph.server")


class GuardedResponse(Response):
    """``inner``, then ``on_close`` however it ended (finished, failed, client gone, server stopping)."""

    def __init__(self, inner: Response, on_close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(status_code=inner.status_code)
        self.inner = inner
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.on_close()


async def run_events(
    run: StrategyRun,
    cid: str,
    model: str,
    *,
    include_usage: bool,
    meta: dict[str, Any],
    secrets: Iterable[str],
    on_outcome: Callable[[Outcome], None] | None = None,
) -> AsyncIterator[dict[str, str]]:
    """The chunks of a streamed run: the role at once, each round and sample as ``reasoning_content`` while the run
    goes on, then the selected solution as ``content``, the finish reason, the usage chunk (``include_usage``) and
    ``[DONE]``. A failure is an ``{"error": ...}`` event, as OpenAI streams it."""
    yield {"data": chunk(cid, model, {"role": "assistant", "content": ""})}
    outcome: Outcome | None = None
    try:
        async with run:
            async for item in run.events():
                if isinstance(item, Progress):
                    yield {"data": chunk(cid, model, {"reasoning_content": item.text}, ttc=item.data)}
                else:
                    outcome = item
    except APIError as exc:
        logger.info("%s model=%s stream failed: %d %s", cid, model, exc.status, exc.code or exc.type)
        yield {"data": json.dumps(exc.body(secrets))}
        return
    assert outcome is not None
    if on_outcome is not None:
        on_outcome(outcome)
    ttc = {**meta, **outcome_meta(outcome)}
    if outcome.content or not outcome.tool_calls:
        yield {"data": chunk(cid, model, {"content": outcome.content})}
    for i, call in enumerate(outcome.tool_calls):  # as the OpenAI API streams them: id and name, then arguments
        head = {
            "index": i,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        yield {"data": chunk(cid, model, {"tool_calls": [head]})}
        args = {"index": i, "function": {"arguments": call["function"]["arguments"]}}
        yield {"data": chunk(cid, model, {"tool_calls": [args]})}
    yield {"data": chunk(cid, model, {}, finish_reason=outcome.finish_reason)}
    if include_usage:
        yield {"data": chunk(cid, model, None, usage=openai_usage(outcome.usage, outcome.chosen_tokens), ttc=ttc)}
    yield {"data": "[DONE]"}


def outcome_meta(outcome: Outcome) -> dict[str, Any]:
    """What the ``ttc`` extension field says about a finished run."""
    return {
        "answer": outcome.answer,
        "stop_reason": outcome.stop_reason,
        "candidates": outcome.candidates,
        "fallback": outcome.fallback,
        "truncated": outcome.truncated,
        "errors": outcome.errors[:10],
    }


async def passthrough_events(
    resp: httpx.Response, close: Callable[[], Awaitable[None]]
) -> AsyncIterator[dict[str, str]]:
    """The ``data:`` payloads of an upstream stream, passed on as they come; ``close`` when done or abandoned."""
    try:
        async for line in resp.aiter_lines():
            if line.startswith("data:"):
                yield {"data": line[5:].strip()}
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await close()
