"""The SQLite file of a sweep: one row per finished (run, strategy, budget, question), plus sample pools.

Every write commits at once, so a killed sweep loses at most the questions in flight. Tables:

- ``runs``: ``run, strategy, budget, question_id`` (the key), ``dataset, answer, reference, correct,
  generations, tokens, seconds, stop_reason, candidates`` (JSON), ``reused`` (1: derived from a pool), ``created``,
  ``details`` (JSON: the run's ledger, diagnostics, seed).
- ``pools``: ``run, question_id`` (the key), ``samples`` (JSON list, draw order), ``created``.
- ``run_meta``: ``run`` (the key), ``config`` (JSON of the settings that shape the samples), ``created``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ttc_graph.errors import ConfigurationError

__all__ = ["ResultRow", "ResultStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run TEXT NOT NULL, strategy TEXT NOT NULL, budget INTEGER NOT NULL, question_id TEXT NOT NULL,
    dataset TEXT NOT NULL, answer TEXT, reference TEXT, correct INTEGER NOT NULL,
    generations INTEGER NOT NULL, tokens INTEGER NOT NULL, seconds REAL NOT NULL, stop_reason TEXT,
    candidates TEXT NOT NULL, reused INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    details TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run, strategy, budget, question_id)
);
CREATE TABLE IF NOT EXISTS pools (
    run TEXT NOT NULL, question_id TEXT NOT NULL, samples TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (run, question_id)
);
CREATE TABLE IF NOT EXISTS run_meta (run TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One finished (strategy, budget, question) of a run.

    ``generations`` and ``tokens`` are the policy's: its samples and their completion tokens (the budget's units);
    prompt and verifier tokens are only in the full ledger (``details``). A candidate's ``tokens`` is the completion
    tokens of that candidate alone.
    """

    run: str
    strategy: str
    budget: int
    question_id: str
    dataset: str
    answer: str | None
    reference: str | None
    correct: bool
    generations: int
    tokens: int
    seconds: float
    stop_reason: str | None
    candidates: list[dict[str, Any]]
    reused: bool = False
    details: dict[str, Any] = field(default_factory=dict)


