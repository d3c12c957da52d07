"""Prompts the strategies send to the policy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from ttc_graph.endpoints.base import ChatMessage

__all__ = ["DEFAULT_SYSTEM_PROMPT", "chat_history", "message_text", "solve_messages"]

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def message_text(message: BaseMessage) -> str:
    """The text of a LangChain message (text blocks of a multi-part content joined)."""
    text = message.text
    return str(text) if isinstance(text, str) else str(message.content)


def chat_history(messages: Iterable[BaseMessage]) -> list[ChatMessage]:
    """Human and AI turns as the endpoint's chat messages (``user`` / ``assistant``).

    System, tool and other messages, and turns without text (an AI message that only calls tools), are left out:
    the strategy sends its own system prompt.
    """
    out: list[ChatMessage] = []
    for message in messages:
        role = "user" if isinstance(message, HumanMessage) else "assistant" if isinstance(message, AIMessage) else None
        text = message_text(message).strip() if role else ""
        if role and text:
            out.append({"role": role, "content": text})
    return out


def solve_messages(
    question: str,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    history: Sequence[ChatMessage] = (),
) -> list[ChatMessage]:
    """The chat messages that ask the policy to solve ``question``: system prompt, prior turns, the question."""
    messages: list[ChatMessage] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.extend({"role": m["role"], "content": m["content"]} for m in history)
    messages.append({"role": "user", "content": question})
    return messages
