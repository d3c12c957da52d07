"""One strategy run behind a request: the graph streamed in its own task, progress events, the outcome or the error."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
from langgraph.types import Overwrite

from ttc_graph.budget import policy_generations
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.messages import WireToolCall, to_wire_tool_calls
from ttc_graph.nodes.select import NO_ANSWER
from ttc_graph.selection import answer_groups
from ttc_graph.server.allowance import open_allowance
from ttc_graph.server.config import Limits
from ttc_graph.server.errors import APIError, from_endpoint_error
from ttc_graph.server.planning import RunPlan
from ttc_graph.server.upstream import track_failures
from ttc_graph.state import Candidate, upsert_candidates

__all__ = ["Outcome", "Progress", "StrategyRun", "openai_usage"]

logger = logging.getLogger("ttc_graph.server")
_CANCEL_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class Progress:
    """Something a client may watch while the run goes on: ``text`` for people, ``data`` for programs."""

    text: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The selected solution and what the run cost (``usage`` is the run's ledger)."""

    content: str
    finish_reason: str
    answer: str | None
    tool_calls: list[WireToolCall] = field(default_factory=list)  # the chosen action (OpenAI's wire format)
    usage: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
    errors: list[str] = field(default_factory=list)
    candidates: int = 0
    chosen_tokens: int | None = None
    fallback: bool = False
    truncated: int = 0


@dataclass(frozen=True, slots=True)
class _Failed:
    error: APIError


def openai_usage(ledger: dict[str, Any], chosen_tokens: int | None) -> dict[str, Any]:
    """The OpenAI ``usage`` of a run: the sums over every upstream request (policy and verifier), and in ``ttc``
    the generations, the per-kind breakdown and the cost in dollars (0 where the upstream model has no known
    price). Completion tokens beyond the returned solution count as reasoning."""
    prompt = int(ledger.get("prompt_tokens", 0))
    completion = int(ledger.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": max(0, completion - (chosen_tokens or 0))},
        "ttc": {
            "generations": int(ledger.get("generations", 0)),
            "requests": int(ledger.get("requests", 0)),
            "failed_requests": int(ledger.get("failed_requests", 0)),
            "by_kind": ledger.get("by_kind", {}),
            "seconds": round(float(ledger.get("seconds", 0.0)), 3),
            "cost": round(float(ledger.get("cost", 0.0)), 8),
        },
    }


def _leader(candidates: list[Candidate]) -> tuple[str | None, int, int]:
    groups = answer_groups(candidates)
    parsable = sum(g.votes for g in groups)
    best = max(groups, key=lambda g: g.votes, default=None)
    return (best.answer, best.votes, parsable) if best else (None, 0, parsable)


def _round_progress(event: dict[str, Any], candidates: list[Candidate]) -> Progress:
    usage = event.get("usage") or {}
    drawn = policy_generations(usage)
    answer, votes, parsable = _leader(candidates)
    data = {
        "event": "round",
        "round": event.get("round"),
        "drawn": drawn,
        "planned": event.get("planned", 0),
        "stop": event.get("stop"),
        "leading_answer": answer,
        "leading_votes": votes,
        "truncated": int(event.get("truncated") or 0),
        "usage": {k: int(usage.get(k, 0)) for k in ("requests", "prompt_tokens", "completion_tokens")},
    }
    parts = [f"Round {data['round']}: {drawn} generations drawn"]
    if data["planned"]:
        parts.append(f"{data['planned']} more planned")
    if "beams" in event:
        parts.append(f"{len(event['beams'])} live beams")
    if answer is not None:
        parts.append(f"leading answer {answer} ({votes} of {parsable} votes)")
    spent = data["usage"]
    parts.append(f"{spent['prompt_tokens']}+{spent['completion_tokens']} tokens in {spent['requests']} requests")
    text = ", ".join(parts) + (f"; stopping: {event['stop']}" if event.get("stop") else "") + ".\n"
    return Progress(text, data)


def _candidate_progress(cand: Candidate) -> Progress:
    data = {"event": "candidate", "id": cand["id"], "answer": cand["answer"], "tokens": cand.get("tokens")}
    answer = cand["answer"] if cand["answer"] is not None else "none found"
    return Progress(f"Sample {cand['id']}: answer {answer} ({cand.get('tokens') or 0} tokens).\n", data)


