"""Counting what the model calls inside an agent run cost: a LangChain callback handler attached to the run's config."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from ttc_graph.usage import RequestUsage

__all__ = ["UsageCallbackHandler", "usage_of"]


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _from_token_usage(raw: Mapping[str, Any]) -> tuple[int, int]:
    """Prompt and completion tokens of an ``llm_output`` usage dict (OpenAI or Anthropic style keys)."""
    prompt = raw.get("prompt_tokens", raw.get("input_tokens"))
    completion = raw.get("completion_tokens", raw.get("output_tokens"))
    return _int(prompt), _int(completion)


def usage_of(response: LLMResult) -> tuple[RequestUsage, int]:
    """What one model call cost, and how many of its requests reported no usage at all.

    ``response.generations`` holds one list of choices per request. A request's usage is the ``usage_metadata`` of
    its first choice that has one (a provider that returns several choices repeats the request's usage on each, so it
    is counted once per request, never once per choice); without any, the call's ``llm_output["token_usage"]``.
    """
    requests = max(1, len(response.generations))
    usage = RequestUsage(requests=requests)
    metered = 0
    for choices in response.generations:
        for choice in choices:
            message = getattr(choice, "message", None)
            meta = message.usage_metadata if isinstance(message, BaseMessage) else None  # type: ignore[attr-defined]
            if meta:
                usage.prompt_tokens += _int(meta.get("input_tokens"))
                usage.completion_tokens += _int(meta.get("output_tokens"))
                metered += 1
                break
    if metered:
        return usage, requests - metered
    output = response.llm_output or {}
    raw = output.get("token_usage") or output.get("usage")
    if isinstance(raw, Mapping) and raw:
        usage.prompt_tokens, usage.completion_tokens = _from_token_usage(raw)
        return usage, 0
    return usage, requests


class UsageCallbackHandler(BaseCallbackHandler):
    """Adds up every model call made under the config it is attached to (inherited by nested runs).

    ``usage`` counts answered requests, their prompt and completion tokens (:func:`usage_of`) and, apart, the failed
    requests (``on_llm_error``); ``unmetered``
    counts requests whose response carried no usage (a streamed OpenAI response without ``stream_usage``), which the
    ledger cannot price. Thread-safe: a sync agent's tools and models may run in worker threads.
    """

    run_inline = True  # counted before the run returns, in the caller's thread or loop

    def __init__(self) -> None:
        super().__init__()
        self.usage = RequestUsage()
        self.unmetered = 0
        self._lock = threading.Lock()

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        spent, unmetered = usage_of(response)
        with self._lock:
            self.usage.add(spent)
            self.unmetered += unmetered

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        with self._lock:
            self.usage.add(RequestUsage(failed_requests=1))  # as the ledger counts a failed request

    def snapshot(self) -> RequestUsage:
        """A copy of the usage so far."""
        with self._lock:
            return dataclasses.replace(self.usage)
