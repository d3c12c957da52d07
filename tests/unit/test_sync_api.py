"""Every strategy runs under LangGraph's sync API too: repeatedly, from threads and inside a running event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import Field
from typing_extensions import TypedDict

from ttc_graph import LangChainEndpoint, TTCError, create_beam_search, create_best_of_n, create_dvts, create_revisions
from ttc_graph._loop import run_sync
from ttc_graph.budget import Budget
from ttc_graph.compute_optimal import DifficultyBins, PolicyTable, create_compute_optimal
from ttc_graph.nodes.dual import dual
from ttc_graph.testing import FakeCall, ScriptedEndpoint

QUESTION = "What is 3 + 4?"


def stepwise(call: FakeCall, index: int) -> str:
    depth = (call.prefix or "").count("\n\n")
    return f"step {index % 2}" if call.prefix is None or depth < 2 else f"so \\boxed{{{index % 2}}}"


def half(question: str, solution: str) -> float:
    return 0.9 if "step 1" in solution else 0.4


def numbered(call: FakeCall, index: int) -> str:
    return f"Sample {index}.\n\nSo the answer is \\boxed{{{index % 2}}}"


ROUTES = {"majority": 0.9, "revisions": 0.45, "beam": 0.1}  # route -> a probe score that lands in its bin
TABLE = PolicyTable(
    difficulty=DifficultyBins(metric="verifier_score", edges=(0.3, 0.6), probes=2),
    budgets=[4],
    strategies={
        "majority": {"kind": "best_of_n", "selection": "majority"},
        "revisions": {
            "kind": "revisions",
            "chain_length": 2,
            "selection": "hierarchical",
            "stop_on_repeat": False,
            "verifier": {"kind": "confidence"},  # the router's verifier stands in for the templates' own
        },
        "beam": {"kind": "beam_search", "beam_width": 2, "verifier": {"kind": "confidence"}},
    },
    table={"1": {"4": "majority"}, "2": {"4": "revisions"}, "3": {"4": "beam"}},
)


def router(route: str) -> StateGraph[Any, Any, Any, Any]:
    score = ROUTES[route]
    return create_compute_optimal(ScriptedEndpoint(numbered), lambda q, s: score, TABLE, budget=Budget(generations=4))


GRAPHS: dict[str, Callable[[], StateGraph[Any, Any, Any, Any]]] = {
    "best_of_n": lambda: create_best_of_n(ScriptedEndpoint(["\\boxed{7}"], native_n=False), n=4, selection="majority"),
    "beam_search": lambda: create_beam_search(ScriptedEndpoint(stepwise), half, n=4, beam_width=2),
    "dvts": lambda: create_dvts(ScriptedEndpoint(stepwise), half, n=4, beam_width=2),
    "revisions": lambda: create_revisions(ScriptedEndpoint(["\\boxed{7}"]), n=4, chain_length=2, selection="majority"),
    **{f"compute_optimal:{route}": (lambda route=route: router(route)) for route in ROUTES},
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_sync_invoke_matches_async(name: str) -> None:
    sync_out = GRAPHS[name]().compile().invoke({"question": QUESTION})
    async_out = asyncio.run(GRAPHS[name]().compile().ainvoke({"question": QUESTION}))
    assert sync_out["answer"] is not None
    assert sync_out["stop_reason"] == async_out["stop_reason"] == "complete"
    assert not sync_out.get("errors")
    assert sync_out["answer"] == async_out["answer"]
    assert sync_out["usage"]["generations"] == async_out["usage"]["generations"] == 4
    assert sorted(c["id"] for c in sync_out["candidates"]) == sorted(c["id"] for c in async_out["candidates"])
    if name.startswith("compute_optimal:"):
        assert sync_out["route"] == async_out["route"] == name.split(":")[1]


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_sync_stream_emits_progress_events(name: str) -> None:
    chunks = list(GRAPHS[name]().compile().stream({"question": "q"}, stream_mode="custom", subgraphs=True))
    events = [event for _, event in chunks]
    # ttc.sample: per arrival (adaptive best-of-N); ttc.subtree: per scored step of a DVTS subtree
    assert events and all(e["event"] in ("ttc.round", "ttc.sample", "ttc.subtree") for e in events)


# -- a chat model whose async client is bound to one event loop, as ChatOpenAI's is ---------------------------


class LoopBoundChat(BaseChatModel):
    """Answers ``text``. Like ChatOpenAI, its async client binds to the first event loop that uses it (a call from
    another loop fails as ChatOpenAI's does); its sync client works from any thread."""

    text: str = "so \\boxed{4}"
    loops: list[Any] = Field(default_factory=list)
    sync_calls: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "loop-bound"

    def _result(self) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.text))])

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        self.sync_calls.append(threading.current_thread().name)
        return self._result()

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        loop = asyncio.get_running_loop()
        if self.loops and self.loops[0] is not loop:
            raise RuntimeError("Event loop is closed")
        self.loops.append(loop)
        await asyncio.sleep(0.001)
        return self._result()


