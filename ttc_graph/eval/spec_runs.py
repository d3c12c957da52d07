"""Run one strategy spec over a labelled data set, each finished question saved at once (resumable)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from ttc_graph.budget import policy_generations, policy_tokens
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.grading import grade
from ttc_graph.eval.store import ResultRow, ResultStore

__all__ = ["run_graph_over_dataset"]


async def run_graph_over_dataset(
    graph: Any,
    *,
    strategy: str,
    budget: int,
    problems: Sequence[Problem],
    dataset: str,
    store: ResultStore,
    run: str,
    concurrency: int = 2,
    on_done: Callable[[ResultRow], None] | None = None,
) -> list[ResultRow]:
    """Answer every problem not yet in ``store`` for (``run``, ``strategy``, ``budget``); return all rows.

    A row's ``generations`` and ``tokens`` are the policy's (its samples and their completion tokens), as in a sweep.
    """
    done = {qid for s, b, qid in store.done(run) if s == strategy and b == budget}
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(problem: Problem) -> None:
        async with sem:
            t0 = time.perf_counter()
            out = await graph.ainvoke({"question": problem.question})
            usage = out.get("usage", {})
            row = ResultRow(
                run=run,
                strategy=strategy,
                budget=budget,
                question_id=problem.id,
                dataset=dataset,
                answer=out.get("answer"),
                reference=problem.reference,
                correct=grade(dataset, out.get("answer"), problem.reference),
                generations=policy_generations(usage),
                tokens=policy_tokens(usage),
                seconds=time.perf_counter() - t0,
                stop_reason=out.get("stop_reason"),
                details={"usage": usage},
                candidates=[
                    {k: c.get(k) for k in ("id", "answer", "score", "tokens")} for c in out.get("candidates", [])
                ],
            )
            store.save([row])
            if on_done:
                on_done(row)

    await asyncio.gather(*(one(p) for p in problems if p.id not in done))
    wanted = {p.id for p in problems}
    return [r for r in store.rows(run) if r.strategy == strategy and r.budget == budget and r.question_id in wanted]
