"""Best-of-N over whole agent runs: run a LangGraph agent N times on copies of the conversation, keep the best run.

``prepare → budget ⇉ run × k → [verify] → budget → … → select``. The budget controller plans a round of at most
``max_concurrency`` runs, each a ``Send`` to the ``run`` node, so every round is one super-step: a checkpointer saves
each finished run as it ends and a resumed graph re-runs only the runs that had not finished. Each run gets a deep
copy of the conversation and a LangChain callback handler that counts every model call made inside it.
"""

from __future__ import annotations

import copy
import math
import operator
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.config import merge_configs
from langgraph.config import get_config, get_stream_writer
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START
from langgraph.graph.message import add_messages
from langgraph.pregel import Pregel
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, Send
from typing_extensions import TypedDict

from ttc_graph.agents.scoring import RunOutcome, RunScorer, RunVerifier, as_run_scorer, score_runs_within
from ttc_graph.agents.usage_callback import UsageCallbackHandler
from ttc_graph.answers import extract_answer
from ttc_graph.budget import Budget, check_n, merge_usage, remaining, usage_delta
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph, strategy_graph
from ttc_graph.nodes.budget_controller import MAX_ROUND_SAMPLES, stop_reason_for
from ttc_graph.nodes.context import run_context
from ttc_graph.nodes.dual import dual
from ttc_graph.nodes.prepare import resolve_question
from ttc_graph.progress import round_event
from ttc_graph.prompts import message_text
from ttc_graph.selection import select_answer
from ttc_graph.state import Candidate, TTCContext, upsert_candidates
from ttc_graph.verifiers.base import Score
from ttc_graph.verifiers.deadline import run_deadline

__all__ = [
    "AGENT_SELECTIONS",
    "NO_RUN_FINISHED",
    "AgentFactory",
    "AgentRunCandidate",
    "AgentRunTask",
    "AgentRunsInput",
    "AgentRunsOutput",
    "AgentRunsState",
    "AgentSelection",
    "create_agent_best_of_n",
    "new_messages",
]

AgentSelection = Literal["verifier", "majority"]
AGENT_SELECTIONS: tuple[AgentSelection, ...] = ("verifier", "majority")
AgentFactory = Callable[[int], Runnable[Any, Any]]
"""``(run_index) -> agent``: builds the agent of one run, e.g. around tools bound to that run's own sandbox."""
NO_RUN_FINISHED = "No agent run finished."


class AgentRunCandidate(Candidate):
    """One run: its final reply (``text``), the answer extracted from it, its score, the completion tokens of every
    model call it made (``tokens``), ``error`` if it failed; ``meta`` holds its requests, prompt tokens, model calls
    that reported no usage (``unmetered``)."""

    index: int
    error: str | None


class AgentRunTask(TypedDict):
    """The ``Send`` payload of one run."""

    index: int
    round: int
    conversation: list[AnyMessage]


def _merge_finals(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class AgentRunsInput(TypedDict, total=False):
    """A ``messages`` conversation whose last human message is the task, or a ``question`` (asked as a new human
    message after any ``messages``)."""

    question: str
    messages: list[AnyMessage]


class AgentRunsOutput(TypedDict, total=False):
    """What a parent graph receives: the winning run's new messages (only when the task came from ``messages``),
    its answer, one candidate per run, the ledger, why the strategy stopped, the runs' errors."""

    messages: Annotated[list[AnyMessage], add_messages]
    answer: str | None
    candidates: list[AgentRunCandidate]
    usage: dict[str, Any]
    stop_reason: str | None
    errors: list[str]
    diagnostics: dict[str, Any] | None


class AgentRunsState(TypedDict, total=False):
    """The graph state; ``prepare`` resets every per-run field, so each turn on a thread starts afresh."""

    question: str
    messages: Annotated[list[AnyMessage], add_messages]
    from_messages: bool
    asked: dict[str, str | None]
    conversation: list[AnyMessage]
    candidates: Annotated[list[AgentRunCandidate], upsert_candidates]
    finals: Annotated[dict[str, Any], _merge_finals]
    usage: Annotated[dict[str, Any], merge_usage]
    errors: Annotated[list[str], operator.add]
    round: int
    plan: list[AgentRunTask]
    started_at: float
    answer: str | None
    stop_reason: str | None
    diagnostics: dict[str, Any] | None


def new_messages(final: Sequence[AnyMessage], conversation: Sequence[BaseMessage]) -> list[AnyMessage]:
    """The messages a run added: those of its final state whose id is not one of the conversation it was given."""
    given = {m.id for m in conversation if m.id is not None}
    return [m for m in final if m.id is None or m.id not in given]


def _last_ai(messages: Sequence[BaseMessage]) -> AIMessage | None:
    return next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)


