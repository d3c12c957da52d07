"""Adaptive stopping rules measured on a stored pool, no model time: generations saved and accuracy lost.

Each question's samples arrive in an order drawn at random (``--orders`` orders per question, seeded); a rule
(``ttc_graph.nodes.adaptive.decisive``, the function the graph runs) is checked on every arrival and the run answers
by majority vote over what arrived when it fired. Fixed best-of-b is replayed on the same orders (the first ``b``
arrivals), so "matched accuracy" is the smallest fixed budget whose accuracy reaches the rule's (interpolated),
and "saved at matched accuracy" is 1 - mean drawn / that budget. ``started (window W)`` counts requests sent by a
window of W: the rule fires with up to W - 1 samples still in flight, which are cancelled part-way.

    .venv/bin/python benchmarks/stopping_rules.py [--pool PATH] [--n 16] [--orders 200] [--window 4]

The arrival order here is uniformly random; live, shorter solutions arrive first, which this replay does not model.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ttc_graph.eval.replay import PoolQuestion, load_pool
from ttc_graph.nodes.adaptive import AdaptiveStop, decisive

POOL = "pools/gsm8k-qwen2.5-coder-0.5b-k16.jsonl"


def default_pool() -> Path:
    root = os.environ.get("TTC_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(root) / POOL


def rules(n: int) -> list[tuple[str, AdaptiveStop]]:
    """The rules compared: the Beta posterior (the default), the posterior over the top two, vote margins."""
    out = [(f"beta c={c}", AdaptiveStop(confidence=c, min_samples=min(4, n))) for c in (0.8, 0.9, 0.95, 0.99)]
    out += [(f"top2 c={c}", AdaptiveStop(confidence=c, min_samples=min(4, n), rule="top2")) for c in (0.9, 0.95, 0.99)]
    out += [(f"margin m={m}", AdaptiveStop(min_samples=1, rule="margin", margin=m)) for m in (2, 3, 4, 5)]
    out.append(("margin settled", AdaptiveStop(min_samples=1, rule="margin")))
    return out


@functools.cache
def _fires(votes: tuple[int, ...], drawn: int, n: int, stop: AdaptiveStop) -> bool:
    return decisive(votes, drawn, n, stop)


def majority_correct(labels: Sequence[int | None], correct: dict[int, bool]) -> bool:
    """Majority vote over group labels in arrival order (ties: the first seen), as ``select_answer`` breaks them."""
    counts: dict[int, int] = {}
    for g in labels:
        if g is not None:
            counts[g] = counts.get(g, 0) + 1
    if not counts:
        return False
    best = max(counts, key=lambda g: counts[g])  # max keeps the first of equal counts: first seen
    return correct[best]


@dataclass(frozen=True, slots=True)
class Outcome:
    drawn: float
    started: float  # requests sent through a window of ``window``: the drawn ones and those cancelled in flight
    accuracy: float
    per_question: tuple[float, ...]


def orders(q: PoolQuestion, n: int, count: int, rng: random.Random) -> list[list[int | None]]:
    """``count`` random arrival orders of ``n`` of the question's samples, as group labels."""
    idx = list(range(q.n))
    out = []
    for _ in range(count):
        rng.shuffle(idx)
        out.append([q.groups[i] for i in idx[:n]])
    return out


def run_rule(
    pool: list[PoolQuestion],
    drawn_orders: list[list[list[int | None]]],
    n: int,
    stop: AdaptiveStop | None,
    window: int = 1,
) -> Outcome:
    """Mean generations drawn and accuracy of ``stop`` (None: fixed best-of-n) over every question and order."""
    drawn: list[int] = []
    per_q: list[float] = []
    for q, qorders in zip(pool, drawn_orders, strict=True):
        correct = {g: q.samples[i].correct for i, g in enumerate(q.groups) if g is not None}
        hits = 0
        for labels in qorders:
            d = n
            if stop is not None:
                counts: dict[int, int] = {}
                for k, g in enumerate(labels, start=1):
                    if g is not None:
                        counts[g] = counts.get(g, 0) + 1
                    if _fires(tuple(sorted(counts.values(), reverse=True)), k, n, stop):
                        d = k
                        break
            drawn.append(d)
            hits += majority_correct(labels[:d], correct)
        per_q.append(hits / len(qorders))
    started = statistics.fmean(min(n, d + window - 1) if d < n else n for d in drawn)
    return Outcome(statistics.fmean(drawn), started, statistics.fmean(per_q), tuple(per_q))


def fixed_curve(pool: list[PoolQuestion], drawn_orders: list[list[list[int | None]]], n: int) -> list[float]:
    """Accuracy of fixed best-of-b majority, b = 1..n, on the same arrival orders."""
    curve = []
    for b in range(1, n + 1):
        cut = [[labels[:b] for labels in qorders] for qorders in drawn_orders]
        curve.append(run_rule(pool, cut, b, None).accuracy)
    return curve


def matched_budget(curve: list[float], accuracy: float) -> float:
    """The fixed budget (interpolated between integers) whose accuracy first reaches ``accuracy``."""
    for b in range(1, len(curve) + 1):
        if curve[b - 1] >= accuracy:
            if b == 1:
                return 1.0
            lo, hi = curve[b - 2], curve[b - 1]
            return b - 1 + ((accuracy - lo) / (hi - lo) if hi > lo else 1.0)
    return float(len(curve))


def paired_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of a - b over questions with a normal 95% half-width."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return mean, half


def report(pool: list[PoolQuestion], n: int, count: int, window: int, seed: int) -> None:
    rng = random.Random(seed)
    drawn_orders = [orders(q, n, count, rng) for q in pool]
    curve = fixed_curve(pool, drawn_orders, n)
    full = run_rule(pool, drawn_orders, n, None)
    print(f"\n### n = {n}: {len(pool)} questions x {count} random arrival orders (seed {seed})\n")
    print("fixed best-of-b majority accuracy: " + ", ".join(f"b={b}: {a:.3f}" for b, a in enumerate(curve, 1)))
    print()
    print(
        "| rule | mean drawn | saved vs best-of-n | started (window "
        f"{window}) | accuracy | vs best-of-{n} (95% CI) | fixed b at same accuracy | saved at matched accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(f"| fixed best-of-{n} | {n:.2f} | 0% | {n} | {full.accuracy:.3f} | 0 | {n} | 0% |")
    for name, stop in rules(n):
        out = run_rule(pool, drawn_orders, n, stop, window)
        diff, half = paired_ci(out.per_question, full.per_question)
        b = matched_budget(curve, out.accuracy)
        print(
            f"| {name} | {out.drawn:.2f} | {1 - out.drawn / n:.0%} | {out.started:.2f} | {out.accuracy:.3f} | "
            f"{diff * 100:+.1f} pt (±{half * 100:.1f}) | {b:.1f} | {1 - out.drawn / b:.0%} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=None)
    parser.add_argument("--n", type=int, nargs="+", default=[16, 8])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pool = load_pool(args.pool or default_pool())
    for n in args.n:
        report(pool, n, args.orders, args.window, args.seed)


if __name__ == "__main__":
    main()
