"""What runs on Ray workers: a replica actor that owns one endpoint, a stateless unit task, and a version probe.

Nothing here imports Ray: :mod:`ttc_graph.scale.ray_runner` wraps these with ``ray.remote`` when it starts, so the
classes and functions travel by reference (the workers import ttc_graph) and only specs and requests travel as data.
"""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import Mapping
from typing import Any

from ttc_graph.scale.replicas import open_replica, parse_replica
from ttc_graph.scale.units import UnitExecutor, UnitOutcome, UnitRequest, execute

__all__ = ["UnitReplica", "run_unit_task", "versions"]


def versions() -> dict[str, str]:
    """The versions a driver and its workers must share: Ray, Python (major.minor) and ttc_graph."""
    from importlib.metadata import PackageNotFoundError, version

    import ray

    try:
        ttc = version("ttc-graph")
    except PackageNotFoundError:  # a source tree on the path
        from ttc_graph import __version__ as ttc

    return {"ray": ray.__version__, "python": ".".join(platform.python_version_tuple()[:2]), "ttc_graph": ttc}


class UnitReplica:
    """One replica: an endpoint built from its spec (starting its embedded llama.cpp server, if any) that runs the
    units sent to it. Ray runs its constructor again when it restarts the actor, so a restarted replica has a fresh
    server. ``executors`` are the driver's unit executors (functions: they arrive by reference, importing the
    modules that define them here)."""

    def __init__(self, replica: dict[str, Any], executors: Mapping[str, UnitExecutor] | None = None) -> None:
        self.spec = parse_replica(replica)
        self.executors = dict(executors or {})
        self.policy, self.server = open_replica(self.spec)
        self.units = 0

    async def run(self, request: UnitRequest) -> UnitOutcome:
        self.units += 1
        return await execute(self.policy, request, self.executors)

    def info(self) -> dict[str, Any]:
        """Where this replica runs and what it serves."""
        url = self.server.base_url if self.server is not None else getattr(self.policy, "base_url", None)
        return {"pid": os.getpid(), "base_url": url, "units": self.units, "versions": versions()}

    def stop(self) -> None:
        """Stop the embedded server (the actor is killed next)."""
        if self.server is not None:
            self.server.stop()


def run_unit_task(
    replica: dict[str, Any], request: UnitRequest, executors: Mapping[str, UnitExecutor] | None = None
) -> UnitOutcome:
    """One unit as a stateless Ray task against an upstream URL (its client lives for this task only)."""
    spec = parse_replica(replica)

    async def go() -> UnitOutcome:
        policy, server = open_replica(spec)
        try:
            return await execute(policy, request, executors)
        finally:
            close = getattr(policy, "aclose", None)
            if close is not None:
                await close()
            if server is not None:
                server.stop()

    return asyncio.run(go())