class ResultStore:
    """A sweep's SQLite file (created with its folder on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path)
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}
            if "details" not in columns:  # a file written before the column existed
                with self._db:
                    self._db.execute("ALTER TABLE runs ADD COLUMN details TEXT NOT NULL DEFAULT '{}'")
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(f"db: {self.path} is not a usable SQLite file ({exc})") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -----------------------------------------------------------------------------------------------

    def check_run(self, run: str, config: Mapping[str, Any]) -> None:
        """Record ``config`` for a new run; for an existing run, refuse settings that would change the samples."""
        found = self._db.execute("SELECT config FROM run_meta WHERE run = ?", (run,)).fetchone()
        if found is None:
            with self._db:
                record = (run, json.dumps(dict(config), sort_keys=True), time.time())
                self._db.execute("INSERT INTO run_meta VALUES (?, ?, ?)", record)
            return
        old = json.loads(found[0])
        clashes = [
            f"{k}={old[k]!r} (now {config[k]!r})"
            for k in config
            if k in old and old[k] is not None and config[k] is not None and old[k] != config[k]
        ]
        if clashes:
            raise ConfigurationError(
                f"run {run!r} in {self.path} was started with {', '.join(clashes)}; resume it with the same"
                " settings or pick another --run name"
            )

    def runs(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT run FROM runs ORDER BY run")]

    def done(self, run: str) -> set[tuple[str, int, str]]:
        """The finished ``(strategy, budget, question_id)`` keys of ``run``."""
        cur = self._db.execute("SELECT strategy, budget, question_id FROM runs WHERE run = ?", (run,))
        return {(s, int(b), str(q)) for s, b, q in cur}

    def rows(self, run: str) -> list[ResultRow]:
        cur = self._db.execute(
            "SELECT run, strategy, budget, question_id, dataset, answer, reference, correct, generations, tokens,"
            " seconds, stop_reason, candidates, reused, details FROM runs WHERE run = ?"
            " ORDER BY strategy, budget, rowid",
            (run,),
        )
        return [
            ResultRow(r[0], r[1], int(r[2]), r[3], r[4], r[5], r[6], bool(r[7]), int(r[8]), int(r[9]), float(r[10]),
                      r[11], json.loads(r[12]), bool(r[13]), json.loads(r[14] or "{}"))
            for r in cur
        ]  # fmt: skip

    # -- pools ----------------------------------------------------------------------------------------------

    def pool(self, run: str, question_id: str) -> list[dict[str, Any]]:
        found = self._db.execute(
            "SELECT samples FROM pools WHERE run = ? AND question_id = ?", (run, question_id)
        ).fetchone()
        return json.loads(found[0]) if found else []

    def pools(self, run: str) -> dict[str, list[dict[str, Any]]]:
        cur = self._db.execute("SELECT question_id, samples FROM pools WHERE run = ? ORDER BY rowid", (run,))
        return {q: json.loads(s) for q, s in cur}

    def timeline(self, run: str) -> list[tuple[float, str, int, int]]:
        """``(finished at, strategy, budget, completion tokens)`` of each live (not reused) row, oldest first."""
        cur = self._db.execute(
            "SELECT created, strategy, budget, tokens FROM runs WHERE run = ? AND reused = 0 ORDER BY created", (run,)
        )
        return [(float(c), str(s), int(b), int(t)) for c, s, b, t in cur]

    # -- writes ---------------------------------------------------------------------------------------------

    # -- a second verifier's per-question material (e.g. the program verifier's programs) --------------------

    def checks(self, run: str, verifier: str) -> dict[str, dict[str, Any]]:
        """What ``verifier`` (a key naming its settings) stored per question of ``run``: empty when nothing was
        (the table is made by the first :meth:`save_check`, so reading leaves the file as it is)."""
        found = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'checks'").fetchone()
        if found is None:
            return {}
        rows = self._db.execute(
            "SELECT question_id, data FROM checks WHERE run = ? AND verifier = ?", (run, verifier)
        ).fetchall()
        return {q: json.loads(d) for q, d in rows}

    def save_check(self, run: str, verifier: str, question_id: str, data: Mapping[str, Any]) -> None:
        """Store ``verifier``'s material for one question of ``run`` (committed at once)."""
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS checks (run TEXT NOT NULL, verifier TEXT NOT NULL, question_id TEXT NOT"
                " NULL, data TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (run, verifier, question_id))"
            )
            self._db.execute(
                "INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?)",
                (run, verifier, question_id, json.dumps(dict(data)), time.time()),
            )

    def save(
        self,
        rows: Iterable[ResultRow],
        *,
        pool: tuple[str, str, Sequence[dict[str, Any]]] | None = None,
    ) -> int:
        """Write ``rows`` (and a ``(run, question_id, samples)`` pool) in one committed transaction."""
        now = time.time()
        count = 0
        with self._db:
            if pool is not None:
                run, qid, samples = pool
                self._db.execute(
                    "INSERT OR REPLACE INTO pools VALUES (?, ?, ?, ?)", (run, qid, json.dumps(list(samples)), now)
                )
            for row in rows:
                d = asdict(row)
                self._db.execute(
                    "INSERT OR REPLACE INTO runs (run, strategy, budget, question_id, dataset, answer, reference,"
                    " correct, generations, tokens, seconds, stop_reason, candidates, reused, created, details)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        d["run"], d["strategy"], d["budget"], d["question_id"], d["dataset"], d["answer"],
                        d["reference"], int(d["correct"]), d["generations"], d["tokens"], d["seconds"],
                        d["stop_reason"], json.dumps(d["candidates"]), int(d["reused"]), now,
                        json.dumps(d["details"], default=str),
                    ),
                )  # fmt: skip
                count += 1
        return count
