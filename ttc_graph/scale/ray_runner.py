"""Sweeps and studies on a Ray cluster: replicas run the units, the driver stays the single writer of its store.

``RayUnits`` is a :class:`~ttc_graph.scale.units.UnitRunner`. With ``replicas=K`` it starts K actors, spread over the
cluster's nodes, each owning one endpoint: an upstream URL (a vLLM or SGLang server next to it) or an embedded
llama.cpp server started inside the actor. With ``replicas=None`` and a URL, each unit is a stateless Ray task. A
replica that crashes is restarted by Ray (``max_restarts``) and its units are retried by Ray (``max_task_retries``);
a replica that is gone for good hands its units to the others. Nothing is written until a unit's outcome is back on
the driver, so no unit is written twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ttc_graph.errors import ConfigurationError, TTCError
from ttc_graph.scale.actors import UnitReplica, run_unit_task, versions
from ttc_graph.scale.replicas import EmbeddedServerSpec, parse_replica
from ttc_graph.scale.units import EXECUTORS, UnitOutcome, UnitRequest
from ttc_graph.specs.models import OpenAIEndpointSpec

__all__ = ["AUTO", "LOCAL", "ClusterError", "RayUnits", "check_address", "connect_ray"]

logger = logging.getLogger("ttc_graph.scale")

LOCAL = "local"  # a private Ray instance on this machine's loopback, stopped with the runner
AUTO = "auto"  # the cluster RAY_ADDRESS names, or the one `ray start` runs on this machine


class ClusterError(TTCError):
    """The Ray cluster cannot be reached, does not match this driver, or lost every replica."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigurationError("--ray needs Ray: pip install 'ttc-graph[ray]'") from exc
    return ray


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address that is malformed, refuses connections or does not answer within ``timeout``."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClusterError(f"Ray address {address!r}: use HOST:PORT (the head's GCS), ray://HOST:PORT, auto or local")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"Ray address {address!r} is not reachable ({exc}); is `ray start --head` running there?"
        ) from exc


