"""Sweeps and studies on a real local Ray cluster (num_cpus=2, loopback), each replica an actor with its own embedded
llama.cpp server (SmolLM2-135M, one thread, two slots): the rows equal the local run's, none written twice, and the
sweep completes when replicas are killed under it.

Row-for-row equality needs each request's output to depend on the request alone: llama.cpp's numbers move slightly
with what else it batches and what it reuses of earlier prompts (and a best-of-N pool is stored in completion order),
so both runs send one request at a time to each server, without prompt caching; sampling is seeded (temperature 0.8).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when Ray is imported: a loopback-only node
ray = pytest.importorskip("ray", reason="the ray extra (in dev)")

from ttc_graph.errors import ConfigurationError  # noqa: E402
from ttc_graph.eval import ResultStore, SweepConfig, SweepEvent, load_dataset, run_sweep  # noqa: E402
from ttc_graph.local import LocalModelServer  # noqa: E402
from ttc_graph.scale import RayUnits  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REPLICA = {"kind": "embedded", "threads": 1, "parallel": 2, "max_concurrency": 1, "cache_prompt": False}
STRATEGIES = ["best_of_n:majority", "revisions:majority"]
SETTINGS: dict[str, Any] = {"max_tokens": 12, "seed": 3, "temperature": 0.8, "concurrency": 2}


def gsm8k(n: int) -> list[Any]:
    try:
        return list(load_dataset("gsm8k", limit=n))
    except ConfigurationError as exc:
        pytest.skip(f"GSM8K data not found: {exc}")


def normal(store: ResultStore, run: str) -> list[dict[str, Any]]:
    """Rows without wall-clock fields, in key order."""
    rows = []
    for r in store.rows(run):
        d = asdict(r)
        d.pop("seconds")
        d["details"] = {k: v for k, v in d["details"].items() if k != "wall_seconds"}
        d["details"].get("usage", {}).pop("seconds", None)
        d["candidates"] = sorted(d["candidates"], key=lambda c: str(c.get("id", c.get("i"))))
        rows.append(d)
    return sorted(rows, key=lambda d: (d["strategy"], d["budget"], d["question_id"]))


def serving(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


async def test_a_sweep_on_two_replicas_equals_the_local_sweep_and_survives_killed_replicas(
    cluster: None, tmp_path: Path
) -> None:
    problems = gsm8k(4)
    config = SweepConfig.make("ray", "gsm8k", STRATEGIES, "1,4", **SETTINGS)
    with LocalModelServer(threads=1, parallel=2) as server, ResultStore(tmp_path / "local.sqlite") as local:
        endpoint = server.endpoint(max_concurrency=1, extra_body={"cache_prompt": False})
        here = await run_sweep(endpoint, problems, config, local)
        assert here.failed_units == 0, here.failures
        expected = normal(local, "ray")

    done: list[str] = []
    with RayUnits(REPLICA, replicas=2, concurrency=2) as units:
        first = [info["pid"] for info in units.infos]
        urls = [info["base_url"] for info in units.infos]
        assert len(set(first)) == 2 and len(set(urls)) == 2  # two actors, two servers

        def on_event(event: SweepEvent) -> None:
            if event.kind == "done":
                done.append(event.label)
            if len(done) == 3 and event.kind == "done":  # a crash: Ray restarts it and retries its units
                ray.kill(units.actors[0], no_restart=False)
            if len(done) == 7 and event.kind == "done":  # gone for good: the other replica takes its units
                ray.kill(units.actors[1])

        with ResultStore(tmp_path / "ray.sqlite") as store:
            report = await run_sweep(units.driver_policy, problems, config, store, progress=on_event, runner=units)
            assert report.failed_units == 0, report.failures
            assert normal(store, "ray") == expected
            assert report.rows_written == len(store.rows("ray")) == here.rows_written  # no unit written twice
            assert len(done) == len(set(done)) == report.units == here.units
            restarted = ray.get(units.actors[0].info.remote(), timeout=60)
            assert restarted["pid"] != first[0]
            assert any("replica 1" in lost for lost in units.lost), units.lost
            again = await run_sweep(units.driver_policy, problems, config, store, runner=units)
            assert (again.units, again.rows_written) == (0, 0)  # resumes exactly as locally
        urls.append(restarted["base_url"])
    deadline = time.monotonic() + 15
    while any(serving(u) for u in urls) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [u for u in urls if serving(u)]  # every replica's server is stopped with it


def run_ttc(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    cmd = [sys.executable, "-m", "ttc_graph.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def test_the_study_command_on_ray_writes_what_the_local_study_writes(tmp_path: Path) -> None:
    gsm8k(1)
    study = {
        "name": "ray-study", "model": "smollm2", "questions": 3, "budgets": [1, 4], "temperature": 0.8,
        "max_tokens": 12, "seed": 3, "concurrency": 1, "baseline": "bon", "verifier": {"kind": "arithmetic"},
        "templates": {
            "bon": {"kind": "best_of_n", "selection": "weighted"},
            "seq": {"kind": "revisions", "chain_length": "sqrt", "selection": "hierarchical"},
        },
    }  # fmt: skip
    config = tmp_path / "study.yaml"
    config.write_text(json.dumps(study))  # JSON is YAML
    common = ["study", "run", str(config), "--threads", "1", "--parallel", "1", "--slot-context", "2048"]
    local = run_ttc(*common, "--db", str(tmp_path / "local.sqlite"))
    assert local.returncode == 0, local.stdout + local.stderr
    remote = run_ttc(*common, "--db", str(tmp_path / "ray.sqlite"), "--ray", "local", "--replicas", "1")
    assert remote.returncode == 0, remote.stdout + remote.stderr
    out = " ".join(remote.stdout.split())
    assert "ray local: 1 replica(s)" in out and "9 unit(s) finished, 0 failed" in out, out
    with ResultStore(tmp_path / "local.sqlite") as a, ResultStore(tmp_path / "ray.sqlite") as b:
        assert normal(b, "ray-study") == normal(a, "ray-study") and len(b.rows("ray-study")) == 3 * 2 * 2


def test_a_spec_run_over_a_dataset_on_ray_writes_what_the_local_run_writes(tmp_path: Path) -> None:
    gsm8k(1)
    spec = tmp_path / "bon.yaml"
    policy = {"kind": "local", "parallel": 1}  # one request at a time, in the same order on both paths
    spec.write_text(json.dumps({"kind": "best_of_n", "n": 2, "selection": "majority", "max_tokens": 12, "seed": 3,
                                "policy": policy}))  # fmt: skip
    common = ["run", str(spec), "--dataset", "gsm8k", "--limit", "3", "--concurrency", "1", "--run", "spec"]
    local = run_ttc(*common, "--db", str(tmp_path / "local.sqlite"))
    assert local.returncode == 0, local.stdout + local.stderr
    remote = run_ttc(*common, "--db", str(tmp_path / "ray.sqlite"), "--ray", "local", "--replicas", "1")
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "ray local: 1 replica(s)" in " ".join(remote.stdout.split())
    with ResultStore(tmp_path / "local.sqlite") as a, ResultStore(tmp_path / "ray.sqlite") as b:
        rows = normal(b, "spec")
        assert rows == normal(a, "spec") and len(rows) == 3


def test_eval_with_an_unreachable_ray_address_exits_2_before_any_model_call_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    gsm8k(1)
    db = tmp_path / "e.sqlite"
    with ResultStore(db) as store:  # a run that finished one unit before
        store.check_run("kept", {"dataset": "gsm8k", "max_tokens": 12, "temperature": 0.8, "seed": None})
        row = {"run": "kept", "strategy": "best_of_n:majority", "budget": 1, "question_id": "0", "dataset": "gsm8k",
               "answer": "18", "reference": "18", "correct": True, "generations": 1, "tokens": 9, "seconds": 0.1,
               "stop_reason": "complete", "candidates": []}  # fmt: skip
        from ttc_graph.eval.store import ResultRow

        store.save([ResultRow(**row)])
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = run_ttc(
        "eval", "--run", "kept", "--limit", "2", "--budgets", "1", "--max-tokens", "12", "--db", str(db),
        "--ray", f"127.0.0.1:{port}", "--replicas", "2", timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Ray address '127.0.0.1:{port}' is not reachable" in " ".join(result.stdout.split())
    assert time.monotonic() - started < 60
    with ResultStore(db) as store:
        assert [(r.strategy, r.question_id, r.answer) for r in store.rows("kept")] == [
            ("best_of_n:majority", "0", "18")
        ]
