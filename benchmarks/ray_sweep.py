"""The same sweep locally and on a local Ray cluster with 1 and 2 replicas (each an embedded llama.cpp server).

    .venv/bin/python benchmarks/ray_sweep.py --questions 6 --budgets 1,4 --max-tokens 16

Reports wall time of the sweep (start-up apart), policy requests and generations, the wall difference per unit against
the local run with the same server, and Ray's own round trip to a replica (what dispatching a unit costs). On one
machine every replica shares its cores, so replicas add no compute beyond the cores a single server could use: with 2
cores the numbers show the cost of the Ray path, not its gain. See docs/scaling.md for many machines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ttc_graph.eval import ResultStore, SweepConfig, SweepReport, load_dataset, run_sweep
from ttc_graph.local import LocalModelServer


def sweep(args: argparse.Namespace, run: str) -> SweepConfig:
    return SweepConfig.make(
        run, "gsm8k", args.strategies.split(","), args.budgets, max_tokens=args.max_tokens,
        temperature=args.temperature, seed=0, concurrency=args.concurrency,
    )  # fmt: skip


def local(args: argparse.Namespace, problems: list[Any], folder: Path, threads: int) -> tuple[float, SweepReport]:
    t0 = time.monotonic()
    with LocalModelServer(threads=threads, parallel=args.parallel) as server:
        started = time.monotonic() - t0
        with ResultStore(folder / f"local{threads}.sqlite") as store:
            report = asyncio.run(run_sweep(server.endpoint(), problems, sweep(args, f"local{threads}"), store))
    return started, report


def on_ray(
    args: argparse.Namespace, problems: list[Any], folder: Path, replicas: int
) -> tuple[float, SweepReport, float]:
    """Start-up seconds, the sweep's report, and the mean round trip (ms) of a call to a replica."""
    import ray

    from ttc_graph.scale import RayUnits

    replica = {"kind": "embedded", "threads": args.threads, "parallel": args.parallel}
    t0 = time.monotonic()
    with RayUnits(replica, replicas=replicas, concurrency=args.concurrency) as units:
        started = time.monotonic() - t0
        with ResultStore(folder / f"ray{replicas}.sqlite") as store:
            config = sweep(args, f"ray{replicas}")
            report = asyncio.run(run_sweep(units.driver_policy, problems, config, store, runner=units))
        t1 = time.monotonic()
        for _ in range(30):
            ray.get(units.actors[0].info.remote())
        trip = (time.monotonic() - t1) / 30 * 1000
    return started, report, trip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--strategies", default="best_of_n:majority,revisions:majority")
    parser.add_argument("--budgets", default="1,4")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--concurrency", type=int, default=2, help="Units in flight (per replica on Ray).")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per server.")
    parser.add_argument("--parallel", type=int, default=2, help="Slots per server.")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="num_cpus of the local Ray cluster.")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a loopback-only Ray node
    from ttc_graph.scale import connect_ray

    problems = list(load_dataset("gsm8k", limit=args.questions))
    rows: list[tuple[str, SweepReport, str]] = []
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for threads in dict.fromkeys((args.threads, cores)):
            started, report = local(args, problems, folder, threads)
            rows.append((f"local, 1 server x {threads} thread(s) (start {started:.1f}s)", report, "-"))
        t0 = time.monotonic()
        connect_ray("local", num_cpus=args.cpus)
        ray_init = time.monotonic() - t0
        import ray

        try:
            for replicas in (1, 2):
                started, report, trip = on_ray(args, problems, folder, replicas)
                name = f"ray, {replicas} replica(s) x {args.threads} thread(s) (start {started:.1f}s)"
                rows.append((name, report, f"{trip:.1f}"))
        finally:
            ray.shutdown()
    base = rows[0][1]
    print(
        f"\n{args.questions} GSM8K questions, {args.strategies}, budgets {args.budgets}, max_tokens {args.max_tokens},"
    )
    print(
        f"{os.cpu_count()} cores; servers: {args.threads} thread(s), {args.parallel} slots; ray init {ray_init:.1f}s\n"
    )
    print("| run | units | sweep wall (s) | units/min | requests | generations | wall/unit vs first row (s) |"
          " Ray round trip (ms) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, r, trip in rows:
        overhead = (r.seconds - base.seconds) / max(1, r.units)
        print(
            f"| {name} | {r.units} | {r.seconds:.1f} | {60 * r.units / max(r.seconds, 1e-9):.1f} | {r.requests}"
            f" | {r.generations} | {overhead:+.2f} | {trip} |"
        )


if __name__ == "__main__":
    main()
