"""The sync API against the real local server: a LangChain ChatOpenAI policy, repeated calls, a running loop, traces."""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_openai import ChatOpenAI

from ttc_graph import LangChainEndpoint, OpenAIEndpoint, create_best_of_n
from ttc_graph.local import LocalModelServer

QUESTION = "What is 2 + 3? Answer with \\boxed{}."


def chat_model(server: LocalModelServer, **kwargs: Any) -> ChatOpenAI:
    options: dict[str, Any] = {"max_tokens": 24, "temperature": 0.7, "max_retries": 0, "timeout": 60}
    options.update(kwargs)
    return ChatOpenAI(base_url=server.base_url, api_key="local", model=server.model_name, **options)


def assert_ran(out: dict[str, Any], n: int) -> None:
    assert out["stop_reason"] == "complete", out.get("errors")
    assert not out.get("errors")
    assert out["usage"]["generations"] == n
    assert out["usage"]["completion_tokens"] > 0
    assert all(c["text"] for c in out["candidates"])


def test_chat_openai_policy_invoked_three_times_in_a_row(local_server: LocalModelServer) -> None:
    graph = create_best_of_n(LangChainEndpoint(chat_model(local_server)), n=2, selection="majority").compile()
    for _ in range(3):
        assert_ran(graph.invoke({"question": QUESTION}), 2)


def test_chat_openai_policy_invoked_from_several_threads_at_once(local_server: LocalModelServer) -> None:
    graph = create_best_of_n(LangChainEndpoint(chat_model(local_server)), n=2, selection="majority").compile()
    outs: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: outs.append(graph.invoke({"question": QUESTION}))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(outs) == 3
    for out in outs:
        assert_ran(out, 2)


async def test_invoke_inside_a_running_event_loop(local_server: LocalModelServer) -> None:
    """What a Jupyter cell does: a sync call while the cell's event loop runs in this thread."""
    asyncio.get_running_loop()
    endpoint = OpenAIEndpoint(local_server.base_url, local_server.model_name, "local")
    for policy in (endpoint, LangChainEndpoint(chat_model(local_server))):
        graph = create_best_of_n(policy, n=2, selection="majority", max_tokens=24).compile()
        assert_ran(graph.invoke({"question": QUESTION}), 2)


async def test_ainvoke_and_invoke_mixed_in_one_running_loop(local_server: LocalModelServer) -> None:
    """A notebook: ``await graph.ainvoke`` in one cell, ``graph.invoke`` in the next, with one ChatOpenAI.

    ChatOpenAI's async client binds to the first loop that uses it (its default one is shared per base URL and
    timeout, so this test's model has a timeout of its own); ``invoke`` leaves it alone and uses the sync client.
    """
    graph = create_best_of_n(LangChainEndpoint(chat_model(local_server, timeout=59)), n=2, selection="majority")
    compiled = graph.compile()
    assert_ran(await compiled.ainvoke({"question": QUESTION}), 2)
    assert_ran(compiled.invoke({"question": QUESTION}), 2)
    assert_ran(await compiled.ainvoke({"question": QUESTION}), 2)


def test_the_models_own_max_tokens_stands(local_server: LocalModelServer) -> None:
    graph = create_best_of_n(LangChainEndpoint(chat_model(local_server, max_tokens=5)), n=2, selection="majority")
    out = graph.compile().invoke({"question": "Write a long story about a dragon."})
    assert_ran(out, 2)
    assert all(c["tokens"] is not None and c["tokens"] <= 5 for c in out["candidates"]), out["candidates"]


class RunRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.parents: dict[UUID, UUID | None] = {}
        self.names: dict[UUID, str | None] = {}
        self.chat_runs: list[UUID] = []
        self.lock = threading.Lock()

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        with self.lock:
            self.parents[run_id] = parent_run_id
            self.names[run_id] = kwargs.get("name")

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        with self.lock:
            self.parents[run_id] = parent_run_id
            self.chat_runs.append(run_id)

    def path(self, run_id: UUID) -> list[str | None]:
        names = []
        parent = self.parents.get(run_id)
        while parent is not None:
            names.append(self.names.get(parent))
            parent = self.parents.get(parent)
        return names


@pytest.mark.parametrize("api", ["invoke", "ainvoke"])
def test_chat_model_runs_nest_under_the_strategys_run(local_server: LocalModelServer, api: str) -> None:
    recorder = RunRecorder()
    graph = create_best_of_n(LangChainEndpoint(chat_model(local_server)), n=2, selection="majority")
    compiled = graph.compile(name="solve")
    config: Any = {"callbacks": [recorder]}
    if api == "invoke":
        out = compiled.invoke({"question": QUESTION}, config)
    else:
        out = asyncio.run(compiled.ainvoke({"question": QUESTION}, config))
    assert_ran(out, 2)
    assert len(recorder.chat_runs) == 2
    for run_id in recorder.chat_runs:
        path = recorder.path(run_id)
        assert path[0] == "propose"
        assert path[-1] == "solve"
