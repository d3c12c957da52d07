"""The one retry layer: tenacity around every model and verifier call.

Retried: 408, 409, 429 and 5xx answers, a 200 whose body does not parse (or has no choices: the endpoints raise a
retryable :class:`EndpointError`), timeouts and connection errors, with exponential backoff and jitter, honouring
``Retry-After``. Never retried: other 4xx answers (400, 401, 403, 404, 422, ...).

:func:`answer_lost` tells a failure after which the server may still have generated the answer (a timeout or a
dropped connection once the request was sent, an unreadable body) from one where it did not (no connection, an
error status): the endpoints charge the former's ``max_tokens`` to ``unconfirmed_tokens``.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import openai
from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from ttc_graph.errors import EndpointError

__all__ = [
    "RETRYABLE_STATUS",
    "AnswerLost",
    "RetryConfig",
    "answer_lost",
    "call_with_retries",
    "is_retryable",
    "retry_after_seconds",
]

RETRYABLE_STATUS = frozenset({408, 409, 429})
T = TypeVar("T")


class RetryConfig(BaseModel):
    """How hard to retry a transient failure."""

    max_attempts: int = Field(4, ge=1, description="Attempts in all, the first included.")
    initial_backoff: float = Field(0.5, ge=0, description="Seconds before the first retry.")
    max_backoff: float = Field(30.0, ge=0, description="Cap on one wait, Retry-After included.")
    jitter: float = Field(0.5, ge=0, description="Uniform random seconds added to each wait.")


def _status_of(exc: BaseException) -> int | None:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    if isinstance(exc, EndpointError):
        return exc.status_code
    status = getattr(exc, "status_code", None)  # other SDKs (anthropic, google, ...) name it the same way
    return status if isinstance(status, int) else None


class AnswerLost(Exception):
    """An answer that was being received and was lost: a stream that broke, or ended without a ``finish_reason``.
    Transient, and the server may have generated more than arrived (``arrived`` completion tokens did)."""

    def __init__(self, message: str, *, arrived: int = 0) -> None:
        super().__init__(message)
        self.arrived = arrived


def is_retryable(exc: BaseException) -> bool:
    """True for transient failures only."""
    if isinstance(exc, AnswerLost):
        return True
    if isinstance(exc, EndpointError):
        return exc.retryable
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return True
    if isinstance(exc, json.JSONDecodeError | openai.APIResponseValidationError):
        return True  # a malformed 200 body: a proxy or a server in trouble, as transient as a 5xx
    if isinstance(exc, httpx.TimeoutException | httpx.TransportError | TimeoutError | ConnectionError):
        return True
    status = _status_of(exc)
    return status is not None and (status in RETRYABLE_STATUS or status >= 500)


_NOT_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})  # httpx and httpx2 names alike


def answer_lost(exc: BaseException) -> bool:
    """Whether the server may have generated an answer the client never got: a timeout or a dropped connection
    after the request was sent, or a 200 whose body does not parse. Not for an error status or no connection."""
    if isinstance(exc, AnswerLost | json.JSONDecodeError | openai.APIResponseValidationError | TimeoutError):
        return True
    if isinstance(exc, EndpointError):
        return False
    if isinstance(exc, openai.APIStatusError) or _status_of(exc) is not None:
        return False
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return cause is None or type(cause).__name__ not in _NOT_SENT
    if isinstance(exc, httpx.TransportError):
        return type(exc).__name__ not in _NOT_SENT
    return isinstance(exc, ConnectionError)


def _headers_of(exc: BaseException) -> Any:
    if isinstance(exc, openai.APIStatusError):
        return exc.response.headers
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.headers
    return None


def retry_after_seconds(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` / ``retry-after-ms``), if any."""
    headers = _headers_of(exc)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):  # neither seconds nor an HTTP-date: ignore it, back off as usual
        return None
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class _WaitRetryAfter:
    def __init__(self, config: RetryConfig) -> None:
        self._config = config
        self._backoff = wait_exponential_jitter(
            multiplier=config.initial_backoff, max=config.max_backoff, jitter=config.jitter
        )

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_seconds(exc) if exc else None
        if asked is not None:
            return min(asked, self._config.max_backoff)
        return float(self._backoff(state))


def to_endpoint_error(exc: BaseException, what: str) -> EndpointError:
    """Wrap a final failure in a typed error that names the call and the status."""
    if isinstance(exc, EndpointError):
        return exc
    status = _status_of(exc)
    detail = f"HTTP {status}: " if status is not None else f"{type(exc).__name__}: "
    return EndpointError(f"{what} failed: {detail}{exc}", status_code=status, retryable=is_retryable(exc))


async def call_with_retries(fn: Callable[[], Awaitable[T]], config: RetryConfig, what: str) -> T:
    """Await ``fn()`` under the retry policy; raise :class:`EndpointError` when it fails for good."""
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_retryable),
            stop=stop_after_attempt(config.max_attempts),
            wait=_WaitRetryAfter(config),
            reraise=True,
        ):
            with attempt:
                return await fn()
    except Exception as exc:
        raise to_endpoint_error(exc, what) from exc
    raise AssertionError("unreachable")  # pragma: no cover
