"""``n`` samples of one prompt in one request to llama.cpp's native ``/completion``, with exact usage.

llama.cpp honours ``n`` on its OpenAI routes but reports one choice's completion tokens, so
:class:`~ttc_graph.endpoints.openai_compat.OpenAIEndpoint` sends ``n`` single requests there. Each single request
evaluates the shared prompt on its own slot: a search's ``M`` children of one beam cost the beam's prefix ``M``
times (beam search had 23% of its prompt tokens evaluated against best-of-N's single prompt). Its native
``/completion`` with ``n`` evaluates the prompt once, copies it to the children's slots, and returns one result per
child with ``tokens_predicted`` (what the server generated for it, counted by its tokenizer) and ``stop_type``, so
the ledger stays exact. The request waits until ``n`` slots are idle (and llama.cpp refuses ``n`` above its slots,
so a larger call is split into requests of at most that many), which suits searches that plan a round's children
together (beam search) better than ones whose slots free one at a time.

Used by ``OpenAIEndpoint(..., llamacpp_n=True)`` for calls with ``n > 1`` that ask for no tools and no logprobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttc_graph.endpoints.base import Generation, SamplingParams
from ttc_graph.endpoints.retry import AnswerLost

__all__ = ["completion_body", "parse_completion_results"]

_FINISH = {"limit": "length", "eos": "stop", "word": "stop"}


def completion_body(
    prompt: str, n: int, params: SamplingParams, *, slots: int | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body of one ``/completion`` request for ``n`` samples of ``prompt`` (the chat template applied,
    the partial answer appended). With ``slots`` and a slot hint, it runs on the hint's first slot (the one whose
    KV cache holds the prefix); the children's slots are the server's choice."""
    body: dict[str, Any] = {"prompt": prompt, "n": n, "cache_prompt": True, **(extra or {})}
    if params.max_tokens is not None:
        body["n_predict"] = params.max_tokens
    for key in ("temperature", "top_p", "seed"):
        value = getattr(params, key)
        if value is not None:
            body[key] = value
    if params.stop:
        body["stop"] = list(params.stop)
    slot = params.slots[0] if slots and params.slots else None
    if slots and slot is not None:
        body.setdefault("id_slot", int(slot) % slots)
    return body


def parse_completion_results(data: Any, n: int, what: str) -> tuple[list[Generation], int, int]:
    """The generations of a ``/completion`` answer, its prompt tokens (the prompt is evaluated once for all ``n``)
    and its completion tokens (the sum of each result's ``tokens_predicted``).

    Raises :class:`~ttc_graph.endpoints.retry.AnswerLost` for an answer that is not ``n`` results, each with its
    text and token count: the server may have generated them, so the endpoint retries it and charges the attempt
    to ``unconfirmed_tokens``.
    """
    results: Sequence[Any] = data if isinstance(data, list) else [data]
    try:
        ordered = sorted(results, key=lambda r: int(r.get("index", 0)))
        generations = [
            Generation(
                text=str(r["content"]),
                finish_reason=_FINISH.get(str(r.get("stop_type")), "stop" if r.get("stop") else None),
                completion_tokens=int(r["tokens_predicted"]),
                slot=int(r["id_slot"]) if isinstance(r.get("id_slot"), int) else None,
            )
            for r in ordered
        ]
        prompt = max((int(r.get("tokens_evaluated") or 0) for r in ordered), default=0)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise AnswerLost(f"{what} returned an unreadable result: {exc!r}") from exc
    if len(generations) != n:
        raise AnswerLost(f"{what} returned {len(generations)} results for n={n}")
    return generations, prompt, sum(g.completion_tokens or 0 for g in generations)
