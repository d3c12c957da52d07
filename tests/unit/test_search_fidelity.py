"""Search fidelity: truncated steps continue, single-step runs warn, DVTS keeps every subtree to its own end."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ttc_graph import create_beam_search, create_dvts
from ttc_graph.nodes.expand import extend_steps, prefix_text, step_finishes
from ttc_graph.testing import FakeCall, ScriptedEndpoint

QUESTION = "What is 6 * 7?"
DELIM = "\n\n"


def constant(question: str, text: str) -> float:
    return 0.5


async def run(builder: Any) -> dict[str, Any]:
    return await builder.compile().ainvoke({"question": QUESTION})


# -- truncated steps --------------------------------------------------------------------------------------------------


def test_a_truncated_step_is_partial_never_finished():
    assert not step_finishes("So the total is", "length")
    assert not step_finishes("", "length")
    assert step_finishes("The answer is \\boxed{42}", "stop")
    assert step_finishes("", "stop")
    # a step that mentions a number is not a final answer: finishing needs an explicit marker
    assert not step_finishes("First, 6 * 7 = 42.", "stop")
    out = extend_steps(["Step one."], False, "Then 6 * 7", "length")
    assert out == {"steps": ["Step one.", "Then 6 * 7"], "partial": True, "finished": False}
    out = extend_steps(out["steps"], True, " = 42, so \\boxed{42}", "stop")
    assert out == {"steps": ["Step one.", "Then 6 * 7 = 42, so \\boxed{42}"], "partial": False, "finished": True}
    assert prefix_text(["a", "b"], DELIM, partial=True) == "a\n\nb"
    assert prefix_text(["a", "b"], DELIM) == "a\n\nb\n\n"


async def test_a_step_cut_off_by_the_token_limit_is_continued_not_finished():
    # Each first step is cut off by max_tokens; its continuation (a prefix without the delimiter) finishes it.
    def respond(call: FakeCall, index: int) -> str | tuple[str, str]:
        prefix = call.prefix or ""
        if not prefix:
            return ("First, 6 * 7", "length")
        if not prefix.endswith(DELIM):
            return (" = 42.", "stop")
        return ("So the answer is \\boxed{42}.", "stop")

    endpoint = ScriptedEndpoint(respond)
    out = await run(create_beam_search(endpoint, constant, n=4, beam_width=2))
    continued = [c for c in endpoint.calls if c.prefix and not c.prefix.endswith(DELIM)]
    assert continued and all(c.prefix == "First, 6 * 7" for c in continued)
    assert out["answer"] == "42"
    assert out["stop_reason"] == "complete"
    assert len(out["candidates"]) == 4
    for cand in out["candidates"]:
        assert cand["text"] == "First, 6 * 7 = 42.\n\nSo the answer is \\boxed{42}."
        assert cand["meta"]["steps"] == 2 and cand["finish_reason"] == "stop"


async def test_truncated_beams_at_max_steps_are_marked_not_finished():
    endpoint = ScriptedEndpoint(lambda call, i: ("and then some more words", "length"))
    out = await run(create_beam_search(endpoint, constant, n=2, beam_width=2, max_steps=3))
    assert out["stop_reason"] == "max_steps"
    assert all(c["finish_reason"] == "max_steps" and c["meta"]["partial"] for c in out["candidates"])
    assert all(c["meta"]["steps"] == 1 for c in out["candidates"])  # one long step, continued three times
    assert out["answer"] is None


# -- steps per candidate ----------------------------------------------------------------------------------------------


async def test_a_model_that_never_writes_the_delimiter_triggers_the_warning(caplog: pytest.LogCaptureFixture):
    endpoint = ScriptedEndpoint(["Six times seven is forty-two, so \\boxed{42}."])
    with caplog.at_level(logging.WARNING, logger="ttc_graph.search"):
        out = await run(create_beam_search(endpoint, constant, n=4, beam_width=2))
    diagnostics = out["diagnostics"]
    assert diagnostics["steps_per_candidate"]["median"] == 1
    assert diagnostics["steps_per_candidate"]["histogram"] == {"1": 4}
    assert diagnostics["warnings"] and "delimiter" in diagnostics["warnings"][0]
    assert any("behaves like best-of-N" in r.message for r in caplog.records)


async def test_multi_step_candidates_report_their_distribution_without_warning():
    def respond(call: FakeCall, index: int) -> str:
        steps = (call.prefix or "").count(DELIM)
        return "So \\boxed{42}." if steps >= 2 else f"Step {steps + 1}."

    endpoint = ScriptedEndpoint(respond)
    graph = create_beam_search(endpoint, constant, n=4, beam_width=2).compile()
    events = [e async for e in graph.astream({"question": QUESTION}, stream_mode="custom")]
    out = await graph.ainvoke({"question": QUESTION})
    assert out["diagnostics"]["steps_per_candidate"] == {"histogram": {"3": 4}, "min": 3, "median": 3, "max": 3}
    assert out["diagnostics"]["warnings"] == []
    assert all("steps_per_beam" in e for e in events)


# -- DVTS --------------------------------------------------------------------------------------------------------------


async def test_a_dvts_subtree_that_finishes_late_is_not_cut():
    # Subtree 0 (seed 0) finishes after its first step. Subtree 1 (seed 2) keeps a live best child until step 6,
    # while each round one of its non-best children finishes with a worse answer: counting those finished
    # siblings must not end the search before subtree 1's own best path has finished.
    positions: dict[int, int] = {}

    def respond(call: FakeCall, index: int) -> str:
        pos = positions.get(id(call), 0)
        positions[id(call)] = pos + 1
        steps = (call.prefix or "").count(DELIM)
        if not call.prefix:
            root = f"root{call.params.seed}"
            return root if root == "root2" or pos else f"{root} so \\boxed{{1}}"
        if "root0" in call.prefix:
            return "so \\boxed{1}"
        if steps >= 5:
            return "so \\boxed{2}"
        return f"step {steps + 1}" if pos == 0 else "guess \\boxed{9}"

    def prefers_live(question: str, text: str) -> float:
        return 0.1 if "boxed{9}" in text else 0.5

    endpoint = ScriptedEndpoint(respond)
    out = await run(create_dvts(endpoint, prefers_live, n=4, beam_width=2, seed=0))
    assert out["stop_reason"] == "complete"
    by_group: dict[int, list[dict[str, Any]]] = {}
    for c in out["candidates"]:
        by_group.setdefault(c["meta"]["group"], []).append(c)
    assert sorted(by_group) == [0, 1]
    assert {c["answer"] for c in by_group[1]} == {"2"}  # the late subtree ran to its own end
    assert all(c["meta"]["steps"] == 6 for c in by_group[1])
    assert len(out["candidates"]) == 4
    assert out["answer"] == "2"


async def test_a_dvts_subtree_whose_expansion_failed_is_expanded_again():
    failed = {"done": False}

    def respond(call: FakeCall, index: int) -> str:
        steps = (call.prefix or "").count(DELIM)
        if steps == 1 and "root2" in (call.prefix or "") and not failed["done"]:
            failed["done"] = True
            from ttc_graph.errors import EndpointError

            raise EndpointError("scripted outage", status_code=503)
        if not call.prefix:
            return f"root{call.params.seed}"
        return "so \\boxed{7}" if steps >= 2 else "step"

    endpoint = ScriptedEndpoint(respond)
    out = await run(create_dvts(endpoint, constant, n=4, beam_width=2, seed=0))
    assert failed["done"]
    assert sorted({c["meta"]["group"] for c in out["candidates"]}) == [0, 1]
    assert out["answer"] == "7"
    assert out["errors"]
