"""One registry turns verifier names into verifiers: spec kinds, and the short names of the CLI and sweeps."""

from __future__ import annotations

import typing

import pytest

from ttc_graph.errors import ConfigurationError
from ttc_graph.specs import build_verifier, parse_spec
from ttc_graph.specs.models import VerifierSpec
from ttc_graph.testing import ScriptedEndpoint
from ttc_graph.verifiers import (
    ArithmeticVerifier,
    CombinedVerifier,
    ConfidenceVerifier,
    LLMJudgeVerifier,
    ProgramVerifier,
)
from ttc_graph.verifiers.registry import NAMED_VERIFIERS, VERIFIER_BUILDERS, VERIFIER_NAMES, named_verifier


def spec_kinds() -> set[str]:
    """Every ``kind`` the verifier spec models accept."""
    union = typing.get_args(VerifierSpec)[0]
    return {typing.get_args(model.model_fields["kind"].annotation)[0] for model in typing.get_args(union)}


def test_every_verifier_kind_the_specs_accept_has_a_builder() -> None:
    assert spec_kinds() == set(VERIFIER_BUILDERS)


def test_every_short_name_is_a_spec_the_registry_builds() -> None:
    policy = ScriptedEndpoint(["x"])
    assert VERIFIER_NAMES == ("none", "confidence", "confidence-group", "judge", "program")
    for name, spec in NAMED_VERIFIERS.items():
        assert spec is None or spec["kind"] in VERIFIER_BUILDERS
        assert (named_verifier(name, policy) is None) == (name == "none")
    group = named_verifier("confidence-group", policy)
    assert isinstance(group, ConfidenceVerifier) and group.method == "group"
    judge = named_verifier("judge", policy, mode="process")
    assert isinstance(judge, LLMJudgeVerifier) and judge.mode == "process"
    program = named_verifier("program", policy)
    assert isinstance(program, ProgramVerifier) and program.endpoint is policy
    with pytest.raises(ConfigurationError, match="unknown 'nope'"):
        named_verifier("nope", policy)


def test_specs_build_through_the_registry() -> None:
    policy = ScriptedEndpoint(["x"])
    combined = parse_spec(
        {"kind": "best_of_n", "n": 2, "selection": "weighted", "verifier": {"kind": "combined", "parts": [
            {"kind": "arithmetic"}, {"kind": "confidence", "method": "group", "window": 4}]}}
    ).verifier  # fmt: skip
    built = build_verifier(combined, policy)
    assert isinstance(built, CombinedVerifier)
    kinds = [type(p) for p in built.parts]
    assert kinds == [ArithmeticVerifier, ConfidenceVerifier]
