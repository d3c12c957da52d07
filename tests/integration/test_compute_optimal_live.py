"""The compute-optimal router against the real llama.cpp server (the embedded SmolLM2-135M model) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttc_graph.budget import Budget
from ttc_graph.compute_optimal import PolicyTable, create_compute_optimal, load_table
from ttc_graph.endpoints.base import ChatMessage, Endpoint, GenerationResult, SamplingParams
from ttc_graph.local import LocalModelServer
from ttc_graph.verifiers import ArithmeticVerifier, CombinedVerifier, ConfidenceVerifier

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "ttc_graph" / "presets" / "compute_optimal_table.json"
STUDY_TABLE = ROOT / "docs" / "study" / "table_routed.json"
QUESTION = "What is 2 + 3? Put the final answer in \\boxed{}."
BUDGET = 4
MAX_TOKENS = 48


@dataclass
class Recorded:
    """Passes every request to the real endpoint and keeps (n, params) of each."""

    inner: Endpoint
    calls: list[tuple[int, SamplingParams | None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def native_n(self) -> Any:
        return getattr(self.inner, "native_n", None)

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        self.calls.append((n, params))
        return await self.inner.generate(messages, n=n, params=params, prefix=prefix)


def example_table(max_tokens: int) -> PolicyTable:
    """The example table with every strategy's samples capped at ``max_tokens`` (to keep the test short)."""
    data = load_table(TABLE).model_dump()
    data["strategies"] = {name: {**t, "max_tokens": max_tokens} for name, t in data["strategies"].items()}
    return PolicyTable.model_validate(data)


async def test_router_probes_bins_and_routes_on_the_real_model(local_server: LocalModelServer) -> None:
    table = example_table(MAX_TOKENS)
    probes = table.difficulty.probes
    policy = Recorded(local_server.endpoint())
    router = create_compute_optimal(
        policy, ConfidenceVerifier(), table, budget=Budget(generations=BUDGET), probe_max_tokens=MAX_TOKENS
    )
    graph = router.compile()
    out = await graph.ainvoke({"question": QUESTION})

    # the probe went first and asked for the token log-probabilities the confidence verifier scores
    n, params = policy.calls[0]
    assert n == probes
    assert params is not None and params.logprobs is True and params.max_tokens == MAX_TOKENS
    probe_cands = [c for c in out["candidates"] if c["id"].startswith("probe-")]
    assert len(probe_cands) == probes
    assert all(c["scored"] and 0.0 < c["score"] <= 1.0 for c in probe_cands), probe_cands
    assert out["difficulty_score"] == sum(c["score"] for c in probe_cands) / probes

    assert out["difficulty_bin"] in range(1, 6)
    assert out["difficulty_bin"] == table.difficulty.bin_of(out["difficulty_score"])
    assert out["route"] in table.strategies
    assert out["route"] == table.table[str(out["difficulty_bin"])][str(BUDGET)]
    assert out["stop_reason"] == "complete"

    usage = out["usage"]
    assert usage["failed_requests"] == 0
    assert usage["generations"] >= probes
    kind = table.strategies[out["route"]]["kind"]
    # a best-of-N route reuses the probes as its first samples; any other route spends its budget on top (a
    # revision chain may stop early once an attempt repeats the previous answer)
    if kind == "best_of_n":
        assert usage["generations"] == BUDGET
    else:
        assert probes < usage["generations"] <= probes + BUDGET
    assert len(out["candidates"]) == usage["generations"]
    parsable = [c for c in out["candidates"] if c["parsable"]]
    if parsable:  # a 135M model may fail to box an answer
        assert out["answer"] in {c["answer"] for c in parsable}
    assert all(c["tokens"] is None or c["tokens"] <= MAX_TOKENS for c in out["candidates"])


def capped(template: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """A strategy template whose samples stay short: whole samples, or a few short steps for a search."""
    if template["kind"] in ("best_of_n", "revisions"):
        return {**template, "max_tokens": max_tokens}
    depth = "max_depth" if template["kind"] == "mcts" else "max_steps"
    return {**template, "step_max_tokens": max_tokens // 2, depth: 3}


def study_table(max_tokens: int) -> PolicyTable:
    """The study's routable table (docs/study/table_routed.json), every sample capped at ``max_tokens``."""
    data = load_table(STUDY_TABLE).model_dump()
    data["difficulty"]["max_tokens"] = max_tokens
    data["strategies"] = {name: capped(t, max_tokens) for name, t in data["strategies"].items()}
    return PolicyTable.model_validate(data)


async def test_the_study_table_routes_on_the_real_model(local_server: LocalModelServer) -> None:
    table = study_table(MAX_TOKENS)
    budget = max(table.budgets)
    policy = Recorded(local_server.endpoint())
    verifier = CombinedVerifier([ConfidenceVerifier(), ArithmeticVerifier()])  # the study's verifier
    assert table.strategies["bon_weighted"]["verifier"] == {
        "kind": "combined",
        "parts": [{"kind": "confidence"}, {"kind": "arithmetic"}],
    }
    out = (
        await create_compute_optimal(policy, verifier, table, budget=Budget(generations=budget))
        .compile()
        .ainvoke({"question": QUESTION})
    )

    n, params = policy.calls[0]  # the probes, sampled as the table's bins were fitted
    assert n == table.difficulty.probes
    assert params is not None and (params.temperature, params.max_tokens) == (table.difficulty.temperature, MAX_TOKENS)
    assert out["difficulty_bin"] == table.difficulty.bin_of(out["difficulty_score"])
    assert out["route"] == table.table[str(out["difficulty_bin"])][str(budget)]
    assert out["stop_reason"] in {"complete", "max_steps", "max_depth"}  # searches are capped at 3 short steps
    assert out["usage"]["failed_requests"] == 0
    assert table.difficulty.probes <= out["usage"]["generations"] <= budget
