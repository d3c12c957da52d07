"""``langgraph dev`` (the in-memory LangGraph API server) serves the graphs of ``langgraph.json``.

The server runs as a subprocess in the repo root with its policy pointed at the session's local llama.cpp
server; the test talks to it only through its HTTP API (``langgraph_sdk``), as Studio would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client

from ttc_graph.local import LocalModelServer

ROOT = Path(__file__).resolve().parents[2]
LANGGRAPH = Path(sys.executable).with_name("langgraph")
GRAPHS = {"best_of_n", "majority_vote", "beam_search", "dvts", "revisions"}
STARTUP_TIMEOUT = 120.0
RUN_TIMEOUT = 300.0
SLACK = 2  # re-tokenizing a decoded sample may split its text a token differently

# No traffic leaves the machine: no LangSmith tracing, no CLI analytics, no PyPI version check, no browser.
QUIET_ENV = {
    "LANGSMITH_TRACING": "false",
    "LANGSMITH_TRACING_V2": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGCHAIN_TRACING": "false",
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # langgraph_cli.analytics.log_command
    "LANGGRAPH_NO_VERSION_CHECK": "true",  # langgraph_api.cli._check_newer_version
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's whole process group (uvicorn workers included)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_until_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: str = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"langgraph dev exited with {proc.returncode} before answering:\n{log_tail(log)}")
        try:
            response = httpx.get(f"{url}/ok", timeout=2)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    pytest.fail(f"langgraph dev did not answer /ok within {STARTUP_TIMEOUT:.0f}s ({last}):\n{log_tail(log)}")


@pytest.fixture(scope="module")
def langgraph_dev(local_server: LocalModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a ``langgraph dev`` server whose graphs use the session's local model."""
    if not LANGGRAPH.exists():
        pytest.fail(f"{LANGGRAPH} is missing: install the dev extra (pip install -e '.[dev]', langgraph-cli[inmem])")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("langgraph_dev") / "server.log"
    env = {
        **os.environ,
        **QUIET_ENV,
        "TTC_BASE_URL": local_server.base_url,
        "TTC_MODEL": local_server.model_name,
    }
    env.pop("TTC_API_KEY", None)
    for key in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT"):
        env.pop(key, None)
    cmd = [
        str(LANGGRAPH), "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload",
        "--config", str(ROOT / "langgraph.json"),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_until_ready(url, proc, log)
        yield url
    finally:
        stop(proc)
    assert proc.returncode is not None


async def test_server_lists_every_graph(langgraph_dev: str) -> None:
    client = get_client(url=langgraph_dev)
    assistants = await client.assistants.search(limit=50)
    ids = {a["graph_id"]: a["assistant_id"] for a in assistants}
    assert set(ids) >= GRAPHS
    schemas = await client.assistants.get_schemas(ids["majority_vote"])
    # The per-run knobs (TTCContext) are the graphs' context schema, so Studio shows them as run configuration.
    assert {"budget", "temperature", "max_tokens", "seed"} <= set(schemas["context_schema"]["properties"])
    graph = await client.assistants.get_graph(ids["beam_search"])
    assert {"prepare", "budget", "select"} <= {node["id"] for node in graph["nodes"]}


async def test_server_publishes_input_and_output_schemas(langgraph_dev: str) -> None:
    client = get_client(url=langgraph_dev)
    ids = {a["graph_id"]: a["assistant_id"] for a in await client.assistants.search(limit=50)}
    schemas = await client.assistants.get_schemas(ids["majority_vote"])
    assert "question" in (schemas["input_schema"] or {}).get("properties", {})
    assert {"answer", "usage", "candidates"} <= set((schemas["output_schema"] or {}).get("properties", {}))


def tokens_of(server: LocalModelServer, text: str) -> int:
    response = httpx.post(f"{server.server_root}/tokenize", json={"content": text}, timeout=30)
    response.raise_for_status()
    return len(response.json()["tokens"])


async def test_majority_vote_streams_rounds_and_honours_the_run_context(
    langgraph_dev: str, local_server: LocalModelServer
) -> None:
    client = get_client(url=langgraph_dev)
    rounds: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    events: list[str] = []
    errors: list[Any] = []

    async def run() -> None:
        nonlocal values
        async for part in client.runs.stream(
            None,
            "majority_vote",
            input={"question": "What is 2 + 3? Answer with \\boxed{}."},
            stream_mode=["custom", "values"],
            context={"max_tokens": 48, "seed": 7},
        ):
            events.append(part.event)
            if part.event == "custom" and isinstance(part.data, dict) and part.data.get("event") == "ttc.round":
                rounds.append(part.data)
            elif part.event == "values":
                values = part.data
            elif part.event == "error":
                errors.append(part.data)

    await asyncio.wait_for(run(), RUN_TIMEOUT)
    assert not errors, errors
    assert rounds, f"no ttc.round custom event; events seen: {sorted(set(events))}"
    assert rounds[0]["round"] == 0
    assert {"answer", "usage", "candidates", "stop_reason"} <= set(values), sorted(values)
    usage = values["usage"]
    assert 0 < usage["generations"] <= 8
    assert values["stop_reason"]
    candidates = values["candidates"]
    assert len(candidates) == usage["generations"]
    # The graph was built with max_tokens=256; the run's context caps every sample at 48 tokens. Through
    # TTC_BASE_URL the endpoint asks llama.cpp for n samples in one request, which reports one sample's token
    # count, so count each candidate's tokens with the model's own tokenizer instead.
    counts = [tokens_of(local_server, c["text"]) for c in candidates]
    assert all(count <= 48 + SLACK for count in counts), counts
    # Without the cap most of these samples run to 60-256 tokens: the cap, not the model, ended some of them.
    assert any(c["finish_reason"] == "length" for c in candidates), [c["finish_reason"] for c in candidates]
    assert all(c["tokens"] is None or c["tokens"] <= 48 for c in candidates), [c["tokens"] for c in candidates]
    assert usage["completion_tokens"] <= 48 * usage["requests"]
