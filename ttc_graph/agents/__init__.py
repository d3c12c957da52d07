"""Test-time compute for agents: a drop-in chat model that votes over actions, best-of-N over whole LangGraph agent
runs, their usage, a safe calculator tool."""

from ttc_graph.agents.calculator import CalculatorError, calculate, calculator, evaluate
from ttc_graph.agents.chat_model import TestTimeChatModel
from ttc_graph.agents.runs import (
    AgentFactory,
    AgentRunCandidate,
    AgentRunsInput,
    AgentRunsOutput,
    AgentRunsState,
    AgentSelection,
    create_agent_best_of_n,
    new_messages,
)
from ttc_graph.agents.scoring import RunOutcome, RunVerifier, check_run_score, render_transcript
from ttc_graph.agents.usage_callback import UsageCallbackHandler, usage_of

__all__ = [
    "AgentFactory",
    "AgentRunCandidate",
    "AgentRunsInput",
    "AgentRunsOutput",
    "AgentRunsState",
    "AgentSelection",
    "CalculatorError",
    "RunOutcome",
    "RunVerifier",
    "TestTimeChatModel",
    "UsageCallbackHandler",
    "calculate",
    "calculator",
    "check_run_score",
    "create_agent_best_of_n",
    "evaluate",
    "new_messages",
    "render_transcript",
    "usage_of",
]
