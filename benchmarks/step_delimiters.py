"""Steps per solution of the benchmark model under each step delimiter, from the real sample pool.

Search (beam search, lookahead, DVTS, particle filtering) cuts solutions into steps at a delimiter; a model that
rarely writes the delimiter turns search into best-of-N over whole solutions. The paper's PRM800K format puts one
step per line ("\\n"); search-and-learn's prompts use a blank line ("\\n\\n"). This counts, on the 60 x 16 real
solutions of ``pools/gsm8k-qwen2.5-coder-0.5b-k16.jsonl`` (drawn with the strategies' default prompt), how many
non-empty steps each delimiter gives and how many tokens a step holds.

    .venv/bin/python benchmarks/step_delimiters.py [--pool PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ttc_graph.eval.datasets import data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, default=None, help="pool file (default: the shared k16 pool)")
    args = parser.parse_args()
    pool = args.pool or data_dir() / "pools" / "gsm8k-qwen2.5-coder-0.5b-k16.jsonl"
    samples = [s for line in pool.read_text().splitlines() if line.strip() for s in json.loads(line)["samples"]]
    print(f"{len(samples)} solutions from {pool.name}")
    print(f"{'delimiter':>10} | {'median':>6} | {'p10':>4} | {'p90':>4} | {'1 step':>6} | tokens/step (median)")
    for name, delim in (("\\n", "\n"), ("\\n\\n", "\n\n")):
        raw = [len([s for s in x["text"].split(delim) if s.strip()]) for x in samples]
        per_step = statistics.median(x["tokens"] / max(1, c) for x, c in zip(samples, raw, strict=True))
        counts = sorted(raw)
        one = sum(c == 1 for c in counts) / len(counts)
        p10, p90 = counts[len(counts) // 10], counts[9 * len(counts) // 10]
        print(f"{name:>10} | {statistics.median(counts):>6g} | {p10:>4} | {p90:>4} | {one:>6.1%} | {per_step:.0f}")


if __name__ == "__main__":
    main()
