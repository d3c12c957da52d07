"""The committed study report is what ``ttc study report`` makes of the committed database (no model call).

``scripts/run-study.sh`` commits the database and the report together after every chunk. The report needs 10
complete questions: below that, the database must be committed without a report.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttc_graph.cli import app
from ttc_graph.eval.store import ResultStore
from ttc_graph.study.config import load_study
from ttc_graph.study.report import N_BINS, load_study_data

STUDY = Path(__file__).resolve().parents[2] / "docs" / "study"
CONFIG = STUDY / "gsm8k-qwen-0.5b.yaml"
OUTPUTS = ("report.md", "table_oracle.json", "table_predicted.json")


def test_the_committed_report_is_rebuilt_from_the_committed_database(tmp_path: Path) -> None:
    config = load_study(CONFIG)
    with ResultStore(STUDY / "study.sqlite") as store:
        complete = len(load_study_data(store, config).questions)
    if complete < 2 * N_BINS:
        assert not any((STUDY / name).exists() for name in OUTPUTS), "a report without the questions it needs"
        return
    args = ["study", "report", str(CONFIG), "--out", str(tmp_path), "--no-figures"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in OUTPUTS:
        assert (tmp_path / name).read_text() == (STUDY / name).read_text(), f"{name} differs from the database"
    assert f"{complete} questions complete" in (STUDY / "report.md").read_text()


@pytest.mark.parametrize("name", ["accuracy.png", "bins.png", "compute_optimal.png"])
def test_the_figures_come_with_the_report(name: str) -> None:
    assert (STUDY / name).exists() == (STUDY / "report.md").exists()
