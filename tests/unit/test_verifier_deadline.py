"""Verifier calls end at the run's deadline and at their own ``timeout``: the run keeps what it paid for.

Time is a fake clock (:mod:`tests.fakeclock`): a "slow" verifier moves the clock past the deadline and then blocks
until the test releases it, so nothing here depends on how fast the machine runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakeclock import FakeClock
from ttc_graph import Budget, create_best_of_n, create_revisions
from ttc_graph.errors import ConfigurationError
from ttc_graph.specs.models import PythonVerifierSpec
from ttc_graph.testing import ScriptedEndpoint
from ttc_graph.verifiers import FunctionVerifier
from ttc_graph.verifiers.base import VerificationResult, Verifier, VerifyItem
from ttc_graph.verifiers.deadline import verify_within
from ttc_graph.verifiers.registry import build_verifier

ANSWERS = ["\\boxed{4}", "\\boxed{4}", "\\boxed{5}", "\\boxed{4}"]
HANG_GUARD = 30  # seconds: a hang guard only, never reached when the deadline holds


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so a sync verifier abandoned in its worker thread returns."""
    event = threading.Event()
    yield event
    event.set()


def sync_outlasting(clock: FakeClock, release: threading.Event, seconds: float = 100.0) -> Any:
    def slow(question: str, solution: str) -> float:
        clock.advance(seconds)  # this call takes `seconds` of the run's clock, and never ends by itself
        release.wait(HANG_GUARD)
        return 1.0

    return slow


def async_outlasting(clock: FakeClock, seconds: float = 100.0) -> Any:
    async def slow(question: str, solution: str) -> float:
        clock.advance(seconds)
        await asyncio.Event().wait()  # never set: only cancellation ends it
        return 1.0

    return slow


async def run(builder: Any) -> dict[str, Any]:
    return await asyncio.wait_for(builder.compile().ainvoke({"question": "2 + 2?"}), HANG_GUARD)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_verifier_outlasting_the_seconds_budget_ends_the_run_with_what_it_paid_for(
    kind: str, monkeypatch: pytest.MonkeyPatch, release: threading.Event
):
    clock = FakeClock().install(monkeypatch)
    fn = sync_outlasting(clock, release) if kind == "sync" else async_outlasting(clock)
    policy = ScriptedEndpoint(ANSWERS)
    out = await run(create_best_of_n(policy, fn, n=4, selection="weighted", budget=Budget(seconds=10)))
    assert out["stop_reason"] == "budget:seconds"
    assert len(out["candidates"]) == 4  # every sample kept
    assert all(not c["scored"] for c in out["candidates"])
    assert all("seconds budget ran out" in c["meta"]["verify_error"] for c in out["candidates"])
    assert out["usage"]["generations"] == 4
    assert out["usage"]["by_kind"]["propose"]["requests"] == len(policy.calls)
    assert out["answer"] == "4"  # unscored samples still vote


async def test_a_deadline_in_the_run_context_bounds_the_verifier_too(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
):
    clock = FakeClock().install(monkeypatch)
    graph = create_best_of_n(ScriptedEndpoint(ANSWERS), sync_outlasting(clock, release), n=4).compile()
    out = await asyncio.wait_for(
        graph.ainvoke({"question": "2 + 2?"}, context={"budget": Budget(seconds=5)}), HANG_GUARD
    )
    assert out["stop_reason"] == "budget:seconds"
    assert len(out["candidates"]) == 4


async def test_revisions_end_at_the_deadline_when_their_verifier_outlasts_it(monkeypatch: pytest.MonkeyPatch):
    clock = FakeClock().install(monkeypatch)
    policy = ScriptedEndpoint(ANSWERS)
    builder = create_revisions(policy, async_outlasting(clock), n=2, chain_length=1, budget=Budget(seconds=10))
    out = await run(builder)
    assert out["stop_reason"] == "budget:seconds"
    assert out["candidates"] and out["usage"]["generations"] == len(out["candidates"])


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_verifier_timeout_leaves_its_items_unscored_and_the_run_goes_on(
    kind: str, monkeypatch: pytest.MonkeyPatch, release: threading.Event
):
    clock = FakeClock().install(monkeypatch)
    fn = sync_outlasting(clock, release, 3) if kind == "sync" else async_outlasting(clock, 3)
    verifier = FunctionVerifier(fn, timeout=2)
    out = await run(create_best_of_n(ScriptedEndpoint(ANSWERS), verifier, n=4))
    assert out["stop_reason"] == "complete"
    assert all("timed out after 2s" in c["meta"]["verify_error"] for c in out["candidates"])
    assert out["answer"] == "4"


class Counting(Verifier):
    def __init__(self) -> None:
        self.calls = 0

    async def verify(self, items: Any) -> VerificationResult:
        self.calls += 1
        return VerificationResult([])


async def test_a_call_past_the_deadline_is_not_made(monkeypatch: pytest.MonkeyPatch):
    clock = FakeClock().install(monkeypatch)
    verifier = Counting()
    items = [VerifyItem("q", ("a",))]
    result = await verify_within(verifier, items, deadline=clock.now - 1)
    assert verifier.calls == 0
    assert result.scores[0].value is None and "not called" in (result.scores[0].error or "")


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), True, "3"])
def test_a_verifier_timeout_is_a_finite_positive_number(bad: Any):
    with pytest.raises(ConfigurationError, match="timeout"):
        FunctionVerifier(lambda q, s: 1.0, timeout=bad)


def test_every_verifier_spec_takes_a_timeout(monkeypatch: pytest.MonkeyPatch):
    spec = PythonVerifierSpec(target="tests.unit.test_verifier_deadline:always_one", timeout=7.5)
    verifier = build_verifier(spec, ScriptedEndpoint(["x"]))
    assert verifier is not None and verifier.timeout == 7.5
    with pytest.raises(ValueError, match="timeout"):
        PythonVerifierSpec(target="a:b", timeout=True)
    with pytest.raises(ValueError, match="timeout"):
        PythonVerifierSpec(target="a:b", timeout=0)


def always_one(question: str, solution: str) -> float:
    return 1.0


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_agent_verifier_outlasting_the_seconds_budget_ends_the_run_with_its_runs(
    kind: str, monkeypatch: pytest.MonkeyPatch, release: threading.Event
):
    from tests.fakeclock import BUDGET_MODULES
    from tests.unit.test_agent_best_of_n import PerRun, ask
    from ttc_graph.agents import create_agent_best_of_n

    clock = FakeClock().install(monkeypatch, [*BUDGET_MODULES, "ttc_graph.agents.runs"])

    def slow(state: dict[str, Any]) -> float:
        clock.advance(100)
        release.wait(HANG_GUARD)
        return 1.0

    async def aslow(state: dict[str, Any]) -> float:
        clock.advance(100)
        await asyncio.Event().wait()
        return 1.0

    factory = PerRun(["5", "7", "9", "7"])
    graph = create_agent_best_of_n(
        None, slow if kind == "sync" else aslow, n=4, tool_factory=factory, budget=Budget(seconds=10)
    ).compile()
    out = await asyncio.wait_for(graph.ainvoke(ask()), HANG_GUARD)
    assert out["stop_reason"] == "budget:seconds"
    assert len(out["candidates"]) == 4 and all(c["score"] is None for c in out["candidates"])
    assert out["usage"]["generations"] == 4
    assert out["answer"] == "7"  # the unscored runs still vote
