"""Side by side on one llama.cpp server: raw requests, ttc_graph best-of-N (fixed and adaptive), its_hub's
SelfConsistency and optillm's majority voting, with a counting proxy in front of the server.

What it does:

1. Installs the peers, pinned, each into its own virtual environment under ``$TTC_CACHE_DIR/peers`` (default
   ``~/.cache/ttc_graph/peers``) with ``python -m venv`` and pip from PyPI: ``its_hub[lm]==1.2.0``, and
   ``optillm==0.4.0`` without its dependency list (torch, transformers, spacy, gradio, ... are for its local
   inference and other plugins, gigabytes this benchmark never imports) plus what its proxy server imports.
2. Starts one ``llama-server`` on the benchmark model (``LocalModelServer``, ``--parallel`` slots, ``--threads``
   1 by default: this machine has two cores and other work) and a counting proxy in front of it: a separate
   process that forwards every request, counts requests and sums the server's reported usage (a stream the client
   cut is counted by the chunks it carried; an ``n > 1`` answer, whose usage llama.cpp under-reports, is counted
   by tokenizing every choice with the server's ``/tokenize``).
3. Primes the prompt cache (every question once, untimed), then for each question runs every system in an order
   rotated per question: ``raw`` (``k`` concurrent single requests through the OpenAI SDK), ttc_graph
   best-of-``k`` majority (fixed and ``adaptive=True``), its_hub ``SelfConsistency`` (budget ``k``, in a worker
   process of its venv) and optillm ``majority_voting`` (``k``) through optillm's proxy.
4. Prints per system: the median over questions of its wall time over raw's on the same question (range), the
   upstream requests and tokens the proxy counted, the usage the system reported to its caller, and the accuracy
   of its final answer under one grader (``ttc_graph.eval.grading``).

    .venv/bin/python benchmarks/peers.py [--questions 6] [--k 8] [--max-tokens 256] [--threads 1]

The machine is shared (a study may run beside it): ratios are measured within one run on the same question with
the systems interleaved, and still carry that noise.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

from ttc_graph import create_best_of_n
from ttc_graph.answers import extract_answer
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.eval.datasets import Problem, load_dataset
from ttc_graph.eval.grading import grade
from ttc_graph.local.server import LocalModelServer
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.selection import select_answer
from ttc_graph.state import Candidate

ITS_HUB = ["its_hub[lm]==1.2.0"]
OPTILLM = "optillm==0.4.0"
OPTILLM_RUNTIME = [  # what optillm's server imports on the proxy path (its full list pulls torch and more)
    "flask>=3,<4",
    "cerebras_cloud_sdk",
    "openai>=1.60",
    "z3-solver<=4.15.4.0",
    "networkx",
    "numpy",
    "aiohttp",
    "math-verify",
    "sympy",
    "pyyaml",
    "requests",
    "httpx",
]
REPO = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    root = os.environ.get("TTC_CACHE_DIR") or Path.home() / ".cache" / "ttc_graph"
    return Path(root) / "peers"


# -- virtual environments ------------------------------------------------------------------------------------------


def ensure_venv(name: str, packages: list[str], no_deps: list[str] = ()) -> Path:  # type: ignore[assignment]
    """A venv under the cache dir with ``packages`` (and ``no_deps`` without their dependencies); its python."""
    spec = json.dumps([packages, list(no_deps)])
    root = cache_dir() / name
    python = root / "bin" / "python"
    stamp = root / "ttc-installed.json"
    if stamp.is_file() and stamp.read_text() == spec and python.exists():
        return python
    print(f"installing {name} into {root} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if no_deps:
        subprocess.run([*pip, "--no-deps", *no_deps], check=True)
    subprocess.run([*pip, *packages], check=True)
    stamp.write_text(spec)
    return python


# -- the counting proxy (runs as its own process: `peers.py proxy --upstream URL --port N`) --------------------------


def _messages_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload.get("messages"), sort_keys=True).encode()).hexdigest()


def proxy_app(upstream: str) -> Any:
    """A Starlette app forwarding to ``upstream`` (a server root) and counting what the server did."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    counters: dict[str, int] = dict.fromkeys(
        ["requests", "prompt_tokens", "completion_tokens", "cut_streams", "n_gt_1", "prompt_unknown"], 0
    )
    prompts: dict[str, int] = {}
    client = httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=256))

    async def tokens_of(text: str) -> int:
        resp = await client.post(f"{upstream}/tokenize", json={"content": text})
        return len(resp.json().get("tokens", []))

    async def count_json(payload: dict[str, Any], data: bytes) -> None:
        body = json.loads(data)
        usage = body.get("usage") or {}
        choices = body.get("choices") or []
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        if len(choices) > 1:  # llama.cpp reports one choice's tokens for n > 1: count every choice
            counters["n_gt_1"] += 1
            texts = [(c.get("message") or {}).get("content") or c.get("text") or "" for c in choices]
            completion = sum([await tokens_of(t) for t in texts])
        prompts[_messages_key(payload)] = prompt
        counters["prompt_tokens"] += prompt
        counters["completion_tokens"] += completion

    async def relay_stream(payload: dict[str, Any], resp: httpx.Response) -> Any:
        seen, usage, buffer = 0, None, b""
        try:
            async for chunk in resp.aiter_raw():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:  # cheap: a JSON parse only for the chunk that carries the usage
                    if not line.startswith(b"data: {"):
                        continue
                    if b'"usage":{' in line:
                        usage = json.loads(line[6:]).get("usage") or usage
                    if b'"content":"' in line and b'"content":""' not in line:
                        seen += 1
                yield chunk
        finally:
            await resp.aclose()
            key = _messages_key(payload)
            if usage:
                prompts[key] = int(usage.get("prompt_tokens") or 0)
                counters["prompt_tokens"] += prompts[key]
                counters["completion_tokens"] += int(usage.get("completion_tokens") or 0)
            else:  # the client cut it: what the server sent so far, the prompt as seen for these messages
                counters["cut_streams"] += 1
                counters["completion_tokens"] += seen
                if key in prompts:
                    counters["prompt_tokens"] += prompts[key]
                else:
                    counters["prompt_unknown"] += 1

    async def forward(request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        counted = request.method == "POST" and path.endswith("completions")
        payload = json.loads(body) if counted else {}
        if counted:
            counters["requests"] += 1
        upstream_request = client.build_request(request.method, upstream + path, content=body, headers=headers)
        resp = await client.send(upstream_request, stream=True)
        if counted and payload.get("stream"):
            return StreamingResponse(
                relay_stream(payload, resp), status_code=resp.status_code, media_type="text/event-stream"
            )
        data = await resp.aread()
        await resp.aclose()
        if counted and resp.status_code == 200:
            await count_json(payload, data)
        return Response(data, status_code=resp.status_code, media_type=resp.headers.get("content-type"))

    async def read_counters(request: Request) -> JSONResponse:
        return JSONResponse(counters)

    routes = [
        Route("/_counters", read_counters),
        Route("/{path:path}", forward, methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes)


def serve_proxy(upstream: str, port: int) -> None:
    import uvicorn

    uvicorn.run(proxy_app(upstream), host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f}s")


# -- peers' workers ---------------------------------------------------------------------------------------------------

ITS_HUB_WORKER = r"""
import asyncio, json, re, sys, time
from its_hub.core.algorithms.self_consistency import SelfConsistency
from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel

base_url, model, system, k, max_tokens, temperature = sys.argv[1:7]

def boxed(text):  # vote on the final answer, as majority voting does (its_hub's default votes on whole texts)
    found = re.findall(r"\\boxed\{([^{}]*)\}", text or "")
    return found[-1].strip() if found else (text or "").strip()

lm = OpenAICompatibleLanguageModel(endpoint=base_url, api_key="none", model_name=model, system_prompt=system,
                                   max_tokens=int(max_tokens), temperature=float(temperature))
algo = SelfConsistency(consistency_space_projection_func=boxed)
for line in sys.stdin:
    question = json.loads(line)["question"]
    t0 = time.perf_counter()
    result = asyncio.run(algo.ainfer(lm, question, budget=int(k), return_response_only=False))
    wall = time.perf_counter() - t0
    u = result.usage
    print(json.dumps({"wall": wall, "text": result.the_one.get("content") or "",
                      "usage": {"requests": u.num_calls, "prompt_tokens": u.prompt_tokens,
                                "completion_tokens": u.completion_tokens}}), flush=True)
"""


class Worker:
    """A long-lived worker process of a peer's venv: one JSON line in, one JSON line out."""

    def __init__(self, python: Path, script: str, args: list[str]) -> None:
        path = cache_dir() / f"worker-{hashlib.sha256(script.encode()).hexdigest()[:8]}.py"
        path.write_text(script)
        self.log = (cache_dir() / "worker.log").open("w")
        self.proc = subprocess.Popen(
            [str(python), str(path), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )

    def ask(self, question: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"question": question}) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.log.close()


# -- systems ----------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    text: str | None
    reported: dict[str, int | None]


@dataclass
class Tally:
    ratios: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    upstream: dict[str, int] = field(default_factory=dict)
    reported: dict[str, int | None] = field(default_factory=dict)
    correct: int = 0
    answered: int = 0
    notes: set[str] = field(default_factory=set)


def messages_for(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}]


def majority_text(texts: list[str]) -> str | None:
    cands: list[Candidate] = []
    for i, t in enumerate(texts):
        a = extract_answer(t)
        cands.append(
            Candidate(
                id=str(i),
                text=t,
                answer=a,
                parsable=a is not None,
                score=None,
                step_scores=None,
                scored=False,
                tokens=None,
                round=1,
                finish_reason=None,
            )
        )
    chosen = select_answer(cands, "majority")
    return next((c["text"] for c in cands if c["id"] == chosen.candidate_id), None)


def make_systems(args: argparse.Namespace, proxy: str, model: str, optillm: str | None, its_hub: Worker | None):
    client = AsyncOpenAI(base_url=proxy, api_key="none", max_retries=0, timeout=3600)
    k, max_tokens, temp = args.k, args.max_tokens, args.temperature

    async def raw(q: str, seed: int) -> Run:
        t0 = time.perf_counter()
        outs = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=model, messages=messages_for(q), max_tokens=max_tokens, temperature=temp, seed=seed + i
                )  # type: ignore[arg-type]
                for i in range(k)
            )
        )
        wall = time.perf_counter() - t0
        usage = {
            "requests": k,
            "prompt_tokens": sum(o.usage.prompt_tokens for o in outs),  # type: ignore[union-attr]
            "completion_tokens": sum(o.usage.completion_tokens for o in outs),
        }  # type: ignore[union-attr]
        return Run(wall, majority_text([o.choices[0].message.content or "" for o in outs]), usage)

    def ttc(adaptive: bool) -> Callable[[str, int], Awaitable[Run]]:
        endpoint = OpenAIEndpoint(proxy, model=model, native_n=False, max_concurrency=k, max_tokens=max_tokens)
        graph = create_best_of_n(
            endpoint, n=k, selection="majority", adaptive=adaptive, temperature=temp, max_tokens=max_tokens
        ).compile()

        async def run(q: str, seed: int) -> Run:  # sample i gets seed + i: the same tokens as raw's
            t0 = time.perf_counter()
            out = await graph.ainvoke({"question": q}, context={"seed": seed})
            wall = time.perf_counter() - t0
            u = out["usage"]
            chosen = next((c["text"] for c in out["candidates"] if c["answer"] == out["answer"]), None)
            reported = {key: u[key] for key in ("requests", "prompt_tokens", "completion_tokens")}
            return Run(wall, chosen, {**reported, "stop": out["stop_reason"]})  # type: ignore[dict-item]

        return run

    async def its(q: str, seed: int) -> Run:  # its_hub sends no seed
        assert its_hub is not None
        out = await asyncio.to_thread(its_hub.ask, q)
        return Run(out["wall"], out["text"], out["usage"])

    async def opt(q: str, seed: int) -> Run:  # one request of n=k: llama.cpp seeds its choices itself
        assert optillm is not None
        oc = AsyncOpenAI(base_url=optillm, api_key="none", max_retries=0, timeout=3600)
        t0 = time.perf_counter()
        resp = await oc.chat.completions.create(
            model=f"majority_voting-{model}",
            messages=messages_for(q),
            max_tokens=max_tokens,  # type: ignore[arg-type]
            temperature=temp,
            extra_body={"k": k},
        )
        wall = time.perf_counter() - t0
        u = resp.usage
        reported = {
            "requests": None,
            "prompt_tokens": getattr(u, "prompt_tokens", None),
            "completion_tokens": getattr(u, "completion_tokens", None),
        }
        return Run(wall, resp.choices[0].message.content, reported)

    systems: dict[str, Callable[[str, int], Awaitable[Run]]] = {
        "raw": raw,
        f"ttc_graph best-of-{k} majority": ttc(False),
        f"ttc_graph best-of-{k} majority adaptive": ttc(True),
    }
    if its_hub is not None:
        systems[f"its_hub 1.2.0 SelfConsistency budget {k}"] = its
    if optillm is not None:
        systems[f"optillm 0.4.0 majority_voting k={k}"] = opt
    return systems