def _check_agent(agent: object, what: str) -> Runnable[Any, Any]:
    if not isinstance(agent, Runnable):
        raise ConfigurationError(
            f"{what}: expected a compiled LangGraph agent (a Runnable such as create_react_agent(...)),"
            f" got {type(agent).__name__}"
        )
    if isinstance(agent, Pregel) and agent.checkpointer is True:
        raise ConfigurationError(
            f"{what}: an agent compiled with checkpointer=True keeps one state per parent thread, so every run would"
            " share it; compile it without checkpointer=True (under a checkpointed strategy each run then"
            " checkpoints in a namespace of its own)"
        )
    return agent


def _check_input_key(agent: Runnable[Any, Any], input_key: str, what: str) -> None:
    channels = agent.channels if isinstance(agent, Pregel) else None
    if channels is not None and input_key not in channels:
        raise ConfigurationError(f"input_key: {what} has no {input_key!r} state key (it has {', '.join(channels)})")


@dataclass(slots=True)
class _Run:
    """One run ready to start: its agent, config, input and usage counter."""

    task: AgentRunTask
    agent: Runnable[Any, Any] | None
    config: RunnableConfig
    input: dict[str, Any]
    handler: UsageCallbackHandler
    error: BaseException | None = None


class RunAgentNode(Runnable[AgentRunTask, dict[str, Any]]):
    """The ``run`` node: one agent run on a deep copy of the conversation, under the node's config plus a
    :class:`UsageCallbackHandler`.

    Under ``graph.invoke`` it calls the agent's ``invoke``, under ``ainvoke`` its ``ainvoke``. An exception of the
    run (its tools, its model, the factory building it) fails that run only: the candidate carries the error and the
    ledger what it spent. LangGraph's interrupts and non-``Exception`` errors (a crash) propagate.
    """

    def __init__(
        self, agent: Runnable[Any, Any] | None, factory: AgentFactory | None, *, input_key: str, name: str
    ) -> None:
        self.agent = agent
        self.factory = factory
        self.input_key = input_key
        self.name = "run"
        self.strategy_name = name

    def _setup(self, task: AgentRunTask, config: RunnableConfig) -> _Run:
        handler = UsageCallbackHandler()
        conversation = copy.deepcopy(list(task["conversation"]))
        run = _Run(task, None, config, {self.input_key: conversation}, handler)
        try:
            agent = self.factory(task["index"]) if self.factory is not None else self.agent
        except Exception as exc:  # the run's own sandbox or agent could not be built: that run fails
            run.error = exc
            return run
        what = f"tool_factory({task['index']})" if self.factory is not None else "agent"
        run.agent = _check_agent(agent, what)
        if self.factory is not None:
            _check_input_key(run.agent, self.input_key, what)
        run.config = merge_configs(config, {"callbacks": [handler], "metadata": {"ttc_run": task["index"]}})
        return run

    def invoke(self, input: AgentRunTask, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        run = self._setup(input, ensure_config(config))
        final: Any = None
        if run.agent is not None:
            try:
                final = run.agent.invoke(run.input, run.config)
            except GraphBubbleUp:
                raise
            except Exception as exc:
                run.error = exc
        return self._finish(run, final)

    async def ainvoke(self, input: AgentRunTask, config: RunnableConfig | None = None, **kwargs: Any) -> dict[str, Any]:
        run = self._setup(input, ensure_config(config))
        final: Any = None
        if run.agent is not None:
            try:
                final = await run.agent.ainvoke(run.input, run.config)
            except GraphBubbleUp:
                raise
            except Exception as exc:
                run.error = exc
        return self._finish(run, final)

    def _finish(self, run: _Run, final: Any) -> dict[str, Any]:
        index = run.task["index"]
        run_id = f"run-{index}"
        spent = run.handler.snapshot()
        text, answer, finish_reason, error = "", None, None, None
        if run.error is None:
            messages = final.get(self.input_key) if isinstance(final, Mapping) else None
            if not isinstance(messages, list):
                raise ConfigurationError(
                    f"input_key: the agent's final state has no {self.input_key!r} list of messages"
                    f" (got {type(final).__name__})"
                )
            last = _last_ai(new_messages(messages, run.task["conversation"]))
            if last is not None:
                text = message_text(last)
                finish_reason = (last.response_metadata or {}).get("finish_reason")
            answer = extract_answer(text) if text.strip() else None
        else:
            error = f"{type(run.error).__name__}: {run.error}"
        cand: AgentRunCandidate = {
            "id": run_id,
            "index": index,
            "text": text,
            "answer": answer,
            "parsable": answer is not None,
            "score": None,
            "step_scores": None,
            "scored": False,
            "tokens": spent.completion_tokens,
            "round": run.task["round"],
            "finish_reason": finish_reason,
            "error": error,
            "meta": {
                "requests": spent.requests,
                "prompt_tokens": spent.prompt_tokens,
                "failed_requests": spent.failed_requests,
                "unmetered": run.handler.unmetered,
            },
        }
        update: dict[str, Any] = {
            "candidates": [cand],
            "usage": usage_delta("propose", spent, generations=1),
        }
        if error is not None:
            update["errors"] = [f"{run_id}: {error}"]
        else:
            update["finals"] = {run_id: dict(final)}
        get_stream_writer()(
            {
                "event": "ttc.run",
                "run": index,
                "id": run_id,
                "round": run.task["round"],
                "answer": answer,
                "tokens": spent.completion_tokens,
                "requests": spent.requests,
                "error": error,
            }
        )
        return update


def _conversation(state: AgentRunsState) -> tuple[str, bool, list[AnyMessage], dict[str, str | None]]:
    """The task, whether it came from ``messages``, what every run starts from, and what was asked."""
    asked = resolve_question(state)  # type: ignore[arg-type]
    messages: list[AnyMessage] = list(state.get("messages") or [])
    if asked.from_messages:
        conversation = messages
    else:
        human = next((i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], HumanMessage)), None)
        if human is not None and message_text(messages[human]).strip() == asked.question:
            conversation = messages[: human + 1]
        else:
            conversation = [*messages, HumanMessage(asked.question, id=str(uuid.uuid4()))]
    seen = {"question": asked.question, "message_id": asked.last_human_id}
    return asked.question, asked.from_messages, conversation, seen


