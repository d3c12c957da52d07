"""Errors in the OpenAI shape (``{"error": {"message", "type", "param", "code"}}``) and their HTTP statuses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import openai

from ttc_graph.errors import EndpointError
from ttc_graph.server.allowance import RunCapExceeded, is_bad_request

__all__ = ["APIError", "from_endpoint_error", "redact"]

_TYPES = {401: "invalid_request_error", 429: "rate_limit_error"}


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (keys must never reach a log or an error)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class APIError(Exception):
    """A request failure the client sees as an OpenAI-shaped error with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or _TYPES.get(status) or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = dict(headers or {})

    def body(self, secrets: Iterable[str] = ()) -> dict[str, Any]:
        """The JSON body, with ``secrets`` scrubbed from the message."""
        return {
            "error": {
                "message": redact(self.message, secrets),
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _is_timeout(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
            return True
        exc = exc.__cause__
    return False


def from_endpoint_error(exc: EndpointError, what: str = "the upstream") -> APIError:
    """The client-facing error for an upstream that failed for good (after the endpoint's retries).

    A bad-request answer (400, 413, 422: a prompt over the model's context, ...) is a 400 with the upstream's
    message, and a run cap reached a 400 too; timeouts are 504; 429 and 503 (the upstream is busy or down) are
    503; rejected credentials are a 502 that never repeats the upstream's message (it may quote part of the key);
    a 404 is the client's unknown model; any other failure is a 502.
    """
    status = exc.status_code
    if isinstance(exc, RunCapExceeded):
        return APIError(400, f"{exc}", code="cap_exceeded")
    if is_bad_request(exc):  # the request itself is wrong (a prompt over the context, ...): the client's to fix
        message = str(exc)
        code = "context_length_exceeded" if "context" in message.lower() else "upstream_bad_request"
        return APIError(400, f"{what} refused the request: {message}", code=code)
    if _is_timeout(exc) or status in (408, 504):
        return APIError(504, f"{what} timed out: {exc}", code="upstream_timeout")
    if status in (429, 503):
        return APIError(503, f"{what} is unavailable after retries: {exc}", code="upstream_unavailable")
    if status in (401, 403):
        return APIError(502, f"{what} rejected the server's credentials (HTTP {status})", code="upstream_auth")
    if status == 404:
        return APIError(404, f"{what} does not know the model: {exc}", code="model_not_found")
    return APIError(502, f"{what} failed after retries: {exc}", code="upstream_error")
