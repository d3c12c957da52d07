"""The policy-endpoint interface: what every model backend returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict, runtime_checkable

from ttc_graph.usage import RequestUsage  # re-exported: the usage types live in ttc_graph.usage

__all__ = [
    "ChatMessage",
    "Continuation",
    "Endpoint",
    "Generation",
    "GenerationResult",
    "RequestUsage",
    "SamplingParams",
]

Continuation = Literal["auto", "completions", "prefill", "prompt"]
"""How an endpoint continues a partial assistant answer.

``completions``: raw prompt on ``/v1/completions`` with the chat template rendered by the server or client;
``prefill``: a trailing assistant message that the server continues; ``prompt``: a chat-only fallback that shows
the partial solution and asks for the next step.
"""


class ChatMessage(TypedDict):
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request sampling knobs."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    """One sampled completion."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None
    token_logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[dict[str, float], ...] | None = None

    @property
    def tokens(self) -> int | None:
        if self.token_logprobs is not None:
            return len(self.token_logprobs)
        return self.completion_tokens


@dataclass(slots=True)
class GenerationResult:
    """The generations of one logical call plus its usage."""

    generations: list[Generation] = field(default_factory=list)
    usage: RequestUsage = field(default_factory=RequestUsage)
    errors: list[str] = field(default_factory=list)


@runtime_checkable
class Endpoint(Protocol):
    """A policy model: anything that samples chat completions asynchronously."""

    @property
    def name(self) -> str: ...

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        """Sample ``n`` completions of ``messages``.

        ``prefix`` is a partial assistant answer to continue; the returned text is only the continuation.
        A request that fails for good is reported in ``errors`` with its usage kept, not raised, when at
        least one generation succeeded; when all fail an :class:`~ttc_graph.errors.EndpointError` is raised.
        """
        ...
