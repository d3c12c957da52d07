"""Labelled data sets read in place: GSM8K, MATH-500, or any jsonl with a field mapping."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ttc_graph.answers import gsm8k_reference
from ttc_graph.errors import ConfigurationError

__all__ = ["KNOWN", "Problem", "data_dir", "load_dataset"]

KNOWN = {"gsm8k": "gsm8k/test.jsonl", "math500": "math500/test.jsonl"}


@dataclass(frozen=True, slots=True)
class Problem:
    id: str
    question: str
    reference: str


def data_dir() -> Path:
    """``TTC_DATA_DIR``, else the first ``shared/data`` found beside or above the working directory."""
    env = os.environ.get("TTC_DATA_DIR")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for base in (here, *here.parents):
        for candidate in (base / "shared" / "data", base.parent / "shared" / "data"):
            if candidate.is_dir():
                return candidate
    raise ConfigurationError("data: no data directory found; set TTC_DATA_DIR to the folder with gsm8k/ and math500/")


def load_dataset(
    name: str,
    *,
    path: str | Path | None = None,
    limit: int | None = None,
    offset: int = 0,
    question_field: str | None = None,
    answer_field: str | None = None,
) -> list[Problem]:
    """Problems of ``name`` (``gsm8k``, ``math500``, or ``jsonl`` with ``path`` and the two field names)."""
    if name in KNOWN:
        file = Path(path) if path else data_dir() / KNOWN[name]
        qf = question_field or ("question" if name == "gsm8k" else "problem")
        af = answer_field or "answer"
    elif name == "jsonl":
        if not path or not question_field or not answer_field:
            raise ConfigurationError("dataset: 'jsonl' needs path, question_field and answer_field")
        file, qf, af = Path(path), question_field, answer_field
    else:
        raise ConfigurationError(f"dataset: unknown {name!r}; use one of {', '.join([*KNOWN, 'jsonl'])}")
    if not file.is_file():
        raise ConfigurationError(f"dataset: {file} does not exist")
    problems: list[Problem] = []
    with file.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh):
            if line_no < offset or not line.strip():
                continue
            if limit is not None and len(problems) >= limit:
                break
            row = json.loads(line)
            missing = [f for f in (qf, af) if f not in row]
            if missing:
                raise ConfigurationError(f"dataset: {file}:{line_no + 1} lacks field(s) {missing}")
            ref = gsm8k_reference(row[af]) if name == "gsm8k" else str(row[af])
            problems.append(Problem(str(row.get("unique_id", line_no)), str(row[qf]), ref))
    return problems
