"""Chat messages as every endpoint sends them: OpenAI's wire format, tool calls and tool results included.

This module depends on nothing but the standard library and langchain-core's message types, so the state, the
prompts and the endpoints all share it without importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolCall, ToolMessage

from ttc_graph.errors import ConfigurationError

__all__ = [
    "ChatMessage",
    "WireToolCall",
    "from_wire_tool_calls",
    "message_text",
    "render_transcript",
    "to_langchain_messages",
    "to_wire_message",
    "to_wire_tool_calls",
]


_MAX_TOOL_OUTPUT = 2000


class WireToolCall(TypedDict):
    """A tool call as the OpenAI chat API sends it (``arguments`` is a JSON string)."""

    id: str
    type: str
    function: dict[str, str]


class ChatMessage(TypedDict):
    """One message of a request: ``role`` and ``content``; an assistant turn may carry ``tool_calls`` and a ``tool``
    turn answers the call named by ``tool_call_id``."""

    role: str
    content: str
    tool_calls: NotRequired[list[WireToolCall]]
    tool_call_id: NotRequired[str]
    name: NotRequired[str]


def message_text(message: BaseMessage) -> str:
    """The text of a LangChain message (text blocks of a multi-part content joined)."""
    text = message.text
    return str(text) if isinstance(text, str) else str(message.content)


def to_wire_tool_calls(calls: Iterable[Mapping[str, Any]]) -> list[WireToolCall]:
    """LangChain tool calls (``name``, ``args``, ``id``) in the OpenAI wire format; a call without an id gets one
    from its position, so a tool result can name it."""
    out: list[WireToolCall] = []
    for i, call in enumerate(calls):
        args = call.get("args")
        arguments = args if isinstance(args, str) else json.dumps(args if args is not None else {}, ensure_ascii=False)
        out.append(
            {"id": str(call.get("id") or f"call_{i}"), "type": "function",
             "function": {"name": str(call["name"]), "arguments": arguments}}
        )  # fmt: skip
    return out


def from_wire_tool_calls(calls: Iterable[Any]) -> list[ToolCall]:
    """Tool calls of an API answer (dicts or the openai SDK's objects) in LangChain's shape. Arguments that are not
    a JSON object are kept as ``{"__raw__": text}``, so a schema check sees them and refuses them."""
    out: list[ToolCall] = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, Mapping) else getattr(call, "function", None)
        name = (fn.get("name") if isinstance(fn, Mapping) else getattr(fn, "name", None)) or ""
        raw = fn.get("arguments") if isinstance(fn, Mapping) else getattr(fn, "arguments", None)
        cid = call.get("id") if isinstance(call, Mapping) else getattr(call, "id", None)
        args: Any
        if isinstance(raw, Mapping):
            args = dict(raw)
        else:
            try:
                args = json.loads(raw) if raw else {}
            except (TypeError, ValueError):
                args = {"__raw__": raw}
            if not isinstance(args, dict):
                args = {"__raw__": raw}
        out.append(ToolCall(name=str(name), args=args, id=str(cid or f"call_{i}"), type="tool_call"))
    return out


def to_wire_message(message: BaseMessage) -> ChatMessage | None:
    """A LangChain message as a request message: system, human, AI (with its tool calls) and tool results; None
    for a message with nothing to send (an empty AI turn, an unknown kind)."""
    text = message_text(message)
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": text}
    if isinstance(message, HumanMessage):
        return {"role": "user", "content": text}
    if isinstance(message, ToolMessage):
        return {"role": "tool", "content": text, "tool_call_id": message.tool_call_id}
    if isinstance(message, AIMessage):
        out: ChatMessage = {"role": "assistant", "content": text}
        if message.tool_calls:
            out["tool_calls"] = to_wire_tool_calls(message.tool_calls)
        elif not text.strip():
            return None
        return out
    return None


def to_langchain_messages(messages: Sequence[ChatMessage]) -> list[BaseMessage]:
    """Request messages as LangChain messages (the inverse of :func:`to_wire_message`)."""
    out: list[BaseMessage] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            out.append(SystemMessage(content=m["content"]))
        elif role in ("user", "human"):
            out.append(HumanMessage(content=m["content"]))
        elif role == "assistant":
            calls = from_wire_tool_calls(m.get("tool_calls") or [])
            out.append(AIMessage(content=m["content"], tool_calls=calls))
        elif role == "tool":
            out.append(ToolMessage(content=m["content"], tool_call_id=m.get("tool_call_id") or ""))
        else:
            raise ConfigurationError(f"messages: unknown role {role!r}")
    return out


def render_transcript(messages: Sequence[BaseMessage]) -> str:
    """A run's messages as plain text for a judge: each turn by role, tool calls with their arguments, tool results
    (each cut at 2000 characters)."""
    lines: list[str] = []
    for m in messages:
        text = message_text(m).strip()
        if isinstance(m, AIMessage):
            if text:
                lines.append(f"Assistant: {text}")
            for call in m.tool_calls:
                lines.append(f"Assistant calls {call['name']}({json.dumps(call['args'], ensure_ascii=False)})")
        elif isinstance(m, ToolMessage):
            shown = text if len(text) <= _MAX_TOOL_OUTPUT else text[:_MAX_TOOL_OUTPUT] + " [...]"
            lines.append(f"Tool {m.name or ''} returned: {shown}".replace("Tool  ", "Tool "))
        elif isinstance(m, HumanMessage):
            lines.append(f"User: {text}")
        elif isinstance(m, SystemMessage):
            lines.append(f"System: {text}")
        else:
            lines.append(f"{m.type}: {text}")
    return "\n".join(lines)
