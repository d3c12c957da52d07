"""Beam search resumed from a SQLite checkpoint after a hard crash in its third round."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from ttc_graph import create_beam_search
from ttc_graph.testing import FakeCall, ScriptedEndpoint

QUESTION = "What is 6 * 7?"
DELIM = "\n\n"
DEPTH = 3
N, WIDTH = 16, 4
TAG = re.compile(r"^\[([^\]]+)\]")


def path_of(step: str) -> tuple[str, ...]:
    m = TAG.match(step)
    assert m, step
    return tuple(m.group(1).split("."))


def depth_of(call: FakeCall) -> int:
    """How many steps the request continues (round r continues r - 1 steps)."""
    return len(call.prefix.split(DELIM)) - 1 if call.prefix else 0


class Script:
    """The step-level tree script: sample j of a request continuing path P is ``P + (j,)``; depth 3 answers.

    ``crash``: which requests raise a hard (non-endpoint) error, by the path they continue.
    """

    def __init__(self, crash: Callable[[tuple[str, ...]], bool] | None = None) -> None:
        self.crash = crash
        self._pos: dict[int, int] = {}

    def __call__(self, call: FakeCall, index: int) -> str:
        pos = self._pos.get(id(call), 0)
        self._pos[id(call)] = pos + 1
        parent = path_of(call.prefix.split(DELIM)[-2]) if call.prefix else ()
        if self.crash and self.crash(parent):
            raise RuntimeError(f"policy process died while continuing {parent}")
        path = (*parent, str(pos))
        text = f"[{'.'.join(path)}] step {len(path)}"
        if len(path) >= DEPTH:
            text += f" \\boxed{{{int(path[0]) % 3}}}"
        return text


def prm(question: str, text: str) -> float:
    path = path_of(text.split(DELIM)[-1])
    return int.from_bytes(hashlib.sha256(".".join(path).encode()).digest()[:4], "big") / 2**32


def build(endpoint: ScriptedEndpoint) -> Any:
    return create_beam_search(endpoint, prm, n=N, beam_width=WIDTH, seed=17)


def summary(out: dict[str, Any]) -> tuple[Any, ...]:
    usage = {k: v for k, v in out["usage"].items() if k != "seconds"}
    cands = [(c["id"], c["text"], c["score"], c["answer"]) for c in out["candidates"]]
    return out["answer"], out["stop_reason"], cands, usage


@pytest.fixture()
async def reference() -> tuple[tuple[Any, ...], ScriptedEndpoint]:
    endpoint = ScriptedEndpoint(Script())
    out = await build(endpoint).compile().ainvoke({"question": QUESTION})
    return summary(out), endpoint


@pytest.mark.parametrize("which", ["every", "one"], ids=["every-round-3-request", "one-round-3-request"])
async def test_resume_after_a_crash_in_round_three(tmp_path, reference, which):
    expected, uninterrupted = reference
    assert [depth_of(c) for c in uninterrupted.calls] == [0] + [1] * 4 + [2] * 4
    victim = path_of(uninterrupted.calls[-1].prefix.split(DELIM)[-2])  # one of the beams kept for round 3

    def crash(parent: tuple[str, ...]) -> bool:
        return len(parent) == 2 and (which == "every" or parent == victim)

    config = {"configurable": {"thread_id": "beam-1"}}
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "ck.sqlite")) as saver:
        crashing = ScriptedEndpoint(Script(crash))
        with pytest.raises(RuntimeError, match="policy process died"):
            await build(crashing).compile(checkpointer=saver).ainvoke({"question": QUESTION}, config)
        assert {depth_of(c) for c in crashing.calls} == {0, 1, 2}  # it got as far as round 3
        state = await build(crashing).compile(checkpointer=saver).aget_state(config)
        assert state.values["round"] == 3
        assert state.values["usage"]["generations"] == N
        assert state.next  # the run is unfinished

        working = ScriptedEndpoint(Script())
        out = await build(working).compile(checkpointer=saver).ainvoke(None, config)

    assert summary(out) == expected
    assert out["usage"]["generations"] == N
    # only round 3 was redone: no request continues fewer than two steps, and no more than round 3's requests
    assert working.calls
    assert all(depth_of(c) == 2 for c in working.calls)
    assert len(working.calls) <= N // WIDTH
    if which == "one":  # the branches that finished before the crash were checkpointed as pending writes; those
        # whose children were still being scored (as they arrive) when it struck are redone with the victim
        assert victim in [path_of(c.prefix.split(DELIM)[-2]) for c in working.calls]
    else:
        assert len(working.calls) == N // WIDTH
    redone = {c.prefix for c in working.calls}
    survived = {c.prefix for c in crashing.calls if depth_of(c) == 2} - redone
    assert len(redone) + len(survived) == N // WIDTH  # every kept beam expanded exactly once overall


async def test_resume_of_a_finished_run_draws_nothing(tmp_path, reference):
    expected, _ = reference
    config = {"configurable": {"thread_id": "beam-2"}}
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "ck.sqlite")) as saver:
        first = ScriptedEndpoint(Script())
        out = await build(first).compile(checkpointer=saver).ainvoke({"question": QUESTION}, config)
        assert summary(out) == expected
        again = ScriptedEndpoint(Script())
        graph = build(again).compile(checkpointer=saver)
        assert not (await graph.aget_state(config)).next
        await graph.ainvoke(None, config)
    assert again.calls == []