def _recursion_needed(runs: int, window: int, verify: bool) -> int:
    """The least ``recursion_limit`` a strategy run needs: LangGraph stops a graph after ``recursion_limit - 1``
    super-steps, and one run takes prepare, budget, run (and verify) per round, a last budget and select."""
    return 1 + 1 + math.ceil(runs / window) * (3 if verify else 2) + 2


def create_agent_best_of_n(
    agent: Runnable[Any, Any] | None,
    verifier: RunVerifier | None = None,
    *,
    n: int,
    selection: AgentSelection = "verifier",
    budget: Budget | None = None,
    tool_factory: AgentFactory | None = None,
    max_concurrency: int | None = None,
    name: str = "agent_best_of_n",
    input_key: str = "messages",
    state_schema: type[Any] | None = None,
    context_schema: type[Any] | None = None,
) -> StrategyGraph[AgentRunsState, TTCContext, AgentRunsInput, AgentRunsOutput]:
    """An uncompiled graph that runs a LangGraph agent ``n`` times and keeps the best run.

    ``agent``: any compiled agent (e.g. ``create_react_agent(model, tools)``); each run gets a deep copy of the
    conversation under ``input_key`` (the agent's messages key), so no run sees another's messages. Runs run as
    subgraphs: under a checkpointed strategy each checkpoints in a namespace of its own on the strategy's thread
    (LangGraph lends a subgraph its parent's saver), so no state is shared and a run resumed after a crash continues
    from its last step; an agent compiled with ``checkpointer=True`` (one state per thread) is refused.
    ``tool_factory`` instead of ``agent``: ``(run_index) -> agent``, called once per run (again if a crashed run is
    resumed), so each run can own its tools' side effects (a sandbox, a scratch directory).

    ``verifier`` scores each finished run in [0, 1]: a function of the run's final state, or of its messages when
    its first parameter is named ``messages`` (sync or async; a result that is not a finite real number in [0, 1],
    or an exception, is a :class:`~ttc_graph.errors.VerifierError`); a :class:`~ttc_graph.verifiers.Verifier`, given
    the run's transcript as the solution; or a LangChain chat model, asked whether the transcript did the task
    (P(Yes), :class:`~ttc_graph.verifiers.LLMJudgeVerifier`). ``selection``: ``verifier`` keeps the top-scored run
    (majority vote when no run is scored); ``majority`` the first run with the most frequent final answer (the last
    AI message, :func:`~ttc_graph.answers.extract_answer`), the best-scored of them if scored; with no answer at all,
    the first run that finished.

    Compute: one generation per run; ``usage`` adds up every model call inside the runs (charged to ``propose``) and
    the verifier's (``verify``). The controller launches rounds of at most ``max_concurrency`` runs (all ``n`` at
    once when None) while the ``budget`` (generations = runs, tokens = the runs' completion tokens, seconds) allows,
    and stops early when every run so far failed. A run in flight is never cut short: give the agent a recursion
    limit or its model a ``max_tokens``. Each run emits a ``ttc.run`` custom stream event as it ends, each round a
    ``ttc.round``. A run that raises fails alone (its error in ``errors``, its candidate's ``error``).

    The graph returns the winning run's new messages (appended to ``messages`` when the task came from
    ``messages``), ``answer``, ``candidates`` (one per run), ``usage``, ``stop_reason`` and ``errors``.
    ``state_schema`` (extending :class:`AgentRunsState`) and ``context_schema``: as in
    :func:`~ttc_graph.strategies.create_best_of_n`.
    """
    if tool_factory is not None and agent is not None:
        raise ConfigurationError("agent: pass either an agent or a tool_factory that builds each run's agent, not both")
    if tool_factory is None:
        if agent is None:
            raise ConfigurationError("agent: give a compiled agent, or a tool_factory (run_index) -> agent")
        _check_agent(agent, "agent")
    elif not callable(tool_factory):
        raise ConfigurationError(f"tool_factory: expected a callable (run_index) -> agent, got {tool_factory!r}")
    check_n(n, budget)
    if budget is not None and not isinstance(budget, Budget):
        raise ConfigurationError(f"budget: expected a Budget, got {type(budget).__name__} {budget!r}")
    if selection not in AGENT_SELECTIONS:
        raise ConfigurationError(f"selection: unknown {selection!r}; use one of {', '.join(AGENT_SELECTIONS)}")
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
    ):
        raise ConfigurationError(f"max_concurrency: must be an integer >= 1 or None, got {max_concurrency!r}")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"name: expected a non-empty string, got {name!r}")
    if not isinstance(input_key, str) or not input_key:
        raise ConfigurationError(f"input_key: expected a state key name, got {input_key!r}")
    if agent is not None:
        _check_input_key(agent, input_key, "the agent")
    scorer = as_run_scorer(verifier)
    if scorer is None and selection == "verifier":
        raise ConfigurationError("verifier: selection='verifier' needs a verifier; use selection='majority'")
    window = min(max_concurrency or n, n, MAX_ROUND_SAMPLES)

    graph = strategy_graph(
        name, state_schema, context_schema, state=AgentRunsState, input=AgentRunsInput, output=AgentRunsOutput
    )
    graph.add_node("prepare", _make_prepare(n, window, budget, verify=scorer is not None))
    graph.add_node("budget", dual(_make_controller(n, window, budget), name="budget", io=False))
    graph.add_node("run", RunAgentNode(agent, tool_factory, input_key=input_key, name=name))
    graph.add_node("select", _make_select(selection, input_key, name))
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "budget")
    graph.add_conditional_edges("budget", _route, ["run", "select"])
    if scorer is not None:
        graph.add_node("verify", dual(_make_verify(scorer, input_key, budget), name="verify"))
        graph.add_edge("run", "verify")
        graph.add_edge("verify", "budget")
    else:
        graph.add_edge("run", "budget")
    graph.add_edge("select", END)
    return graph


