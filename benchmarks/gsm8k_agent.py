"""GSM8K through an agent with a calculator tool, against chain-of-thought best-of-N on the same questions.

For each of the first ``--questions`` GSM8K test questions (the compute-optimal study's questions) the agent
(LangChain's ``create_agent`` with ttc_graph's safe calculator; its model a ``TestTimeChatModel`` with ``n=1``, so a
model that writes its calls as text still calls the tool) runs ``--n`` times through ``create_agent_best_of_n``
with majority selection over the runs' final answers. From those same runs the script reports the agent's pass@1
(the mean over runs, an unbiased estimate), its majority@n (best-of-n over agent runs) and pass@n, each with a 95%
interval over questions, and the completion tokens per question; beside them, chain-of-thought best-of-n weighted
and majority@n from the study's stored pools on the same questions (``--db``), with their tokens:

    .venv/bin/python benchmarks/gsm8k_agent.py --base-url http://127.0.0.1:8090/v1 --model bench --questions 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from ttc_graph.agents import TestTimeChatModel, calculator, create_agent_best_of_n
from ttc_graph.endpoints import OpenAIEndpoint
from ttc_graph.eval.bootstrap import bootstrap_mean
from ttc_graph.eval.datasets import load_dataset
from ttc_graph.eval.grading import grade
from ttc_graph.eval.sweep import wilson_interval

__all__ = [
    "SETTINGS",
    "SYSTEM",
    "build_agent",
    "cot_rows",
    "load_partial",
    "main",
    "parse_args",
    "partial_path",
    "summarize",
]

SYSTEM = (
    "You solve grade-school math word problems. Use the calculator tool for every arithmetic step: call it with an"
    " arithmetic expression. When you know the result, reply with one sentence ending in 'The answer is N.'"
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8090/v1")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--questions", type=int, default=30, help="the first N GSM8K test questions")
    parser.add_argument("--n", type=int, default=8, help="agent runs per question")
    parser.add_argument("--concurrency", type=int, default=1, help="questions in flight at once")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=384, help="tokens per model call")
    parser.add_argument("--steps", type=int, default=8, help="model calls per run at most")
    parser.add_argument("--db", default="docs/study/study.sqlite", help="the study's database (CoT pools)")
    parser.add_argument("--run", default="gsm8k-qwen2.5-coder-0.5b", help="the study's name in --db")
    parser.add_argument("--out", default="docs/gsm8k_agent.json")
    args = parser.parse_args(argv)
    if args.questions < 1 or args.n < 1 or args.steps < 1:
        parser.error("--questions, --n and --steps must be >= 1")
    return args


def build_agent(policy: OpenAIEndpoint, args: argparse.Namespace) -> Any:
    """The agent one run uses: a test-time chat model with one sample per call (it parses calls written as text)."""
    model = TestTimeChatModel(model=policy, n=1, temperature=args.temperature, max_tokens=args.max_tokens)
    return create_agent(model, tools=[calculator], system_prompt=SYSTEM).with_config(
        {"recursion_limit": 2 * args.steps + 1}
    )


def cot_rows(db: str, run: str, ids: Sequence[str], n: int) -> dict[str, dict[str, Any]]:
    """Chain-of-thought figures per question from the study's stored pool: best-of-n weighted and majority rows."""
    out: dict[str, dict[str, Any]] = {}
    with sqlite3.connect(db) as con:
        for strategy in ("bon_weighted", "majority"):
            for qid, correct, tokens in con.execute(
                "select question_id, correct, tokens from runs where run = ? and strategy = ? and budget = ?",
                (run, strategy, n),
            ):
                if qid in ids:
                    out.setdefault(qid, {})[strategy] = {"correct": bool(correct), "tokens": int(tokens)}
    return out


