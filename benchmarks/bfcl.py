"""BFCL v4 single-turn categories (simple, multiple, parallel, parallel_multiple, irrelevance) with test-time compute.

For every item the policy samples ``--n`` tool-call answers; :func:`ttc_graph.eval.bfcl.check_ast` grades them.
The report gives per category pass@1 (the first sample), majority@n (the most frequent answer, compared with
:func:`~ttc_graph.eval.bfcl.canonical_calls`), judge-weighted@n (answers weighted by an LLM judge's scores),
pass@n (any sample valid), each with a Wilson 95% interval over items, and the mean tokens spent per item:

    .venv/bin/python benchmarks/bfcl.py --base-url http://127.0.0.1:8090/v1 --model bench --limit 20 --n 8
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ttc_graph.agents import TestTimeChatModel
from ttc_graph.endpoints import OpenAIEndpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.eval.bfcl import CATEGORIES, BFCLItem, check_ast, load_bfcl
from ttc_graph.eval.bootstrap import bootstrap_mean
from ttc_graph.eval.sweep import wilson_interval
from ttc_graph.messages import to_langchain_messages
from ttc_graph.selection import select_answer
from ttc_graph.state import Candidate
from ttc_graph.verifiers.action_judge import ActionJudgeVerifier

__all__ = ["METRICS", "RECORD_KEYS", "load_items", "main", "parse_args", "report", "run_item", "summarize"]

METRICS: dict[str, str] = {
    "pass1": "pass@1",
    "majority": "majority@n",
    "judge": "judge-weighted@n",
    "passn": "pass@n",
}
"""Record field → column title."""

RECORD_KEYS = ("category", *METRICS, "tokens")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: ``--base-url``, ``--model``, ``--categories``, ``--limit`` (per category), ``--n``,
    ``--concurrency``, ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8090/v1", help="OpenAI-compatible endpoint")
    parser.add_argument("--model", default="bench", help="model name sent to the endpoint")
    parser.add_argument(
        "--categories",
        default=",".join(CATEGORIES),
        help=f"comma-separated categories (default all: {','.join(CATEGORIES)})",
    )
    parser.add_argument("--limit", type=int, default=None, help="first items of each category (default all)")
    parser.add_argument("--n", type=int, default=8, help="samples per item")
    parser.add_argument("--concurrency", type=int, default=2, help="items in flight at once")
    parser.add_argument("--slots", type=int, default=8, help="requests in flight at once (the server's slots)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens per sample")
    parser.add_argument("--out", default="docs/bfcl.json", help="where the records and the summary are written")
    args = parser.parse_args(argv)
    args.categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    unknown = [c for c in args.categories if c not in CATEGORIES]
    if unknown or not args.categories:
        parser.error(f"--categories: unknown {unknown}; use some of {', '.join(CATEGORIES)}")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit: must be >= 1")
    if args.n < 1:
        parser.error("--n: must be >= 1")
    return args


def load_items(categories: Sequence[str], limit: int | None) -> list[BFCLItem]:
    """The first ``limit`` items of each category, interleaved (the first of each, then the second of each...), so
    a run stopped early has covered every category about equally."""
    per_category = [load_bfcl(category, limit) for category in categories]
    rows = itertools.zip_longest(*per_category)
    return [item for row in rows for item in row if item is not None]


_SHARED: dict[str, Any] = {}


def _model(args: argparse.Namespace) -> TestTimeChatModel:
    """One test-time chat model for the whole run: best-of-n weighted by an LLM judge of each proposed action (the
    policy judging its own actions), over an OpenAI-compatible endpoint."""
    if "model" not in _SHARED:
        policy = OpenAIEndpoint(args.base_url, args.model, max_concurrency=args.slots, max_tokens=args.max_tokens)
        judge = ActionJudgeVerifier(policy)
        _SHARED["model"] = TestTimeChatModel(
            model=policy, n=args.n, selection="weighted", verifier=judge, temperature=args.temperature
        )
    return _SHARED["model"]


def _candidates(reply: Any) -> list[Candidate]:
    """The run's candidates (as the chat model reports them) in sample order."""
    out: list[Candidate] = []
    for c in reply.response_metadata["ttc"]["candidates"]:
        cand: Candidate = {
            "id": c["id"], "text": c["text"], "answer": c["answer"], "parsable": c["answer"] is not None,
            "score": c["score"], "step_scores": None, "scored": c["score"] is not None, "tokens": c["tokens"],
            "round": 1, "finish_reason": c["finish_reason"], "tool_calls": c["tool_calls"],
        }  # fmt: skip
        if c.get("invalid"):
            cand["meta"] = {"invalid": c["invalid"]}
        out.append(cand)
    return sorted(out, key=lambda c: int(c["id"].rsplit("s", 1)[-1]) if c["id"].rsplit("s", 1)[-1].isdigit() else 0)