def connect_ray(address: str = LOCAL, *, num_cpus: int | None = None, timeout: float = 5.0) -> bool:
    """Connect this process to Ray; True when it started a private local instance (which the caller stops).

    ``local`` starts one on loopback with ``num_cpus``; ``auto`` joins ``RAY_ADDRESS`` or this machine's cluster;
    ``HOST:PORT`` or ``ray://HOST:PORT`` join that one, after a reachability check. An unreachable address or a Ray
    or Python version that differs from the cluster's is a :class:`ClusterError`, raised before any model call.
    A process already connected to Ray keeps that connection (and ``address`` is not used).
    """
    if address == LOCAL:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's switch to bind a lone node to loopback
    ray = _ray()
    if ray.is_initialized():
        return False
    if address not in (LOCAL, AUTO):
        check_address(address, timeout)
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address == LOCAL:
            ray.init(address=LOCAL, num_cpus=num_cpus, include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except ConnectionError as exc:
        raise ClusterError(f"Ray address {address!r}: {exc}") from exc
    except RuntimeError as exc:
        if "version mismatch" in str(exc).lower():
            raise ClusterError(
                f"Ray version mismatch between this driver and the cluster at {address!r}: {exc}"
            ) from exc
        raise
    return address == LOCAL


def _check_versions(found: dict[str, str], where: str) -> None:
    mine = versions()
    clashes = [f"{k} {found.get(k)!r} there, {v!r} here" for k, v in mine.items() if found.get(k) != v]
    if clashes:
        raise ClusterError(f"version mismatch with {where}: {'; '.join(clashes)}; install the same versions everywhere")


@dataclass(slots=True)
class _Replica:
    index: int
    handle: Any
    alive: bool = True
    in_flight: int = 0


class RayUnits:
    """Runs sweep and study units on Ray; use it as a context manager around ``run_sweep``/``run_study``::

        with RayUnits({"kind": "embedded", "threads": 1, "parallel": 2}, replicas=2) as units:
            await run_sweep(units.driver_policy, problems, config, store, runner=units)

    ``replica`` is an endpoint spec (``kind: openai`` with ``base_url`` and ``model``, or ``kind: embedded``);
    ``concurrency`` is the units in flight per replica (in all, with tasks). ``num_cpus`` is what each replica or task
    reserves on its node. ``address`` is ``local``, ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``.
    """

    def __init__(
        self,
        replica: OpenAIEndpointSpec | EmbeddedServerSpec | dict[str, Any],
        *,
        replicas: int | None = 1,
        concurrency: int = 2,
        address: str = LOCAL,
        num_cpus: float = 1.0,
        cluster_cpus: int | None = None,
        max_restarts: int = 2,
        max_task_retries: int = 2,
        start_timeout: float = 900.0,
    ) -> None:
        self.replica = parse_replica(replica)
        if replicas is not None and replicas < 1:
            raise ConfigurationError(f"replicas: must be >= 1, got {replicas}")
        if replicas is None and isinstance(self.replica, EmbeddedServerSpec):
            raise ConfigurationError("replicas: an embedded model server lives in an actor; give --replicas K")
        if concurrency < 1:
            raise ConfigurationError(f"concurrency: must be >= 1, got {concurrency}")
        if max_restarts < 0 or max_task_retries < 0:
            raise ConfigurationError("max_restarts and max_task_retries must be >= 0")
        self.replicas = replicas
        self.concurrency = concurrency
        self.address = address
        self.num_cpus = num_cpus
        self.cluster_cpus = cluster_cpus
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.start_timeout = start_timeout
        self.lost: list[str] = []
        self.infos: list[dict[str, Any]] = []
        self._replicas: list[_Replica] = []
        self._task: Any = None
        self._data: dict[str, Any] = {}
        self._executors: dict[str, Any] = {}
        self._owns_ray = False
        self._started = False

    @property
    def slots(self) -> int:
        """Units the driver keeps in flight: ``concurrency`` per replica, or ``concurrency`` tasks."""
        return self.concurrency * (self.replicas or 1)

    @property
    def actors(self) -> list[Any]:
        """The replica actors' handles (empty with tasks)."""
        return [r.handle for r in self._replicas]

    @property
    def driver_policy(self) -> _Elsewhere:
        """A stand-in for the driver's ``policy`` argument: units run on the replicas, never here."""
        return _Elsewhere()

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> RayUnits:
        """Connect, check versions, start the replicas and wait until each is ready (its server healthy)."""
        if self._started:
            return self
        self._owns_ray = connect_ray(self.address, num_cpus=self.cluster_cpus)
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        ray = _ray()
        probe = ray.remote(versions).options(num_cpus=0, max_retries=0)
        _check_versions(ray.get(probe.remote(), timeout=self.start_timeout), f"the Ray cluster at {self.address!r}")
        data = self.replica.model_dump(mode="json")
        self._executors = dict(EXECUTORS)  # what this driver registered travels to the workers by reference
        if self.replicas is None:
            self._task = ray.remote(run_unit_task).options(num_cpus=self.num_cpus, max_retries=self.max_task_retries)
            self._data = data
            return
        actor = ray.remote(UnitReplica).options(
            num_cpus=self.num_cpus,
            max_restarts=self.max_restarts,
            max_task_retries=self.max_task_retries,
            max_concurrency=self.concurrency + 4,
            scheduling_strategy="SPREAD",
        )
        self._data = data
        self._replicas = [_Replica(i, actor.remote(data, self._executors)) for i in range(self.replicas)]
        refs = [r.handle.info.remote() for r in self._replicas]
        try:
            self.infos = ray.get(refs, timeout=self.start_timeout)
        except ray.exceptions.GetTimeoutError as exc:
            raise ClusterError(
                f"{self.replicas} replica(s) not ready within {self.start_timeout:g}s (does the cluster have"
                f" {self.num_cpus:g} free CPU(s) per replica?)"
            ) from exc
        except ray.exceptions.RayActorError as exc:
            raise ClusterError(f"a replica failed to start: {exc}") from exc
        for i, info in enumerate(self.infos):
            _check_versions(info["versions"], f"replica {i} (pid {info['pid']})")
        logger.info("ray replicas ready: %s", [i["base_url"] for i in self.infos])

    def stop(self) -> None:
        """Stop every replica's server and actor, and the private Ray instance if this runner started it."""
        if not self._started:
            return
        ray = _ray()
        stops = [r.handle.stop.remote() for r in self._replicas if r.alive]
        if stops:
            done, _ = ray.wait(stops, num_returns=len(stops), timeout=30)
            for ref in done:
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as exc:
                    logger.warning("a replica did not stop cleanly: %s", exc)
        for r in self._replicas:
            ray.kill(r.handle)
        self._replicas = []
        self._started = False
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> RayUnits:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- units --------------------------------------------------------------------------------------------------

    async def run(self, request: UnitRequest) -> UnitOutcome:
        """Run one unit on a replica (the least busy live one) or as a task; the outcome is not written here."""
        if not self._started:
            raise ClusterError("RayUnits is not started: use it as a context manager or call start()")
        ray = _ray()
        if self._task is not None:
            outcome: UnitOutcome = await self._task.remote(self._data, request, self._executors)
            return outcome
        while True:
            live = [r for r in self._replicas if r.alive]
            if not live:
                raise ClusterError(
                    f"every replica is gone ({'; '.join(self.lost[-3:])}); finished units are kept, rerun to resume"
                )
            replica = min(live, key=lambda r: r.in_flight)
            replica.in_flight += 1
            try:
                outcome = await replica.handle.run.remote(request)
                return outcome
            except ray.exceptions.ActorDiedError as exc:  # gone for good: restarts exhausted or killed outright
                if replica.alive:
                    replica.alive = False
                    self.lost.append(f"replica {replica.index}: {str(exc).splitlines()[0]}")
                    logger.warning("replica %d is gone; its units go to the others", replica.index)
            except ray.exceptions.RayActorError as exc:  # unavailable for now (restarting): try again shortly
                logger.info("replica %d unavailable (%s); retrying %s", replica.index, exc, request.label)
                await asyncio.sleep(1.0)
            finally:
                replica.in_flight -= 1


class _Elsewhere:
    """The driver's policy when units run on Ray: never called."""

    name = "ray"

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("units run on the Ray replicas; the driver's policy is never called")
