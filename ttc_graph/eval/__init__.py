"""Evaluation: data sets, grading, resumable sweeps, sample replay and plots.

``plots`` needs matplotlib (the ``eval`` extra) and is imported on use: ``from ttc_graph.eval.plots import ...``.
"""

from ttc_graph.eval.datasets import DatasetWarning, Problem, Problems, SkippedRow, data_dir, load_dataset
from ttc_graph.eval.grading import grade, numeric_value
from ttc_graph.eval.replay import (
    METHODS,
    Estimate,
    PoolQuestion,
    ReplayResult,
    Sample,
    exact_accuracy,
    exact_question,
    load_pool,
    pool_from_samples,
    replay,
)
from ttc_graph.eval.store import ResultRow, ResultStore
from ttc_graph.eval.sweep import (
    Curve,
    SweepConfig,
    SweepEvent,
    SweepReport,
    SweepStrategy,
    parse_budgets,
    parse_strategy,
    pending,
    run_sweep,
    summarize,
    wilson_interval,
)

__all__ = [
    "METHODS",
    "Curve",
    "DatasetWarning",
    "Estimate",
    "PoolQuestion",
    "Problem",
    "Problems",
    "ReplayResult",
    "ResultRow",
    "ResultStore",
    "Sample",
    "SkippedRow",
    "SweepConfig",
    "SweepEvent",
    "SweepReport",
    "SweepStrategy",
    "data_dir",
    "exact_accuracy",
    "exact_question",
    "grade",
    "load_dataset",
    "load_pool",
    "numeric_value",
    "parse_budgets",
    "parse_strategy",
    "pending",
    "pool_from_samples",
    "replay",
    "run_sweep",
    "summarize",
    "wilson_interval",
]
