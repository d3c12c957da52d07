"""The ``ttc`` command line (:mod:`ttc_graph.cli.main`); models come from a :class:`~ttc_graph.cli.runtime.Runtime`."""

from ttc_graph.cli.common import (
    DEFAULT_DB,
    DEFAULT_LIMIT,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SELECTION,
    DEFAULT_TEMPERATURE,
    DEFAULT_VERIFIER,
)
from ttc_graph.cli.main import app, main
from ttc_graph.cli.runtime import Runtime, StaticRuntime
from ttc_graph.cli.solve import make_verifier

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_LIMIT",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_SELECTION",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_VERIFIER",
    "Runtime",
    "StaticRuntime",
    "app",
    "main",
    "make_verifier",
]
