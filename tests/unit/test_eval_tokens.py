"""``tokens`` means one thing in results: the policy's completion tokens (a candidate's: its own)."""

from __future__ import annotations

from pathlib import Path

from ttc_graph import create_best_of_n
from ttc_graph.budget import policy_tokens
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.spec_runs import run_graph_over_dataset
from ttc_graph.eval.store import ResultStore
from ttc_graph.testing import ScriptedEndpoint
from ttc_graph.verifiers import LLMJudgeVerifier

TEXTS = ["Four plus three is seven. \\boxed{7}", "It is \\boxed{7}"]


async def test_a_spec_run_row_counts_policy_completion_tokens(tmp_path: Path) -> None:
    policy = ScriptedEndpoint(TEXTS)
    judge = LLMJudgeVerifier(ScriptedEndpoint(["Yes"]), mode="outcome")  # a verifier that spends tokens too
    graph = create_best_of_n(policy, judge, n=4, selection="weighted").compile()
    store = ResultStore(tmp_path / "runs.sqlite")
    problems = [Problem("q1", "What is 3 + 4?", "7")]
    rows = await run_graph_over_dataset(
        graph, strategy="bon", budget=4, problems=problems, dataset="gsm8k", store=store, run="r"
    )
    (row,) = rows
    usage = row.details["usage"]
    assert usage["by_kind"]["verify"]["prompt_tokens"] > 0
    assert row.generations == 4
    assert row.tokens == policy_tokens(usage) == usage["by_kind"]["propose"]["completion_tokens"]
    assert row.tokens == sum(c["tokens"] for c in row.candidates)
    assert row.tokens < usage["prompt_tokens"] + usage["completion_tokens"]
