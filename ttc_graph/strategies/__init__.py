"""Test-time strategies, each a factory returning an uncompiled LangGraph ``StateGraph``."""

from ttc_graph.strategies.best_of_n import create_best_of_n

__all__ = ["create_best_of_n"]
