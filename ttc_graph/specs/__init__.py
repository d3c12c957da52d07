"""Strategies as data: validated specs (YAML/JSON) that build the same graphs as the factories."""

from ttc_graph.specs import models
from ttc_graph.specs.build import build_endpoint, build_graph, build_verifier
from ttc_graph.specs.io import SpecError, load_spec, parse_spec, spec_json_schema
from ttc_graph.specs.models import *  # noqa: F403 - every spec model, named in models.__all__

__all__ = [
    "SpecError",
    "build_endpoint",
    "build_graph",
    "build_verifier",
    "load_spec",
    "parse_spec",
    "spec_json_schema",
]
__all__ += models.__all__
