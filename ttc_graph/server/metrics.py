"""Prometheus metrics of ``ttc serve`` (``GET /metrics``): requests, latency, tokens, upstream calls, runs in flight.

Every app has its own registry, so several servers in one process (tests, notebooks) count apart. Labels are the
preset, the strategy, the HTTP status, the node kind of a run's spend (``propose``, ``verify``, ``revise``) and the
token type: never a key, a model reply or a prompt. Requests that name no preset count under ``passthrough`` when
the upstream answers them and under ``none`` when they are refused before a preset is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["NO_PRESET", "PASSTHROUGH", "ServeMetrics"]

NO_PRESET = "none"
"""The preset label of a request refused before its preset was known."""

PASSTHROUGH = "passthrough"
"""The preset label of a request forwarded to the upstream unchanged."""

_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class ServeMetrics:
    """The counters of one ``ttc serve`` app and their text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ttc_requests", "Chat completion requests by preset, strategy and HTTP status.",
            ["preset", "strategy", "status"], registry=r,
        )  # fmt: skip
        self.seconds = Histogram(
            "ttc_request_seconds", "Seconds from a request's arrival to its answer (streamed: to its last event).",
            ["preset"], buckets=_SECONDS, registry=r,
        )  # fmt: skip
        self.first_byte = Histogram(
            "ttc_time_to_first_event_seconds", "Seconds from a streamed request's arrival to its first event.",
            ["preset"], buckets=_SECONDS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "ttc_tokens", "Tokens the upstream reported for the runs, by preset, node kind and type.",
            ["preset", "node", "type"], registry=r,
        )  # fmt: skip
        self.generations = Counter(
            "ttc_generations", "Samples the runs drew, by preset and node kind.", ["preset", "node"], registry=r
        )
        self.upstream_requests = Counter(
            "ttc_upstream_requests", "Requests the runs sent upstream, by preset and node kind.",
            ["preset", "node"], registry=r,
        )  # fmt: skip
        self.upstream_failures = Counter(
            "ttc_upstream_failed_requests", "Upstream requests of the runs that failed, by preset and node kind.",
            ["preset", "node"], registry=r,
        )  # fmt: skip
        self.cost = Counter(
            "ttc_cost_dollars", "Dollars the runs cost at the upstream model's price, by preset and node kind.",
            ["preset", "node"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge("ttc_runs_in_flight", "Runs holding a slot now.", registry=r)

    def record(self, preset: str, strategy: str, status: int, seconds: float, usage: Mapping[str, Any] | None) -> None:
        """Count one answered or refused request and the spend its run reported (``usage.ttc`` of the reply)."""
        self.requests.labels(preset, strategy, str(status)).inc()
        self.seconds.labels(preset).observe(max(seconds, 0.0))
        if not usage:
            return
        by_kind: Mapping[str, Mapping[str, Any]] = usage.get("by_kind") or {"all": usage}
        for node, spent in by_kind.items():
            self.tokens.labels(preset, node, "prompt").inc(int(spent.get("prompt_tokens", 0)))
            self.tokens.labels(preset, node, "completion").inc(int(spent.get("completion_tokens", 0)))
            self.generations.labels(preset, node).inc(int(spent.get("generations", 0)))
            self.upstream_requests.labels(preset, node).inc(int(spent.get("requests", 0)))
            self.upstream_failures.labels(preset, node).inc(int(spent.get("failed_requests", 0)))
            self.cost.labels(preset, node).inc(max(0.0, float(spent.get("cost", 0.0))))

    def first_event(self, preset: str, seconds: float) -> None:
        self.first_byte.labels(preset).observe(max(seconds, 0.0))

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
