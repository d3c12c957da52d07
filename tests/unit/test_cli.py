"""The ``ttc`` command line with fake endpoints (no network, no local server): options, defaults, exit codes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import ttc_graph
import ttc_graph.cli as cli
from ttc_graph.cli import StaticRuntime
from ttc_graph.endpoints.base import ChatMessage, Generation, GenerationResult, RequestUsage, SamplingParams
from ttc_graph.eval import ResultStore
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.verifiers.judge import DEFAULT_JUDGE_SYSTEM_PROMPT

runner = CliRunner()

# one confident sample says 7, three unsure ones say 9: majority picks 9, a confidence-weighted vote picks 7
SAMPLES = [("The answer is 7.", -0.1), ("The answer is 9.", -3.0), ("The answer is 9.", -3.0), ("So it is 9.", -3.0)]


@dataclass
class ConfidentEndpoint:
    """Serves ``SAMPLES`` in order, each with token log-probabilities (what a confidence verifier reads)."""

    samples: Sequence[tuple[str, float]] = tuple(SAMPLES)
    drawn: int = 0
    requests: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "confident"

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        self.requests.append(n)
        picked = [self.samples[(self.drawn + i) % len(self.samples)] for i in range(n)]
        self.drawn += n
        gens = [Generation(text, "stop", 3, (lp, lp, lp)) for text, lp in picked]
        return GenerationResult(gens, RequestUsage(1, 5, 3 * n))


def judged(call: FakeCall, index: int) -> str:
    """A policy that also judges: Yes only for the solution whose answer is 7."""
    if call.messages and call.messages[0]["content"] == DEFAULT_JUDGE_SYSTEM_PROMPT:
        return "Yes" if "answer is 7" in call.messages[-1]["content"] else "No"
    return SAMPLES[index % len(SAMPLES)][0]


def on(endpoint: Any) -> StaticRuntime:
    """The runtime that routes ``ttc solve`` / ``ttc eval`` to ``endpoint`` instead of a server."""
    return StaticRuntime(endpoint)


def use_spec_endpoint(monkeypatch: pytest.MonkeyPatch, endpoint: Any) -> Any:
    """Route a spec's policy (``ttc run``) to ``endpoint``."""
    monkeypatch.setattr("ttc_graph.specs.build.build_endpoint", lambda spec: endpoint)
    return endpoint


def flat(result: Any) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(str(result.output).split())


def solve_json(endpoint: Any, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    result = runner.invoke(cli.app, ["solve", "What is 3 + 4?", "--json", *args], obj=on(endpoint))
    try:
        out = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    except ValueError:
        out = None
    return result.exit_code, out, flat(result)


# -- --version ------------------------------------------------------------------------------------------------


def test_version() -> None:
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"ttc {ttc_graph.__version__}"


# -- ttc solve: selection and verifiers -------------------------------------------------------------------------


def test_solve_majority_needs_no_verifier() -> None:
    code, out, text = solve_json(ConfidentEndpoint())
    assert code == 0, text
    assert out is not None and out["answer"] == "9"
    assert all(c["score"] is None for c in out["candidates"])  # majority scores nothing


@pytest.mark.parametrize("selection", ["weighted", "naive"])
def test_solve_weighted_and_naive_use_the_default_confidence_verifier(selection: str) -> None:
    code, out, text = solve_json(ConfidentEndpoint(), "--selection", selection)
    assert code == 0, text
    assert out is not None and out["answer"] == "7"
    assert all(c["score"] is not None for c in out["candidates"])


def test_solve_weighted_with_the_judge_verifier() -> None:
    endpoint = ScriptedEndpoint(judged, native_n=False)
    code, out, text = solve_json(endpoint, "--selection", "weighted", "--verifier", "judge")
    assert code == 0, text
    assert out is not None and out["answer"] == "7"
    judge_calls = [c for c in endpoint.calls if c.messages[0]["content"] == DEFAULT_JUDGE_SYSTEM_PROMPT]
    assert judge_calls, "the judge verifier was never asked"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--selection", "weighted", "--verifier", "none"], "needs a verifier"),
        (["--selection", "naive", "--verifier", "none"], "needs a verifier"),
        (["--verifier", "oracle"], "unknown 'oracle'"),
        (["--selection", "best"], "unknown 'best'"),
        (["--gguf", "nowhere.gguf"], "is not a file"),
        (["--n", "-1"], "greater than"),
        (["--max-tokens", "0"], "greater than"),
        (["--temperature", "-0.5"], "greater than"),
        (["--parallel", "0"], "greater than"),
    ],
)
def test_solve_bad_options_exit_2_before_any_request(args: list[str], message: str) -> None:
    endpoint = ConfidentEndpoint()
    result = runner.invoke(cli.app, ["solve", "q", *args], obj=on(endpoint))
    assert result.exit_code == 2, result.output
    assert message in flat(result)
    assert endpoint.requests == []


