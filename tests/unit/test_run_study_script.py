"""``scripts/run-study.sh``'s chunk loop, driven by a stand-in ``ttc`` that records its arguments and answers with
scripted outputs: time-boxed chunks (``CHUNK_MINUTES``) go on until the run's own stop, and end it there."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run-study.sh"

FAKE_TTC = """\
import json, sys
from pathlib import Path
here = Path(__file__).parent
calls = here / "calls.jsonl"
with calls.open("a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["study", "run"]:
    outputs = json.loads((here / "outputs.json").read_text())
    runs = sum(1 for line in calls.read_text().splitlines() if json.loads(line)[:2] == ["study", "run"])
    print(outputs[min(runs, len(outputs)) - 1])
"""

BOX_ENDED = "this call: 3 unit(s) finished, 0 failed, 9 already done; \nstopped early: 4 unit(s) not started"
ALL_DONE = "study s in db: 0 unit(s) to run in this call\nthis call: 0 unit(s) finished, 0 failed, 16 already done;"


def run_script(tmp_path: Path, outputs: list[str], **env: str) -> tuple[list[list[str]], str]:
    """Run the script with the stand-in; the ``study run`` calls' arguments and the script's output."""
    (tmp_path / "ttc.py").write_text(FAKE_TTC)
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    config = tmp_path / "study.yaml"
    config.write_text("name: s\n")
    environment = {
        **os.environ,
        "TTC": f"{sys.executable} {tmp_path / 'ttc.py'}",
        "BASE_URL": "http://127.0.0.1:1/v1",
        "COMMIT": "0",
        **env,
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), str(config)], env=environment, capture_output=True, text=True, timeout=60
    )
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    return [c for c in calls if c[:2] == ["study", "run"]], done.stdout + done.stderr


def stop_by(call: list[str]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(call[call.index("--stop-by") + 1])


def test_time_boxes_continue_until_nothing_is_left(tmp_path: Path) -> None:
    before = datetime.datetime.now().astimezone()
    runs, out = run_script(tmp_path, [BOX_ENDED, BOX_ENDED, ALL_DONE], CHUNK_MINUTES="30")
    assert len(runs) == 3, out
    for call in runs:
        assert "--max-units" not in call
        minutes = (stop_by(call) - before).total_seconds() / 60
        assert 29 <= minutes <= 31, minutes  # each box ends CHUNK_MINUTES after it starts
    assert "stopped as asked" not in out


def test_stop_by_caps_the_last_box_and_ends_the_run(tmp_path: Path) -> None:
    soon = (datetime.datetime.now().astimezone() + datetime.timedelta(minutes=10)).replace(microsecond=0)
    runs, out = run_script(tmp_path, [BOX_ENDED, ALL_DONE], CHUNK_MINUTES="60", STOP_BY=soon.isoformat())
    assert len(runs) == 1, out  # the box that STOP_BY cut short was the run's last
    assert stop_by(runs[0]) == soon
    assert "stopped as asked" in out


def test_a_stop_by_clock_time_already_past_today_is_tomorrows(tmp_path: Path) -> None:
    utc = datetime.datetime.now(datetime.UTC)
    zone = f"TST{utc.hour - 12:+d}"  # a POSIX zone whose local time is now about noon: 06:00 has passed today
    noon = utc.astimezone(datetime.timezone(datetime.timedelta(hours=12 - utc.hour)))
    runs, out = run_script(tmp_path, [BOX_ENDED, ALL_DONE], STOP_BY="06:00", TZ=zone)
    assert len(runs) == 1, out  # the run went on to its chunk, not ended before it
    ends = stop_by(runs[0])
    assert ends.astimezone(noon.tzinfo).replace(tzinfo=None) == datetime.datetime.combine(
        noon.date() + datetime.timedelta(days=1), datetime.time(6, 0)
    )


def test_a_signal_ends_the_run_inside_a_box(tmp_path: Path) -> None:
    signalled = "stopping: the units in flight finish and are kept; signal again to stop now\n" + BOX_ENDED
    runs, out = run_script(tmp_path, [signalled, ALL_DONE], CHUNK_MINUTES="60")
    assert len(runs) == 1 and "stopped as asked" in out


def test_a_box_that_starts_nothing_ends_the_run(tmp_path: Path) -> None:
    nothing = "this call: 0 unit(s) finished, 0 failed, 9 already done; \nstopped early: 7 unit(s) not started"
    runs, out = run_script(tmp_path, [nothing, ALL_DONE], CHUNK_MINUTES="5")
    assert len(runs) == 1 and "stopped as asked" in out


@pytest.mark.parametrize("stop", ["", "23:59"])
def test_unit_chunks_without_a_time_box(tmp_path: Path, stop: str) -> None:
    finished = "this call: 5 unit(s) finished, 0 failed, 0 already done;"
    runs, out = run_script(tmp_path, [finished, ALL_DONE], CHUNK="5", STOP_BY=stop)
    assert len(runs) == 2, out
    assert runs[0][runs[0].index("--max-units") + 1] == "5"
    assert ("--stop-by" in runs[0]) == bool(stop)
