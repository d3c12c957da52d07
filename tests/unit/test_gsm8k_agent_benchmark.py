"""benchmarks/gsm8k_agent.py without a model: its table and its resume file."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.scripts import load_script
from ttc_graph.eval.sweep import wilson_interval


def benchmark() -> ModuleType:
    return load_script("benchmarks/gsm8k_agent.py", "gsm8k_agent_benchmark")


def record(qid: str, pass1: float, majority: bool, passn: bool, cot: bool) -> dict[str, Any]:
    return {
        "id": qid, "n": 4, "agent_pass1": pass1, "agent_majority": majority, "agent_passn": passn,
        "agent_tokens": 400, "cot": {"bon_weighted": {"correct": cot, "tokens": 1000},
                                      "majority": {"correct": cot, "tokens": 1000}},
    }  # fmt: skip


def test_the_table_has_every_method_with_its_interval(capsys: pytest.CaptureFixture[str]) -> None:
    bench = benchmark()
    records = [record("1", 0.25, False, True, True), record("2", 0.75, True, True, False),
               record("3", 0.0, False, False, True), record("4", 1.0, True, True, True)]  # fmt: skip
    text = bench.summarize(records)
    assert capsys.readouterr().out.strip() == text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 50.0% [" in rows["agent pass@1 (mean over runs)"]  # mean of the shares, bootstrap interval
    assert rows["agent pass@1 (mean over runs)"].endswith("| 100 |")  # 400 tokens over 4 runs
    low, high = wilson_interval(2, 4)
    assert f"50.0% [{100 * low:.1f}, {100 * high:.1f}]" in rows["agent best-of-4 (majority over runs)"]
    low, high = wilson_interval(3, 4)
    assert f"75.0% [{100 * low:.1f}, {100 * high:.1f}]" in rows["agent pass@4"]
    assert f"75.0% [{100 * low:.1f}, {100 * high:.1f}]" in rows["CoT best-of-4 weighted (study)"]


def test_a_rerun_resumes_from_the_records_of_the_same_settings(tmp_path: Path) -> None:
    bench = benchmark()
    args = bench.parse_args(["--out", str(tmp_path / "agent.json"), "--questions", "3"])
    settings = {key: getattr(args, key) for key in bench.SETTINGS}
    partial = bench.partial_path(Path(args.out))
    assert partial.name == "agent.partial.jsonl"
    lines = [{"config": settings, "record": {"id": "1"}}, {"config": {**settings, "n": 2}, "record": {"id": "2"}}]
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert set(bench.load_partial(partial, settings)) == {"1"}  # another setting's records are sampled afresh
