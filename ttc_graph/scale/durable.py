"""Durable runs on Postgres: LangGraph's ``AsyncPostgresSaver`` checkpoints every round of a strategy, so a run whose
process dies (SIGKILL, a lost node) resumes in another process from its last finished round.

Every strategy plans one round per graph super-step and its controllers are pure functions of the state and the seed,
so a resumed run ends with what an uninterrupted one would have; branches that finished before the crash are kept as
pending writes and are not sampled again.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from ttc_graph.errors import ConfigurationError, TTCError

__all__ = ["CheckpointStoreError", "default_thread", "postgres_checkpointer", "run_durable", "solve_durable"]


class CheckpointStoreError(TTCError):
    """The checkpoint database refuses connections, cannot be reached, or cannot be set up."""


def _imports() -> tuple[Any, Any]:
    try:
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError as exc:
        raise ConfigurationError("Postgres checkpoints need: pip install 'ttc-graph[postgres]'") from exc
    return psycopg, AsyncPostgresSaver


def _conninfo(url: str, connect_timeout: int) -> tuple[str, str]:
    """The connection string with a connect timeout (unless it sets one), and where it points (no password)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(f"postgres: {url!r} is not a postgresql:// URL")
    try:
        params = conninfo_to_dict(url)
    except ProgrammingError as exc:
        raise ConfigurationError(f"postgres: invalid URL ({exc})") from exc
    port = str(params.get("port", "5432"))
    if not all(p.isdigit() for p in port.split(",")):
        raise ConfigurationError(f"postgres: invalid URL (port {port!r} is not a number)")
    where = f"{params.get('host', 'localhost')}:{port}/{params.get('dbname', '')}"
    if "connect_timeout" not in params:
        url = make_conninfo(url, connect_timeout=connect_timeout)
    return url, where


@contextlib.asynccontextmanager
async def postgres_checkpointer(url: str, *, setup: bool = True, connect_timeout: int = 10) -> AsyncIterator[Any]:
    """An ``AsyncPostgresSaver`` on ``url`` (``postgresql://user:pass@host:port/db``), its tables created if
    ``setup``. A server that refuses or does not answer within ``connect_timeout`` seconds is a
    :class:`CheckpointStoreError`, raised before any model call."""
    psycopg, saver_class = _imports()
    conninfo, where = _conninfo(url, connect_timeout)
    async with contextlib.AsyncExitStack() as stack:
        try:
            saver = await stack.enter_async_context(saver_class.from_conn_string(conninfo))
            if setup:
                await saver.setup()
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise CheckpointStoreError(f"postgres at {where} is not usable: {reason}") from exc
        yield saver


def default_thread(spec_json: str, question: str) -> str:
    """A thread id that is the same for the same spec and question, so rerunning a command resumes its run."""
    return "ttc-" + hashlib.sha256(f"{spec_json}\0{question}".encode()).hexdigest()[:16]


async def run_durable(graph: Any, question: str, thread_id: str) -> dict[str, Any]:
    """Run ``graph`` (compiled with a checkpointer) on ``question`` in thread ``thread_id``: an unfinished run of the
    same question resumes from its last checkpoint; a finished one returns its output without a model call.

    Checkpoints are written synchronously (``durability="sync"``): a round's checkpoint is stored before the next
    round starts, so a process killed at any moment loses at most the round in flight."""
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
    state = await graph.aget_state(config)
    if not state.values:
        out: dict[str, Any] = await graph.ainvoke({"question": question}, config, durability="sync")
        return out
    if state.values.get("question") != question:
        raise ConfigurationError(f"thread {thread_id!r} holds a run of another question; pick another thread")
    if state.next or state.tasks:  # tasks: a step whose writes were saved before its checkpoint was
        out = await graph.ainvoke(None, config, durability="sync")
        return out
    channels = graph.output_channels
    keys = [channels] if isinstance(channels, str) else list(channels)
    return {k: state.values[k] for k in keys if k in state.values}


async def solve_durable(spec: Any, question: str, url: str, thread_id: str) -> dict[str, Any]:
    """Build ``spec``'s graph with a Postgres checkpointer and run it durably (see :func:`run_durable`)."""
    from ttc_graph.specs import build_graph

    graph = build_graph(spec)
    async with postgres_checkpointer(url) as saver:
        return await run_durable(graph.compile(checkpointer=saver), question, thread_id)
