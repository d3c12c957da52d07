"""Data-set bad input: clear configuration errors up front, malformed rows skipped and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttc_graph.errors import ConfigurationError
from ttc_graph.eval import DatasetWarning, SweepConfig, load_dataset, parse_budgets


def write_jsonl(path: Path, rows: list[object | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def gsm8k_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1:,}"} for i in range(999, 1004)]
    (tmp_path / "gsm8k").mkdir()
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", rows)
    monkeypatch.setenv("TTC_DATA_DIR", str(tmp_path))
    return tmp_path


def test_gsm8k_from_data_dir(gsm8k_dir: Path) -> None:
    problems = load_dataset("gsm8k", limit=2, offset=1)
    assert [(p.id, p.reference) for p in problems] == [("1", "1001"), ("2", "1002")]
    assert problems.skipped == []


def test_unknown_dataset_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown 'gsm9k'"):
        load_dataset("gsm9k")


def test_jsonl_needs_path_and_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="needs path"):
        load_dataset("jsonl", path=tmp_path / "x.jsonl")
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_dataset("jsonl", path=tmp_path / "x.jsonl", question_field="q", answer_field="a")


def test_jsonl_missing_mapped_field(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1?", "solution": "2"}])
    fields = r"lacks field\(s\) \['q', 'a'\]; its fields are \['prompt', 'solution'\]"
    with pytest.raises(ConfigurationError, match=fields):
        load_dataset("jsonl", path=file, question_field="q", answer_field="a")


def test_malformed_rows_are_skipped_and_reported(tmp_path: Path) -> None:
    file = write_jsonl(
        tmp_path / "d.jsonl",
        [{"q": "1+1?", "a": "2"}, '{"q": "broken", "a": ', "[1, 2]", {"q": "2+2?", "a": "4", "id": "x"}],
    )
    with pytest.warns(DatasetWarning, match="skipped 2 malformed row"):
        problems = load_dataset("jsonl", path=file, question_field="q", answer_field="a", id_field="id")
    assert [(p.id, p.question, p.reference) for p in problems] == [("0", "1+1?", "2"), ("x", "2+2?", "4")]
    assert [s.line for s in problems.skipped] == [2, 3]
    assert "bad JSON" in problems.skipped[0].reason


def test_gsm8k_row_without_marker_is_skipped(tmp_path: Path) -> None:
    rows = [{"question": "q", "answer": "no marker"}, {"question": "r", "answer": "#### 5"}]
    file = write_jsonl(tmp_path / "g.jsonl", rows)
    with pytest.warns(DatasetWarning, match="skipped 1"):
        problems = load_dataset("gsm8k", path=file)
    assert [p.reference for p in problems] == ["5"]


def test_limit_and_offset_must_be_non_negative(gsm8k_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="limit"):
        load_dataset("gsm8k", limit=-1)
    with pytest.raises(ConfigurationError, match="offset"):
        load_dataset("gsm8k", offset=-2)


@pytest.mark.parametrize("budgets", [[0], [-1], "0", "1,-2", "", "1,x", [1.5]])
def test_bad_budgets(budgets: object) -> None:
    with pytest.raises(ConfigurationError, match="budgets"):
        parse_budgets(budgets)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="budgets"):
        SweepConfig.make("r", "gsm8k", ["best_of_n:majority"], budgets)  # type: ignore[arg-type]


def test_budgets_are_sorted_and_unique() -> None:
    assert parse_budgets("4, 1,2,2") == (1, 2, 4)
    assert parse_budgets([8, 1]) == (1, 8)
