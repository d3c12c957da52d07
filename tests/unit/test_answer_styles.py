"""Final-answer styles on the real GSM8K test set: every reference solution, re-ended in common styles.

Each of the 1,319 reference solutions has its ``#### N`` line replaced by one style (``\\boxed{N}``, "The answer is
N.", "A: N", "So she makes $N every day.", ...; thousands separators where natural), and the rewritten solution
must be extracted and graded correct. Also covers the data-folder lookup this relies on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from ttc_graph.answers import extract_answer, gsm8k_reference
from ttc_graph.errors import ConfigurationError
from ttc_graph.eval.datasets import data_dir
from ttc_graph.eval.grading import grade, grade_solution

MIN_RATE = 0.99
_FINAL_LINE_RE = re.compile(r"\n?####[^\n]*\s*$")


def _commas(ref: str) -> str:
    """The reference with thousands separators where a writer would put them (1234 -> 1,234)."""
    return f"{int(ref):,}" if re.fullmatch(r"-?\d{4,}", ref) else ref


def _money(ref: str) -> str:
    n = _commas(ref)
    return f"-${n[1:]}" if n.startswith("-") else f"${n}"


STYLES: dict[str, Callable[[str], str]] = {
    "boxed": lambda r: f"The final answer is $\\boxed{{{r}}}$.",
    "hashes with separators": lambda r: f"#### {_commas(r)}",
    "the answer is": lambda r: f"The answer is {_commas(r)}.",
    "the answer is, clause": lambda r: f"The answer is {_commas(r)}, and that is it.",
    "minerva": lambda r: f"Final Answer: The final answer is {r}. I hope it is correct.",
    "Answer:": lambda r: f"Answer: {_commas(r)}",
    "A:": lambda r: f"A: {r}",
    "bold Final answer:": lambda r: f"**Final answer:** {_money(r)}",
    "she makes $N every day": lambda r: f"So she makes {_money(r)} every day.",
    "total is N dollars": lambda r: f"Therefore, the total is {_commas(r)} dollars.",
    "bold number": lambda r: f"**{_commas(r)}**",
}
IMPLICIT = {"she makes $N every day", "total is N dollars", "bold number"}  # no explicit marker: fallback only


@pytest.fixture(scope="module")
def gsm8k() -> list[tuple[str, str]]:
    """(solution without its ``#### N`` line, reference) for every GSM8K test question."""
    try:
        path = data_dir() / "gsm8k" / "test.jsonl"
    except ConfigurationError as exc:
        pytest.skip(f"GSM8K data absent ({exc})")
    if not path.is_file():
        pytest.skip(f"GSM8K data absent: {path} does not exist (set TTC_DATA_DIR)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 1319
    return [(_FINAL_LINE_RE.sub("", row["answer"]), gsm8k_reference(row["answer"])) for row in rows]


def test_every_style_is_extracted_and_graded(gsm8k: list[tuple[str, str]]) -> None:
    rates: dict[str, float] = {}
    misses: dict[str, list[tuple[str, str | None]]] = {}
    for name, style in STYLES.items():
        wrong = []
        for body, ref in gsm8k:
            text = f"{body}\n{style(ref)}"
            got = extract_answer(text)
            if not (grade("gsm8k", got, ref) and grade_solution("gsm8k", text, ref)):
                wrong.append((ref, got))
        rates[name] = 1 - len(wrong) / len(gsm8k)
        misses[name] = wrong[:3]
    report = "; ".join(f"{name}: {rate:.2%}" for name, rate in rates.items())
    print(f"GSM8K ({len(gsm8k)} questions) extracted and graded correct per style: {report}")
    assert len(rates) >= 6
    assert all(rate >= MIN_RATE for rate in rates.values()), f"{report}; first misses: {misses}"


def test_strict_finds_the_explicit_styles_only(gsm8k: list[tuple[str, str]]) -> None:
    for name, style in STYLES.items():
        found = sum(extract_answer(f"{body}\n{style(ref)}", strict=True) is not None for body, ref in gsm8k[:200])
        if name in IMPLICIT:
            assert found == 0, name  # a reference body never states an explicit final answer
        else:
            assert found == 200, name


def test_reference_bodies_alone_grade_by_their_last_number(gsm8k: list[tuple[str, str]]) -> None:
    """Without any final line the flexible rule still reads most bodies (their last calculation is the answer)."""
    correct = sum(grade_solution("gsm8k", body, ref) for body, ref in gsm8k)
    print(f"GSM8K bodies without a final line graded correct: {correct / len(gsm8k):.2%}")
    assert correct / len(gsm8k) >= 0.9


# -- the data-folder lookup ----------------------------------------------------------------------------------


def test_data_dir_prefers_ttc_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTC_DATA_DIR", str(tmp_path / "anywhere"))
    assert data_dir() == tmp_path / "anywhere"


def test_data_dir_is_shared_data_beside_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ttc_graph.eval.datasets as datasets

    monkeypatch.delenv("TTC_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "_REPO_ROOT", tmp_path / "elsewhere" / "repo")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert data_dir() == (tmp_path / "shared" / "data").resolve()


def test_data_dir_falls_back_to_the_repository_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ttc_graph.eval.datasets as datasets

    monkeypatch.delenv("TTC_DATA_DIR", raising=False)
    (tmp_path / "checkout" / "repo").mkdir(parents=True)
    (tmp_path / "checkout" / "shared" / "data").mkdir(parents=True)
    monkeypatch.setattr(datasets, "_REPO_ROOT", tmp_path / "checkout" / "repo")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert data_dir() == (tmp_path / "checkout" / "shared" / "data").resolve()


def test_data_dir_does_not_search_every_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ttc_graph.eval.datasets as datasets

    monkeypatch.delenv("TTC_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "_REPO_ROOT", tmp_path / "a" / "repo")
    (tmp_path / "shared" / "data").mkdir(parents=True)  # two levels above the working directory: not looked at
    deep = tmp_path / "x" / "y"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    with pytest.raises(ConfigurationError, match="set TTC_DATA_DIR"):
        data_dir()
