"""Policy endpoints: OpenAI-compatible servers and LangChain chat models."""

from ttc_graph.endpoints.base import (
    BaseEndpoint,
    ChatMessage,
    Continuation,
    Endpoint,
    EndpointWrapper,
    Generation,
    GenerationResult,
    RequestUsage,
    SamplingParams,
)
from ttc_graph.endpoints.langchain import LangChainEndpoint
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.endpoints.retry import RetryConfig, is_retryable, retry_after_seconds

__all__ = [
    "BaseEndpoint",
    "ChatMessage",
    "Continuation",
    "Endpoint",
    "EndpointWrapper",
    "Generation",
    "GenerationResult",
    "LangChainEndpoint",
    "OpenAIEndpoint",
    "RequestUsage",
    "RetryConfig",
    "SamplingParams",
    "is_retryable",
    "retry_after_seconds",
]
