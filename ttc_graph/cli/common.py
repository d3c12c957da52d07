"""What the commands share: one default per option, the console, exit codes and the result tables."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ttc_graph.budget import COUNTERS
from ttc_graph.defaults import DEFAULT_EVAL_MAX_TOKENS, DEFAULT_EVAL_TEMPERATURE
from ttc_graph.errors import ConfigurationError, TTCError

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_LIMIT",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_SELECTION",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_VERIFIER",
    "check_gguf",
    "check_ray",
    "console",
    "drain_on_signal",
    "exit_if_no_answer",
    "exit_on_failures",
    "fail",
    "failure",
    "print_curves",
    "print_not_started",
    "print_output",
    "print_result",
    "sigterm_as_interrupt",
    "stop_instant",
]

# One default per concept, shared by every command that has the option.
DEFAULT_MAX_TOKENS = DEFAULT_EVAL_MAX_TOKENS
DEFAULT_TEMPERATURE = DEFAULT_EVAL_TEMPERATURE
DEFAULT_SELECTION = "majority"
DEFAULT_VERIFIER = "confidence"
DEFAULT_DB = Path("results/eval.sqlite")
DEFAULT_LIMIT = 20

console = Console()


def fail(exc: TTCError) -> typer.Exit:
    """Print ``exc`` and the exit (code 2: invalid input or setup) to raise."""
    console.print(f"[red]error:[/] {exc}")
    return typer.Exit(2)


def failure(out: dict[str, Any]) -> str | None:
    """Why a run produced no answer when the cause is a failure (requests or the run), else None."""
    if out.get("answer") is not None:
        return None
    failed = int((out.get("usage") or {}).get("failed_requests", 0) or 0)
    if failed:
        return f"{failed} request(s) failed"
    return "the run stopped on an error" if out.get("stop_reason") == "error" else None


def exit_if_no_answer(out: dict[str, Any]) -> None:
    """Exit 1 when requests failed and no answer could be produced (unparsable samples alone exit 0)."""
    if reason := failure(out):
        first = next(iter(out.get("errors") or []), "no detail")
        console.print(f"[red]error:[/] no answer: {reason}; first error: {first}")
        raise typer.Exit(1)


def exit_on_failures(failures: Sequence[str], failed: int) -> None:
    """Print the first five ``failures`` of a call's units; exit 1 when any unit ``failed``."""
    for failure in failures[:5]:
        console.print(f"[yellow]failed:[/] {failure}")
    if failed:
        raise typer.Exit(1)


def check_gguf(gguf: Path | None, base_url: str | None) -> Path | None:
    """``--gguf`` checked against ``--base-url`` and resolved: a file, or ``hf:REPO/FILE`` fetched from the hub
    (:mod:`ttc_graph.local.hub`)."""
    if gguf is not None and (base_url or os.environ.get("TTC_BASE_URL")):
        raise ConfigurationError("give either --gguf or --base-url / TTC_BASE_URL, not both")
    if gguf is None:
        return None
    from ttc_graph.local.hub import resolve_gguf

    gguf = resolve_gguf(gguf)
    if not gguf.is_file():
        raise ConfigurationError(f"--gguf: {gguf} is not a file")
    return gguf


def check_ray(ray: str | None, replicas: int | None) -> None:
    if ray is not None or replicas is not None:
        from ttc_graph.cli.runtime import check_ray_options

        check_ray_options(ray, replicas)


def stop_instant(text: str | None, now: datetime.datetime | None = None) -> float | None:
    """``--stop-by``'s TIME as a :func:`time.time` instant: ``HH:MM`` next (local time: today's, or tomorrow's once
    today's has passed, as in "stop by 01:30" said at 23:00) or an ISO date and time; None when not given."""
    if text is None:
        return None
    now = now or datetime.datetime.now().astimezone()
    try:
        clock = datetime.datetime.strptime(text, "%H:%M").time()
    except ValueError:
        try:
            when = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise ConfigurationError(f"stop-by: {text!r} is neither HH:MM nor an ISO date and time") from None
        return (when if when.tzinfo else when.astimezone()).timestamp()
    when = datetime.datetime.combine(now.date(), clock, tzinfo=now.tzinfo)
    return (when if when > now else when + datetime.timedelta(days=1)).timestamp()


def print_not_started(not_started: int, stop_by: str | None, signalled: bool) -> None:
    """The line of a run that left units unstarted: drained by a signal, or by ``--stop-by``."""
    if not_started:
        why = "" if stop_by is None or signalled else f" (none would finish by {stop_by})"
        console.print(f"stopped early: {not_started} unit(s) not started{why}; rerun to resume")


@contextlib.contextmanager
def drain_on_signal(what: str = "units") -> Iterator[threading.Event]:
    """An event the first SIGINT (Ctrl-C) or SIGTERM sets, so a long run drains (no new unit starts, the ones in
    flight finish and are kept); a second signal raises KeyboardInterrupt, stopping at once."""
    import signal

    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        console.print(f"[yellow]stopping:[/] the {what} in flight finish and are kept; signal again to stop now")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so a killed run still stops the local server and keeps its results."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_result(out: dict[str, Any]) -> None:
    table = Table(title="candidates", show_lines=False)
    for col in ("#", "answer", "score", "tokens", "solution (start)"):
        table.add_column(col)
    for i, c in enumerate(out.get("candidates", [])):
        score = "-" if c.get("score") is None else f"{c['score']:.3f}"
        snippet = " ".join(c["text"].split())[:70]
        table.add_row(str(i), str(c.get("answer")), score, str(c.get("tokens")), snippet)
    console.print(table)
    usage = out.get("usage", {})
    ledger = Table(title="usage")
    for col in ("kind", "generations", "requests", "prompt tokens", "completion tokens", "failed"):
        ledger.add_column(col)
    rows = [*usage.get("by_kind", {}).items(), ("total", usage)]
    for kind, u in rows:
        ledger.add_row(kind, *(str(u.get(k, 0)) for k in COUNTERS))
    console.print(ledger)
    console.print(f"wall time {usage.get('seconds', 0):.1f}s, stop reason: {out.get('stop_reason')}")
    notes = [*out.get("errors", []), *((out.get("diagnostics") or {}).get("warnings") or [])]
    for note in notes[:5]:
        console.print(f"[yellow]warning:[/] {note}")
    console.print(f"[bold green]answer:[/] {out.get('answer')}")


def print_output(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps({k: v for k, v in out.items() if k != "messages"}, default=str))
    else:
        print_result(out)


def print_curves(curves: list[Any], title: str) -> None:
    table = Table(title=title)
    for col in ("strategy", "budget", "questions", "accuracy", "95% interval", "gens/q", "tokens/q", "seconds/q"):
        table.add_column(col)
    for c in curves:
        table.add_row(
            c.strategy, str(c.budget), str(c.questions), f"{c.accuracy:.3f} ({c.correct}/{c.questions})",
            f"[{c.low:.3f}, {c.high:.3f}]", f"{c.generations:.1f}", f"{c.tokens:.0f}", f"{c.seconds:.1f}",
        )  # fmt: skip
    console.print(table)
