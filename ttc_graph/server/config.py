"""What ``ttc serve`` is configured with: keys, per-request caps and server limits."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ttc_graph.endpoints.base import check_number
from ttc_graph.errors import ConfigurationError
from ttc_graph.server.presets import Preset

__all__ = ["API_KEYS_ENV", "Limits", "ServeConfig", "api_keys_from"]

API_KEYS_ENV = "TTC_SERVE_API_KEYS"
"""Environment variable holding the accepted bearer keys, separated by commas or whitespace."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request caps and server-wide bounds.

    A request whose strategy could spend more ``generations`` (policy samples), policy completion ``tokens`` or
    wall ``seconds`` than its cap is refused with a 400, never clipped. At most ``concurrent_runs`` requests run
    at once (a 429 with ``Retry-After: retry_after`` past it); a body over ``body_bytes`` is a 413.
    ``verifier_samples`` caps what multiplies a verifier's requests (an LLM judge's ``samples`` per candidate, a
    program verifier's ``programs`` per question), so no request can fan out past the generation cap through its
    verifier. ``run_requests`` caps a run's upstream requests of every kind (policy, verifier, retries) and
    ``tokens`` its completion tokens of every kind too, at run time (:mod:`ttc_graph.server.allowance`): past
    either, the run's further requests are not sent. ``dollars`` caps a request's cost like ``tokens`` (a budget
    over it is refused; an open one gets it).
    """

    generations: int = 64
    tokens: int = 131_072
    seconds: float = 600.0
    concurrent_runs: int = 8
    body_bytes: int = 1_048_576
    retry_after: int = 2
    verifier_samples: int = 16
    run_requests: int = 1024
    dollars: float | None = None
    """A request's cost cap (the upstream model's price, :mod:`ttc_graph.prices`); None: no cap."""

    def __post_init__(self) -> None:
        for name in ("generations", "tokens", "concurrent_runs", "body_bytes", "verifier_samples", "run_requests"):
            check_number(name, getattr(self, name), integer=True, minimum=1)
        check_number("seconds", self.seconds, integer=False, minimum=0, strict=True)
        check_number("retry_after", self.retry_after, integer=True, minimum=0)
        if self.dollars is not None:
            check_number("dollars", self.dollars, integer=False, minimum=0, strict=True)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """The server's settings. An empty ``api_keys`` means no authentication (loopback use)."""

    presets: Mapping[str, Preset]
    api_keys: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    shutdown_grace: float = 30.0
    ping_seconds: float = 15.0


def api_keys_from(keys: Iterable[str], environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The accepted keys: ``keys`` (``--api-key``) plus those of :data:`API_KEYS_ENV`, duplicates dropped."""
    env = os.environ if environ is None else environ
    found = [*keys, *re.split(r"[\s,]+", env.get(API_KEYS_ENV, ""))]
    out = tuple(dict.fromkeys(k.strip() for k in found if k and k.strip()))
    if any(len(k) < 8 for k in out):
        raise ConfigurationError("api_key: keys must be at least 8 characters long")
    return out
