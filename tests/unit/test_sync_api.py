"""Every strategy runs under LangGraph's sync API too (invoke / stream), not only ainvoke."""

from __future__ import annotations

import pytest

from ttc_graph import create_beam_search, create_best_of_n, create_dvts, create_revisions
from ttc_graph.testing import FakeCall, ScriptedEndpoint


def stepwise(call: FakeCall, index: int) -> str:
    depth = (call.prefix or "").count("\n\n")
    return f"step {index % 2}" if call.prefix is None or depth < 2 else f"so \\boxed{{{index % 2}}}"


def half(question: str, solution: str) -> float:
    return 0.9 if "step 1" in solution else 0.4


GRAPHS = {
    "best_of_n": lambda: create_best_of_n(ScriptedEndpoint(["\\boxed{7}"], native_n=False), n=4, selection="majority"),
    "beam_search": lambda: create_beam_search(ScriptedEndpoint(stepwise), half, n=4, beam_width=2),
    "dvts": lambda: create_dvts(ScriptedEndpoint(stepwise), half, n=4, beam_width=2),
    "revisions": lambda: create_revisions(ScriptedEndpoint(["\\boxed{7}"]), n=4, chain_length=2, selection="majority"),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_sync_invoke_matches_async(name: str) -> None:
    import asyncio

    sync_out = GRAPHS[name]().compile().invoke({"question": "What is 3 + 4?"})
    async_out = asyncio.run(GRAPHS[name]().compile().ainvoke({"question": "What is 3 + 4?"}))
    assert sync_out["answer"] is not None
    assert sync_out["answer"] == async_out["answer"]
    assert sync_out["usage"]["generations"] == async_out["usage"]["generations"] == 4
    assert sorted(c["id"] for c in sync_out["candidates"]) == sorted(c["id"] for c in async_out["candidates"])


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_sync_stream_emits_progress_events(name: str) -> None:
    events = list(GRAPHS[name]().compile().stream({"question": "q"}, stream_mode="custom"))
    assert events and all(e["event"] == "ttc.round" for e in events)
