"""Load: 50 concurrent runs on one compiled graph and one endpoint against the real llama.cpp server.

Every run asks its own question, so the proxy in front of the server can tell whose request each one is. All runs
must complete, and each run's ledger must equal its own share of what the server served (and the shares add up to
what the server generated, by its ``/metrics``). Figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faultproxy import FaultProxy, metered_server, tokens_predicted
from ttc_graph import create_best_of_n
from ttc_graph.endpoints import OpenAIEndpoint, RetryConfig
from ttc_graph.endpoints.n_usage import PROBE
from ttc_graph.local import LocalModelServer

RUNS = 50
PROBE_TEXT = PROBE[-1]["content"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalModelServer]:
    with metered_server(4) as server:
        yield server


def test_fifty_concurrent_runs_keep_their_usage_apart(upstream: LocalModelServer) -> None:
    questions = [f"What is {i} + {i + 3}? Answer briefly." for i in range(RUNS)]
    with FaultProxy(upstream.server_root) as proxy:
        endpoint = OpenAIEndpoint(
            proxy.url, upstream.model_name, "local", max_concurrency=8, timeout=600, retry=RetryConfig(max_attempts=3)
        )
        graph = create_best_of_n(endpoint, n=2, selection="majority", max_tokens=6, temperature=0.8).compile()

        async def all_runs() -> list[dict[str, Any]]:
            return await asyncio.gather(*(graph.ainvoke({"question": q}) for q in questions))

        before = tokens_predicted(upstream.server_root)
        started = time.monotonic()
        outs = asyncio.run(all_runs())
        seconds = time.monotonic() - started
        generated = tokens_predicted(upstream.server_root) - before
        records = proxy.snapshot()
    served: dict[str, int] = defaultdict(int)
    requests: dict[str, int] = defaultdict(int)
    for record in records:
        served[record.question] += record.served_tokens
        requests[record.question] += 1
    probe = (served.pop(PROBE_TEXT, 0), requests.pop(PROBE_TEXT, 0))  # the n-usage probe, charged to one run
    ledger = sum(out["usage"]["completion_tokens"] for out in outs)
    diffs = [
        (out["usage"]["completion_tokens"] - served[q], out["usage"]["requests"] - requests[q])
        for q, out in zip(questions, outs, strict=True)
    ]
    mismatched = [d for d in diffs if d != (0, 0)]
    if probe[1]:  # the run whose first call judged the server carries the probe's cost, and only that one
        assert mismatched.count(probe) == 1, (probe, mismatched)
        mismatched.remove(probe)
    print(
        f"load: {RUNS} concurrent runs on one graph and one endpoint in {seconds:.1f}s; {len(records)} requests"
        f" forwarded; ledgers add up to {ledger} completion tokens, the proxy saw {sum(served.values())} served, the"
        f" server generated {generated} (n-usage probe: {probe[1]} request, {probe[0]} tokens); runs whose ledger"
        f" differs from their own share: {len(mismatched)}"
    )
    assert all(out["stop_reason"] == "complete" for out in outs), [o["stop_reason"] for o in outs]
    assert all(out["question"] == q for q, out in zip(questions, outs, strict=True))
    assert not mismatched, mismatched[:3]
    assert ledger == sum(served.values()) + probe[0] == generated
    assert all(out["usage"]["generations"] == 2 for out in outs)
