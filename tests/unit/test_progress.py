"""Every controller streams the one typed progress event (``ttc.round``), and its ``drawn`` advances to ``total``."""

from __future__ import annotations

from typing import Any

from ttc_graph.progress import ProgressEvent, read_progress
from ttc_graph.strategies import create_beam_search, create_best_of_n, create_revisions
from ttc_graph.testing import ScriptedEndpoint

QUESTION = "What is 2 + 2?"


async def progress_of(graph: Any) -> list[ProgressEvent]:
    chunks = [c async for c in graph.compile().astream({"question": QUESTION}, stream_mode="custom")]
    rounds = [c for c in chunks if isinstance(c, dict) and c.get("event") == "ttc.round"]
    events = [read_progress(c) for c in rounds]
    assert all(e is not None for e in events), rounds  # every round event is the typed one
    return [e for e in events if e is not None]


def advances(events: list[ProgressEvent], total: int) -> None:
    drawn = [e["drawn"] for e in events]
    assert drawn == sorted(drawn) and drawn[0] == 0 and drawn[-1] == total, drawn
    assert {e["total"] for e in events} == {total}
    assert events[-1]["stop"] == "complete"


async def test_a_revisions_run_streams_progress_that_advances() -> None:
    policy = ScriptedEndpoint(["So the answer is \\boxed{4}."])
    events = await progress_of(create_revisions(policy, n=6, chain_length=3, selection="majority", seed=1))
    advances(events, 6)
    assert len(events) == 4  # three rounds of attempts, then the stop
    assert events[1]["drawn"] == 2 and "chains" in events[1]  # two chains: one attempt each after the first round


async def test_best_of_n_streams_progress_that_advances() -> None:
    policy = ScriptedEndpoint(["So the answer is \\boxed{4}."])
    advances(await progress_of(create_best_of_n(policy, n=4, selection="majority")), 4)


async def test_a_step_search_streams_finished_paths_as_progress() -> None:
    policy = ScriptedEndpoint(["2 + 2 = 4.\n\nSo the answer is \\boxed{4}."])
    graph = create_beam_search(policy, lambda q, s: 0.5, n=4, beam_width=2, max_steps=3)
    events = await progress_of(graph)
    assert events[-1]["drawn"] == events[-1]["total"] == 4
    assert all("beams" in e for e in events)


def test_other_custom_events_are_not_progress() -> None:
    assert read_progress({"event": "ttc.sample", "drawn": 1}) is None
    assert read_progress({"event": "ttc.round", "round": 0, "drawn": 1}) is None  # no total: not the typed event
    assert read_progress("text") is None


def test_the_cli_bar_follows_a_revisions_run() -> None:
    import asyncio

    from rich.console import Console

    from ttc_graph.cli.progress import ProgressBar

    policy = ScriptedEndpoint(["So the answer is \\boxed{4}."])
    events = asyncio.run(progress_of(create_revisions(policy, n=4, chain_length=2, selection="majority")))
    with ProgressBar("sampling", 1, console=Console(quiet=True)) as bar:
        seen = []
        for event in events:
            bar.round(event)
            seen.append(bar.completed)
    assert seen == [0, 2, 4] and bar.progress.tasks[0].total == 4  # no longer stuck at 0


CUT = ("Step 1: 17 + 25. The sum so far is 0", "length")  # stopped at max_tokens


async def test_progress_counts_truncated_samples() -> None:
    policy = ScriptedEndpoint([CUT, "So \\boxed{42}.", CUT, "So \\boxed{42}."])
    events = await progress_of(create_best_of_n(policy, n=4, selection="majority"))
    assert [e["truncated"] for e in events] == [0, 2]
    assert events[-1]["stop"] == "complete"


async def test_revisions_progress_counts_truncated_attempts() -> None:
    policy = ScriptedEndpoint([CUT])
    events = await progress_of(create_revisions(policy, n=2, chain_length=1, selection="majority"))
    assert events[-1]["truncated"] == 2


def test_the_cli_bar_says_how_many_samples_stopped_at_max_tokens() -> None:
    import asyncio

    from rich.console import Console

    from ttc_graph.cli.progress import ProgressBar

    policy = ScriptedEndpoint([CUT, "So \\boxed{42}.", CUT, CUT])
    events = asyncio.run(progress_of(create_best_of_n(policy, n=4, selection="majority")))
    with ProgressBar("sampling", 1, console=Console(quiet=True)) as bar:
        for event in events:
            bar.round(event)
    assert bar.progress.tasks[0].fields["info"] == "3 stopped at max_tokens"
