"""Search at the speed of sampling: the step-wise searches' throughput against best-of-N on one server.

On one llama.cpp server (started here with ``--metrics``, or yours with ``--base-url``), for each of the first
``--questions`` GSM8K test questions, runs best-of-N weighted, beam search, DVTS, particle filtering and MCTS at the
same ``--n``, interleaved by question, with a constant process verifier so that only the orchestration differs.
For each run it records the completion tokens the ledger counted, the wall time, the prompt tokens sent, the
prompt tokens the server evaluated (the growth of its ``llamacpp:prompt_tokens_total`` counter: cached prefix
tokens are sent but not evaluated), the most requests in flight at once, and, from the server's own counters, the
busy slots and the wall milliseconds per decode call, and the CPU seconds of this process. It prints, per strategy,
the medians over questions and the median of per-question ratios of completion tokens per second to best-of-N's.

With ``--serve`` the same strategies also run through ``ttc serve`` (presets built from specs, the constant
verifier named as ``__main__:CONSTANT``), so the server path's overhead shows beside the in-process graphs.

Nothing else may use the model server while this runs: the evaluated-token counter is server-wide.

    .venv/bin/python benchmarks/search_speed.py --gguf "$(bash ../shared/models/fetch-bench-model.sh)" --threads 2
    .venv/bin/python benchmarks/search_speed.py --base-url http://127.0.0.1:8080/v1 --model qwen --serve
    .venv/bin/python benchmarks/search_speed.py --gguf "$(bash ../shared/models/fetch-bench-model.sh)" --llamacpp-n
    .venv/bin/python benchmarks/search_speed.py --gguf "$(bash ../shared/models/fetch-bench-model.sh)" --no-slot-copy
    .venv/bin/python benchmarks/search_speed.py --gguf ... --questions 6 --concurrent 3 [--no-leases]

``--concurrent K`` runs each strategy on K questions at once (a row is then one batch), as a study's concurrent
units or several users of ``ttc serve`` do; ``--no-leases`` sends each run's own slot numbers to the server as they
are, as the searches did before slot leases (``ttc_graph/endpoints/slot_leases.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ttc_graph import (
    OpenAIEndpoint,
    create_beam_search,
    create_best_of_n,
    create_dvts,
    create_mcts,
    create_particle_filtering,
)
from ttc_graph.endpoints import Endpoint, EndpointWrapper, GenerationResult
from ttc_graph.endpoints.slot_leases import SlotLeases
from ttc_graph.eval import load_dataset
from ttc_graph.verifiers import Score, VerificationResult, Verifier, VerifyItem

STRATEGIES = ("best_of_n", "beam_search", "dvts", "particle_filtering", "mcts")


class ConstantVerifier(Verifier):
    """Scores every step and solution 0.5: ties everywhere, so only the orchestration differs between runs. With
    ``latency`` each call takes that many seconds per item it scores, as a reward model that scores one prefix at a
    time per call would (concurrent calls overlap)."""

    granularity = "process"
    latency = 0.0

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        if self.latency:
            await asyncio.sleep(self.latency * len(items))
        return VerificationResult([Score(0.5) for _ in items])


CONSTANT = ConstantVerifier()


class InFlight(EndpointWrapper):
    """An endpoint wrapper that counts the policy's samples in flight (the most at once is the window kept).

    A call for ``n`` samples counts ``n`` (the endpoint sends them as ``n`` single requests on llama.cpp).
    """

    def __init__(self, inner: Endpoint) -> None:
        super().__init__(inner)
        self.now = 0
        self.most = 0
        self.area = 0.0  # samples in flight integrated over time (sample-seconds)
        self.since = time.perf_counter()

    def _move(self, delta: int) -> None:
        now = time.perf_counter()
        self.area += self.now * (now - self.since)
        self.since = now
        self.now += delta
        self.most = max(self.most, self.now)

    def mean(self, wall: float) -> float:
        """The time-weighted mean of samples in flight over a run of ``wall`` seconds that started at zero."""
        self._move(0)
        return self.area / wall if wall > 0 else 0.0

    async def forward(self, request: Callable[[Endpoint], Awaitable[GenerationResult]], n: int) -> GenerationResult:
        self._move(n)
        try:
            return await request(self.inner)
        finally:
            self._move(-n)


@dataclass
class Run:
    strategy: str
    path: str
    wall: float
    completion: int
    prompt_sent: int
    server: Counters
    in_flight: int
    mean_in_flight: float = 0.0
    client_cpu: float = 0.0  # CPU seconds this process spent in the run (it shares the machine with the server)

    @property
    def rate(self) -> float:
        return self.completion / self.wall if self.wall > 0 else 0.0

    @property
    def prompt_evaluated(self) -> float:
        return self.server.prompt

    @property
    def busy_per_decode(self) -> float:
        """Slots busy in the server's mean decode call (``llamacpp:n_busy_slots_per_decode`` over this run)."""
        return self.server.busy / self.server.decodes if self.server.decodes else 0.0

    @property
    def ms_per_decode(self) -> float:
        """Wall milliseconds per decode call of the server."""
        return 1000 * self.wall / self.server.decodes if self.server.decodes else 0.0


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)

    def of(self, strategy: str, path: str) -> list[Run]:
        return [r for r in self.runs if r.strategy == strategy and r.path == path]


