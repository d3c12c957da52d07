"""The OpenAI chat-completions wire format: request validation and the bodies and chunks ttc serve answers with."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttc_graph.messages import WireToolCall, from_wire_tool_calls
from ttc_graph.server.errors import APIError

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "check_text_encoding",
    "chunk",
    "completion",
    "new_completion_id",
    "parse_json",
    "parse_request",
    "request_tools",
    "strategy_input",
    "unsupported_by_strategies",
]

# Parameters a strategy ignores harmlessly (bookkeeping), whatever their value.
_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls", "stream_options"})
# Parameters a strategy takes from the request as they are (read by :func:`request_tools`).
_TAKEN = frozenset({"tools", "tool_choice"})
# Parameters whose OpenAI default a strategy honours; any other value is refused.
_DEFAULTS: dict[str, Any] = {"top_p": 1, "presence_penalty": 0, "frequency_penalty": 0, "n": 1, "logprobs": False}


class ChatMessage(BaseModel):
    """One message of the conversation (extra fields such as ``tool_calls`` are kept for the checks)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of a chat-completions request that ttc serve reads; the rest stay in ``model_extra``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # strict: a bool or a string is not a number here, whatever JSON coercion would make of it
    temperature: float | None = Field(None, ge=0, le=2, strict=True, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(None, ge=1, strict=True)
    seed: int | None = Field(None, strict=True)
    n: int | None = Field(None, ge=1, strict=True)
    ttc: Any = None

    @property
    def length(self) -> int | None:
        """The per-sample length asked for (``max_completion_tokens`` wins over the older ``max_tokens``)."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def parse_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says why not."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise APIError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise APIError(400, f"The request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    check_text_encoding(data)
    return data


def check_text_encoding(value: Any, where: str = "") -> None:
    """A 400 naming the field when a string of ``value`` cannot be sent as UTF-8 (a lone surrogate such as
    ``"\\ud800"``, which JSON can spell but no upstream can read); checked before anything is sent."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise APIError(
                400,
                f"{where or 'body'}: the text is not valid Unicode ({exc.reason} at character {exc.start})",
                param=where or None,
                code="invalid_encoding",
            ) from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text_encoding(key, where)
            check_text_encoding(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text_encoding(item, f"{where}.{i}" if where else str(i))


def parse_request(data: Mapping[str, Any]) -> ChatRequest:
    """A validated request; the first problem is a 400 naming its field."""
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise APIError(400, f"{param}: {first['msg']}", param=param or None) from exc


def unsupported_by_strategies(request: ChatRequest) -> None:
    """Raise a 400 for what a strategy cannot honour: tools, ``n > 1``, logprobs, stop strings, non-text input..."""
    for key, value in (request.model_extra or {}).items():
        if key in _IGNORED or key in _TAKEN or value is None or value is False or value == [] or value == {}:
            continue
        if key in _DEFAULTS and value == _DEFAULTS[key]:
            continue
        raise APIError(
            400,
            f"{key}: a ttc strategy preset cannot honour '{key}'; call the upstream model without a preset "
            "to pass the request through",
            param=key,
            code="unsupported_parameter",
        )
    if request.n not in (None, 1):
        raise APIError(
            400, "n: a strategy returns one choice; use ttc.n for the number of samples", param="n",
            code="unsupported_parameter",
        )  # fmt: skip
    for i, message in enumerate(request.messages):
        extra = message.model_extra or {}
        if message.role == "function" or extra.get("function_call"):
            raise APIError(
                400, f"messages.{i}: the legacy function-call format cannot go through a strategy preset; use"
                " tool_calls", param=f"messages.{i}", code="unsupported_parameter",
            )  # fmt: skip
        if message.role == "tool" and not isinstance(extra.get("tool_call_id"), str):
            raise APIError(400, f"messages.{i}.tool_call_id: a tool message must name its call",
                           param=f"messages.{i}.tool_call_id")  # fmt: skip
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if part.get("type") != "text":
                    raise APIError(
                        400, f"messages.{i}.content.{j}: only text parts go through a strategy preset",
                        param=f"messages.{i}.content.{j}", code="unsupported_parameter",
                    )  # fmt: skip


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return "".join(str(part.get("text") or "") for part in message.content)
    return message.content or ""


def request_tools(request: ChatRequest) -> tuple[list[dict[str, Any]] | None, str | dict[str, Any] | None]:
    """The request's ``tools`` and ``tool_choice``, checked; a 400 naming the field otherwise."""
    extra = request.model_extra or {}
    tools, choice = extra.get("tools"), extra.get("tool_choice")
    valid = isinstance(tools, list) and all(
        isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
        for t in tools
    )
    if tools is not None and not valid:
        raise APIError(400, "tools: expected a list of {'type': 'function', 'function': {'name', ...}}", param="tools")
    if choice is not None and not tools:
        raise APIError(400, "tool_choice: only allowed when tools are given", param="tool_choice")
    if choice is not None and not (isinstance(choice, dict) or choice in ("auto", "none", "required")):
        raise APIError(400, f"tool_choice: expected 'auto', 'none', 'required' or a dict, got {choice!r}",
                       param="tool_choice")  # fmt: skip
    return (tools or None), (choice if tools else None)


def strategy_input(request: ChatRequest) -> tuple[list[BaseMessage], str | None]:
    """The conversation as LangChain messages (tool calls and tool results included), and the system prompt the
    client gave (None: the preset's)."""
    system = [_text(m) for m in request.messages if m.role in ("system", "developer")]
    turns: list[BaseMessage] = []
    for message in request.messages:
        extra = message.model_extra or {}
        if message.role == "user":
            turns.append(HumanMessage(_text(message)))
        elif message.role == "assistant":
            calls = from_wire_tool_calls(extra.get("tool_calls") or [])
            turns.append(AIMessage(_text(message), tool_calls=calls))
        elif message.role == "tool":
            turns.append(ToolMessage(_text(message), tool_call_id=str(extra.get("tool_call_id"))))
    if not any(m.role == "user" and _text(m).strip() for m in request.messages):
        raise APIError(400, "messages: a strategy needs a user message with text to answer", param="messages")
    return turns, ("\n\n".join(system) if system else None)


def new_completion_id() -> str:
    return f"chatcmpl-ttc-{uuid.uuid4().hex[:24]}"


def completion(
    cid: str,
    model: str,
    content: str,
    finish_reason: str,
    usage: dict[str, Any],
    ttc: dict[str, Any],
    tool_calls: list[WireToolCall] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` body: one choice (with its ``tool_calls`` in the wire format when it is an action),
    the run's usage, and the ``ttc`` extension field."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
        message["content"] = content or None
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage,
        "ttc": ttc,
    }


def chunk(
    cid: str,
    model: str,
    delta: dict[str, Any] | None,
    *,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    ttc: dict[str, Any] | None = None,
) -> str:
    """One ``chat.completion.chunk`` as SSE data: a delta, or (``delta=None``) the final usage chunk."""
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    if ttc is not None:
        body["ttc"] = ttc
    return json.dumps(body, ensure_ascii=False)
