"""Evaluation: data sets, grading and sample replay."""

from ttc_graph.eval.datasets import Problem, data_dir, load_dataset

__all__ = ["Problem", "data_dir", "load_dataset"]
