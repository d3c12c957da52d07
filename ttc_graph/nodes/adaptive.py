"""Best-of-N sampling as completions arrive: a window of requests in flight, a stopping rule checked on each arrival.

A LangGraph super-step waits for every task in it, so sampling in rounds (one ``Send`` per sample) idles the server
while the slowest sample of a round finishes. The windowed ``propose`` node runs the window itself: it keeps ``window``
requests in flight, starts a new one the moment one finishes, consults :func:`decisive` (the budget controller's
pure stopping rule) on every arrival, and cancels what is still in flight once the leader is decisive, charging the
ledger with what the server generated before the cancellation. Each arrival is appended to a durable log (a LangGraph
``@task`` whose result the checkpointer saves as it completes), so a run resumed after a crash replays the samples
that had arrived and only requests the rest.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Protocol, runtime_checkable

from langgraph.config import get_config
from langgraph.func import task
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from ttc_graph.answers import group_answers
from ttc_graph.budget import usage_delta
from ttc_graph.endpoints.base import ChatMessage, Endpoint, GenerationResult, SamplingParams
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.nodes.propose import failure, make_candidate, task_messages, task_tools
from ttc_graph.selection import leader_probability
from ttc_graph.state import Candidate
from ttc_graph.usage import RequestUsage

__all__ = [
    "STOP_RULES",
    "AdaptiveStop",
    "SampleTask",
    "StopRule",
    "StreamingEndpoint",
    "decisive",
    "make_sample_node",
    "window_for",
]

StopRule = Literal["beta", "top2", "margin"]
STOP_RULES: tuple[StopRule, ...] = ("beta", "top2", "margin")


@dataclass(frozen=True, slots=True)
class AdaptiveStop:
    """Stop sampling once the leading answer is decisive, judged on every arrival once ``min_samples`` arrived.

    ``rule``: ``beta`` — P(the leader's true share > 1/2) >= ``confidence`` under a Beta posterior on the votes (the
    leader against all others); ``top2`` — P(the leader's share > the runner-up's) >= ``confidence`` from the two
    answers' votes alone; ``margin`` — the leader leads the runner-up by ``margin`` votes, or with ``margin=None``
    by more than the samples still to come (majority vote over all ``n`` can no longer change: nothing lost).
    ``window``: requests kept in flight (None: the endpoint's ``max_concurrency``, at most ``n``).
    """

    confidence: float = 0.95
    min_samples: int = 4
    window: int | None = None
    rule: StopRule = "beta"
    margin: int | None = None

    def __post_init__(self) -> None:
        conf = self.confidence
        if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0.5 < conf < 1:
            raise ConfigurationError(f"confidence: must be a number in (0.5, 1), got {conf!r}")
        for name in ("min_samples", "window", "margin"):
            value = getattr(self, name)
            if value is None and name != "min_samples":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name}: must be an integer >= 1, got {value!r}")
        if self.rule not in STOP_RULES:
            raise ConfigurationError(f"rule: unknown {self.rule!r}; use one of {', '.join(STOP_RULES)}")

    def check(self, n: int, generations: int | None = None) -> None:
        """Refuse a ``min_samples`` above ``n`` or a ``window`` larger than the budget (``n``, or fewer generations)."""
        if self.min_samples > n:
            raise ConfigurationError(f"min_samples: {self.min_samples} is above n={n}; the rule could never be judged")
        allowed = min(n, generations) if generations is not None else n
        if self.window is not None and self.window > allowed:
            what = f"n={n}" if allowed == n else f"the budget's {allowed} generations"
            raise ConfigurationError(f"window: {self.window} is larger than the budget ({what})")


def decisive(votes: Sequence[int], drawn: int, n: int, stop: AdaptiveStop) -> bool:
    """Whether ``stop``'s rule holds for these vote counts (one per answer) after ``drawn`` of ``n`` samples."""
    if drawn < stop.min_samples or not votes:
        return False
    ranked = sorted(votes, reverse=True)
    lead = ranked[0] - (ranked[1] if len(ranked) > 1 else 0)
    if stop.rule == "beta":
        return leader_probability(ranked) >= stop.confidence
    if stop.rule == "top2":
        return leader_probability(ranked[:2]) >= stop.confidence
    return lead > n - drawn if stop.margin is None else lead >= stop.margin


def window_for(policy: object, n: int, stop: AdaptiveStop | None) -> int:
    """Requests to keep in flight: the rule's ``window``, else the endpoint's ``max_concurrency``, at most ``n``."""
    if stop is not None and stop.window is not None:
        return min(stop.window, n)
    limit = getattr(policy, "max_concurrency", None)
    return max(1, min(n, limit)) if isinstance(limit, int) and not isinstance(limit, bool) and stop else n


@runtime_checkable
class StreamingEndpoint(Protocol):
    """An endpoint that streams one sample and counts it in ``meter`` as it arrives.

    ``meter.requests`` is set once the request is sent and ``meter.completion_tokens`` grows by one per token
    received, so a caller that cancels the call knows what the server generated up to then.
    """

    async def stream_one(
        self, messages: Sequence[ChatMessage], *, params: SamplingParams, meter: RequestUsage
    ) -> GenerationResult: ...


class SampleTask(TypedDict):
    """What the windowed ``propose`` node must draw (the ``Send`` payload the budget controller plans)."""

    question: str
    k: int
    n: int
    drawn: int
    prior_answers: list[str | None]
    window: int
    round: int
    temperature: float | None
    max_tokens: int | None
    seed: int | None
    timeout: float | None
    deadline: float | None
    hold_tokens: bool
    history: NotRequired[list[ChatMessage]]
    followup: NotRequired[list[ChatMessage]]
    tools: NotRequired[list[dict[str, Any]]]
    tool_choice: NotRequired[str | dict[str, Any] | None]


@task
def ttc_sample_log(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A durable append to the sample log: the checkpointer saves the entries as this task completes (the task's
    name is this function's)."""
    return entries


def _durable() -> bool:
    """Whether this run can be resumed: a checkpointer needs a ``thread_id`` (a parent graph's reaches a subgraph)."""
    return bool((get_config().get("configurable") or {}).get("thread_id"))


async def _log(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fut: Any = ttc_sample_log(entries)
    out: list[dict[str, Any]] = await (fut if isinstance(fut, asyncio.Future) else asyncio.wrap_future(fut))
    return out


async def _replay() -> list[dict[str, Any]]:
    """The entries logged by earlier attempts of this node (after a crash), then a fresh mark ending them."""
    nonce = uuid.uuid4().hex
    entries: list[dict[str, Any]] = []
    while True:
        got = await _log([{"kind": "mark", "nonce": nonce}])
        if len(got) == 1 and got[0].get("nonce") == nonce:
            return entries
        entries.extend(e for e in got if e.get("kind") != "mark")


def _usage(raw: Sequence[float]) -> RequestUsage:
    return RequestUsage(*raw)  # type: ignore[arg-type]


def _raw(usage: RequestUsage) -> list[float]:
    u = usage  # a plain list, cheap to build and to checkpoint (dataclasses.asdict deep-copies)
    return [u.requests, u.prompt_tokens, u.completion_tokens, u.failed_requests, u.unconfirmed_tokens, u.cost]


class _Window:
    """The window loop of one call of the windowed ``propose`` node."""

    def __init__(
        self,
        task_: SampleTask,
        policy: Endpoint,
        messages: list[ChatMessage],
        logprobs: bool,
        stop: AdaptiveStop | None,
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.task = task_
        self.policy = policy
        self.messages = messages
        self.logprobs = logprobs
        self.stop = stop
        self.emit = emit
        self.candidates: list[Candidate] = []
        self.usage = RequestUsage()
        self.errors: list[str] = []
        self.answers: list[str | None] = list(task_["prior_answers"])
        self.next_index = 0
        self.failures = 0
        self.cancelled = 0
        self.prompt_tokens = 0
        self.in_flight: dict[asyncio.Future[GenerationResult], tuple[int, RequestUsage]] = {}
        self.fired = False
        self.durable = _durable()
        # only a stopping rule cancels; a request with tools is not streamed (its calls arrive whole)
        self.streams = stop is not None and isinstance(policy, StreamingEndpoint) and not task_.get("tools")

    # -- bookkeeping ------------------------------------------------------------------------------------------

    def apply(self, entry: dict[str, Any]) -> None:
        """Fold one log entry (a new arrival or a replayed one) into the node's result."""
        self.next_index = max(self.next_index, int(entry["i"]) + 1)
        spent = _usage(entry["usage"])
        self.usage.add(spent)
        if entry["kind"] == "done":
            cand: Candidate = entry["cand"]
            self.candidates.append(cand)
            self.answers.append(cand["answer"])
            self.prompt_tokens = self.prompt_tokens or spent.prompt_tokens
        elif entry["kind"] == "failed":
            self.failures += 1
            self.errors.extend(entry["errors"])
        else:
            self.cancelled += 1

    def is_decisive(self) -> bool:
        if self.stop is None:
            return False
        votes = [len(g) for g in group_answers(self.answers)]
        return decisive(votes, self.task["drawn"] + len(self.candidates), self.task["n"], self.stop)

    def wanted(self) -> int:
        """Samples still to start: ``k`` less what arrived, failed (re-planned by the controller) or is in flight."""
        return self.task["k"] - len(self.candidates) - self.failures - len(self.in_flight)

    # -- requests ---------------------------------------------------------------------------------------------

    def params(self, index: int) -> SamplingParams:
        t = self.task
        timeout = t["timeout"]
        if t["deadline"] is not None:
            timeout = max(0.001, t["deadline"] - time.time())
        return SamplingParams(
            temperature=t["temperature"],
            max_tokens=t["max_tokens"],
            seed=None if t["seed"] is None else t["seed"] + index,
            logprobs=self.logprobs,
            timeout=timeout,
            retry_lost=not t["hold_tokens"],
            **task_tools(t),
        )

    def start(self) -> None:
        index, meter = self.next_index, RequestUsage()
        self.next_index += 1
        params = self.params(index)
        coro: Awaitable[GenerationResult]
        if self.streams:
            coro = self.policy.stream_one(self.messages, params=params, meter=meter)  # type: ignore[attr-defined]
        else:
            coro = self.policy.generate(self.messages, n=1, params=params)
        self.in_flight[asyncio.ensure_future(coro)] = (index, meter)

    def arrival(self, fut: asyncio.Future[GenerationResult], index: int) -> dict[str, Any]:
        """The log entry of a finished request: its sample, or its failure (an unexpected error propagates)."""
        where = f"sample round {self.task['round']} #{index}"
        exc = fut.exception()
        if isinstance(exc, EndpointError | TimeoutError):
            spent, reasons = failure(exc, 1, self.task["max_tokens"], where)
            return {"kind": "failed", "i": index, "usage": _raw(spent), "errors": reasons}
        if exc is not None:
            raise exc
        result = fut.result()
        if not result.generations:
            spent = _usage(_raw(result.usage))
            spent.failed_requests = spent.failed_requests or 1
            return {"kind": "failed", "i": index, "usage": _raw(spent), "errors": [f"{where}: no generation"]}
        gen, round_ = result.generations[0], self.task["round"]
        cand = make_candidate(f"r{round_}-s{index}", gen, round_, self.task.get("tools"))
        return {"kind": "done", "i": index, "cand": cand, "usage": _raw(result.usage)}

    async def cancel_all(self) -> list[dict[str, Any]]:
        """Cancel every request in flight; the log entries of what each had cost the server when it stopped."""
        pending = dict(self.in_flight)
        self.in_flight.clear()
        for fut in pending:
            fut.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        entries = []
        for fut, (index, meter) in pending.items():
            entry = None
            if not fut.cancelled():  # it finished before the cancellation reached it: a whole sample
                try:
                    entry = self.arrival(fut, index)
                except Exception:
                    entry = None
            entries.append(entry or {"kind": "cancelled", "i": index, "usage": _raw(self.served(meter))})
        return entries

    def served(self, meter: RequestUsage) -> RequestUsage:
        """What a cancelled request cost: a streamed one as counted; otherwise its prompt and, unconfirmed, its
        ``max_tokens`` (the server may have generated up to that many)."""
        if self.streams:
            if not meter.requests:
                return RequestUsage()  # never sent
            return RequestUsage(1, meter.prompt_tokens or self.prompt_tokens, meter.completion_tokens)
        return RequestUsage(1, self.prompt_tokens, unconfirmed_tokens=self.task["max_tokens"] or 0)

    # -- the loop ---------------------------------------------------------------------------------------------

    def event(self, entry: dict[str, Any]) -> None:
        self.emit(
            {
                "event": "ttc.sample",
                "round": self.task["round"],
                "index": entry["i"],
                "kind": entry["kind"],
                "answer": entry["cand"]["answer"] if entry["kind"] == "done" else None,
                "drawn": self.task["drawn"] + len(self.candidates),
                "in_flight": len(self.in_flight),
                "decisive": self.fired,
            }
        )

    async def record(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        if self.durable:
            await _log(entries)
        for entry in entries:
            self.event(entry)

    async def run(self) -> None:
        deadline = self.task["deadline"]
        try:
            while True:
                wall_left = None if deadline is None else deadline - time.time()
                if wall_left is not None and wall_left <= 0:
                    await self.record(self.fold(await self.cancel_all()))
                    return
                while not self.fired and self.wanted() > 0 and len(self.in_flight) < self.task["window"]:
                    self.start()
                if not self.in_flight:
                    return
                done, _ = await asyncio.wait(self.in_flight, timeout=wall_left, return_when=asyncio.FIRST_COMPLETED)
                entries = []
                for fut in sorted(done, key=lambda f: self.in_flight[f][0]):
                    index, _ = self.in_flight.pop(fut)
                    entry = self.arrival(fut, index)
                    self.apply(entry)
                    entries.append(entry)
                    self.fired = self.fired or (entry["kind"] == "done" and self.is_decisive())
                if self.fired and self.in_flight:
                    entries.extend(self.fold(await self.cancel_all()))
                await self.record(entries)
        except BaseException:
            lost = await self.cancel_all()  # a crash: log what the requests in flight cost before it propagates
            if lost and self.durable:
                await asyncio.shield(_log(lost))
            raise

    def fold(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            self.apply(entry)
        return entries


def make_sample_node(
    policy: Endpoint, *, system_prompt: str | None, logprobs: bool = False, stop: AdaptiveStop | None = None
) -> Callable[[SampleTask, Runtime[Any]], Awaitable[dict[str, Any]]]:
    """The windowed ``propose`` node: up to ``task['k']`` samples through a window of ``task['window']`` requests.

    With ``stop`` it checks :func:`decisive` on every arrival and, once it holds, cancels the requests in flight and
    writes ``stop_reason="decisive"``. Emits a ``ttc.sample`` custom stream event per arrival or cancellation.
    """

    async def sample(task_: SampleTask, runtime: Runtime[Any]) -> dict[str, Any]:
        messages = task_messages(task_, system_prompt)
        window = _Window(task_, policy, messages, logprobs, stop, runtime.stream_writer)
        for entry in await _replay() if window.durable else []:
            window.apply(entry)
        window.fired = window.is_decisive()
        await window.run()
        update: dict[str, Any] = {
            "candidates": window.candidates,
            "usage": usage_delta("propose", window.usage, generations=len(window.candidates)),
        }
        if window.errors:
            update["errors"] = window.errors
        if window.fired and (window.cancelled or window.task["drawn"] + len(window.candidates) < task_["n"]):
            update["stop_reason"] = "decisive"
        return update

    return sample