# -- ttc solve: exit codes --------------------------------------------------------------------------------------


def test_solve_exits_1_when_every_request_fails() -> None:
    result = runner.invoke(
        cli.app,
        ["solve", "q", "--n", "4"],
        obj=on(ScriptedEndpoint(["The answer is 5."], fail_every=1, native_n=False)),
    )
    assert result.exit_code == 1, result.output
    assert "no answer: 4 request(s) failed" in flat(result)
    assert "scripted endpoint: every request failed" in flat(result)


def test_solve_exits_1_with_json_too() -> None:
    code, out, _ = solve_json(ScriptedEndpoint(["The answer is 5."], fail_every=1, native_n=False), "--n", "2")
    assert code == 1
    assert out is not None and out["answer"] is None and out["usage"]["failed_requests"] == 2


def test_solve_exits_0_when_some_requests_fail_but_an_answer_exists() -> None:
    code, out, text = solve_json(ScriptedEndpoint(["The answer is 5."], fail_every=2, native_n=False), "--n", "4")
    assert code == 0, text
    assert out is not None and out["answer"] == "5" and out["usage"]["failed_requests"] > 0


def test_solve_exits_0_when_samples_state_no_answer() -> None:
    result = runner.invoke(cli.app, ["solve", "q", "--n", "2"], obj=on(ScriptedEndpoint(["I do not know."])))
    assert result.exit_code == 0, result.output  # nothing failed: the model just gave no answer
    assert "answer: None" in flat(result)


def test_solve_reads_answers_without_the_prompted_format() -> None:
    code, out, text = solve_json(
        ScriptedEndpoint(["She sells 9 eggs.\nSo she makes $18 every day.", "A: 18"]), "--n", "4"
    )
    assert code == 0, text
    assert out is not None and out["answer"] == "18"
    assert all(c["parsable"] for c in out["candidates"])


# -- ttc run ------------------------------------------------------------------------------------------------------


