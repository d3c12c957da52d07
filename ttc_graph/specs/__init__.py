"""Strategies as data: validated specs (YAML/JSON) that build the same graphs as the factories."""

from ttc_graph.specs.build import build_endpoint, build_graph, build_verifier
from ttc_graph.specs.io import SpecError, load_spec, parse_spec, spec_json_schema
from ttc_graph.specs.models import (
    BeamSearchSpec,
    BestOfNSpec,
    ComputeOptimalSpec,
    ConfidenceVerifierSpec,
    DVTSSpec,
    EndpointSpec,
    EnvEndpointSpec,
    LLMJudgeVerifierSpec,
    LocalEndpointSpec,
    OpenAIEndpointSpec,
    PythonVerifierSpec,
    RevisionsSpec,
    RewardModelVerifierSpec,
    StrategySpec,
    VerifierSpec,
)

__all__ = [
    "BeamSearchSpec",
    "BestOfNSpec",
    "ComputeOptimalSpec",
    "ConfidenceVerifierSpec",
    "DVTSSpec",
    "EndpointSpec",
    "EnvEndpointSpec",
    "LLMJudgeVerifierSpec",
    "LocalEndpointSpec",
    "OpenAIEndpointSpec",
    "PythonVerifierSpec",
    "RevisionsSpec",
    "RewardModelVerifierSpec",
    "SpecError",
    "StrategySpec",
    "VerifierSpec",
    "build_endpoint",
    "build_graph",
    "build_verifier",
    "load_spec",
    "parse_spec",
    "spec_json_schema",
]
