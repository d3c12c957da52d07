"""Typed exceptions raised by ttc_graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ttc_graph.usage import RequestUsage

__all__ = [
    "BudgetError",
    "ConfigurationError",
    "EndpointError",
    "LocalServerError",
    "TTCError",
    "VerifierError",
]


class TTCError(Exception):
    """Base class of every error ttc_graph raises on purpose."""


class ConfigurationError(TTCError, ValueError):
    """An argument, spec or setting is invalid; raised before any model call."""


class EndpointError(TTCError):
    """A model endpoint failed after retries or returned something unusable.

    ``usage`` is what the failed call cost (its failed requests, tokens reserved by answers that were lost, a probe
    sent first) and ``errors`` every failed request's message, when the call fanned out; both may be empty.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retryable: bool = False,
        usage: RequestUsage | None = None,
        errors: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable
        self.usage = usage
        self.errors = list(errors or [])


class VerifierError(TTCError):
    """A verifier returned a malformed or out-of-range result."""


class BudgetError(TTCError):
    """A budget is inconsistent with the strategy asked of it."""


class LocalServerError(TTCError):
    """The embedded llama.cpp server could not be built, started or reached."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        full = f"{message}\n--- last lines of the server log ---\n{log_tail}" if log_tail else message
        super().__init__(full)
        self.log_tail = log_tail
