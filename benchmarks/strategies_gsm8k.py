"""Strategies at equal generation budgets on a GSM8K slice, with a real model in the loop.

Runs best-of-N (majority, and weighted by an LLM judge), beam search against the judge as a process verifier,
and revision chains (sequential, sqrt split, parallel) at the same budget N, then prints accuracy, generations,
tokens and wall time for each. The policy is a GGUF served by the embedded llama.cpp server, or any
OpenAI-compatible URL:

    .venv/bin/python benchmarks/strategies_gsm8k.py --gguf "$(bash ../shared/models/fetch-bench-model.sh)" \
        --questions 10 --n 4
    .venv/bin/python benchmarks/strategies_gsm8k.py --base-url http://127.0.0.1:8080/v1 --model qwen
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ttc_graph import create_beam_search, create_best_of_n, create_revisions
from ttc_graph.answers import answers_equal
from ttc_graph.endpoints import Endpoint, OpenAIEndpoint
from ttc_graph.eval import load_dataset
from ttc_graph.verifiers import LLMJudgeVerifier

Factory = Callable[[Endpoint, int], Any]


def strategies(judge_policy: Endpoint, max_tokens: int) -> dict[str, Factory]:
    outcome = LLMJudgeVerifier(judge_policy, mode="outcome")
    process = LLMJudgeVerifier(judge_policy, mode="process", aggregation="last")
    common = {"max_tokens": max_tokens, "temperature": 0.8}
    return {
        "best_of_n/majority": lambda p, n: create_best_of_n(p, None, n=n, selection="majority", **common),
        "best_of_n/weighted(judge)": lambda p, n: create_best_of_n(p, outcome, n=n, selection="weighted", **common),
        "beam_search M=sqrt(judge PRM)": lambda p, n: create_beam_search(
            p, process, n=n, beam_width="sqrt", max_steps=12, step_max_tokens=160, temperature=0.8
        ),
        "revisions sequential (L=n)": lambda p, n: create_revisions(
            p, None, n=n, chain_length=n, selection="majority", stop_on_repeat=False, **common
        ),
        "revisions sqrt split": lambda p, n: create_revisions(
            p, None, n=n, chain_length="sqrt", selection="majority", stop_on_repeat=False, **common
        ),
    }


@contextlib.contextmanager
def policy_from(args: argparse.Namespace) -> Iterator[Endpoint]:
    if args.base_url:
        yield OpenAIEndpoint(args.base_url, args.model, native_n=False, max_concurrency=args.parallel)
        return
    from ttc_graph.local import LocalModelServer

    with LocalModelServer(args.gguf, parallel=args.parallel, threads=args.threads) as server:
        yield server.endpoint()


async def run_strategy(name: str, factory: Factory, policy: Endpoint, problems: list[Any], n: int, conc: int) -> dict:
    graph = factory(policy, n).compile()
    sem = asyncio.Semaphore(conc)
    rows: list[dict[str, Any]] = []

    async def one(p: Any) -> None:
        async with sem:
            t0 = time.perf_counter()
            out = await graph.ainvoke({"question": p.question})
            u = out["usage"]
            rows.append(
                {
                    "id": p.id,
                    "correct": answers_equal(out["answer"], p.reference),
                    "generations": u["generations"],
                    "policy_tokens": sum(
                        u["by_kind"].get(k, {}).get("completion_tokens", 0) for k in ("propose", "revise")
                    ),
                    "verify_requests": u["by_kind"].get("verify", {}).get("requests", 0),
                    "all_tokens": u["prompt_tokens"] + u["completion_tokens"],
                    "seconds": time.perf_counter() - t0,
                }
            )
            mark = "ok " if rows[-1]["correct"] else "   "
            print(f"  [{name}] {mark}q{p.id} answer={out['answer']!r} ref={p.reference} {rows[-1]['seconds']:.0f}s")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(p) for p in problems))
    return {
        "strategy": name,
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "generations": statistics.mean(r["generations"] for r in rows),
        "policy_tokens": statistics.mean(r["policy_tokens"] for r in rows),
        "verify_requests": statistics.mean(r["verify_requests"] for r in rows),
        "all_tokens": statistics.mean(r["all_tokens"] for r in rows),
        "median_seconds": statistics.median(r["seconds"] for r in rows),
        "wall_seconds": time.perf_counter() - t0,
        "rows": rows,
    }


async def main(args: argparse.Namespace) -> None:
    problems = load_dataset("gsm8k", limit=args.questions, offset=args.offset)
    with policy_from(args) as policy:
        table = strategies(policy, args.max_tokens)
        chosen = {k: v for k, v in table.items() if not args.only or any(o in k for o in args.only)}
        results = []
        for name, factory in chosen.items():
            print(f"== {name} (N={args.n}, {len(problems)} questions)")
            results.append(await run_strategy(name, factory, policy, problems, args.n, args.concurrency))
    print(f"\nGSM8K test[{args.offset}:{args.offset + len(problems)}], budget N={args.n} generations")
    header = f"{'strategy':32} {'acc':>5} {'gens':>5} {'policy tok':>10} {'verify req':>10} {'all tok':>8} {'med s':>6}"
    print(header)
    for r in results:
        print(
            f"{r['strategy']:32} {r['accuracy']:5.2f} {r['generations']:5.1f} {r['policy_tokens']:10.0f}"
            f" {r['verify_requests']:10.1f} {r['all_tokens']:8.0f} {r['median_seconds']:6.1f}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
        print(f"saved {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", help="GGUF to serve locally (default: the embedded SmolLM2-135M)")
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="default")
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2, help="questions in flight at once")
    parser.add_argument("--threads", type=int, default=None, help="llama-server threads (1 on a busy machine)")
    parser.add_argument("--only", nargs="*", help="substrings of strategy names to run")
    parser.add_argument("--out", default="results/strategies_gsm8k.json")
    asyncio.run(main(parser.parse_args()))
