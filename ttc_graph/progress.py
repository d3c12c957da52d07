"""The progress event every controller streams: one ``ttc.round`` per round, as a LangGraph custom stream event.

A strategy's controller writes one :class:`ProgressEvent` each time it plans a round (and once when it stops) with
``runtime.stream_writer`` or :func:`langgraph.config.get_stream_writer`; consumers (the ``ttc`` progress bar, the
server's run events, the chat model's reasoning lines) read it with ``stream_mode="custom"`` and
:func:`read_progress`.

``drawn`` of ``total`` is the run's progress in solutions: samples drawn (best-of-N, adaptive, agent runs),
attempts made (revisions), paths finished (step searches) or probes drawn (the compute-optimal router, whose routed
strategy then streams its own events from its subgraph). A strategy adds its own details (``beams``, ``chains``,
``candidates``, ...) as further keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Required, TypedDict, cast

from ttc_graph.tracing import note_round

__all__ = ["ROUND_EVENT", "ProgressEvent", "read_progress", "round_event", "truncated_count"]

ROUND_EVENT = "ttc.round"


class ProgressEvent(TypedDict, total=False):
    """One round of a run (extra keys: the strategy's own details)."""

    event: Required[Literal["ttc.round"]]
    round: Required[int]
    """The round planned now (0 first)."""
    drawn: Required[int]
    """Solutions finished so far (samples, attempts, paths or probes)."""
    total: Required[int]
    """Solutions the run may finish in all: the length of a progress bar."""
    planned: int
    """Requests (or samples) this round sends."""
    stop: str | None
    """Why the run stops now (``complete``, ``budget:*``, ``decisive``, ``error``), or None while it goes on."""
    usage: dict[str, Any]
    """The run's usage ledger so far."""
    truncated: int
    """Solutions so far cut off at the length limit (``finish_reason == "length"``): they lose the vote (best-of-N,
    adaptive and revisions controllers count them)."""


def round_event(
    round_: int,
    *,
    drawn: int,
    total: int,
    planned: int = 0,
    stop: str | None = None,
    usage: Mapping[str, Any] | None = None,
    truncated: int | None = None,
    **details: Any,
) -> ProgressEvent:
    """A ``ttc.round`` event (``details``: the strategy's own keys; ``truncated`` when the controller counts it);
    also the boundary of the run's round spans (:func:`ttc_graph.tracing.note_round`)."""
    event = {
        "event": ROUND_EVENT,
        "round": int(round_),
        "drawn": int(drawn),
        "total": int(total),
        "planned": int(planned),
        "stop": stop,
        "usage": dict(usage or {}),
        **({} if truncated is None else {"truncated": int(truncated)}),
        **details,
    }
    note_round(event)  # the run's round spans follow its progress events
    return cast(ProgressEvent, event)


def truncated_count(candidates: Iterable[Mapping[str, Any]] | None) -> int:
    """How many of ``candidates`` stopped at the length limit (``finish_reason == "length"``)."""
    return sum(1 for c in candidates or () if c.get("finish_reason") == "length")


def read_progress(chunk: Any) -> ProgressEvent | None:
    """``chunk`` as a progress event when it is one (a custom stream chunk), else None."""
    if not isinstance(chunk, Mapping) or chunk.get("event") != ROUND_EVENT:
        return None
    if not isinstance(chunk.get("round"), int) or not isinstance(chunk.get("drawn"), int):
        return None
    if not isinstance(chunk.get("total"), int):
        return None
    return cast(ProgressEvent, chunk)