class StrategyRun:
    """Run ``graph`` on a plan in a task of its own; :meth:`events` yields :class:`Progress` then the
    :class:`Outcome`, or raises an :class:`APIError`. Leaving the ``async with`` cancels an unfinished run, and so
    its upstream requests. ``time_limit`` is a hard stop (seconds) beyond the budget's own; ``limits`` bound the
    run's upstream requests and tokens of every kind (:mod:`ttc_graph.server.allowance`)."""

    def __init__(self, graph: Any, plan: RunPlan, *, time_limit: float, limits: Limits | None = None) -> None:
        self.graph = graph
        self.plan = plan
        self.time_limit = time_limit
        self.limits = limits
        self._queue: asyncio.Queue[Progress | Outcome | _Failed] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.task_context: contextvars.Context | None = None
        """The context its task starts from: the incoming trace (:func:`ttc_graph.tracing.context_from_headers`)."""

    async def __aenter__(self) -> StrategyRun:
        name = f"ttc-run-{self.plan.preset.name}"
        self._task = asyncio.create_task(self._produce(), name=name, context=self.task_context)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # Shielded: the caller may itself be cancelled (a client that went away); the run still ends here.
            with anyio.CancelScope(shield=True):
                await asyncio.wait([task], timeout=_CANCEL_WAIT)
            logger.info("run of %s cancelled", self.plan.preset.name)

    async def events(self) -> AsyncIterator[Progress | Outcome]:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Failed):
                raise item.error
            yield item
            if isinstance(item, Outcome):
                return

    async def outcome(self) -> Outcome:
        """Wait for the outcome, dropping progress."""
        async for item in self.events():
            if isinstance(item, Outcome):
                return item
        raise APIError(500, "the run ended without an outcome")  # pragma: no cover

    async def _produce(self) -> None:
        failures = track_failures()
        if self.limits is not None:  # every upstream request of the run, verifier's included, within the caps
            open_allowance(self.limits.run_requests, self.limits.tokens)
        try:
            async with asyncio.timeout(self.time_limit):
                outcome = await self._stream(failures)
            self._queue.put_nowait(outcome)
        except APIError as exc:
            self._queue.put_nowait(_Failed(exc))
        except TimeoutError:
            self._queue.put_nowait(_Failed(APIError(504, f"the run took over {self.time_limit:g} s", code="timeout")))
        except EndpointError as exc:
            self._queue.put_nowait(_Failed(from_endpoint_error(exc)))
        except ConfigurationError as exc:
            self._queue.put_nowait(_Failed(APIError(400, str(exc), code="invalid_spec")))
        except Exception as exc:
            logger.exception("run of %s failed", self.plan.preset.name)
            self._queue.put_nowait(_Failed(APIError(500, f"the run failed: {type(exc).__name__}", code="run_error")))

    async def _stream(self, failures: list[EndpointError]) -> Outcome:
        pools: dict[tuple[str, ...], list[Candidate]] = {}
        seen: set[str] = set()
        final: dict[str, Any] = {}
        stream = self.graph.astream(
            {"messages": self.plan.messages},
            context=self.plan.context,
            stream_mode=["custom", "updates", "values"],
            subgraphs=True,
        )
        async for namespace, mode, data in stream:
            ns = tuple(namespace)
            if mode == "values" and not ns:
                final = data
            elif mode == "updates":
                for update in data.values():
                    written = update.get("candidates") if isinstance(update, dict) else None
                    if isinstance(written, Overwrite):
                        pools[ns] = list(written.value or [])
                    elif written:
                        for cand in written:
                            if cand["id"] not in seen:
                                seen.add(cand["id"])
                                self._queue.put_nowait(_candidate_progress(cand))
                        pools[ns] = upsert_candidates(pools.get(ns), written)
            elif mode == "custom" and isinstance(data, dict) and data.get("event") == "ttc.round":
                self._queue.put_nowait(_round_progress(data, pools.get(ns, [])))
        return self._outcome(final, failures)

    def _outcome(self, final: dict[str, Any], failures: list[EndpointError]) -> Outcome:
        candidates: list[Candidate] = [c for c in final.get("candidates") or [] if c.get("text") or c.get("tool_calls")]
        errors = [str(e) for e in final.get("errors") or []]
        stop = final.get("stop_reason")
        if not candidates:
            if failures:
                raise from_endpoint_error(failures[-1])
            if stop == "budget:seconds":
                raise APIError(504, "the run reached its time budget before any sample finished", code="timeout")
            detail = errors[0] if errors else "no sample was drawn"
            raise APIError(502, f"the strategy produced no answer: {detail}", code="upstream_error")
        messages = final.get("messages") or []
        reply = messages[-1] if messages else None
        content = str(reply.content) if reply is not None else NO_ANSWER
        calls = list(getattr(reply, "tool_calls", None) or [])
        if calls:
            chosen = next((c for c in candidates if c.get("tool_calls") == calls), None)
        else:
            chosen = next((c for c in candidates if c["text"] == content), None)
        fallback = chosen is None and content == NO_ANSWER
        if fallback:  # no final answer could be extracted: the first sample rather than no reply at all
            chosen = candidates[0]
            content = chosen["text"]
        finish = "length" if chosen and chosen.get("finish_reason") == "length" else "stop"
        return Outcome(
            content=content,
            finish_reason="tool_calls" if calls else finish,
            tool_calls=to_wire_tool_calls(calls),
            answer=final.get("answer"),
            usage=dict(final.get("usage") or {}),
            stop_reason=stop,
            errors=errors,
            candidates=len(candidates),
            chosen_tokens=chosen.get("tokens") if chosen else None,
            fallback=fallback,
            truncated=sum(1 for c in candidates if c.get("finish_reason") == "length"),
        )