class _PrepareNode(Protocol):
    def __call__(self, state: AgentRunsState, *, runtime: Runtime[Any]) -> dict[str, Any]: ...


class _SelectNode(Protocol):
    def __call__(self, state: AgentRunsState) -> dict[str, Any]: ...


def _make_prepare(n: int, window: int, budget: Budget | None, *, verify: bool) -> _PrepareNode:
    def prepare(state: AgentRunsState, *, runtime: Runtime[Any]) -> dict[str, Any]:
        limit = run_context(runtime).budget or budget
        runs = min(n, limit.generations) if limit is not None and limit.generations is not None else n
        needed = _recursion_needed(runs, window, verify)
        allowed = get_config().get("recursion_limit", 25)
        if needed > allowed:
            raise ConfigurationError(
                f"recursion_limit: {runs} runs in rounds of {window} need a recursion_limit of {needed} graph"
                f" steps, above {allowed}; invoke with config={{'recursion_limit': {needed}}} or more, or raise"
                " max_concurrency"
            )
        question, from_messages, conversation, asked = _conversation(state)
        update: dict[str, Any] = {
            "question": question,
            "from_messages": from_messages,
            "asked": asked,
            "conversation": conversation,
            "candidates": Overwrite([]),
            "finals": Overwrite({}),
            "usage": Overwrite({}),
            "errors": Overwrite([]),
            "round": 0,
            "plan": [],
            "started_at": time.time(),
        }
        for key in ("answer", "stop_reason", "diagnostics"):
            if state.get(key) is not None:
                update[key] = None
        return update

    return prepare


