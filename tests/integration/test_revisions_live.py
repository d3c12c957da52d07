"""Revision chains against the real llama.cpp server (the embedded SmolLM2-135M model) on 127.0.0.1."""

from __future__ import annotations

import time
from collections import defaultdict

from ttc_graph import create_revisions
from ttc_graph.local import LocalModelServer

QUESTION = "What is 2 + 3? Put the final answer in \\boxed{}."


async def test_two_chains_of_two_attempts_end_to_end(local_server: LocalModelServer) -> None:
    graph = create_revisions(
        local_server.endpoint(),
        None,
        n=4,
        chain_length=2,
        selection="majority",
        max_tokens=64,
        stop_on_repeat=False,
        seed=3,
    ).compile()
    started = time.monotonic()
    out = await graph.ainvoke({"question": QUESTION})
    elapsed = time.monotonic() - started

    assert out["stop_reason"] == "complete"
    assert not out.get("errors")
    cands = out["candidates"]
    chains: dict[int, list[int]] = defaultdict(list)
    for c in cands:
        chains[c["meta"]["chain"]].append(c["meta"]["position"])
    assert {k: sorted(v) for k, v in chains.items()} == {0: [0, 1], 1: [0, 1]}
    assert all(c["text"] for c in cands)
    assert {c["id"] for c in cands} == {"ch0-a0", "ch0-a1", "ch1-a0", "ch1-a1"}

    usage = out["usage"]
    propose, revise = usage["by_kind"]["propose"], usage["by_kind"]["revise"]
    assert (propose["generations"], revise["generations"]) == (2, 2)
    assert usage["generations"] == len(cands) == 4
    assert usage["failed_requests"] == 0
    assert propose["requests"] == 2 and revise["requests"] == 2 and usage["requests"] == 4
    # every revision prompt carries the question plus the chain's previous attempt and the revision instructions
    assert revise["prompt_tokens"] / revise["requests"] > propose["prompt_tokens"] / propose["requests"]
    assert usage["prompt_tokens"] == propose["prompt_tokens"] + revise["prompt_tokens"]
    assert usage["completion_tokens"] == propose["completion_tokens"] + revise["completion_tokens"] > 0
    assert all(c["tokens"] is None or 0 < c["tokens"] <= 64 for c in cands)
    known = [c["tokens"] for c in cands if c["tokens"] is not None]
    if len(known) == len(cands):  # per-choice lengths known: the ledger is their sum
        assert usage["completion_tokens"] == sum(known)

    parsable = [c for c in cands if c["parsable"]]
    if parsable:  # a 135M model may fail to box an answer; the vote must then still pick one of its answers
        assert out["answer"] in {c["answer"] for c in parsable}
    else:
        assert out["answer"] is None
    # 4 generations of <= 64 tokens take seconds on an idle machine; this only guards against hangs, since a shared
    # CPU (other llama.cpp servers running in parallel) can slow one request to ~1 token/s
    assert elapsed < 300