async def prime(proxy: str, model: str, problems: list[Problem], k: int) -> None:
    """Put every question's prompt in the server's cache: k one-token requests per question, untimed."""
    client = AsyncOpenAI(base_url=proxy, api_key="none", max_retries=0)
    for p in problems:
        await asyncio.gather(
            *(
                client.chat.completions.create(model=model, messages=messages_for(p.question), max_tokens=1)  # type: ignore[arg-type]
                for _ in range(k)
            )
        )


def counters(proxy_root: str) -> dict[str, int]:
    return dict(httpx.get(f"{proxy_root}/_counters", timeout=10).json())


async def compare(args: argparse.Namespace, proxy: str, model: str, optillm: str | None, its_hub: Worker | None):
    problems = list(load_dataset("gsm8k", limit=args.questions))
    proxy_root = proxy[: -len("/v1")]
    await prime(proxy, model, problems, args.k)
    systems = make_systems(args, proxy, model, optillm, its_hub)
    names = list(systems)
    tallies = {name: Tally() for name in names}
    for qi, problem in enumerate(problems):
        order = names[qi % len(names) :] + names[: qi % len(names)]
        walls: dict[str, float] = {}
        for name in order:
            before = counters(proxy_root)
            run = await systems[name](problem.question, 1000 * (qi + 1))
            after = counters(proxy_root)
            t = tallies[name]
            walls[name] = run.wall
            for key, value in after.items():
                t.upstream[key] = t.upstream.get(key, 0) + value - before.get(key, 0)
            for key, value in run.reported.items():
                if key == "stop":
                    t.notes.add(f"stop={value}")
                    continue
                t.reported[key] = (
                    None if value is None or t.reported.get(key, 0) is None else ((t.reported.get(key) or 0) + value)
                )
            answer = extract_answer(run.text or "")
            t.answered += answer is not None
            t.correct += grade("gsm8k", answer, problem.reference)
            print(f"q{qi} {name}: {run.wall:.1f}s answer={answer!r} reported={run.reported}", flush=True)
        for name in names:
            tallies[name].ratios.append(walls[name] / walls["raw"])
            tallies[name].walls.append(walls[name])
    return tallies, len(problems)