def _make_controller(
    n: int, window: int, budget: Budget | None
) -> Callable[[AgentRunsState, Runtime[Any]], Awaitable[dict[str, Any]]]:
    async def controller(state: AgentRunsState, runtime: Runtime[Any]) -> dict[str, Any]:
        limit = run_context(runtime).budget or budget
        usage = state.get("usage")
        runs = state.get("candidates", [])
        launched = len(runs)
        round_ = state.get("round", 0)
        stop: str | None = None
        rem = remaining(limit, usage, state.get("started_at"))
        if rem.seconds <= 0:
            stop = "budget:seconds"  # past the deadline even when every run is in: their scoring may be cut short
        elif launched and all(r["error"] is not None for r in runs):
            stop = "error"  # every run so far failed: launching more would fail the same way
        elif launched >= n:
            stop = "complete"
        stop = stop or stop_reason_for(rem)
        k = 0 if stop else int(min(n - launched, rem.generations, window))
        plan: list[AgentRunTask] = [{"index": launched + j, "round": round_ + 1, "conversation": []} for j in range(k)]
        runtime.stream_writer(
            round_event(round_, drawn=launched, total=n, planned=k, stop=stop, usage=usage, candidates=launched)
        )
        update: dict[str, Any] = {"plan": plan, "round": round_ + 1 if plan else round_}
        if stop:
            update["stop_reason"] = stop
        return update

    return controller


