"""Durable runs on a real PostgreSQL server: every strategy, killed with SIGKILL mid-run in one process, resumes
from Postgres in another and ends with what an uninterrupted run gives.

The server is started for this module on 127.0.0.1 in a temporary directory (``initdb`` + ``pg_ctl``, as the
``postgres`` user when run as root) and stopped afterwards. The policy inside the killed process is a scripted fake
whose answers depend on the request alone, so the runs can be compared exactly; the checkpoints are real.

This file is also the child program: ``python test_postgres_live.py kill|resume ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DELIM = "\n\n"
QUESTION = "What is 6 * 7?"
ARITHMETIC = {"kind": "arithmetic"}
SPECS: dict[str, dict[str, Any]] = {
    "best_of_n": {"kind": "best_of_n", "n": 4, "selection": "weighted", "seed": 7, "verifier": ARITHMETIC},
    "beam_search": {"kind": "beam_search", "n": 4, "beam_width": 2, "seed": 7, "verifier": ARITHMETIC},
    "dvts": {"kind": "dvts", "n": 4, "beam_width": 2, "seed": 7, "verifier": ARITHMETIC},
    "particle_filtering": {"kind": "particle_filtering", "n": 4, "seed": 7, "verifier": ARITHMETIC},
    "mcts": {"kind": "mcts", "n": 4, "expansions": 2, "seed": 7, "verifier": ARITHMETIC},
    "revisions": {
        "kind": "revisions", "n": 4, "chain_length": 2, "selection": "hierarchical", "seed": 7, "verifier": ARITHMETIC,
    },
    "compute_optimal": {"kind": "compute_optimal", "budget": {"generations": 6}, "verifier": ARITHMETIC},
}  # fmt: skip
MULTI_ROUND = {"beam_search", "dvts", "particle_filtering", "mcts", "revisions", "compute_optimal"}


# -- the scripted policy and verifier (pure functions of the request) ---------------------------------------------


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256("|".join(map(str, parts)).encode()).digest()


class Policy:
    """Search steps (``stop`` set): a tagged step, the third one answers; otherwise a whole two-step solution.
    ``kill_at``: SIGKILL this process when that request (1-based) arrives."""

    def __init__(self, kill_at: int | None = None) -> None:
        from ttc_graph.testing import ScriptedEndpoint

        self.kill_at = kill_at
        self._pos: dict[int, int] = {}
        self.endpoint = ScriptedEndpoint(self.respond, native_n=False)

    def respond(self, call: Any, index: int) -> str:
        if self.kill_at is not None and len(self.endpoint.calls) >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        pos = self._pos.get(id(call), 0)
        self._pos[id(call)] = pos + 1
        seed = None if call.params is None else call.params.seed
        d = _digest(call.messages, call.prefix, seed, pos)
        answer = 40 + d[0] % 4
        if call.params is not None and call.params.stop:
            depth = len(call.prefix.split(DELIM)) if call.prefix else 1
            step = f"[{d[:3].hex()}] step {depth}: 6 * 7 = {answer}"
            return step + (f" so \\boxed{{{answer}}}" if depth >= 3 else "")
        return f"6 * 7 = {answer}.{DELIM}So the answer is \\boxed{{{answer}}}."


def score(question: str, text: str) -> float:
    return int.from_bytes(_digest(text)[:4], "big") / 2**32


def build(name: str, table: str, policy: Any) -> Any:
    from ttc_graph.specs import build_graph, parse_spec

    data = dict(SPECS[name], **({"table": table} if name == "compute_optimal" else {}))
    return build_graph(parse_spec(data, name), policy=policy, verifier=score)  # type: ignore[arg-type]


def summary(out: dict[str, Any]) -> dict[str, Any]:
    usage = {k: v for k, v in out["usage"].items() if k != "seconds"}
    cands = sorted((c["id"], c["text"], c["score"], c["answer"]) for c in out["candidates"])
    return {"answer": out["answer"], "stop_reason": out["stop_reason"], "candidates": cands, "usage": usage}


def write_table(path: Path) -> str:
    from ttc_graph.compute_optimal import PolicyTable
    from ttc_graph.compute_optimal.difficulty import DifficultyBins

    beam = {"kind": "beam_search", "beam_width": 2, "verifier": ARITHMETIC}
    bins = DifficultyBins(metric="verifier_score", edges=(0.2, 0.4, 0.6, 0.8), probes=2)
    table = PolicyTable(
        difficulty=bins, budgets=[6], strategies={"beam": beam}, table={str(b): {"6": "beam"} for b in range(1, 6)}
    )
    return str(table.save(path))


# -- the child program --------------------------------------------------------------------------------------------


async def child(mode: str, url: str, table: str, names: list[str], kill_at: int) -> None:
    from ttc_graph.scale import postgres_checkpointer, run_durable

    async with postgres_checkpointer(url) as saver:
        for name in names:
            policy = Policy(kill_at if mode == "kill" else None)
            graph = build(name, table, policy.endpoint).compile(checkpointer=saver)
            before = await graph.aget_state({"configurable": {"thread_id": name}})
            out = await run_durable(graph, QUESTION, name)
            print(json.dumps({"name": name, "next": list(before.next), "round": before.values.get("round"),
                              "calls": len(policy.endpoint.calls), "summary": summary(out)}, default=str))  # fmt: skip


# -- the server -----------------------------------------------------------------------------------------------------


def server_binaries() -> Path | None:
    """The folder of initdb, pg_ctl and postgres: from PATH, else Debian's /usr/lib/postgresql/*/bin (newest)."""
    found = shutil.which("initdb")
    folders = [Path(found).resolve().parent] if found else []
    folders += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    for folder in folders:
        if all((folder / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("langgraph.checkpoint.postgres", reason="the postgres extra (in dev)")
    folder = server_binaries()
    if folder is None:
        message = "no PostgreSQL server binaries (initdb, pg_ctl); scripts/bootstrap.sh installs them"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="ttc-postgres-"))
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as its own user (or nobody)
        try:
            who = pwd.getpwnam("postgres")
        except KeyError:
            who = pwd.getpwnam("nobody")
        os.chown(root, who.pw_uid, who.pw_gid)
        as_user = {"user": who.pw_uid, "group": who.pw_gid, "extra_groups": []}
    port = free_port()
    data, log = root / "data", root / "server.log"
    run = {"cwd": root, "check": True, "capture_output": True, "text": True, "timeout": 120, **as_user}
    subprocess.run([folder / "initdb", "-D", data, "-U", "ttc", "--auth=trust", "-E", "UTF8", "--no-sync"], **run)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=20"
    subprocess.run([folder / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"], **run)
    try:
        yield f"postgresql://ttc@127.0.0.1:{port}/postgres?sslmode=disable"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run([folder / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], **run)
        shutil.rmtree(root, ignore_errors=True)


def run_child(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, __file__, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])


# -- the tests -----------------------------------------------------------------------------------------------------


async def test_every_strategy_killed_with_sigkill_resumes_from_postgres_in_another_process(
    postgres_url: str, tmp_path: Path
) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    table = write_table(tmp_path / "table.json")
    reference: dict[str, tuple[dict[str, Any], int]] = {}
    for name in SPECS:  # the uninterrupted runs
        policy = Policy()
        out = await build(name, table, policy.endpoint).compile(checkpointer=InMemorySaver()).ainvoke(
            {"question": QUESTION}, {"configurable": {"thread_id": name}}
        )  # fmt: skip
        assert out["answer"] is not None, name
        reference[name] = (json.loads(json.dumps(summary(out), default=str)), len(policy.endpoint.calls))

    for name, (_, calls) in reference.items():  # one process per kill, part-way through the run
        killed = run_child("kill", postgres_url, table, name, str(calls // 2 + 1))
        assert killed.returncode == -signal.SIGKILL, (name, killed.returncode, killed.stderr[-2000:])

    resumed = run_child("resume", postgres_url, table, ",".join(SPECS), "0")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-1500:]
    lines = [json.loads(line) for line in resumed.stdout.splitlines() if line.startswith("{")]
    assert [line["name"] for line in lines] == list(SPECS)
    for line in lines:
        name = line["name"]
        expected, calls = reference[name]
        assert line["next"], f"{name}: the killed run left no unfinished checkpoint"
        assert line["summary"] == expected, name
        assert line["calls"] <= calls, name
        if name in MULTI_ROUND:  # finished rounds came from Postgres, not from the policy again
            assert line["calls"] < calls, (name, line["calls"], calls)

    again = run_child("resume", postgres_url, table, ",".join(SPECS), "0")  # finished threads: no model call
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(json.loads(x)["calls"] == 0 for x in again.stdout.splitlines() if x.startswith("{"))


async def test_a_postgres_that_refuses_connections_is_a_clear_error_before_any_model_call() -> None:
    from ttc_graph.scale import CheckpointStoreError, postgres_checkpointer

    pytest.importorskip("langgraph.checkpoint.postgres", reason="the postgres extra (in dev)")
    url = f"postgresql://ttc@127.0.0.1:{free_port()}/postgres"
    refused = r"postgres at 127\.0\.0\.1:\d+/postgres is not usable: .*Connection refused"
    with pytest.raises(CheckpointStoreError, match=refused):
        async with postgres_checkpointer(url):
            pass

    spec = Path(tempfile.mkdtemp()) / "bon.yaml"
    policy = "policy: {kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m}"
    spec.write_text(f"kind: best_of_n\nn: 2\nselection: majority\n{policy}\n")
    cmd = [sys.executable, "-m", "ttc_graph.cli", "run", str(spec), QUESTION, "--postgres", url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refused" in " ".join(result.stdout.split())


if __name__ == "__main__":
    mode, url, table, names, kill_at = sys.argv[1:6]
    asyncio.run(child(mode, url, table, names.split(","), int(kill_at)))
