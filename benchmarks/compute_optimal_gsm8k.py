"""Compute-optimal scaling on real samples of the benchmark model: bins, cross-validated table, curves, ratio.

Uses the real pool of 8 solutions per question drawn from Qwen2.5-Coder-0.5B-Instruct on the first 60 GSM8K
test questions (``shared/data/pools``), so every strategy at every budget is evaluated exactly (all subsets),
at no model cost — the paper's replay method. Strategies: best-of-N weighted and naive (scored by the
policy's own confidence, exp(mean token log-prob)) and majority vote; budgets 1, 2, 4, 8. Difficulty bins:
oracle (pass@1 over the 8 samples) and predicted (mean confidence of ``--probes`` probe samples).

    .venv/bin/python benchmarks/compute_optimal_gsm8k.py [--pool PATH] [--probes 2] [--plot docs/img/co.png]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ttc_graph.compute_optimal import PolicyTable, Record, calibrate
from ttc_graph.eval.datasets import data_dir
from ttc_graph.eval.replay import PoolQuestion, exact_question, load_pool

STRATEGIES = {
    "bon_weighted": {"kind": "best_of_n", "selection": "weighted", "verifier": {"kind": "confidence"}},
    "bon_naive": {"kind": "best_of_n", "selection": "naive", "verifier": {"kind": "confidence"}},
    "majority": {"kind": "best_of_n", "selection": "majority"},
}
METHOD = {"bon_weighted": "weighted", "bon_naive": "naive", "majority": "majority"}


def records(pool: list[PoolQuestion], budgets: list[int]) -> list[Record]:
    return [
        Record(q.id, name, b, exact_question(q, b, METHOD[name])) for q in pool for name in STRATEGIES for b in budgets
    ]


def show(title: str, table: PolicyTable) -> None:
    rep = table.report
    print(f"\n== {title}: {rep['questions']} questions, bin sizes {rep['bin_sizes']}")
    print(f"bin edges ({table.difficulty.metric}): {[round(e, 3) for e in table.difficulty.edges]}")
    print("table (bin 1 = easiest) -> strategy per budget:")
    for bin_, row in table.table.items():
        print(f"  bin {bin_}: " + ", ".join(f"B={b}: {name}" for b, name in row.items()))
    budgets = [str(b) for b in table.budgets]
    print(f"{'accuracy':24}" + "".join(f"{'B=' + b:>9}" for b in budgets))
    print(f"{'compute-optimal (2-fold)':24}" + "".join(f"{rep['compute_optimal_cv'][b]:9.3f}" for b in budgets))
    for name, curve in rep["fixed"].items():
        print(f"{name:24}" + "".join(f"{curve[b]:9.3f}" for b in budgets))
    ratio = rep.get("efficiency_ratio", {})
    fmt = {b: ("never" if r is None else f"{r:.2f}x") for b, r in ratio.items()}
    print(f"budget {rep.get('baseline')} needs to match compute-optimal, relative to B: {fmt}")
    print("per-bin accuracy at the largest budget:")
    top = budgets[-1]
    for name, per_bin in rep["fixed_per_bin"].items():
        print(f"  {name:14}" + "".join(f" bin{b}={row[top]:.2f}" for b, row in per_bin.items()))


def plot(tables: dict[str, PolicyTable], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    first = next(iter(tables.values()))
    budgets = first.budgets
    for name, curve in first.report["fixed"].items():
        ax.plot(budgets, [curve[str(b)] for b in budgets], marker="o", label=name)
    for label, table in tables.items():
        cv = table.report["compute_optimal_cv"]
        ax.plot(budgets, [cv[str(b)] for b in budgets], marker="s", linestyle="--", label=f"compute-optimal ({label})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("generation budget N (log2)")
    ax.set_ylabel("GSM8K accuracy")
    ax.set_title("Qwen2.5-Coder-0.5B, first 60 GSM8K test questions (replay)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    fig.savefig(out.with_suffix(".svg"))
    print(f"\nsaved {out} and {out.with_suffix('.svg')}")


def main(args: argparse.Namespace) -> None:
    pool = load_pool(args.pool or data_dir() / "pools" / "gsm8k-qwen2.5-coder-0.5b-k8.jsonl")
    budgets = [b for b in (1, 2, 4, 8) if b <= min(q.n for q in pool)]
    recs = records(pool, budgets)
    oracle = {q.id: statistics.fmean(s.correct for s in q.samples) for q in pool}
    predicted = {q.id: statistics.fmean(s.score or 0.0 for s in q.samples[: args.probes]) for q in pool}
    tables = {
        "oracle bins": calibrate(recs, oracle, STRATEGIES, metric="pass_rate", baseline="bon_weighted"),
        "predicted bins": calibrate(
            recs, predicted, STRATEGIES, metric="verifier_score", probes=args.probes, baseline="bon_weighted"
        ),
    }
    for title, table in tables.items():
        show(title, table)
    tables["predicted bins"].save(args.table)
    print(f"\npredicted-bin policy table saved to {args.table}")
    if args.plot:
        plot(tables, Path(args.plot))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path)
    parser.add_argument("--probes", type=int, default=2)
    parser.add_argument("--table", default="results/compute_optimal_table.json")
    parser.add_argument("--plot", default="docs/img/compute_optimal.png")
    main(parser.parse_args())
