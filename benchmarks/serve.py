"""Best-of-N majority three ways on one upstream and the same GSM8K questions: the graph in-process, through
``ttc serve`` (streamed, OpenAI wire format), and through optillm's proxy (its self-consistency approach).

Every system talks to the model server through a metering proxy (``ttc_graph.server.metering``) that counts the
requests it forwards and the tokens the server reported, so each system's reported usage is checked against what
was served. Questions run one after another; each system's wall time is compared with the in-process graph's.

optillm is installed into a virtual environment of its own (``--optillm-venv``, created on first use) from PyPI,
pinned to ``optillm==0.4.0``, without its heavy optional stack (torch, transformers, spaCy, ...): only what its
proxy imports. Its self-consistency draws a fixed 5 samples, so a two-line plugin runs optillm's own
``AdvancedSelfConsistency`` class with ``num_samples=N``; it samples sequentially at temperature 1 and streams
nothing before it has finished, so its time to first byte is its whole run (measured on non-streamed requests,
which carry its usage).

    .venv/bin/python benchmarks/serve.py --gguf "$(bash ../shared/models/fetch-bench-model.sh)" --threads 1 \\
        --questions 4 --max-tokens 256
    .venv/bin/python benchmarks/serve.py --base-url http://127.0.0.1:8080 --model qwen --skip-optillm
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ttc_graph.endpoints import OpenAIEndpoint
from ttc_graph.eval import load_dataset
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.grading import grade_solution
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.server import Limits, ServeConfig, Upstream, create_app, load_presets
from ttc_graph.server.metering import MeteringProxy, serve_in_thread
from ttc_graph.specs import build_graph, parse_spec

OPTILLM = "optillm==0.4.0"
OPTILLM_DEPS = [
    "flask", "openai", "numpy", "networkx", "z3-solver<=4.15.4.0", "sympy", "aiohttp", "pyyaml",
    "cerebras_cloud_sdk", "requests", "math-verify",
]  # fmt: skip
PLUGIN = '''"""optillm's own self-consistency with num_samples set (its approach hard-codes 5)."""
from optillm.self_consistency import AdvancedSelfConsistency

SLUG = "self_consistency{n}"


def run(system_prompt, initial_query, client, model, request_config=None):
    sc = AdvancedSelfConsistency(client, model, num_samples={n}, request_config=request_config)
    clusters = sc.evaluate(system_prompt, initial_query)["aggregated_result"]["clusters"]
    answer = clusters[0]["answer"] if clusters else "No consistent answer found."
    return answer, sc.self_consistency_completion_tokens