def summarize(records: Sequence[dict[str, Any]]) -> str:
    """A markdown table: each method's accuracy with its 95% interval and its mean completion tokens per question."""
    q = len(records)
    rows = []

    def row(name: str, values: list[float], tokens: list[float]) -> None:
        if all(v in (0.0, 1.0) for v in values):
            rate = statistics.fmean(values)
            low, high = wilson_interval(round(sum(values)), q)
        else:  # a mean of shares (pass@1 over runs): a bootstrap interval over questions
            rate, low, high = bootstrap_mean(values)
        rows.append(
            f"| {name} | {100 * rate:.1f}% [{100 * low:.1f}, {100 * high:.1f}] | {statistics.fmean(tokens):.0f} |"
        )

    n = records[0]["n"]
    agent_tokens = [r["agent_tokens"] for r in records]
    row("agent pass@1 (mean over runs)", [r["agent_pass1"] for r in records], [t / n for t in agent_tokens])
    row(f"agent best-of-{n} (majority over runs)", [float(r["agent_majority"]) for r in records], agent_tokens)
    row(f"agent pass@{n}", [float(r["agent_passn"]) for r in records], agent_tokens)
    with_cot = [r for r in records if r.get("cot")]
    if len(with_cot) == q:
        for key, title in (("bon_weighted", f"CoT best-of-{n} weighted (study)"), ("majority", f"CoT majority@{n}")):
            if all(key in r["cot"] for r in records):
                row(title, [float(r["cot"][key]["correct"]) for r in records],
                    [r["cot"][key]["tokens"] for r in records])  # fmt: skip
    header = (
        f"GSM8K, first {q} test questions\n\n"
        "| method | accuracy [95% CI] | completion tokens / question |\n|---|---:|---:|"
    )
    text = "\n".join([header, *rows])
    print(text)
    return text


SETTINGS = ("base_url", "model", "n", "temperature", "max_tokens", "steps", "db", "run")
"""The arguments a finished question's record depends on: a rerun with the same ones resumes."""


def partial_path(out: Path) -> Path:
    """Where finished questions wait (one JSON line each) until the run completes."""
    return out.with_name(out.stem + ".partial.jsonl")


def load_partial(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The records a stopped run with the same settings finished, by question id."""
    if not path.exists():
        return {}
    entries = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {e["record"]["id"]: e["record"] for e in entries if e.get("config") == settings}


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    problems = list(load_dataset("gsm8k", limit=args.questions))
    policy = OpenAIEndpoint(args.base_url, args.model, max_concurrency=8, max_tokens=args.max_tokens)
    strategy = create_agent_best_of_n(build_agent(policy, args), n=args.n, selection="majority").compile()
    cot = cot_rows(args.db, args.run, [p.id for p in problems], args.n) if Path(args.db).is_file() else {}
    gate = asyncio.Semaphore(args.concurrency)
    partial = partial_path(Path(args.out))
    settings = {key: getattr(args, key) for key in SETTINGS}
    done = load_partial(partial, settings)
    records: list[dict[str, Any]] = [done[p.id] for p in problems if p.id in done]
    partial.parent.mkdir(parents=True, exist_ok=True)
    if records:
        print(f"resuming: {len(records)} of {len(problems)} questions already done", flush=True)

    async def one(problem: Any) -> None:
        if problem.id in done:
            return
        async with gate:
            t0 = time.monotonic()
            out = await strategy.ainvoke({"messages": [HumanMessage(problem.question)]})
            cands = out.get("candidates") or []
            correct = [bool(grade("gsm8k", c.get("answer"), problem.reference)) for c in cands]
            usage = out.get("usage") or {}
            record = {
                "id": problem.id,
                "n": args.n,
                "runs": len(cands),
                "failed_runs": sum(bool(c.get("error")) for c in cands),
                "agent_pass1": statistics.fmean(correct) if correct else 0.0,
                "agent_majority": bool(grade("gsm8k", out.get("answer"), problem.reference)),
                "agent_passn": any(correct),
                "agent_tokens": int(usage.get("completion_tokens", 0)),
                "agent_prompt_tokens": int(usage.get("prompt_tokens", 0)),
                "agent_requests": int(usage.get("requests", 0)),
                "seconds": round(time.monotonic() - t0, 1),
                "cot": cot.get(problem.id),
            }
            records.append(record)
            with partial.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"config": settings, "record": record}) + "\n")
            print(f"q{problem.id}: agent pass@1 {record['agent_pass1']:.2f}, majority {record['agent_majority']},"
                  f" {record['agent_tokens']} tokens in {record['seconds']} s", flush=True)  # fmt: skip

    await asyncio.gather(*(one(p) for p in problems))
    return sorted(records, key=lambda r: int(r["id"]) if str(r["id"]).isdigit() else 0)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    records = asyncio.run(run(args))
    table = summarize(records)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(args), "table": table, "records": records}, indent=2) + "\n")
    partial_path(out).unlink(missing_ok=True)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
