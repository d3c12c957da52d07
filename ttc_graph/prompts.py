"""Prompts the strategies send to the policy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from langchain_core.messages import BaseMessage

from ttc_graph.messages import ChatMessage, message_text, to_wire_message

__all__ = ["DEFAULT_SYSTEM_PROMPT", "chat_history", "message_text", "solve_messages"]

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def chat_history(messages: Iterable[BaseMessage]) -> list[ChatMessage]:
    """A conversation as the endpoint's chat messages: system, human and AI turns, an AI turn's tool calls and the
    tool results that answer them (OpenAI's wire format). A turn with nothing to send (an empty AI message) is left
    out."""
    return [wire for message in messages if (wire := to_wire_message(message)) is not None]


def solve_messages(
    question: str,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    history: Sequence[ChatMessage] = (),
    followup: Sequence[ChatMessage] = (),
) -> list[ChatMessage]:
    """The chat messages that ask the policy to solve ``question``: one system message, the prior turns, the
    question, then ``followup`` (what came after the question: an agent's tool calls and their results).

    The conversation's own system messages and ``system_prompt`` are joined into one system message at the start
    (the conversation's first), since many chat templates take a single leading system message.
    """
    asked: ChatMessage = {"role": "user", "content": question}
    turns = [m.copy() for m in (*history, asked, *followup)]
    systems = [m["content"] for m in turns if m["role"] == "system" and m["content"].strip()]
    if system_prompt:
        systems.append(system_prompt)
    messages: list[ChatMessage] = [{"role": "system", "content": "\n\n".join(systems)}] if systems else []
    messages.extend(m for m in turns if m["role"] != "system")
    return messages
