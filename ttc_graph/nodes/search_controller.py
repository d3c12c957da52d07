"""The old path of :mod:`ttc_graph.nodes.step_beam`, kept so that imports of it go on working."""

from ttc_graph.nodes.step_beam import *  # noqa: F403
from ttc_graph.nodes.step_beam import __all__ as __all__