'''


@dataclass
class Row:
    system: str
    wall: float = 0.0
    ttfb: list[float] = field(default_factory=list)
    correct: int = 0
    questions: int = 0
    served: dict[str, int] = field(default_factory=dict)
    reported_prompt: int | None = 0
    reported_completion: int = 0


# -- the three systems ------------------------------------------------------------------------------------------


def spec_data(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "kind": "best_of_n",
        "n": args.n,
        "selection": "majority",
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
    }


@dataclass
class Answer:
    wall: float
    ttfb: float | None
    content: str
    prompt: int | None
    completion: int


async def in_process(graph: Any, p: Problem) -> Answer:
    t0 = time.perf_counter()
    out = await graph.ainvoke({"question": p.question})
    text = next((c["text"] for c in out["candidates"] if c["answer"] == out["answer"]), "")
    usage = out["usage"]
    return Answer(time.perf_counter() - t0, None, text, usage["prompt_tokens"], usage["completion_tokens"])


async def through_ttc_serve(serve_url: str, model: str, p: Problem) -> Answer:
    """A streamed request: time to first byte, then the solution and the usage chunk."""
    body = {
        "model": f"bench/{model}",
        "messages": [{"role": "user", "content": p.question}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    content, first = "", None
    usage: dict[str, Any] = {}
    t0 = time.perf_counter()
    async with (
        httpx.AsyncClient(timeout=None, trust_env=False) as client,
        client.stream("POST", f"{serve_url}/v1/chat/completions", json=body) as resp,
    ):
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            first = first or time.perf_counter() - t0
            data = line.removeprefix("data:").strip()
            if not line.startswith("data:") or data == "[DONE]":
                continue
            chunk = json.loads(data)
            if chunk.get("error"):
                raise RuntimeError(chunk["error"])
            for choice in chunk.get("choices") or []:
                content += (choice.get("delta") or {}).get("content") or ""
            usage = chunk.get("usage") or usage
    return Answer(
        time.perf_counter() - t0, first, content, usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    )


async def through_optillm(optillm_url: str, model: str, n: int, max_tokens: int, p: Problem) -> Answer:
    """A non-streamed request (optillm streams nothing before it is done, and reports usage only here)."""
    body = {
        "model": f"self_consistency{n}-{model}",
        "messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": p.question}],
        "max_tokens": max_tokens,
    }
    raw, first = b"", None
    t0 = time.perf_counter()
    async with (
        httpx.AsyncClient(timeout=None, trust_env=False) as client,
        client.stream("POST", f"{optillm_url}/v1/chat/completions", json=body) as resp,
    ):
        async for part in resp.aiter_bytes():
            first = first or time.perf_counter() - t0
            raw += part
    out = json.loads(raw)
    if resp.status_code != 200:
        raise RuntimeError(f"optillm answered {resp.status_code}: {out}")
    usage = out.get("usage") or {}
    content = out["choices"][0]["message"]["content"] or ""
    return Answer(
        time.perf_counter() - t0, first, content, usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    )


# -- plumbing ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def upstream_server(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(server root, model name) of the model server every system shares."""
    if args.base_url:
        yield args.base_url.rstrip("/").removesuffix("/v1"), args.model
        return
    from ttc_graph.local import LocalModelServer

    with LocalModelServer(args.gguf, parallel=args.parallel, threads=args.threads) as server:
        yield server.server_root, server.model_name


def optillm_python(venv: Path) -> Path:
    """optillm's virtual environment, created and filled on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"installing {OPTILLM} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "--no-deps", OPTILLM], check=True)
        subprocess.run([*pip, *OPTILLM_DEPS], check=True)
    return python


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def optillm_proxy(python: Path, upstream_v1: str, n: int, log: Path) -> Iterator[str]:
    port = _free_port()
    work = Path(tempfile.mkdtemp(prefix="optillm-"))
    plugins = work / "optillm" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / f"self_consistency{n}.py").write_text(PLUGIN.format(n=n))
    cmd = [str(python), "-m", "optillm.server", "--base-url", upstream_v1, "--port", str(port),
           "--plugins-dir", str(work), "--log", "warning"]  # fmt: skip
    env = {**os.environ, "OPENAI_API_KEY": "local", "NO_PROXY": "127.0.0.1,localhost"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code < 500:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"optillm did not start; log: {log}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def record(row: Row, answer: Answer, p: Problem, served: dict[str, int]) -> None:
    row.wall += answer.wall
    if answer.ttfb is not None:
        row.ttfb.append(answer.ttfb)
    row.correct += grade_solution("gsm8k", answer.content, p.reference)
    row.questions += 1
    row.reported_prompt = None if answer.prompt is None else (row.reported_prompt or 0) + answer.prompt
    row.reported_completion += answer.completion
    for key, value in served.items():
        row.served[key] = row.served.get(key, 0) + value


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    base = rows[0].wall or 1.0
    head = (
        f"{'system':34} {'wall s':>7} {'x graph':>7} {'TTFB s':>7} {'acc':>5} {'reqs':>5} "
        f"{'served p/c tok':>15} {'reported p/c tok':>17}"
    )
    print(f"\nbest-of-{args.n} majority, {rows[0].questions} GSM8K questions, max_tokens {args.max_tokens}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ttfb = f"{statistics.median(r.ttfb):7.2f}" if r.ttfb else f"{'-':>7}"
        served = f"{r.served['prompt_tokens']}/{r.served['completion_tokens']}"
        prompt = "-" if r.reported_prompt is None else str(r.reported_prompt)
        print(
            f"{r.system:34} {r.wall:7.1f} {r.wall / base:7.2f} {ttfb} {r.correct:>2}/{r.questions:<2} "
            f"{r.served['requests']:>5} {served:>15} {prompt + '/' + str(r.reported_completion):>17}"
        )
    print("TTFB: median time to the first byte of the answer (streamed for ttc serve).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", help="GGUF for the embedded llama.cpp server (default: SmolLM2-135M)")
    parser.add_argument("--base-url", help="an OpenAI-compatible server root instead of the embedded model")
    parser.add_argument("--model", default="default", help="model name at --base-url")
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--parallel", type=int, default=8, help="server slots and concurrent requests")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--optillm-venv", type=Path, default=Path.home() / ".cache" / "ttc_graph" / "optillm-0.4.0")
    parser.add_argument("--skip-optillm", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    problems = list(load_dataset("gsm8k", limit=args.questions))
    python = None if args.skip_optillm else optillm_python(args.optillm_venv)
    with contextlib.ExitStack() as stack:
        root, model = stack.enter_context(upstream_server(args))
        proxy = MeteringProxy(root)
        proxy_url = stack.enter_context(serve_in_thread(proxy.app))
        policy = OpenAIEndpoint(f"{proxy_url}/v1", model, "local", native_n=False, max_concurrency=args.parallel)
        graph = build_graph(parse_spec(spec_data(args)), policy=policy).compile()
        presets_dir = Path(tempfile.mkdtemp(prefix="ttc-serve-bench-"))
        (presets_dir / "bench.yaml").write_text(json.dumps(spec_data(args)))
        upstream = Upstream(f"{proxy_url}/v1", model, api_key="local", native_n=False, max_concurrency=args.parallel)
        config = ServeConfig(load_presets([presets_dir], shipped=False), limits=Limits(concurrent_runs=4))
        serve_url = stack.enter_context(serve_in_thread(create_app(config, upstream)))
        systems: dict[str, Callable[[Problem], Awaitable[Answer]]] = {
            "graph in-process": lambda p: in_process(graph, p),
            "ttc serve (streamed)": lambda p: through_ttc_serve(serve_url, model, p),
        }
        if python is not None:
            log = Path(tempfile.mkdtemp(prefix="optillm-log-")) / "optillm.log"
            optillm_url = stack.enter_context(optillm_proxy(python, f"{proxy_url}/v1", args.n, log))
            name = f"optillm {OPTILLM.split('==')[1]} self-consistency"
            systems[name] = lambda p: through_optillm(optillm_url, model, args.n, args.max_tokens, p)
        rows = {name: Row(name) for name in systems}

        async def measure() -> None:
            for name, ask in systems.items():  # warm-up, not counted: every path's first request
                await ask(Problem("warm-up", "What is 1 + 1?", "2"))
                print(f"warmed up {name}", file=sys.stderr)
            names = list(systems)
            for i, p in enumerate(problems):
                for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate who goes first
                    before = proxy.meter.snapshot()
                    answer = await systems[name](p)
                    record(rows[name], answer, p, proxy.meter.since(before))
                    print(f"q{i} {name}: {answer.wall:.1f}s", file=sys.stderr)

        asyncio.run(measure())
    print_table(list(rows.values()), args)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows.values()], indent=2))


if __name__ == "__main__":
    main()
