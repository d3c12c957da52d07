"""Verifiers: process reward models, outcome verifiers, confidence and plain functions."""

from ttc_graph.verifiers.base import (
    Aggregation,
    Score,
    VerificationResult,
    Verifier,
    VerifyItem,
    aggregate,
    check_unit_interval,
)
from ttc_graph.verifiers.function import FunctionVerifier, VerifierLike, as_verifier

__all__ = [
    "Aggregation",
    "FunctionVerifier",
    "Score",
    "VerificationResult",
    "Verifier",
    "VerifierLike",
    "VerifyItem",
    "aggregate",
    "as_verifier",
    "check_unit_interval",
]
