"""Test-time strategies, each a factory returning an uncompiled LangGraph ``StateGraph``."""

from ttc_graph.strategies.best_of_n import create_best_of_n
from ttc_graph.strategies.mcts import create_mcts
from ttc_graph.strategies.particle_filtering import create_particle_filtering
from ttc_graph.strategies.revisions import create_revisions
from ttc_graph.strategies.search import create_beam_search, create_dvts

__all__ = [
    "create_beam_search",
    "create_best_of_n",
    "create_dvts",
    "create_mcts",
    "create_particle_filtering",
    "create_revisions",
]
