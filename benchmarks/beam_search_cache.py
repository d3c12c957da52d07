"""What the verifier's prefix cache saves during a real beam search.

Runs beam search with an LLM judge as the process verifier on a live model and prints, per question, the judge
requests sent and the judgements the (question, step prefix) cache answered instead: every cache hit is a judge
request not sent. (Two runs with and without the cache would not draw the same beams: llama.cpp's batched
sampling is not bit-reproducible across runs, even with seeds.)

    .venv/bin/python benchmarks/beam_search_cache.py [--gguf PATH | --base-url URL --model NAME] [--questions 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator

from ttc_graph import LLMJudgeVerifier, OpenAIEndpoint, create_beam_search
from ttc_graph.endpoints import Endpoint
from ttc_graph.eval import load_dataset


@contextlib.contextmanager
def policy_from(args: argparse.Namespace) -> Iterator[Endpoint]:
    if args.base_url:
        yield OpenAIEndpoint(args.base_url, args.model, native_n=False)
        return
    from ttc_graph.local import LocalModelServer

    with LocalModelServer(args.gguf, parallel=4, threads=args.threads) as server:
        yield server.endpoint()


async def main(args: argparse.Namespace) -> None:
    problems = load_dataset("gsm8k", limit=args.questions)
    requests = prompt_tokens = hits = 0
    with policy_from(args) as policy:
        for p in problems:
            judge = LLMJudgeVerifier(policy, mode="process")
            graph = create_beam_search(
                policy, judge, n=args.n, beam_width=args.width, max_steps=args.max_steps,
                step_max_tokens=args.step_tokens, seed=7,
            ).compile()  # fmt: skip
            out = await graph.ainvoke({"question": p.question})
            verify = out["usage"]["by_kind"].get("verify", {})
            stats = judge.cache.stats() if judge.cache is not None else {}
            requests += verify.get("requests", 0)
            prompt_tokens += verify.get("prompt_tokens", 0)
            hits += stats.get("hits", 0)
            print(
                f"q{p.id} ({out['stop_reason']}): judge requests {verify.get('requests', 0)},"
                f" prompt tokens {verify.get('prompt_tokens', 0)}, cache hits {stats.get('hits', 0)}"
            )
    per_request = prompt_tokens / max(requests, 1)
    print(
        f"\nbeam search n={args.n} M={args.width}, {len(problems)} questions: {requests} judge requests sent,"
        f" {hits} more answered by the cache ({hits / max(requests + hits, 1):.0%} of all judgements);"
        f" about {hits * per_request:.0f} prompt tokens saved (hits x {per_request:.0f} tokens per judge request)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf")
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="default")
    parser.add_argument("--questions", type=int, default=2)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--width", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--step-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    asyncio.run(main(parser.parse_args()))
