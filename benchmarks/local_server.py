"""Local llama.cpp server through ttc_graph: start time, throughput, and best-of-8 overhead against raw calls.

1. Server start to healthy (``LocalModelServer.started_in``), median of ``--starts`` fresh starts.
2. Completion tokens/s of one request (single stream) and aggregate tokens/s with 1, 4 and 8 concurrent
   requests, on a server with ``--parallel`` slots (default 8), median over ``--repeats``.
3. Best-of-8 wall time through ttc_graph (``create_best_of_n`` on ``server.endpoint()``, majority selection)
   against 8 raw concurrent ``AsyncOpenAI.chat.completions.create`` calls with the same messages, sampling
   parameters and per-request seeds (so both draw the same samples and spend the same completion tokens).
   Runs alternate raw, ttc, raw, ttc, ... to cancel drift; ratios are taken per pair, then their median.

The machine is shared and noisy: read the medians and the ratios measured in the same run, not single values.

    .venv/bin/python benchmarks/local_server.py [--gguf PATH | --base-url URL --model NAME]
        [--starts 3] [--repeats 3] [--max-tokens 128] [--temperature 0.7] [--parallel 8] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI

from ttc_graph import OpenAIEndpoint, create_best_of_n
from ttc_graph.local.server import LocalModelServer
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
assert SYSTEM_PROMPT == DEFAULT_SYSTEM_PROMPT  # the graph sends the same system prompt as the raw calls
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
CONCURRENCY = (1, 4, 8)
BEST_OF = 8


@dataclass
class Batch:
    """One timed batch of concurrent requests."""

    seconds: float
    tokens: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Pair:
    """One raw run and the ttc run right after it."""

    raw: Batch
    ttc: Batch
    ttc_answer: str | None = None
    ttc_failed: int = 0

    @property
    def wall_ratio(self) -> float:
        return self.ttc.seconds / self.raw.seconds

    @property
    def per_token_ratio(self) -> float:
        return (self.ttc.seconds / max(self.ttc.tokens, 1)) / (self.raw.seconds / max(self.raw.tokens, 1))


@dataclass
class Results:
    model: str
    server: str
    start_seconds: list[float] = field(default_factory=list)
    start_call_seconds: list[float] = field(default_factory=list)
    throughput: dict[int, list[Batch]] = field(default_factory=dict)
    pairs: list[Pair] = field(default_factory=list)


def messages() -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}]


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return ""
    return f"[{fmt.format(min(values))} .. {fmt.format(max(values))}]"


def verdict(ratio: float) -> str:
    """The target is ttc within 10% of raw; a ttc run more than 10% faster can only be noise."""
    if ratio > 1.10:
        return "  ttc >10% slower: target missed"
    if ratio < 0.90:
        return "  ttc >10% faster: noise, not a gain"
    return "  within 10%: target met"


async def raw_batch(
    client: AsyncOpenAI, model: str, k: int, *, max_tokens: int, temperature: float, seed: int
) -> Batch:
    """``k`` concurrent chat completions with seeds ``seed .. seed + k - 1``, timed together."""

    async def one(i: int) -> int:
        resp = await client.chat.completions.create(
            model=model,
            messages=messages(),  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed + i,
        )
        return int(resp.usage.completion_tokens if resp.usage else 0)

    t0 = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(k)))
    return Batch(time.perf_counter() - t0, sum(tokens))


async def ttc_batch(graph: Any) -> tuple[Batch, str | None, int]:
    t0 = time.perf_counter()
    out = await graph.ainvoke({"question": QUESTION})
    seconds = time.perf_counter() - t0
    usage = out.get("usage") or {}
    return (
        Batch(seconds, int(usage.get("completion_tokens", 0))),
        out.get("answer"),
        int(usage.get("failed_requests", 0)),
    )


async def measure(
    endpoint: OpenAIEndpoint,
    results: Results,
    *,
    repeats: int,
    max_tokens: int,
    temperature: float,
    seed: int,
    concurrency: Sequence[int] = CONCURRENCY,
) -> None:
    client = AsyncOpenAI(base_url=endpoint.base_url, api_key="local", max_retries=0, timeout=600.0)
    model = endpoint.model
    graph = create_best_of_n(
        endpoint, None, n=BEST_OF, selection="majority", max_tokens=max_tokens, temperature=temperature, seed=seed
    ).compile()
    params = {"max_tokens": max_tokens, "temperature": temperature}
    try:
        print("warm-up ...", flush=True)
        await raw_batch(client, model, 1, seed=seed, **params)
        await raw_batch(client, model, BEST_OF, seed=seed, **params)
        await ttc_batch(graph)

        # 2. Throughput: concurrency levels interleaved within each repeat, so drift hits them alike.
        for r in range(repeats):
            for k in concurrency:
                batch = await raw_batch(client, model, k, seed=seed + 100 * (r + 1), **params)
                results.throughput.setdefault(k, []).append(batch)
                print(
                    f"  throughput repeat {r + 1}/{repeats}, {k} concurrent: {batch.tokens} tokens in "
                    f"{batch.seconds:.2f} s = {batch.tokens_per_second:.1f} tok/s",
                    flush=True,
                )

        # 3. Best-of-8: raw, ttc, raw, ttc, ... with the graph's seeds (seed + i for sample i) on both sides.
        for r in range(repeats):
            raw = await raw_batch(client, model, BEST_OF, seed=seed, **params)
            ttc, answer, failed = await ttc_batch(graph)
            pair = Pair(raw, ttc, answer, failed)
            results.pairs.append(pair)
            print(
                f"  best-of-{BEST_OF} repeat {r + 1}/{repeats}: raw {raw.seconds:.2f} s / {raw.tokens} tok, "
                f"ttc {ttc.seconds:.2f} s / {ttc.tokens} tok (answer {answer!r}); "
                f"wall ttc/raw {pair.wall_ratio:.3f}, s/token ttc/raw {pair.per_token_ratio:.3f}",
                flush=True,
            )
    finally:
        await client.close()


def print_table(results: Results, args: argparse.Namespace, load: tuple[float, float]) -> None:
    rows: list[tuple[str, str, str]] = []
    if results.start_seconds:
        n = len(results.start_seconds)
        rows.append(
            (f"server start -> healthy (started_in, {n} starts)", f"{med(results.start_seconds):.2f} s",
             spread(results.start_seconds))
        )  # fmt: skip
        rows.append(
            ("  start() call incl. model/binary lookup", f"{med(results.start_call_seconds):.2f} s",
             spread(results.start_call_seconds))
        )  # fmt: skip
    single = results.throughput.get(1, [])
    if single:
        tps = [b.tokens_per_second for b in single]
        rows.append(("single-stream tokens/s (1 request)", f"{med(tps):.1f}", spread(tps, "{:.1f}")))
    for k, batches in sorted(results.throughput.items()):
        tps = [b.tokens_per_second for b in batches]
        toks = [float(b.tokens) for b in batches]
        rows.append(
            (f"aggregate tokens/s, {k} concurrent", f"{med(tps):.1f}",
             f"{spread(tps, '{:.1f}')}  per stream {med(tps) / k:.1f}, {med(toks):.0f} tok in "
             f"{med([b.seconds for b in batches]):.2f} s")
        )  # fmt: skip
    if 1 in results.throughput and 8 in results.throughput:
        speedup = [b8.tokens_per_second / b1.tokens_per_second for b1, b8 in
                   zip(results.throughput[1], results.throughput[8], strict=True)]  # fmt: skip
        rows.append(("  8 concurrent / 1 (same repeat)", f"{med(speedup):.2f}x", spread(speedup)))
    pairs = results.pairs
    if pairs:
        raw_s, ttc_s = [p.raw.seconds for p in pairs], [p.ttc.seconds for p in pairs]
        raw_t, ttc_t = [float(p.raw.tokens) for p in pairs], [float(p.ttc.tokens) for p in pairs]
        raw_spt = [p.raw.seconds / max(p.raw.tokens, 1) * 1e3 for p in pairs]
        ttc_spt = [p.ttc.seconds / max(p.ttc.tokens, 1) * 1e3 for p in pairs]
        wall = [p.wall_ratio for p in pairs]
        min_ratio = min(ttc_s) / min(raw_s)
        per_tok = [p.per_token_ratio for p in pairs]
        same = sum(p.raw.tokens == p.ttc.tokens for p in pairs)
        rows += [
            (f"best-of-{BEST_OF} raw AsyncOpenAI wall", f"{med(raw_s):.2f} s", spread(raw_s)),
            (f"best-of-{BEST_OF} ttc_graph wall", f"{med(ttc_s):.2f} s", spread(ttc_s)),
            ("  raw completion tokens", f"{med(raw_t):.0f}", spread(raw_t, "{:.0f}")),
            ("  ttc completion tokens", f"{med(ttc_t):.0f}",
             spread(ttc_t, "{:.0f}") + f"  equal to raw in {same}/{len(pairs)} pairs"),
            ("  raw ms per completion token", f"{med(raw_spt):.2f}", spread(raw_spt)),
            ("  ttc ms per completion token", f"{med(ttc_spt):.2f}", spread(ttc_spt)),
            ("ratio s/token ttc/raw (median of pairs)", f"{med(per_tok):.3f}",
             spread(per_tok, "{:.3f}") + verdict(med(per_tok))),
            ("ratio wall ttc/raw (median of pairs)", f"{med(wall):.3f}",
             spread(wall, "{:.3f}") + verdict(med(wall))),
            ("ratio of fastest walls ttc/raw (least disturbed)", f"{min_ratio:.3f}", ""),
        ]  # fmt: skip
        answers = sorted({str(p.ttc_answer) for p in pairs})
        failed = sum(p.ttc_failed for p in pairs)
        rows.append(("  ttc majority answers / failed requests", ", ".join(answers), f"failed {failed}"))
    print()
    print(f"model: {results.model}   server: {results.server}")
    print(
        f"max_tokens={args.max_tokens} temperature={args.temperature} seed={args.seed} repeats={args.repeats} "
        f"load avg (1 min) before/after: {load[0]:.2f}/{load[1]:.2f}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'median':>10}  [min .. max] / notes")
    print("-" * (width + 50))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", default=None, help="GGUF model file (default: the embedded SmolLM2-135M)")
    parser.add_argument("--base-url", default=None, help="an already running OpenAI-compatible server (…/v1)")
    parser.add_argument("--model", default=None, help="the model name on --base-url")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--parallel", type=int, default=8, help="server slots (and the endpoint's concurrency)")
    parser.add_argument("--threads", type=int, default=None, help="llama-server threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--concurrency", default=",".join(map(str, CONCURRENCY)), help="concurrent requests to measure, e.g. 1,8,16"
    )
    args = parser.parse_args()
    if args.base_url and not args.model:
        parser.error("--base-url needs --model")
    if args.base_url and args.gguf:
        parser.error("give --gguf or --base-url, not both")
    # SIGTERM would skip the finally below and orphan llama-server: turn it into SystemExit.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    load_before = os.getloadavg()[0]
    opts = {"repeats": args.repeats, "max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}
    opts["concurrency"] = tuple(int(k) for k in args.concurrency.split(","))

    if args.base_url:
        endpoint = OpenAIEndpoint(
            args.base_url, args.model, "local", max_concurrency=args.parallel, continuation="prefill", native_n=False
        )
        results = Results(args.model, f"{args.base_url} (existing; start not measured)")
        asyncio.run(measure(endpoint, results, **opts))
    else:
        server: LocalModelServer | None = None
        results = Results("", "")
        try:
            # 1. Fresh starts; the last one stays up for the rest of the benchmark.
            for i in range(max(args.starts, 1)):
                server = LocalModelServer(args.gguf, parallel=args.parallel, threads=args.threads)
                t0 = time.perf_counter()
                server.start()
                call = time.perf_counter() - t0
                if i < args.starts:
                    results.start_seconds.append(server.started_in)
                    results.start_call_seconds.append(call)
                    print(f"  start {i + 1}/{args.starts}: healthy after {server.started_in:.2f} s", flush=True)
                if i < max(args.starts, 1) - 1:
                    server.stop()
            assert server is not None
            results.model = f"{server.model_name} ({server.model_path})"
            results.server = f"llama-server parallel={server.parallel} threads={server.threads} ctx={server.ctx_size}"
            asyncio.run(measure(server.endpoint(), results, **opts))
        finally:
            if server is not None:
                server.stop()
    print_table(results, args, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