def table(tallies: dict[str, Tally], questions: int) -> str:
    rows = [
        "| system | wall / raw, median (range) | summed wall | upstream requests | upstream prompt / completion tokens "
        "| reported to the caller: requests, prompt, completion | usage exact | accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t in tallies.items():
        up = t.upstream
        rep = t.reported
        exact = all(rep.get(k) == up.get(k) for k in ("requests", "prompt_tokens", "completion_tokens"))
        share = (rep.get("completion_tokens") or 0) / max(1, up.get("completion_tokens", 0))
        exact_note = "yes" if exact else f"no ({share:.0%} of completion tokens)"
        rows.append(
            f"| {name} | {statistics.median(t.ratios):.2f} ({min(t.ratios):.2f}-{max(t.ratios):.2f}) "
            f"| {sum(t.walls):.0f} s "
            f"| {up.get('requests', 0)} | {up.get('prompt_tokens', 0)} / {up.get('completion_tokens', 0)} "
            f"| {rep.get('requests')}, {rep.get('prompt_tokens')}, {rep.get('completion_tokens')} | {exact_note} "
            f"| {t.correct}/{questions} |"
        )
    notes = [f"- {name}: " + ", ".join(sorted(t.notes)) for name, t in tallies.items() if t.notes]
    ttc = [t for name, t in tallies.items() if name.startswith("ttc_graph")]
    if len(ttc) == 2:  # fixed, then adaptive: the cost of adaptive stopping on the same questions
        pairs = [a / f for f, a in zip(ttc[0].walls, ttc[1].walls, strict=True)]
        notes.append(
            f"- adaptive / fixed wall on the same question: median {statistics.median(pairs):.2f} "
            f"({min(pairs):.2f}-{max(pairs):.2f}), summed {sum(ttc[1].walls) / sum(ttc[0].walls):.3f}"
        )
    cut = {name: t.upstream.get("cut_streams", 0) for name, t in tallies.items() if t.upstream.get("cut_streams")}
    if cut:
        notes.append(f"- streams cut by the client (cancelled samples): {cut}")
    return "\n".join([*rows, "", *notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    px = sub.add_parser("proxy", help="(internal) run the counting proxy")
    px.add_argument("--upstream", required=True)
    px.add_argument("--port", type=int, required=True)
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--gguf", default=None, help="default: ../shared/models/fetch-bench-model.sh")
    parser.add_argument("--skip", nargs="*", default=[], choices=["its_hub", "optillm"])
    parser.add_argument("--install-only", action="store_true")
    args = parser.parse_args()
    if args.command == "proxy":
        serve_proxy(args.upstream, args.port)
        return
    cache_dir().mkdir(parents=True, exist_ok=True)
    its_python = ensure_venv("its_hub-1.2.0", ITS_HUB) if "its_hub" not in args.skip else None
    opt_python = ensure_venv("optillm-0.4.0", OPTILLM_RUNTIME, [OPTILLM]) if "optillm" not in args.skip else None
    if args.install_only:
        return
    gguf = (
        args.gguf
        or subprocess.run(
            [str(REPO.parent / "shared" / "models" / "fetch-bench-model.sh")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    print(f"llama-server: {gguf}, {args.parallel} slots, {args.threads} thread(s)", flush=True)
    procs: list[subprocess.Popen[bytes]] = []
    with LocalModelServer(gguf, parallel=args.parallel, threads=args.threads, ctx_size=2048 * args.parallel) as server:
        upstream = server.base_url[: -len("/v1")]
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, __file__, "proxy", "--upstream", upstream, "--port", str(port)]))
        proxy = f"http://127.0.0.1:{port}/v1"
        wait_http(f"http://127.0.0.1:{port}/_counters")
        optillm = None
        its_hub = None
        try:
            if opt_python is not None:
                oport = free_port()
                env = {**os.environ, "OPENAI_API_KEY": "none"}
                procs.append(
                    subprocess.Popen(
                        [str(opt_python.parent / "optillm"), "--base-url", proxy, "--port", str(oport)],
                        env=env,
                        cwd=cache_dir(),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                optillm = f"http://127.0.0.1:{oport}/v1"
                wait_http(f"http://127.0.0.1:{oport}/health")
            if its_python is not None:
                its_hub = Worker(
                    its_python,
                    ITS_HUB_WORKER,
                    [
                        proxy,
                        server.model_name,
                        DEFAULT_SYSTEM_PROMPT,
                        str(args.k),
                        str(args.max_tokens),
                        str(args.temperature),
                    ],
                )
            tallies, questions = asyncio.run(compare(args, proxy, server.model_name, optillm, its_hub))
        finally:
            if its_hub is not None:
                its_hub.close()
            for proc in procs:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    print()
    print(
        f"{questions} GSM8K questions, k={args.k}, max_tokens={args.max_tokens}, temperature={args.temperature}, "
        f"llama-server {args.parallel} slots x {args.threads} thread(s)"
    )
    print(table(tallies, questions))


if __name__ == "__main__":
    main()
