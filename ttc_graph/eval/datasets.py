"""Labelled data sets read in place: GSM8K, MATH-500, or any jsonl with a field mapping."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ttc_graph._files import existing_file
from ttc_graph.answers import gsm8k_reference
from ttc_graph.errors import ConfigurationError
from ttc_graph.eval.sources import locate

__all__ = ["KNOWN", "DatasetWarning", "Problem", "Problems", "SkippedRow", "data_dir", "load_dataset"]

KNOWN = {"gsm8k": "gsm8k/test.jsonl", "math500": "math500/test.jsonl"}


@dataclass(frozen=True, slots=True)
class Problem:
    id: str
    question: str
    reference: str


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A row that could not be parsed: 1-based line number and why."""

    line: int
    reason: str


class DatasetWarning(UserWarning):
    """Some rows of a data set were malformed and skipped."""


class Problems(list[Problem]):
    """The loaded problems (a plain list) plus the malformed rows that were skipped."""

    def __init__(self, problems: list[Problem], skipped: list[SkippedRow], source: Path) -> None:
        super().__init__(problems)
        self.skipped = skipped
        self.source = source


_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The shared data folder: ``TTC_DATA_DIR``, else ``../shared/data`` relative to the working directory, else
    ``../shared/data`` relative to the repository root. No other directory is searched."""
    env = os.environ.get("TTC_DATA_DIR")
    if env:
        return Path(env)
    candidates = (Path.cwd() / ".." / "shared" / "data", _REPO_ROOT / ".." / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    looked = ", ".join(str(c.resolve()) for c in candidates)
    raise ConfigurationError(
        f"data: no data directory (looked in {looked}); set TTC_DATA_DIR to the folder with gsm8k/ and math500/"
    )


def _resolve(
    name: str, path: str | Path | None, question_field: str | None, answer_field: str | None
) -> tuple[Path, str, str]:
    if name in KNOWN:
        file = Path(path) if path else locate(KNOWN[name])  # the data folder, else the `ttc data pull` cache
        return file, question_field or ("question" if name == "gsm8k" else "problem"), answer_field or "answer"
    if name == "jsonl":
        if not path or not question_field or not answer_field:
            raise ConfigurationError("dataset: 'jsonl' needs path, question_field and answer_field")
        return Path(path), question_field, answer_field
    raise ConfigurationError(f"dataset: unknown {name!r}; use one of {', '.join([*KNOWN, 'jsonl'])}")


def load_dataset(
    name: str,
    *,
    path: str | Path | None = None,
    limit: int | None = None,
    offset: int = 0,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> Problems:
    """Problems of ``name`` (``gsm8k``, ``math500``, or ``jsonl`` with ``path`` and the two field names).

    ``offset`` skips that many lines; ids are ``id_field`` / ``unique_id`` when present, else the 0-based line
    number. An unknown name, a missing file or a row without the mapped fields raises
    :class:`ConfigurationError`; a row that is not a JSON object (or a GSM8K answer without ``####``) is
    skipped with a :class:`DatasetWarning` and listed in ``.skipped``.
    """
    file, qf, af = _resolve(name, path, question_field, answer_field)
    if limit is not None and limit < 0:
        raise ConfigurationError(f"limit: must be >= 0, got {limit}")
    if offset < 0:
        raise ConfigurationError(f"offset: must be >= 0, got {offset}")
    existing_file(file, "dataset")
    problems: list[Problem] = []
    skipped: list[SkippedRow] = []
    with file.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh):
            if line_no < offset or not line.strip():
                continue
            if limit is not None and len(problems) >= limit:
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                skipped.append(SkippedRow(line_no + 1, f"bad JSON: {exc.msg} at column {exc.colno}"))
                continue
            if not isinstance(row, dict):
                skipped.append(SkippedRow(line_no + 1, f"not a JSON object but {type(row).__name__}"))
                continue
            missing = [f for f in (qf, af) if f not in row]
            if missing:
                raise ConfigurationError(
                    f"dataset: {file}:{line_no + 1} lacks field(s) {missing}; its fields are {sorted(row)}"
                    " (map them with question_field / answer_field)"
                )
            try:
                ref = gsm8k_reference(str(row[af])) if name == "gsm8k" else str(row[af])
            except ValueError as exc:
                skipped.append(SkippedRow(line_no + 1, str(exc)))
                continue
            pid = row.get(id_field) if id_field else row.get("unique_id")
            problems.append(Problem(str(line_no if pid is None else pid), str(row[qf]), ref))
    if skipped:
        detail = "; ".join(f"line {s.line}: {s.reason}" for s in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        message = f"dataset: skipped {len(skipped)} malformed row(s) in {file}: {detail}{more}"
        warnings.warn(message, DatasetWarning, stacklevel=2)
    return Problems(problems, skipped, file)
