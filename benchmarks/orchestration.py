"""Orchestration cost of the best-of-N graph, with no model time in the way.

1. Overhead per candidate over a zero-latency fake endpoint, measured in the same run, interleaved:
   a bare LangGraph graph that fans out n ``Send``s and selects (the floor: async nodes; and with plain ``def``
   nodes), best-of-n with one request of n
   (vLLM's path), best-of-n with n single-sample requests (llama.cpp's path: one windowed node), and adaptive
   best-of-n that never stops (target for the last two: within 1.5x of the bare fan-out; ratios are to the
   async-node floor).
2. Best-of-n over an endpoint that answers after a fixed delay, against one request's latency
   (target: within 1.2x, i.e. all samples in flight at once).

    .venv/bin/python benchmarks/orchestration.py [--repeats 30] [--delay 0.2] [--n 16]
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import statistics
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from ttc_graph import AdaptiveStop, create_best_of_n
from ttc_graph.testing import ScriptedEndpoint

TEXTS = ["Step one.\n\nSo the answer is \\boxed{42}.", "Step.\n\n\\boxed{41}", "We get \\boxed{42}"]
SPLIT = ["\\boxed{1}", "\\boxed{2}"]  # never decisive: adaptive draws all n


class _Bare(TypedDict, total=False):
    question: str
    items: Annotated[list[dict[str, Any]], operator.add]
    answer: str | None


def bare_fan_out(n: int, *, sync: bool = False) -> Any:
    """The floor: START ⇉ n ``Send``s to a node that returns one candidate-like item, then a select node.

    Async nodes run in the caller's loop (the cheapest node there is); plain ``def`` nodes, LangGraph's usual way of
    writing them, run in its thread pool under ``ainvoke``.
    """

    def fan(state: _Bare) -> list[Send]:
        return [Send("work", {"i": i}) for i in range(n)]

    def work(task: dict[str, int]) -> dict[str, Any]:
        return {"items": [{"id": task["i"], "text": TEXTS[task["i"] % len(TEXTS)], "score": 0.5}]}

    def select(state: _Bare) -> dict[str, Any]:
        best = max(state.get("items", []), key=lambda c: c["score"])
        return {"answer": best["text"]}

    async def awork(task: dict[str, int]) -> dict[str, Any]:
        return work(task)

    async def aselect(state: _Bare) -> dict[str, Any]:
        return select(state)

    graph = StateGraph(_Bare)
    graph.add_node("work", work if sync else awork)
    graph.add_node("select", select if sync else aselect)
    graph.add_conditional_edges(START, fan, ["work"])
    graph.add_edge("work", "select")
    graph.add_edge("select", END)
    return graph.compile()


async def one_run(graph: Any) -> float:
    t0 = time.perf_counter()
    await graph.ainvoke({"question": "What is six times seven?"})
    return time.perf_counter() - t0


async def interleaved(graphs: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds per run of each graph, the graphs taking turns so load affects them alike."""
    for graph in graphs.values():
        for _ in range(3):
            await one_run(graph)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(repeats):
        for name, graph in graphs.items():
            times[name].append(await one_run(graph))
    return {name: statistics.median(ts) for name, ts in times.items()}


def systems(n: int) -> dict[str, Any]:
    verifier: Callable[[str, str], float] = lambda q, s: 0.9 if "42" in s else 0.1  # noqa: E731
    never = AdaptiveStop(confidence=0.99, min_samples=min(4, n))
    return {
        f"bare LangGraph fan-out ({n} Sends + select, async nodes)": bare_fan_out(n),
        f"bare LangGraph fan-out ({n} Sends + select, def nodes)": bare_fan_out(n, sync=True),
        f"best-of-{n}, one request of n": create_best_of_n(
            ScriptedEndpoint(TEXTS, native_n=True), verifier, n=n
        ).compile(),
        f"best-of-{n}, {n} concurrent requests": create_best_of_n(
            ScriptedEndpoint(TEXTS, native_n=False), verifier, n=n
        ).compile(),
        f"adaptive best-of-{n} (no stop), {n} requests": create_best_of_n(
            ScriptedEndpoint(SPLIT, native_n=False), n=n, selection="majority", adaptive=never
        ).compile(),
    }


async def main(repeats: int, delay: float, n: int) -> None:
    medians = await interleaved(systems(n), repeats)
    floor = next(iter(medians.values()))
    print(f"zero-latency endpoint, medians of {repeats} interleaved runs:")
    for name, med in medians.items():
        print(f"  {name:<56} {med * 1e3:7.2f} ms/run  {med / n * 1e3:6.3f} ms/candidate  {med / floor:5.2f}x bare")

    single = ScriptedEndpoint(TEXTS, delay=delay)
    t0 = time.perf_counter()
    for _ in range(5):
        await single.generate([{"role": "user", "content": "q"}])
    one = (time.perf_counter() - t0) / 5
    graph = create_best_of_n(ScriptedEndpoint(TEXTS, delay=delay, native_n=False), n=n, selection="majority").compile()
    med = statistics.median([await one_run(graph) for _ in range(max(3, repeats // 5))])
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
