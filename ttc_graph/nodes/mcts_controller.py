"""The old path of :mod:`ttc_graph.nodes.step_mcts`, kept so that imports of it go on working."""

from ttc_graph.nodes.step_mcts import *  # noqa: F403
from ttc_graph.nodes.step_mcts import __all__ as __all__
