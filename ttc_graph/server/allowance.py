"""What one ``ttc serve`` run may still ask of its upstream, policy and verifier requests alike.

A run's plan is checked against the caps before it starts wherever its worst case can be computed
(:mod:`ttc_graph.server.planning`); what only shows at run time (an LLM judge judging every step of answers of
unknown length, retries) is held here. :func:`open_allowance` gives a run its :class:`RunAllowance`; every
request the run sends is admitted by it (an OpenAI-compatible endpoint's every HTTP request, through the request
gate of :mod:`ttc_graph.endpoints.gate`; any other endpoint's calls through
:class:`~ttc_graph.server.upstream.TrackedEndpoint`):

* the run's upstream requests stay within ``max_requests`` and its completion tokens (every kind, tokens
  reserved by lost answers included) within ``max_tokens``; past either, a request fails with
  :class:`RunCapExceeded` without being sent;
* the first request of a run goes alone, so a request the upstream cannot serve (a prompt over its context, a
  malformed message) costs one upstream request: the others wait for its answer (at most ``first_wait``
  seconds), and after an upstream's bad-request answer (:data:`BAD_REQUEST_STATUS`) every later request of the
  run fails with that answer, unsent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from dataclasses import dataclass, field

from ttc_graph.endpoints.gate import install_gate
from ttc_graph.errors import EndpointError
from ttc_graph.usage import RequestUsage

__all__ = [
    "BAD_REQUEST_STATUS",
    "RunAllowance",
    "RunCapExceeded",
    "current_allowance",
    "is_bad_request",
    "open_allowance",
]

BAD_REQUEST_STATUS = frozenset({400, 413, 422})
"""Upstream answers that say the request itself is wrong: sending it again, or its siblings, cannot help."""

_ALLOWANCE: contextvars.ContextVar[RunAllowance | None] = contextvars.ContextVar("ttc_run_allowance", default=None)


class RunCapExceeded(EndpointError):
    """A request a run may not send: the run has used up the server's cap on its upstream requests or tokens."""


def is_bad_request(exc: BaseException) -> bool:
    """Whether ``exc`` is an upstream's answer that the request itself is wrong (not a failure worth retrying)."""
    return (
        isinstance(exc, EndpointError)
        and not isinstance(exc, RunCapExceeded)
        and (exc.status_code in BAD_REQUEST_STATUS)
    )


@dataclass
class RunAllowance:
    """One run's upstream allowance (see the module docstring). Counters are the run's totals so far."""

    max_requests: int
    max_tokens: int
    first_wait: float = 1.0
    requests: int = 0
    tokens: int = 0
    refused: EndpointError | None = None
    _answered: asyncio.Event = field(default_factory=asyncio.Event)

    async def admit(self, requests: int) -> None:
        """Count ``requests`` about to be sent, or raise (the refusal that stopped the run, or a cap)."""
        if self.requests > 0 and not self._answered.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), self.first_wait)
        if self.refused is not None:
            raise self.refused
        if self.requests + requests > self.max_requests:
            raise RunCapExceeded(
                f"the run would send {self.requests + requests} upstream requests, over the server's cap of"
                f" {self.max_requests} per run (policy and verifier requests)"
            )
        if self.tokens >= self.max_tokens:
            raise RunCapExceeded(
                f"the run has spent {self.tokens} completion tokens, the server's cap of {self.max_tokens} per run"
                " (policy and verifier tokens)"
            )
        self.requests += requests

    def settle(self, usage: RequestUsage | None, error: BaseException | None = None) -> None:
        """Record an answer: what it cost, and a bad-request answer that stops the run's later requests."""
        if usage is not None:
            self.tokens += usage.completion_tokens + usage.unconfirmed_tokens
        if error is not None and is_bad_request(error) and self.refused is None:
            self.refused = error  # type: ignore[assignment]
        self._answered.set()


def open_allowance(max_requests: int, max_tokens: int, *, first_wait: float = 1.0) -> RunAllowance:
    """Give the current task (and the tasks it starts) a fresh allowance; it is their request gate too, so every
    request an endpoint sends passes it (:mod:`ttc_graph.endpoints.gate`)."""
    allowance = RunAllowance(max_requests, max_tokens, first_wait)
    _ALLOWANCE.set(allowance)
    install_gate(allowance)
    return allowance


def current_allowance() -> RunAllowance | None:
    """The allowance of the run the current task belongs to, if any."""
    return _ALLOWANCE.get()
