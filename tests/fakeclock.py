"""A fake clock for seconds budgets, so that tests of them never depend on how fast the machine runs.

:class:`FakeClock` stands in for the ``time`` module of every module whose seconds budget reads ``time.time()``;
only ``time()`` is fake, everything else is the real ``time``. :class:`TimedEndpoint` is a scripted endpoint whose
requests take ``cost`` seconds of that clock and no real time: concurrent requests overlap (the clock moves to the
latest end), sequential ones add up. It records the clock when each request starts.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from ttc_graph.endpoints.base import ChatMessage, GenerationResult, SamplingParams
from ttc_graph.testing import ScriptedEndpoint

__all__ = ["BUDGET_MODULES", "FakeClock", "TimedEndpoint"]

# every module that reads the wall clock for a run's seconds budget
BUDGET_MODULES = (
    "ttc_graph.budget",
    "ttc_graph.nodes.prepare",
    "ttc_graph.nodes.budget_controller",
    "ttc_graph.nodes.adaptive",
    "ttc_graph.nodes.select",
    "ttc_graph.verifiers.deadline",
)


class FakeClock:
    """``time.time()`` that moves only when told to; any other attribute is the real ``time`` module's."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.start = start
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def install(self, monkeypatch: pytest.MonkeyPatch, modules: Sequence[str] = BUDGET_MODULES) -> FakeClock:
        for name in modules:
            monkeypatch.setattr(importlib.import_module(name), "time", self)
        return self


@dataclass
class TimedEndpoint(ScriptedEndpoint):
    clock: FakeClock = field(default_factory=FakeClock)
    cost: float = 0.0
    starts: list[float] = field(default_factory=list)

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        started = self.clock.now
        self.starts.append(started)
        try:
            return await super().generate(messages, n=n, params=params, prefix=prefix)
        finally:
            self.clock.now = max(self.clock.now, started + self.cost)
