"""Plots and the eval / replay / plot commands (scripted endpoint, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ttc_graph.cli as cli
from ttc_graph.cli import StaticRuntime
from ttc_graph.eval import PoolQuestion, ResultStore, Sample, replay, summarize
from ttc_graph.eval.plots import plot_curves, plot_replay
from ttc_graph.testing import FakeCall, ScriptedEndpoint

runner = CliRunner()


def answer(call: FakeCall, index: int) -> str:
    return f"So the answer is \\boxed{{{index % 3}}}."


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "gsm8k").mkdir()
    rows = [{"question": f"Question {i}?", "answer": f"#### {i % 3}"} for i in range(5)]
    (tmp_path / "gsm8k" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setenv("TTC_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture()
def scripted() -> ScriptedEndpoint:
    return ScriptedEndpoint(answer, native_n=False)


def pool_file(path: Path) -> Path:
    rows = []
    for i in range(4):
        samples = [
            {"tokens": 10 + k, "mean_lp": -0.1 * (k + 1), "min_lp": -1.0, "pred": float(k % 2), "correct": k % 2 == 0}
            for k in range(4)
        ]
        rows.append({"idx": i, "gold": 0.0, "samples": samples})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def text(result: object) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(str(getattr(result, "output", "")).split())


def assert_images(paths: list[Path]) -> None:
    assert [p.suffix for p in paths] == [".png", ".svg"]
    png, svg = paths
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert svg.stat().st_size > 1000 and b"<svg" in svg.read_bytes()[:2000]


def test_plot_replay_writes_png_and_svg(tmp_path: Path) -> None:
    pool = [PoolQuestion(str(i), tuple(Sample(str(k % 2), 0.5, k % 2 == 0, 10) for k in range(4))) for i in range(3)]
    assert_images(plot_replay(replay(pool, [1, 2, 4], trials=10), tmp_path / "img" / "replay.png", title="t"))


def test_eval_then_plot_and_resume(tmp_path: Path, data_dir: Path, scripted: ScriptedEndpoint) -> None:
    db = tmp_path / "eval.sqlite"
    args = [
        "eval", "--run", "demo", "--limit", "4", "--db", str(db), "--strategy", "best_of_n:majority",
        "--budgets", "1,2,4", "--plot", str(tmp_path / "curves.png"),
    ]  # fmt: skip
    result = runner.invoke(cli.app, args, obj=StaticRuntime(scripted))
    assert result.exit_code == 0, result.output
    assert "0 unit(s) already finished, 4 to run" in text(result)
    assert "16 generations in 16 policy requests" in text(result)
    assert sum(c.n for c in scripted.calls) == 16
    assert_images([tmp_path / "curves.png", tmp_path / "curves.svg"])

    again = runner.invoke(cli.app, args, obj=StaticRuntime(scripted))
    assert again.exit_code == 0, again.output
    assert "4 unit(s) already finished, 0 to run" in text(again)
    assert sum(c.n for c in scripted.calls) == 16  # nothing redone

    out = tmp_path / "plots" / "run.png"
    plotted = runner.invoke(
        cli.app, ["plot", "--db", str(db), "--run", "demo", "--out", str(out)], obj=StaticRuntime(scripted)
    )
    assert plotted.exit_code == 0, plotted.output
    assert_images([out, out.with_suffix(".svg")])
    with ResultStore(db) as store:
        assert_images(plot_curves(summarize(store.rows("demo")), tmp_path / "direct"))

    replayed = runner.invoke(
        cli.app,
        ["replay", str(db), "--run", "demo", "--verifier", "none", "--budgets", "1,4"],
        obj=StaticRuntime(scripted),
    )
    assert replayed.exit_code == 0, replayed.output
    assert "no model calls" in text(replayed)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budgets", "0"], "budgets"),
        (["--budgets", "-1"], "budgets"),
        (["--dataset", "gsm9k"], "unknown 'gsm9k'"),
        (["--strategy", "best_of_n:weighted:none"], "needs a verifier"),
        (["--dataset", "jsonl", "--path", "nowhere.jsonl", "--question-field", "q", "--answer-field", "a"], "exist"),
        (["--stop-by", "25:99"], "stop-by: '25:99' is neither HH:MM nor an ISO date and time"),
    ],
)
def test_eval_bad_input_fails_before_any_call(
    tmp_path: Path, data_dir: Path, scripted: ScriptedEndpoint, extra: list[str], message: str
) -> None:
    result = runner.invoke(
        cli.app, ["eval", "--run", "x", "--db", str(tmp_path / "e.sqlite"), *extra], obj=StaticRuntime(scripted)
    )
    assert result.exit_code == 2
    assert message in text(result)
    assert scripted.calls == []


def test_eval_stop_by_starts_no_unit_that_would_end_past_it(
    tmp_path: Path, data_dir: Path, scripted: ScriptedEndpoint
) -> None:
    args = ["eval", "--run", "d", "--limit", "2", "--db", str(tmp_path / "e.sqlite"), "--budgets", "1,2"]
    past = runner.invoke(cli.app, [*args, "--stop-by", "2000-01-01T00:00"], obj=StaticRuntime(scripted))
    assert past.exit_code == 0, past.output
    assert "stopped early: 2 unit(s) not started (none would finish by 2000-01-01T00:00)" in text(past)
    assert scripted.calls == []
    ahead = runner.invoke(cli.app, [*args, "--stop-by", "2999-01-01T00:00"], obj=StaticRuntime(scripted))
    assert ahead.exit_code == 0, ahead.output
    assert "0 unit(s) already finished, 2 to run" in text(ahead) and "stopped early" not in text(ahead)
    assert sum(c.n for c in scripted.calls) == 4  # two questions' pools of 2


def test_eval_reports_skipped_rows(tmp_path: Path, scripted: ScriptedEndpoint) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "1+1?", "a": "2"}\n{not json\n{"q": "2+2?", "a": "4"}\n')
    args = ["eval", "--run", "j", "--db", str(tmp_path / "e.sqlite"), "--dataset", "jsonl", "--path", str(data)]
    result = runner.invoke(
        cli.app, [*args, "--question-field", "q", "--answer-field", "a", "--budgets", "1"], obj=StaticRuntime(scripted)
    )
    assert result.exit_code == 0, result.output
    assert "skipped 1 malformed row" in text(result)
    assert "2 questions" in text(result)


def test_replay_command_on_a_pool_file(tmp_path: Path) -> None:
    pool = pool_file(tmp_path / "pool.jsonl")
    out = tmp_path / "replay.png"
    result = runner.invoke(cli.app, ["replay", str(pool), "--budgets", "1,2,4", "--trials", "20", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 questions" in text(result) and "oracle" in text(result)
    assert_images([out, out.with_suffix(".svg")])
    bad = runner.invoke(cli.app, ["replay", str(pool), "--budgets", "8"])
    assert bad.exit_code == 2 and "exceeds" in text(bad)


def test_plot_unknown_run(tmp_path: Path) -> None:
    db = tmp_path / "e.sqlite"
    ResultStore(db).close()
    result = runner.invoke(cli.app, ["plot", "--db", str(db), "--run", "nope", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "no results" in text(result)
