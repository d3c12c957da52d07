"""A small resumable sweep against the real local llama.cpp server (the embedded default model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttc_graph.endpoints import OpenAIEndpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.eval import ResultStore, SweepConfig, load_dataset, run_sweep, summarize


def gsm8k_slice(n: int) -> list:
    try:
        return load_dataset("gsm8k", limit=n)
    except ConfigurationError as exc:
        pytest.skip(f"GSM8K data not found: {exc}")


async def test_live_sweep_scores_with_confidence_and_resumes(endpoint: OpenAIEndpoint, tmp_path: Path) -> None:
    problems = gsm8k_slice(2)
    config = SweepConfig.make(
        "live", "gsm8k", ["best_of_n:majority", "best_of_n:weighted"], "1,2", max_tokens=48, seed=0, concurrency=2
    )
    with ResultStore(tmp_path / "live.sqlite") as store:
        report = await run_sweep(endpoint, problems, config, store)
        assert report.failed_units == 0, report.failures
        assert report.generations == 2 * len(problems)  # budget 2 drawn once, budget 1 is its prefix
        rows = store.rows("live")
        assert len(rows) == len(problems) * 2 * 2
        for samples in store.pools("live").values():
            assert len(samples) == 2
            for s in samples:  # llama.cpp returned token logprobs, so the confidence verifier scored every sample
                assert s["token_logprobs"] and 0.0 < s["scores"]["confidence"] <= 1.0
                assert s["tokens"] and s["tokens"] <= 48
        assert {c.budget for c in summarize(rows)} == {1, 2}

        again = await run_sweep(endpoint, problems, config, store)
        assert again.generations == 0 and again.skipped_units == len(problems)