async def run_item(item: BFCLItem, args: argparse.Namespace) -> dict[str, Any]:
    """Sample ``args.n`` answers to one item with the test-time chat model (its tools bound), grade them.

    One run gives every figure from the same samples: ``pass1`` whether the first sample is valid; ``majority``
    the action most samples chose (``select_answer(..., "majority")`` over the run's candidates); ``judge`` the
    run's own answer (the action with the highest summed judge score); ``passn`` whether any sample is valid;
    ``tokens`` every completion token the item cost (samples and judge)."""
    model = _model(args)
    reply = await model.ainvoke(to_langchain_messages(item.messages), tools=item.tools)
    cands = _candidates(reply)
    valid = [check_ast(item, c.get("tool_calls") or []).valid for c in cands]
    chosen = select_answer(cands, "majority")
    voted = next((c for c in cands if c["id"] == chosen.candidate_id), None)
    usage = reply.usage_metadata or {}
    return {
        "id": item.id,
        "category": item.category,
        "pass1": bool(valid and valid[0]),
        "pass1_mean": sum(valid) / len(valid) if valid else 0.0,
        "majority": check_ast(item, (voted or {}).get("tool_calls") or []).valid if voted else False,
        "judge": check_ast(item, reply.tool_calls).valid,
        "passn": any(valid),
        "tokens": int(usage.get("output_tokens", 0)),
        "prompt_tokens": int(usage.get("input_tokens", 0)),
        "samples": len(cands),
    }


def _check_records(results: Sequence[Mapping[str, Any]]) -> None:
    for index, record in enumerate(results):
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise ConfigurationError(f"record {index} lacks {missing}; a record has {list(RECORD_KEYS)}")


def _order(categories: set[str]) -> list[str]:
    return [c for c in CATEGORIES if c in categories] + sorted(categories - set(CATEGORIES))


def summarize(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per category, then ``all`` (pooled over items): ``items``, each metric's ``rate`` and Wilson 95% ``low`` /
    ``high``, ``tokens`` (mean per item) and, when the records hold it, ``pass1_mean``: the share of valid samples,
    pass@1's unbiased estimate from all n samples, with a bootstrap 95% interval over items."""
    _check_records(results)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in results:
        groups.setdefault(str(record["category"]), []).append(record)
    ordered = [(c, groups[c]) for c in _order(set(groups))]
    if len(ordered) > 1:
        ordered.append(("all", list(results)))
    summary: dict[str, dict[str, Any]] = {}
    for category, records in ordered:
        row: dict[str, Any] = {"items": len(records), "tokens": statistics.fmean(r["tokens"] for r in records)}
        for key in METRICS:
            hits = sum(bool(r[key]) for r in records)
            low, high = wilson_interval(hits, len(records))
            row[key] = {"hits": hits, "rate": hits / len(records), "low": low, "high": high}
        if all("pass1_mean" in r for r in records):
            rate, low, high = bootstrap_mean([float(r["pass1_mean"]) for r in records])
            row["pass1_mean"] = {"rate": rate, "low": low, "high": high}
        summary[category] = row
    return summary


def report(results: Sequence[Mapping[str, Any]]) -> str:
    """Print (and return) a markdown table: a row per category (and ``all`` when several), the four metrics in
    percent with their Wilson 95% intervals, and the mean tokens per item."""
    if not results:
        text = "No BFCL records."
        print(text)
        return text
    summary = summarize(results)
    means = all("pass1_mean" in row for row in summary.values())
    titles = [*METRICS.values(), *(["pass@1, mean of n"] if means else [])]
    header = ["category", "items", *(f"{title} [95% CI]" for title in titles), "tokens/item"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for category, row in summary.items():
        cells = [category, str(row["items"])]
        for key in [*METRICS, *(["pass1_mean"] if means else [])]:
            m = row[key]
            cells.append(f"{100 * m['rate']:.1f}% [{100 * m['low']:.1f}, {100 * m['high']:.1f}]")
        cells.append(f"{row['tokens']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def _partial_path(out: Path) -> Path:
    """Where finished records wait (one JSON line each) until the run completes: a stopped run resumes from it."""
    return out.with_name(out.stem + ".partial.jsonl")


def _load_partial(path: Path, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The records a stopped run with the same settings finished, by item id (another setting's are ignored)."""
    if not path.exists():
        return {}
    done: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("config") == config:
            done[entry["record"]["id"]] = entry["record"]
    return done


def _load_finished(out: Path, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The records of a finished run with the same settings already in ``out``: a rerun reports, samples nothing."""
    if not out.exists():
        return {}
    payload = json.loads(out.read_text(encoding="utf-8"))
    if {key: payload.get("config", {}).get(key) for key in config} != dict(config):
        return {}
    return {record["id"]: record for record in payload.get("records", [])}


_SETTINGS = ("base_url", "model", "n", "temperature", "max_tokens")


async def _run_all(items: Sequence[BFCLItem], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run every item not already finished (resuming from the partial file), with a progress bar."""
    from rich.progress import Progress

    gate = asyncio.Semaphore(args.concurrency)
    partial = _partial_path(Path(args.out))
    config = {key: getattr(args, key) for key in _SETTINGS}
    done = {**_load_finished(Path(args.out), config), **_load_partial(partial, config)}
    partial.parent.mkdir(parents=True, exist_ok=True)
    with Progress() as progress:
        task = progress.add_task("BFCL items", total=len(items), completed=sum(i.id in done for i in items))

        async def one(item: BFCLItem) -> dict[str, Any]:
            if item.id in done:
                return done[item.id]
            async with gate:
                record = await run_item(item, args)
            with partial.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"config": config, "record": record}) + "\n")
            progress.advance(task)
            return record

        return list(await asyncio.gather(*(one(item) for item in items)))


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run every item, print the report and write ``--out``."""
    args = parse_args(argv)
    items = load_items(args.categories, args.limit)
    print(f"BFCL v4: {len(items)} items from {', '.join(args.categories)}, n={args.n}, model {args.model}")
    results = asyncio.run(_run_all(items, args))
    report(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": vars(args), "summary": summarize(results), "records": results}
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    _partial_path(out).unlink(missing_ok=True)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
