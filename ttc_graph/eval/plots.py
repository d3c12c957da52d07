"""Accuracy-vs-budget and accuracy-vs-tokens plots (PNG and SVG) with matplotlib's Agg canvas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ttc_graph.errors import ConfigurationError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ttc_graph.eval.replay import ReplayResult
    from ttc_graph.eval.sweep import Curve

__all__ = ["Series", "plot_curves", "plot_replay", "plot_series"]


@dataclass(frozen=True, slots=True)
class Series:
    """One line: accuracy (with interval) and mean tokens per question at each budget."""

    label: str
    budgets: tuple[int, ...]
    accuracy: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    tokens: tuple[float | None, ...]


def _figure() -> tuple[Figure, Axes, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    return fig, left, right


def _save(fig: Figure, out: str | Path) -> list[Path]:
    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    stem = base.with_suffix("") if base.suffix.lower() in (".png", ".svg") else base
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path)
    return paths


def plot_series(series: Sequence[Series], out: str | Path, *, title: str = "", note: str = "") -> list[Path]:
    """Accuracy vs budget (log2 axis, interval bars) and accuracy vs tokens; writes ``out`` as .png and .svg."""
    if not series:
        raise ConfigurationError("plot: nothing to plot (no finished results)")
    fig, by_budget, by_tokens = _figure()
    for k, s in enumerate(series):
        shift = 2 ** ((k - (len(series) - 1) / 2) * 0.03)  # small offsets keep the interval bars apart
        err = [
            [max(0.0, a - lo) for a, lo in zip(s.accuracy, s.low, strict=True)],
            [max(0.0, hi - a) for a, hi in zip(s.accuracy, s.high, strict=True)],
        ]
        xs_b = [b * shift for b in s.budgets]
        line = by_budget.errorbar(xs_b, s.accuracy, yerr=err, marker="o", capsize=3, label=s.label)
        points = [(t, a) for t, a in zip(s.tokens, s.accuracy, strict=True) if t is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            by_tokens.plot(xs, ys, marker="o", color=line.lines[0].get_color(), label=s.label)
    budgets = sorted({b for s in series for b in s.budgets})
    by_budget.set_xscale("log", base=2)
    by_budget.set_xticks(budgets, [str(b) for b in budgets])
    by_budget.set_xlabel("generation budget N (log2)")
    by_budget.set_ylabel("accuracy")
    by_budget.set_title("accuracy vs budget (95% interval)")
    by_budget.grid(alpha=0.3)
    by_budget.legend(fontsize=8)
    from matplotlib.ticker import ScalarFormatter

    by_tokens.set_xscale("log", base=2)
    by_tokens.xaxis.set_major_formatter(ScalarFormatter())
    by_tokens.set_xlabel("policy completion tokens per question (log2)")
    by_tokens.set_ylabel("accuracy")
    by_tokens.set_title("accuracy vs tokens")
    by_tokens.grid(alpha=0.3)
    heading = "\n".join(x for x in (title, note) if x)
    if heading:
        fig.suptitle(heading, fontsize=9)
    return _save(fig, out)


def plot_curves(curves: Sequence[Curve], out: str | Path, *, title: str = "") -> list[Path]:
    """Plot a sweep's :func:`~ttc_graph.eval.sweep.summarize` output (Wilson 95% intervals)."""
    by_strategy: dict[str, list[Curve]] = {}
    for c in curves:
        by_strategy.setdefault(c.strategy, []).append(c)
    series = [
        Series(
            f"{name} (n={min(c.questions for c in cs)})",
            tuple(c.budget for c in cs),
            tuple(c.accuracy for c in cs),
            tuple(c.low for c in cs),
            tuple(c.high for c in cs),
            tuple(c.tokens for c in cs),
        )
        for name, cs in by_strategy.items()
    ]
    return plot_series(series, out, title=title, note="intervals: Wilson 95% over questions")


def plot_replay(result: ReplayResult, out: str | Path, *, title: str = "") -> list[Path]:
    """Plot a :func:`~ttc_graph.eval.replay.replay` result (intervals as the result says: bootstrap or normal)."""
    methods = list(dict.fromkeys(e.method for e in result.estimates))
    series = []
    for m in methods:
        es = sorted((e for e in result.estimates if e.method == m), key=lambda e: e.budget)
        series.append(
            Series(
                m,
                tuple(e.budget for e in es),
                tuple(e.accuracy for e in es),
                tuple(e.low for e in es),
                tuple(e.high for e in es),
                tuple(e.tokens for e in es),
            )
        )
    note = f"{result.questions} questions, {result.trials} subsamples per budget, 95% {result.ci} interval"
    return plot_series(series, out, title=title, note=note)
