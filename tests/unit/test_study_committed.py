"""The committed study report is what ``ttc study report`` makes of the committed database (no model call).

``scripts/run-study.sh`` commits the database and the report together after every chunk. The report needs 10
complete questions: below that, the database must be committed without a report.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttc_graph.budget import Budget
from ttc_graph.cli import app
from ttc_graph.compute_optimal import create_compute_optimal, load_table
from ttc_graph.eval.store import ResultStore
from ttc_graph.specs import build_graph, load_spec
from ttc_graph.specs.models import ComputeOptimalSpec
from ttc_graph.study.config import load_study
from ttc_graph.study.report import N_BINS, load_study_data
from ttc_graph.testing import FakeCall, ScriptedEndpoint

STUDY = Path(__file__).resolve().parents[2] / "docs" / "study"
CONFIG = STUDY / "gsm8k-qwen-0.5b.yaml"
OUTPUTS = ("report.md", "table_oracle.json", "table_predicted.json", "table_routed.json")


FOLLOW_UP = STUDY / "particle-weights" / "study.yaml"  # more templates in the study's database, reported apart
EXTENSION = STUDY / "extension" / "study.yaml"  # 200 questions, a trimmed grid at budgets 4-16, 32-sample pools


def _png_size(path: Path) -> tuple[int, int]:
    """A PNG's width and height, from its header (which it must have)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


@pytest.mark.parametrize("config_path", [CONFIG, FOLLOW_UP, EXTENSION], ids=["study", "particle-weights", "extension"])
def test_the_committed_report_is_rebuilt_from_the_committed_database(config_path: Path, tmp_path: Path) -> None:
    config, folder = load_study(config_path), config_path.parent
    with ResultStore(STUDY / "study.sqlite") as store:
        complete = len(load_study_data(store, config).questions)
    if complete < 2 * N_BINS:
        assert not any((folder / name).exists() for name in OUTPUTS), "a report without the questions it needs"
        assert not list(folder.glob("*.png")), "figures without the questions they need"
        # and the report command refuses to write one (scripts/run-study.sh runs it after every chunk)
        args = ["study", "report", str(config_path), "--db", str(STUDY / "study.sqlite"), "--out", str(tmp_path)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0 and "the report needs at least 10" in " ".join(result.output.split())
        assert not list(tmp_path.iterdir())
        return
    db = STUDY / "study.sqlite"
    args = ["study", "report", str(config_path), "--db", str(db), "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in OUTPUTS:
        assert (tmp_path / name).read_text() == (folder / name).read_text(), f"{name} differs from the database"
    assert f"{complete} questions complete" in (folder / "report.md").read_text()
    # the figures come with the report: the committed ones are exactly those it draws (revisions.png only for a
    # study with revision chains), each a PNG of the drawn size (pixels may differ with the plotting library)
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert {"accuracy.png", "bins.png", "compute_optimal.png"} <= set(drawn)
    assert sorted(p.name for p in folder.glob("*.png")) == drawn
    for name in drawn:
        assert _png_size(folder / name) == _png_size(tmp_path / name), f"{name} is not the figure the report draws"


def _score_in_bin(edges: list[float], bin_: int) -> float:
    """A probe score inside ``bin_`` (1 = easiest: above the top edge)."""
    bounds = [0.0, *edges, 1.0][::-1]  # descending: bin k lies between bounds[k] and bounds[k - 1]
    return (bounds[bin_ - 1] + bounds[bin_]) / 2


def _solve(call: FakeCall, index: int) -> str:
    if call.params is not None and call.params.stop:  # a search step: one working step, then the answer
        return "So the answer is \\boxed{4}." if call.prefix else "2 + 2 = 4"
    return "2 + 2 = 4.\n\nSo the answer is \\boxed{4}."


@pytest.mark.parametrize("bin_", range(1, N_BINS + 1))
async def test_the_router_loads_the_committed_routable_table_and_follows_it(bin_: int) -> None:
    config = load_study(CONFIG)
    table = load_table(STUDY / "table_routed.json")  # the study has its 10 questions: the table is committed
    budget = max(table.budgets)
    assert table.difficulty.probes == config.router_probes
    level = _score_in_bin(list(table.difficulty.edges), bin_)
    policy = ScriptedEndpoint(_solve)
    graph = create_compute_optimal(policy, lambda q, s: level, table, budget=Budget(generations=budget)).compile()
    out = await graph.ainvoke({"question": "What is 2 + 2?"})
    assert out["difficulty_bin"] == bin_
    assert out["route"] == table.table[str(bin_)][str(budget)]
    probe = policy.calls[0]
    assert probe.n == table.difficulty.probes
    assert probe.params is not None
    assert (probe.params.temperature, probe.params.max_tokens) == (config.temperature, config.max_tokens)
    assert out["usage"]["generations"] <= budget
    assert out["answer"] == "4"


def test_the_route_spec_builds_a_router_on_the_committed_table() -> None:
    spec = load_spec(STUDY / "route.yaml")
    assert isinstance(spec, ComputeOptimalSpec)
    graph = build_graph(spec, policy=ScriptedEndpoint(_solve)).compile()
    assert graph.name == "study-routed"
    assert spec.budget.generations in load_table(STUDY / spec.table).budgets
