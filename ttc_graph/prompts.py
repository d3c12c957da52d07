"""Prompts the strategies send to the policy."""

from __future__ import annotations

from ttc_graph.endpoints.base import ChatMessage

__all__ = ["DEFAULT_SYSTEM_PROMPT", "solve_messages"]

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def solve_messages(question: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> list[ChatMessage]:
    """The chat messages that ask the policy to solve ``question``."""
    messages: list[ChatMessage] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": question})
    return messages