def build(strategy: str, policy: Endpoint, n: int, args: argparse.Namespace) -> Any:
    """The strategy's compiled graph at ``n`` with the constant verifier."""
    common: dict[str, Any] = {"n": n, "seed": args.seed}
    step = {"max_steps": args.max_steps, "step_max_tokens": args.step_tokens}
    makers: dict[str, Callable[[], Any]] = {
        "best_of_n": lambda: create_best_of_n(policy, CONSTANT, max_tokens=args.max_tokens, **common),
        "beam_search": lambda: create_beam_search(policy, CONSTANT, beam_width=4, **step, **common),
        "dvts": lambda: create_dvts(policy, CONSTANT, beam_width=2, asynchronous=True, **step, **common),
        "particle_filtering": lambda: create_particle_filtering(policy, CONSTANT, **step, **common),
        "mcts": lambda: create_mcts(policy, CONSTANT, **step, **common),
    }
    return makers[strategy]().compile()


def spec_of(strategy: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The same strategy as a ``ttc serve`` preset."""
    verifier = {"kind": "python", "target": "__main__:CONSTANT"}
    spec: dict[str, Any] = {"kind": strategy, "name": f"speed-{strategy}", "n": n, "verifier": verifier}
    if strategy == "best_of_n":
        spec.update(selection="weighted", max_tokens=args.max_tokens)
    else:
        spec.update(max_steps=args.max_steps, step_max_tokens=args.step_tokens)
    if strategy == "beam_search":
        spec["beam_width"] = 4
    if strategy == "dvts":
        spec.update(beam_width=2, asynchronous=True)
    return spec


@dataclass(frozen=True)
class Counters:
    """The server's counters at one moment (``/metrics``): prompt tokens it evaluated, decode calls, and
    slot-decodes (busy slots summed over its decode calls)."""

    prompt: float
    decodes: float
    busy: float

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.prompt - other.prompt, self.decodes - other.decodes, self.busy - other.busy)


def server_counters(metrics_url: str) -> Counters:
    """Read ``llamacpp:prompt_tokens_total``, ``n_decode_total`` and the mean busy slots per decode (times the
    decodes: the slot-decodes so far)."""
    text = httpx.get(metrics_url, timeout=30).text

    def metric(name: str) -> float:
        match = re.search(rf"^llamacpp:{name}\s+([0-9.e+]+)", text, re.M)
        if match is None:
            raise SystemExit(f"{metrics_url} has no llamacpp:{name}: start llama-server with --metrics")
        return float(match.group(1))

    decodes = metric("n_decode_total")
    return Counters(metric("prompt_tokens_total"), decodes, metric("n_busy_slots_per_decode") * decodes)


async def run_graph(
    strategy: str, policy: Endpoint, questions: Sequence[str], args: argparse.Namespace, metrics: str
) -> Run:
    """One run of ``strategy`` per question, all at once (``--concurrent``), measured together."""
    counted = InFlight(policy)
    graph = build(strategy, counted, args.n, args)  # type: ignore[arg-type]
    before = server_counters(metrics)
    cpu = time.process_time()
    start = counted.since = time.perf_counter()
    outs = await asyncio.gather(*(graph.ainvoke({"question": q}) for q in questions))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    server = server_counters(metrics) - before
    usages = [out["usage"] for out in outs]
    return Run(
        strategy, "graph", wall, sum(u.get("completion_tokens", 0) for u in usages),
        sum(u.get("prompt_tokens", 0) for u in usages), server, counted.most, counted.mean(wall), cpu,
    )  # fmt: skip


async def run_served(strategy: str, serve_url: str, question: str, metrics: str) -> Run:
    before = server_counters(metrics)
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=3600) as client:
        reply = await client.post(
            f"{serve_url}/v1/chat/completions",
            json={"model": f"speed-{strategy}", "messages": [{"role": "user", "content": question}]},
        )
    wall = time.perf_counter() - start
    reply.raise_for_status()
    usage = reply.json()["usage"]
    server = server_counters(metrics) - before
    return Run(strategy, "serve", wall, usage.get("completion_tokens", 0), usage.get("prompt_tokens", 0), server, 0)


def endpoint(base_url: str, model: str, args: argparse.Namespace) -> OpenAIEndpoint:
    """The policy endpoint: concurrent single requests (with ``--llamacpp-n``, a call's ``n`` samples in one
    ``/completion`` request), a window of the server's slots, and (unless ``--no-slots``) slot hints, so a beam's
    continuation runs on the slot that holds its prefix (with ``--slot-copy``, copied first to its siblings' slots)."""
    slots = None if args.no_slots else args.parallel
    return OpenAIEndpoint(
        base_url, model, api_key="local", native_n=False, max_concurrency=args.parallel, continuation="prefill",
        slots=slots, llamacpp_n=args.llamacpp_n, slot_copy=args.slot_copy,
    )  # fmt: skip


@contextlib.contextmanager
def model_server(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """The model server's OpenAI base URL and model name: yours, or a local one started with ``--metrics``."""
    if args.base_url:
        yield args.base_url.rstrip("/"), args.model
        return
    from ttc_graph.local import LocalModelServer

    server = LocalModelServer(
        args.gguf, parallel=args.parallel, threads=args.threads, ctx_size=4096 * args.parallel,
        extra_args=["--metrics", *args.server_args.split()],
    )  # fmt: skip
    with server:
        yield server.base_url, server.model_name


@contextlib.contextmanager
def serve_app(base_url: str, model: str, args: argparse.Namespace) -> Iterator[str]:
    from ttc_graph.server import Limits, ServeConfig, Upstream, create_app
    from ttc_graph.server.metering import serve_in_thread
    from ttc_graph.server.presets import Preset
    from ttc_graph.specs import parse_spec

    presets = {
        f"speed-{s}": Preset(f"speed-{s}", parse_spec(spec_of(s, args.n, args)), "search_speed") for s in STRATEGIES
    }
    upstream = Upstream(
        base_url, model, api_key="local", native_n=False, max_concurrency=args.parallel,
        endpoint_factory=lambda name: endpoint(base_url, name, args),
    )  # fmt: skip
    config = ServeConfig(presets, limits=Limits(concurrent_runs=1))
    with serve_in_thread(create_app(config, upstream)) as url:
        yield url


def table(results: Results, paths: Sequence[str]) -> str:
    lines = [
        "| path | strategy | completion tokens/s (median) | vs best-of-N (median ratio) | prompt tokens sent"
        " | evaluated by the server | most in flight | mean in flight | busy slots per decode | ms per decode"
        " | client CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        base = {id(r): r for r in results.of("best_of_n", path)}
        base_rates = [r.rate for r in base.values()]
        for strategy in STRATEGIES:
            runs = results.of(strategy, path)
            if not runs:
                continue
            ratios = [r.rate / b for r, b in zip(runs, base_rates, strict=False) if b > 0]
            sent = sum(r.prompt_sent for r in runs)
            evaluated = sum(r.prompt_evaluated for r in runs)
            share = f"{evaluated / sent:.0%}" if sent else "-"
            most = max(r.in_flight for r in runs) if path == "graph" else "-"
            mean = f"{statistics.median(r.mean_in_flight for r in runs):.1f}" if path == "graph" else "-"
            busy = statistics.median(r.busy_per_decode for r in runs)
            per_decode = statistics.median(r.ms_per_decode for r in runs)
            cpu = f"{statistics.median(r.client_cpu for r in runs):.1f}" if path == "graph" else "-"
            lines.append(
                f"| {path} | {strategy} | {statistics.median(r.rate for r in runs):.1f}"
                f" | {statistics.median(ratios):.2f} | {sent:,} | {evaluated:,.0f} ({share}) | {most} | {mean}"
                f" | {busy:.2f} | {per_decode:.0f} | {cpu} |"
            )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    problems = load_dataset("gsm8k", limit=args.questions)
    results = Results()
    with model_server(args) as (base_url, model):
        metrics = base_url.removesuffix("/v1") + "/metrics"
        server_counters(metrics)  # fail early without --metrics
        policy = endpoint(base_url, model, args)
        with contextlib.ExitStack() as stack:
            serve_url = stack.enter_context(serve_app(base_url, model, args)) if args.serve else None
            batches = [problems[i : i + args.concurrent] for i in range(0, len(problems), args.concurrent)]
            for batch in batches:
                ids = "+".join(q.id for q in batch)
                for strategy in args.strategies:
                    run = await run_graph(strategy, policy, [q.question for q in batch], args, metrics)
                    results.runs.append(run)
                    print(
                        f"q{ids} {strategy:<18} graph: {run.completion} tokens in {run.wall:.1f} s"
                        f" ({run.rate:.1f}/s), prompt sent {run.prompt_sent}, evaluated {run.prompt_evaluated:.0f},"
                        f" most in flight {run.in_flight}, mean {run.mean_in_flight:.1f}, server: busy slots per decode"
                        f" {run.busy_per_decode:.2f}, {run.ms_per_decode:.0f} ms per decode,"
                        f" client CPU {run.client_cpu:.1f} s",
                        flush=True,
                    )
                    if serve_url is not None and len(batch) == 1:
                        run = await run_served(strategy, serve_url, batch[0].question, metrics)
                        results.runs.append(run)
                        print(f"q{ids} {strategy:<18} serve: {run.completion} tokens ({run.rate:.1f}/s)", flush=True)
    paths = ["graph", "serve"] if args.serve else ["graph"]
    hints = "no slot hints" if args.no_slots else "slot hints (id_slot)"
    if args.llamacpp_n:
        hints += ", n samples of a call in one /completion request (llamacpp_n)"
    if args.slot_copy:
        hints += ", a beam's slot copied to its siblings' slots (slot_copy)"
    verifier = "constant verifier" + (f" taking {args.verify_seconds:g} s per item" if args.verify_seconds else "")
    if args.concurrent > 1:
        hints += f", {args.concurrent} runs at once" + (" without slot leases" if args.no_leases else " (slot leases)")
    print(f"\nn = {args.n}, {len(problems)} GSM8K test questions, {args.parallel} slots, {hints}, {verifier}\n")
    print(table(results, paths))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", help="a GGUF file to serve (default: the cached default model)")
    parser.add_argument("--base-url", help="an OpenAI-compatible llama.cpp server started with --metrics")
    parser.add_argument("--model", default="default")
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=8, help="the server's slots (and the client's window)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=512, help="best-of-N's solution length")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--step-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--serve", action="store_true", help="also run every strategy through ttc serve")
    parser.add_argument("--no-slots", action="store_true", help="send no slot hints (id_slot): the server chooses")
    parser.add_argument("--server-args", default="", help="more llama-server flags for the server started here")
    parser.add_argument(
        "--verify-seconds", type=float, default=0.0, help="seconds per item scored (a reward model's time per prefix)"
    )
    parser.add_argument(
        "--slot-copy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="copy a beam's slot to its siblings' slots first (OpenAIEndpoint's slot_copy; the server started here"
        " has --slot-save-path, yours needs it)",
    )
    parser.add_argument(
        "--concurrent", type=int, default=1, help="runs of a strategy at once, each on its own question (--serve: 1)"
    )
    parser.add_argument(
        "--no-leases",
        action="store_true",
        help="with --concurrent: every run's slot hints name server slots directly, as before slot leases",
    )
    parser.add_argument(
        "--llamacpp-n", action="store_true", help="a call's n samples as one /completion request (OpenAIEndpoint)"
    )
    parser.add_argument(
        "--strategies", default=",".join(STRATEGIES), help="a comma-separated subset (best-of-N always runs: the base)"
    )
    options = parser.parse_args()
    chosen = [s for s in options.strategies.split(",") if s]
    unknown = set(chosen) - set(STRATEGIES)
    if unknown:
        parser.error(f"--strategies: unknown {', '.join(sorted(unknown))}; use some of {', '.join(STRATEGIES)}")
    options.strategies = [s for s in STRATEGIES if s == "best_of_n" or s in chosen]
    if options.verify_seconds < 0:
        parser.error("--verify-seconds: must be >= 0")
    CONSTANT.latency = options.verify_seconds
    if options.concurrent < 1:
        parser.error("--concurrent: must be >= 1")
    if options.no_leases:  # the comparison: a run's own slot numbers go to the server as they are
        SlotLeases._place = lambda self, key: key[1] % self.slots  # type: ignore[method-assign]
    asyncio.run(main(options))
