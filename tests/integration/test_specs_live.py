"""Every example spec, loaded from YAML, runs end to end against the real local model server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.local import LocalModelServer
from ttc_graph.local.lazy import stop_shared_servers
from ttc_graph.specs import StrategySpec, build_endpoint, build_graph, load_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "ttc_graph" / "presets").glob("*.yaml"))
QUESTION = "What is 2 + 3? Answer with \\boxed{}."
RUN_TIMEOUT = 300.0


def generation_cap(spec: StrategySpec) -> int:
    """The most policy generations the spec may spend: its budget, else the strategy's own cost."""
    if spec.kind in ("beam_search", "dvts"):
        cost = spec.n * (spec.lookahead + 1)
    elif spec.kind == "compute_optimal":
        cost = spec.budget.generations
    else:
        cost = spec.n
    if spec.budget is not None and spec.budget.generations is not None:
        cost = min(cost, spec.budget.generations)
    return cost


@pytest.fixture()
def env_policy(local_server: LocalModelServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalModelServer]:
    """Point the specs' default ``env`` policy at the session's server; stop any server a spec started itself."""
    monkeypatch.setenv("TTC_BASE_URL", local_server.base_url)
    monkeypatch.setenv("TTC_MODEL", local_server.model_name)
    monkeypatch.delenv("TTC_API_KEY", raising=False)
    try:
        yield local_server
    finally:
        stop_shared_servers()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
async def test_example_spec_runs_on_the_local_model(path: Path, env_policy: LocalModelServer) -> None:
    spec = load_spec(path)
    policy = build_endpoint(spec.policy)
    assert isinstance(policy, OpenAIEndpoint)
    assert policy.base_url == env_policy.base_url

    graph = build_graph(spec).compile()
    rounds: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    started = time.monotonic()

    async def run() -> None:
        nonlocal final
        # subgraphs=True: a compute_optimal router runs its chosen strategy as a subgraph, whose progress events
        # only reach the caller this way.
        async for namespace, mode, chunk in graph.astream(
            {"question": QUESTION}, stream_mode=["custom", "values"], subgraphs=True
        ):
            if mode == "custom" and isinstance(chunk, dict) and chunk.get("event") == "ttc.round":
                rounds.append(chunk)
            elif mode == "values" and not namespace:
                final = chunk

    await asyncio.wait_for(run(), RUN_TIMEOUT)
    seconds = time.monotonic() - started

    assert {"question", "answer", "candidates", "usage", "stop_reason"} <= set(final), sorted(final)
    assert final["question"] == QUESTION
    assert final["stop_reason"], final.get("errors")
    usage = final["usage"]
    cap = generation_cap(spec)
    assert 0 < usage["generations"] <= cap, (usage, cap)
    assert usage["requests"] > 0
    assert usage["completion_tokens"] > 0
    assert final["candidates"], final.get("errors")
    assert rounds, "no ttc.round progress event was streamed"
    if spec.budget is not None and spec.budget.seconds is not None:
        assert seconds <= spec.budget.seconds + 60
    if final["answer"] is not None:
        assert isinstance(final["answer"], str)
        assert final["answer"] in {c["answer"] for c in final["candidates"]}
