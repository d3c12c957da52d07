"""Verifiers: process reward models, outcome verifiers, confidence and plain functions."""

from ttc_graph.verifiers.arithmetic import ArithmeticVerifier
from ttc_graph.verifiers.base import (
    Aggregation,
    Score,
    VerificationResult,
    Verifier,
    VerifyItem,
    aggregate,
    check_unit_interval,
)
from ttc_graph.verifiers.cache import ScoreCache
from ttc_graph.verifiers.combined import CombinedVerifier
from ttc_graph.verifiers.confidence import ConfidenceVerifier
from ttc_graph.verifiers.function import FunctionVerifier, VerifierLike, as_verifier
from ttc_graph.verifiers.judge import (
    DEFAULT_JUDGE_SYSTEM_PROMPT,
    DEFAULT_OUTCOME_PROMPT,
    DEFAULT_PROCESS_PROMPT,
    LLMJudgeVerifier,
)
from ttc_graph.verifiers.program import ProgramVerifier
from ttc_graph.verifiers.reward_model import QWEN_PRM_SYSTEM_PROMPT, RewardModelVerifier

__all__ = [
    "DEFAULT_JUDGE_SYSTEM_PROMPT",
    "DEFAULT_OUTCOME_PROMPT",
    "DEFAULT_PROCESS_PROMPT",
    "QWEN_PRM_SYSTEM_PROMPT",
    "Aggregation",
    "ArithmeticVerifier",
    "CombinedVerifier",
    "ConfidenceVerifier",
    "FunctionVerifier",
    "LLMJudgeVerifier",
    "ProgramVerifier",
    "RewardModelVerifier",
    "Score",
    "ScoreCache",
    "VerificationResult",
    "Verifier",
    "VerifierLike",
    "VerifyItem",
    "aggregate",
    "as_verifier",
    "check_unit_interval",
]
