"""Orchestration cost of the best-of-N graph, with no model time in the way.

1. Overhead per candidate of best-of-16 over a zero-latency fake endpoint (target: under 1 ms).
2. Best-of-16 over an endpoint that answers after a fixed delay, against one request's latency
   (target: within 1.2x, i.e. all samples in flight at once).

    .venv/bin/python benchmarks/orchestration.py [--repeats 30] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from ttc_graph import create_best_of_n
from ttc_graph.testing import ScriptedEndpoint

TEXTS = ["Step one.\n\nSo the answer is \\boxed{42}.", "Step.\n\n\\boxed{41}", "We get \\boxed{42}"]


async def median_seconds(graph: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await graph.ainvoke({"question": "What is six times seven?"})  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def main(repeats: int, delay: float, n: int) -> None:
    verifier = lambda q, s: 0.9 if "42" in s else 0.1  # noqa: E731
    for native in (True, False):
        graph = create_best_of_n(ScriptedEndpoint(TEXTS, native_n=native), verifier, n=n).compile()
        await median_seconds(graph, 3)  # warm-up
        med = await median_seconds(graph, repeats)
        label = "one request of n" if native else f"{n} concurrent requests"
        print(f"zero-latency best-of-{n} ({label}): median {med * 1e3:.2f} ms/run, {med / n * 1e3:.3f} ms/candidate")

    single = ScriptedEndpoint(TEXTS, delay=delay)
    t0 = time.perf_counter()
    for _ in range(5):
        await single.generate([{"role": "user", "content": "q"}])
    one = (time.perf_counter() - t0) / 5
    graph = create_best_of_n(ScriptedEndpoint(TEXTS, delay=delay, native_n=False), verifier, n=n).compile()
    med = await median_seconds(graph, max(3, repeats // 5))
    print(
        f"delayed endpoint ({delay:.2f}s per request): one request {one:.3f}s, "
        f"best-of-{n} {med:.3f}s, ratio {med / one:.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--n", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.repeats, args.delay, args.n))
