"""Compute-optimal scaling: difficulty bins, cross-validated strategy tables, the router graph, FLOPs exchange."""

from ttc_graph.compute_optimal.calibration import Record, calibrate, efficiency_ratio, matching_budget
from ttc_graph.compute_optimal.difficulty import DifficultyBins, DifficultyMetric, fit_bins, probe_score
from ttc_graph.compute_optimal.flops import FlopsExchange, flops_exchange
from ttc_graph.compute_optimal.router import RouterOutput, RouterState, create_compute_optimal
from ttc_graph.compute_optimal.table import TABLE_FORMAT, PolicyTable, load_table, spec_at_budget, strategy_cost

__all__ = [
    "TABLE_FORMAT",
    "DifficultyBins",
    "DifficultyMetric",
    "FlopsExchange",
    "PolicyTable",
    "Record",
    "RouterOutput",
    "RouterState",
    "calibrate",
    "create_compute_optimal",
    "efficiency_ratio",
    "fit_bins",
    "flops_exchange",
    "load_table",
    "matching_budget",
    "probe_score",
    "spec_at_budget",
    "strategy_cost",
]
