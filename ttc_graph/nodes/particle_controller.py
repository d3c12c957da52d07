"""The old path of :mod:`ttc_graph.nodes.step_particles`, kept so that imports of it go on working."""

from ttc_graph.nodes.step_particles import *  # noqa: F403
from ttc_graph.nodes.step_particles import __all__ as __all__