def loop_bound_graph(model: LoopBoundChat) -> Any:
    return create_best_of_n(LangChainEndpoint(model), n=3, selection="majority").compile()


def assert_answered(out: dict[str, Any]) -> None:
    assert out["stop_reason"] == "complete", out.get("errors")
    assert out["answer"] == "4"
    assert not out.get("errors")
    assert out["usage"]["generations"] == 3


def test_invoke_three_times_in_a_row_with_a_loop_bound_chat_model() -> None:
    model = LoopBoundChat()
    graph = loop_bound_graph(model)
    for _ in range(3):
        assert_answered(graph.invoke({"question": QUESTION}))
    assert model.loops == []  # the sync API drives the model's sync client: its async one stays unbound
    assert len(model.sync_calls) == 9


async def test_ainvoke_and_invoke_mixed_in_one_running_loop() -> None:
    """A notebook: ``await graph.ainvoke`` in one cell, ``graph.invoke`` in the next, on one model."""
    model = LoopBoundChat()
    graph = loop_bound_graph(model)
    assert_answered(await graph.ainvoke({"question": QUESTION}))
    assert_answered(graph.invoke({"question": QUESTION}))
    assert_answered(await graph.ainvoke({"question": QUESTION}))
    assert {id(loop) for loop in model.loops} == {id(asyncio.get_running_loop())}
    assert len(model.sync_calls) == 3


async def test_invoke_inside_a_running_event_loop() -> None:
    """A Jupyter cell: a sync call while the cell's event loop is running in the same thread."""
    asyncio.get_running_loop()
    graph = loop_bound_graph(LoopBoundChat())
    assert_answered(graph.invoke({"question": QUESTION}))
    assert_answered(graph.invoke({"question": QUESTION}))


def test_invoke_from_several_threads_at_once() -> None:
    model = LoopBoundChat()
    graph = loop_bound_graph(model)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: graph.invoke({"question": QUESTION}), range(8)))
    for out in outs:
        assert_answered(out)
    assert len(model.sync_calls) == 24


# -- what a node sees on the sync path -----------------------------------------------------------------------


class Seen(TypedDict, total=False):
    question: str
    seen: list[Any]


def test_an_io_node_on_the_sync_path_sees_the_runs_context_writer_and_config() -> None:
    async def node(state: Seen, runtime: Runtime[Any]) -> dict[str, Any]:
        await asyncio.sleep(0.001)  # a real suspension: this runs on the background loop
        runtime.stream_writer({"from": "runtime", "context": runtime.context})
        get_stream_writer()({"from": "get_stream_writer"})
        config = get_config()
        return {"seen": [threading.current_thread().name, config["metadata"]["langgraph_node"], config["tags"]]}

    graph = StateGraph(Seen)
    graph.add_node("io", dual(node))
    graph.add_edge(START, "io")
    graph.add_edge("io", END)
    compiled = graph.compile()
    chunks = list(
        compiled.stream({"question": "q"}, {"tags": ["mine"]}, context={"k": 1}, stream_mode=["custom", "values"])
    )
    custom = [c for mode, c in chunks if mode == "custom"]
    assert custom == [{"from": "runtime", "context": {"k": 1}}, {"from": "get_stream_writer"}]
    thread, node_name, tags = [c for mode, c in chunks if mode == "values"][-1]["seen"]
    assert thread == "ttc-graph-loop"
    assert node_name == "io"
    assert "mine" in tags


