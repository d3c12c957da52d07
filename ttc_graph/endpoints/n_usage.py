"""Whether a server's usage counts every choice of an ``n > 1`` request, judged once per server.

llama.cpp honours ``n`` but reports one choice's completion tokens (measured on the bundled build: ``n=4,
max_tokens=128`` gives 4 choices cut at 128 tokens, ``usage.completion_tokens == 128``, 512 tokens generated), so a
ledger fed from its usage under-counts. Before its first ``n > 1`` request to a server not judged yet, an endpoint
sends :data:`PROBE`: two choices of a counting prompt cut at :data:`PROBE_TOKENS` tokens each, so their true total
is known without trusting the server. Usage below it means the server under-counts and gets single requests
(whose usage is exact); otherwise ``n`` stays. The probe's own usage is charged like any request's, so the ledger
still equals what the server generated.

Token logprobs cannot serve as the count: llama.cpp leaves out the token that completed a stop string.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ttc_graph.endpoints.base import ChatMessage, Generation

__all__ = [
    "PROBE",
    "PROBE_TOKENS",
    "choice_tokens",
    "forget_verdicts",
    "judge_n_usage",
    "n_usage_verdict",
    "record_n_usage_verdict",
]

PROBE: tuple[ChatMessage, ...] = ({"role": "user", "content": "Count from 1 to 100, one number per line."},)
PROBE_TOKENS = 4

_lock = threading.Lock()
_verdicts: dict[tuple[str, str | None], bool] = {}


def n_usage_verdict(server: str, model: str | None = None) -> bool | None:
    """True: ``model`` on ``server`` counts every choice; False: it under-counts; None: not judged yet.

    A verdict is per model (one URL may route models to different backends); one recorded without a model holds
    for every model of the server that has none of its own."""
    with _lock:
        own = _verdicts.get((server, model))
        return own if own is not None or model is None else _verdicts.get((server, None))


def record_n_usage_verdict(server: str, exact: bool, model: str | None = None) -> None:
    """Record how ``model`` on ``server`` (every model of it, for None) counts the usage of ``n`` choices."""
    with _lock:
        _verdicts[(server, model)] = exact


def forget_verdicts() -> None:
    """Judge every server afresh (tests, or a server replaced behind the same URL)."""
    with _lock:
        _verdicts.clear()


def choice_tokens(generations: Sequence[Generation], max_tokens: int | None) -> tuple[int, bool]:
    """(completion tokens the choices took at least, whether every choice is accounted for).

    A choice cut off for length took ``max_tokens``; one with logprobs took at least as many tokens (a stop
    string's last token has none); of any other nothing is known.
    """
    floor = 0
    known = True
    for g in generations:
        if g.finish_reason == "length" and max_tokens is not None:
            floor += max(max_tokens, len(g.token_logprobs or ()))
        elif g.token_logprobs is not None:
            floor += len(g.token_logprobs)
        else:
            known = False
    return floor, known


def judge_n_usage(reported: int, generations: Sequence[Generation], max_tokens: int | None) -> bool | None:
    """Whether ``reported`` completion tokens cover every choice of one response (None: cannot tell)."""
    if len(generations) < 2:
        return None
    floor, known = choice_tokens(generations, max_tokens)
    if reported < floor:
        return False
    return True if known else None
