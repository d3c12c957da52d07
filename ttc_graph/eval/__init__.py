"""Evaluation: data sets, grading, the dataset driver (resumable sweeps and spec runs), pool samples, replay and plots.

``plots`` needs matplotlib (the ``eval`` extra) and is imported on use: ``from ttc_graph.eval.plots import ...``.
"""

from ttc_graph.eval.dataset_driver import DatasetReport, UnitEvent, drive
from ttc_graph.eval.datasets import DatasetWarning, Problem, Problems, SkippedRow, data_dir, load_dataset
from ttc_graph.eval.grading import grade, numeric_value
from ttc_graph.eval.pool_samples import PoolSample, pool_candidate
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
    "DatasetReport",
    "DatasetWarning",
    "Estimate",
    "PoolQuestion",
    "PoolSample",
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
    "UnitEvent",
    "data_dir",
    "drive",
    "exact_accuracy",
    "exact_question",
    "grade",
    "load_dataset",
    "load_pool",
    "numeric_value",
    "parse_budgets",
    "parse_strategy",
    "pending",
    "pool_candidate",
    "pool_from_samples",
    "replay",
    "run_sweep",
    "summarize",
    "wilson_interval",
]