def _route(state: AgentRunsState) -> Sequence[Send] | str:
    """One ``Send`` per planned run, each carrying the conversation (the node deep-copies it), or on to ``select``."""
    plan = state.get("plan") or []
    conversation = state.get("conversation") or []
    return [Send("run", {**task, "conversation": conversation}) for task in plan] if plan else "select"


def _outcome(state: AgentRunsState, cand: AgentRunCandidate, input_key: str) -> RunOutcome:
    final = (state.get("finals") or {})[cand["id"]]
    messages = list(final.get(input_key) or [])
    return RunOutcome(
        cand["id"], state.get("question", ""), final, messages, new_messages(messages, state.get("conversation") or [])
    )


def _make_verify(
    scorer: RunScorer, input_key: str, budget: Budget | None = None
) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def verify(state: AgentRunsState, runtime: Runtime[Any]) -> dict[str, Any]:
        todo = [c for c in state.get("candidates", []) if c["error"] is None and not c["scored"]]
        if not todo:
            return {}
        scores: list[Score]
        scores, spent = await score_runs_within(
            scorer,
            [_outcome(state, c, input_key) for c in todo],
            run_deadline(run_context(runtime).budget or budget, state.get("started_at")),
        )
        scored = [
            {**c, "score": s.value, "step_scores": list(s.step_scores) if s.step_scores else None, "scored": True}
            for c, s in zip(todo, scores, strict=True)
        ]
        update: dict[str, Any] = {"candidates": scored, "usage": usage_delta("verify", spent)}
        errors = [s.error for s in scores if s.value is None and s.error]
        if errors:
            update["errors"] = errors
        return update

    return verify


def _make_select(selection: AgentSelection, input_key: str, name: str) -> _SelectNode:
    def select(state: AgentRunsState) -> dict[str, Any]:
        runs = state.get("candidates", [])
        finished = [c for c in runs if c["error"] is None]
        winner: AgentRunCandidate | None = None
        rule = "none"
        if selection == "verifier":
            scored = [c for c in finished if c["score"] is not None]
            if scored:
                winner, rule = max(scored, key=lambda c: c["score"] or 0.0), "verifier"  # max keeps the first tie
        if winner is None and finished:
            chosen = select_answer(finished, "majority")
            winner = next((c for c in finished if c["id"] == chosen.candidate_id), None)
            rule = "majority"
            if winner is None:  # no run gave an answer that can be compared: the first that finished
                winner, rule = finished[0], "first"
        elapsed = time.time() - state.get("started_at", time.time())
        update: dict[str, Any] = {
            "answer": winner["answer"] if winner else None,
            "usage": {"seconds": elapsed},
            "diagnostics": {
                "selection": rule,
                "winner": winner["id"] if winner else None,
                "runs": len(runs),
                "failed": len(runs) - len(finished),
                "unmetered_requests": sum(int(c.get("meta", {}).get("unmetered", 0)) for c in runs),
            },
        }
        if state.get("from_messages"):
            if winner is not None:
                final = (state.get("finals") or {})[winner["id"]]
                update["messages"] = new_messages(list(final.get(input_key) or []), state.get("conversation") or [])
            else:
                update["messages"] = [AIMessage(content=NO_RUN_FINISHED, name=name)]
        return update

    return select
