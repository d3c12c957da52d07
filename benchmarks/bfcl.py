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
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ttc_graph.errors import ConfigurationError
from ttc_graph.eval.bfcl import CATEGORIES, BFCLItem, load_bfcl
from ttc_graph.eval.sweep import wilson_interval

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
    """The first ``limit`` items of each category, in the order given."""
    return [item for category in categories for item in load_bfcl(category, limit)]


async def run_item(item: BFCLItem, args: argparse.Namespace) -> dict[str, Any]:
    """Sample and grade one item; to be implemented on the library's chat-model wrapper.

    It must send ``item.messages`` with ``item.tools`` to the policy at ``args.base_url`` / ``args.model``, draw
    ``args.n`` answers (each a list of tool calls, possibly empty), grade each with ``check_ast(item, calls)`` and
    return one record::

        {"id": item.id, "category": item.category,
         "pass1": bool,     # the first sample is valid
         "majority": bool,  # the most frequent answer (grouped by canonical_calls(item, calls)) is valid
         "judge": bool,     # the answer with the highest summed judge score is valid
         "passn": bool,     # at least one of the n samples is valid
         "tokens": int}     # every completion token spent on the item (samples and judge)
    """
    raise NotImplementedError("run_item: sample args.n tool-call answers with the chat-model wrapper and grade them")


def _check_records(results: Sequence[Mapping[str, Any]]) -> None:
    for index, record in enumerate(results):
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise ConfigurationError(f"record {index} lacks {missing}; a record has {list(RECORD_KEYS)}")


def _order(categories: set[str]) -> list[str]:
    return [c for c in CATEGORIES if c in categories] + sorted(categories - set(CATEGORIES))


def summarize(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per category, then ``all`` (pooled over items): ``items``, each metric's ``rate`` and Wilson 95% ``low`` /
    ``high``, and ``tokens`` (mean per item)."""
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
        summary[category] = row
    return summary


def report(results: Sequence[Mapping[str, Any]]) -> str:
    """Print (and return) a markdown table: a row per category (and ``all`` when several), the four metrics in
    percent with their Wilson 95% intervals, and the mean tokens per item."""
    if not results:
        text = "No BFCL records."
        print(text)
        return text
    header = ["category", "items", *(f"{title} [95% CI]" for title in METRICS.values()), "tokens/item"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for category, row in summarize(results).items():
        cells = [category, str(row["items"])]
        for key in METRICS:
            m = row[key]
            cells.append(f"{100 * m['rate']:.1f}% [{100 * m['low']:.1f}, {100 * m['high']:.1f}]")
        cells.append(f"{row['tokens']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


async def _run_all(items: Sequence[BFCLItem], args: argparse.Namespace) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(args.concurrency)

    async def one(item: BFCLItem) -> dict[str, Any]:
        async with gate:
            return await run_item(item, args)

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
    print(f"saved {out}")


if __name__ == "__main__":
    main()