def test_a_node_without_io_runs_in_place_under_both_apis() -> None:
    async def control(state: Seen) -> dict[str, Any]:
        try:
            loop: Any = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        return {"seen": [threading.current_thread().name, loop is not None]}

    graph = StateGraph(Seen)
    graph.add_node("control", dual(control, io=False))
    graph.add_edge(START, "control")
    graph.add_edge("control", END)
    compiled = graph.compile()
    thread, had_loop = compiled.invoke({"question": "q"})["seen"]
    assert thread != "ttc-graph-loop" and not had_loop  # no loop, no hop to the background thread

    async def run() -> tuple[str, bool, str]:
        thread, had_loop = (await compiled.ainvoke({"question": "q"}))["seen"]
        return thread, had_loop, threading.current_thread().name

    thread, had_loop, caller = asyncio.run(run())
    assert had_loop and thread == caller  # awaited in the caller's loop, no executor thread


def test_a_node_declared_without_io_that_suspends_is_a_typed_error() -> None:
    async def sneaky(state: Seen) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {}

    with pytest.raises(TTCError, match="io=False"):
        dual(sneaky, io=False).invoke({"question": "q"})


def test_a_sync_call_from_the_background_loop_itself_is_refused() -> None:
    async def inner() -> int:
        return 1

    async def outer() -> int:
        return run_sync(inner())

    with pytest.raises(TTCError, match="deadlock"):
        run_sync(outer())


# -- traces: chat-model runs nest under the strategy's run ---------------------------------------------------


class RunRecorder(BaseCallbackHandler):
    """Records every chain and chat-model run with its parent."""

    def __init__(self) -> None:
        self.parents: dict[UUID, UUID | None] = {}
        self.names: dict[UUID, str | None] = {}
        self.chat_runs: list[tuple[UUID, list[str]]] = []
        self._lock = threading.Lock()

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        with self._lock:
            self.parents[run_id] = parent_run_id
            self.names[run_id] = kwargs.get("name")

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            self.parents[run_id] = parent_run_id
            self.chat_runs.append((run_id, list(tags or [])))

    def ancestors(self, run_id: UUID) -> list[str | None]:
        names = []
        parent = self.parents.get(run_id)
        while parent is not None:
            names.append(self.names.get(parent))
            parent = self.parents.get(parent)
        return names


@pytest.mark.parametrize("api", ["invoke", "ainvoke"])
def test_chat_model_runs_nest_under_the_strategys_run(api: str) -> None:
    recorder = RunRecorder()
    graph = create_best_of_n(LangChainEndpoint(LoopBoundChat()), n=3, selection="majority").compile(name="bon")
    config: Any = {"callbacks": [recorder], "tags": ["mine"]}
    if api == "invoke":
        out = graph.invoke({"question": QUESTION}, config)
    else:
        out = asyncio.run(graph.ainvoke({"question": QUESTION}, config))
    assert_answered(out)
    roots = [run for run, parent in recorder.parents.items() if parent is None]
    assert [recorder.names[r] for r in roots] == ["bon"]
    assert len(recorder.chat_runs) == 3
    for run_id, tags in recorder.chat_runs:
        path = recorder.ancestors(run_id)
        assert path[0] == "propose"  # the node that called the model
        assert path[-1] == "bon"  # ... inside the strategy's run
        assert "mine" in tags
