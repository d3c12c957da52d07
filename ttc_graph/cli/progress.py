"""The one progress renderer of the command line: a rich bar fed by typed progress events.

A graph run feeds it the ``ttc.round`` events its controllers stream (:class:`~ttc_graph.progress.ProgressEvent`);
a routed strategy's subgraph streams its own, and the bar shows their sum. Sweeps, studies and data-set runs feed it
the dataset driver's :class:`~ttc_graph.eval.dataset_driver.UnitEvent` per unit (:meth:`ProgressBar.unit`).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ttc_graph.cli.common import console as shared_console
from ttc_graph.progress import ProgressEvent, read_progress

if TYPE_CHECKING:
    from ttc_graph.eval.dataset_driver import UnitEvent

__all__ = ["ProgressBar", "run_with_progress"]


class ProgressBar:
    """One bar: ``description``, done of total, an ``info`` line and the elapsed time.

    ``transient`` bars vanish when done (a single question's run); ``log_lines`` prints one line per finished unit
    when the console is not a terminal (a log file).
    """

    def __init__(
        self, description: str, total: int | None, *, console: Console | None = None, transient: bool = False
    ) -> None:
        self.console = console or shared_console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=transient,
        )
        self.task = self.progress.add_task(description, total=total, info="")
        self.rounds: dict[Hashable, ProgressEvent] = {}
        self.started = time.monotonic()
        self.drawn = self.tokens = 0

    def __enter__(self) -> ProgressBar:
        self.progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    @property
    def completed(self) -> int:
        return int(self.progress.tasks[0].completed)

    def update(self, **fields: Any) -> None:
        """``completed``, ``total``, ``description``, ``info``: as given."""
        self.progress.update(self.task, **fields)

    def advance(self, info: str | None = None) -> None:
        """One more unit done."""
        if info is None:
            self.progress.update(self.task, advance=1)
        else:
            self.progress.update(self.task, advance=1, info=info)

    def log(self, line: str) -> None:
        """A line above the bar (e.g. a failure)."""
        self.progress.console.print(line)

    def log_unit(self, line: str) -> None:
        """A line per finished unit, only when the output is a log rather than a terminal."""
        if not self.progress.console.is_terminal:
            self.progress.console.print(line)

    def unit(self, event: UnitEvent) -> None:
        """A dataset driver's event: ``plan`` sets the total; each finished or failed unit advances the bar with
        what this call drew so far, a log line per unit (in a log) and a line per failure."""
        if event.kind == "plan":
            self.update(total=event.total)
            return
        self.drawn += event.generations
        self.tokens += event.tokens
        seconds = time.monotonic() - self.started
        rate = self.tokens / max(1e-9, seconds)
        self.advance(info=f"{self.drawn} generations, {self.tokens} tokens ({rate:.0f}/s); last: {event.label}")
        self.log_unit(
            f"[{self.completed}] {event.kind} {event.label}: +{event.generations} generations, +{event.tokens} tokens"
            f" ({self.drawn} generations in this call, {seconds:.0f}s)"
        )
        if event.kind == "failed":
            self.log(f"[yellow]failed:[/] {event.label}: {event.message}")

    def round(self, event: ProgressEvent, namespace: Hashable = ()) -> None:
        """A run's ``ttc.round`` event (from the graph or one of its subgraphs): the bar shows their sum."""
        self.rounds[namespace] = event
        drawn = sum(e["drawn"] for e in self.rounds.values())
        total = sum(e["total"] for e in self.rounds.values())
        cut = sum(e.get("truncated", 0) for e in self.rounds.values())
        self.progress.update(
            self.task,
            completed=drawn,
            total=max(total, drawn, 1),
            description=f"round {event['round'] + 1}",
            info=f"{cut} stopped at max_tokens" if cut else "",
        )


async def run_with_progress(graph: Any, question: str, total: int) -> dict[str, Any]:
    """Run ``graph`` on ``question`` with its progress events drawn as a bar; the final state comes back."""
    final: dict[str, Any] = {}
    with ProgressBar("sampling", total, transient=True) as bar:
        stream = graph.astream({"question": question}, stream_mode=["custom", "values"], subgraphs=True)
        async for namespace, mode, chunk in stream:  # subgraphs: a routed strategy's rounds show too
            event = read_progress(chunk) if mode == "custom" else None
            if event is not None:
                bar.round(event, namespace)
            elif mode == "values" and not namespace:
                final = chunk
        bar.update(completed=(final.get("usage") or {}).get("generations", 0))
    return final