@pytest.fixture()
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "majority.yaml"
    path.write_text("kind: best_of_n\nname: maj\nn: 2\nselection: majority\n")
    return path


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data" / "gsm8k").mkdir(parents=True)
    rows = [{"question": f"Question {i}?", "answer": f"#### {5 if i % 2 == 0 else 6}"} for i in range(4)]
    (tmp_path / "data" / "gsm8k" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setenv("TTC_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_run_question(monkeypatch: pytest.MonkeyPatch, spec: Path) -> None:
    use_spec_endpoint(monkeypatch, ScriptedEndpoint(["Therefore, the total is 5 dollars."]))
    result = runner.invoke(cli.app, ["run", str(spec), "q"])
    assert result.exit_code == 0, result.output
    assert "answer: 5" in flat(result)


def test_run_question_exits_1_when_every_request_fails(monkeypatch: pytest.MonkeyPatch, spec: Path) -> None:
    use_spec_endpoint(monkeypatch, ScriptedEndpoint(["5"], fail_every=1))
    result = runner.invoke(cli.app, ["run", str(spec), "q"])
    assert result.exit_code == 1, result.output
    assert "no answer" in flat(result)


@pytest.mark.parametrize("run_option", ["--run", "--run-name"])
def test_run_dataset_saves_under_the_run_name(
    monkeypatch: pytest.MonkeyPatch, spec: Path, data_dir: Path, tmp_path: Path, run_option: str
) -> None:
    use_spec_endpoint(monkeypatch, ScriptedEndpoint(["#### 5"]))
    db = tmp_path / "runs.sqlite"
    result = runner.invoke(cli.app, ["run", str(spec), "--dataset", "gsm8k", "--db", str(db), run_option, "r1"])
    assert result.exit_code == 0, result.output
    assert "maj on gsm8k: 2/4 correct" in flat(result)
    with ResultStore(db) as store:
        assert store.runs() == ["r1"]
        assert len(store.rows("r1")) == 4


def test_run_dataset_exits_1_when_requests_fail(
    monkeypatch: pytest.MonkeyPatch, spec: Path, data_dir: Path, tmp_path: Path
) -> None:
    use_spec_endpoint(monkeypatch, ScriptedEndpoint(["#### 5"], fail_every=1))
    result = runner.invoke(cli.app, ["run", str(spec), "--dataset", "gsm8k", "--db", str(tmp_path / "r.sqlite")])
    assert result.exit_code == 1, result.output
    assert "4 question(s) got no answer because requests failed" in flat(result)


def test_run_needs_a_question_or_a_dataset(spec: Path) -> None:
    assert runner.invoke(cli.app, ["run", str(spec)]).exit_code == 2


# -- one name and one default per concept ---------------------------------------------------------------------


def options(command: str) -> dict[str, Any]:
    """The click parameters of ``ttc COMMAND`` by option name (typer may vendor click: no isinstance checks)."""
    cmd = typer.main.get_command(cli.app).commands[command]  # type: ignore[attr-defined]
    return {opt: p for p in cmd.params for opt in getattr(p, "opts", ())}


@pytest.mark.parametrize(
    ("option", "commands", "default"),
    [
        ("--max-tokens", ["solve", "eval"], cli.DEFAULT_MAX_TOKENS),
        ("--temperature", ["solve", "eval"], cli.DEFAULT_TEMPERATURE),
        ("--verifier", ["solve", "eval", "replay"], cli.DEFAULT_VERIFIER),
        ("--db", ["run", "eval", "plot"], cli.DEFAULT_DB),
        ("--limit", ["run", "eval"], cli.DEFAULT_LIMIT),
        ("--parallel", ["solve", "eval"], 4),
        ("--concurrency", ["run", "eval"], 2),
    ],
)
def test_one_default_per_option(option: str, commands: list[str], default: object) -> None:
    for command in commands:
        params = options(command)
        assert option in params, f"ttc {command} lacks {option}"
        assert params[option].default == default, (command, option)


def test_selection_default_is_shared() -> None:
    assert options("solve")["--selection"].default == cli.DEFAULT_SELECTION
    assert cli.DEFAULT_SELECTION == "majority"  # ttc eval's default strategy is best_of_n:majority


def test_run_name_is_spelled_run_everywhere() -> None:
    for command in ("run", "eval", "plot", "replay"):
        assert "--run" in options(command), command
    hidden = options("run")["--run-name"]
    assert hidden.hidden
    assert "--run-name" not in flat(runner.invoke(cli.app, ["run", "--help"]))


def test_solve_verifier_names_are_those_of_eval() -> None:
    from ttc_graph.eval.sweep import VERIFIERS

    for name in VERIFIERS:
        verifier = cli.make_verifier(name, ConfidentEndpoint())  # type: ignore[arg-type]
        assert (verifier is None) == (name == "none")
