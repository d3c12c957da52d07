"""ttc_graph: compute-optimal test-time scaling of LLMs as LangGraph graphs."""

from ttc_graph.agents import TestTimeChatModel, create_agent_best_of_n
from ttc_graph.budget import Budget
from ttc_graph.endpoints import (
    Endpoint,
    Generation,
    GenerationResult,
    LangChainEndpoint,
    OpenAIEndpoint,
    RetryConfig,
    SamplingParams,
)
from ttc_graph.errors import (
    BudgetError,
    ConfigurationError,
    EndpointError,
    LocalServerError,
    TTCError,
    VerifierError,
)
from ttc_graph.nodes.budget_controller import AdaptiveStop
from ttc_graph.prices import Price, PriceTable
from ttc_graph.selection import select_answer
from ttc_graph.state import Candidate, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies import (
    create_beam_search,
    create_best_of_n,
    create_dvts,
    create_mcts,
    create_particle_filtering,
    create_revisions,
)
from ttc_graph.verifiers import (
    ArithmeticVerifier,
    CombinedVerifier,
    ConfidenceVerifier,
    FunctionVerifier,
    LLMJudgeVerifier,
    ProgramVerifier,
    RewardModelVerifier,
    ScoreCache,
    Verifier,
)

__version__ = "0.1.0"

# importing compute_optimal also registers its spec kind with ttc_graph.specs.build_graph (specs cannot import the
# package: it imports specs); importing ttc_graph.specs always runs this module first
from ttc_graph.compute_optimal import create_compute_optimal

__all__ = [
    "AdaptiveStop",
    "ArithmeticVerifier",
    "Budget",
    "BudgetError",
    "Candidate",
    "CombinedVerifier",
    "ConfidenceVerifier",
    "ConfigurationError",
    "Endpoint",
    "EndpointError",
    "FunctionVerifier",
    "Generation",
    "GenerationResult",
    "LLMJudgeVerifier",
    "LangChainEndpoint",
    "LocalServerError",
    "OpenAIEndpoint",
    "Price",
    "PriceTable",
    "ProgramVerifier",
    "RetryConfig",
    "RewardModelVerifier",
    "SamplingParams",
    "ScoreCache",
    "TTCContext",
    "TTCError",
    "TTCInput",
    "TTCOutput",
    "TTCState",
    "TestTimeChatModel",
    "Verifier",
    "VerifierError",
    "__version__",
    "create_agent_best_of_n",
    "create_beam_search",
    "create_best_of_n",
    "create_compute_optimal",
    "create_dvts",
    "create_mcts",
    "create_particle_filtering",
    "create_revisions",
    "select_answer",
]
