"""Samples cut off at max_tokens on the real local server: they are reported as such and do not vote."""

from __future__ import annotations

import asyncio

from ttc_graph import create_best_of_n
from ttc_graph.endpoints import OpenAIEndpoint
from ttc_graph.selection import TRUNCATED, select_answer

QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell in total?"


def test_cut_off_samples_are_counted_flagged_and_outvoted(endpoint: OpenAIEndpoint) -> None:
    graph = create_best_of_n(endpoint, n=4, selection="majority", max_tokens=6, temperature=0.8).compile()
    out = asyncio.run(graph.ainvoke({"question": QUESTION}))
    cands = out["candidates"]
    assert len(cands) == 4 and all(c["finish_reason"] == "length" for c in cands)  # 6 tokens end no solution
    assert out["diagnostics"]["truncated"] == 4
    assert any("raise max_tokens" in w for w in out["diagnostics"]["warnings"]) and not out.get("errors")
    if any(c["answer"] is not None for c in cands):  # a number read from a cut-off sample: picked, but flagged
        assert select_answer(cands, "majority").invalid == (TRUNCATED,)
    complete = {**cands[0], "id": "done", "answer": "72", "parsable": True, "finish_reason": "stop"}
    assert select_answer([*cands, complete], "majority").answer == "72"  # one complete sample outvotes four cut
