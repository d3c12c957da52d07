"""The CLI's seams: options checked before any server starts, the same bad input the same exit code everywhere,
one flag name per concept (``--gguf`` wherever a local model can start), ``ttc run --base-url/--model`` and
``ttc models serve -- ARGS`` passed to llama-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import ttc_graph.cli as cli
from ttc_graph.cli import StaticRuntime
from ttc_graph.testing import ScriptedEndpoint

runner = CliRunner()


class Started(Exception):
    """Raised by a fake server or web stack: reaching it means the command started something."""


@pytest.fixture()
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every way a command starts a server raises :class:`Started` (and records that it was asked)."""
    import uvicorn

    import ttc_graph.local

    started: list[Any] = []

    def start(*args: Any, **kwargs: Any) -> Any:
        started.append((args, kwargs))
        raise Started

    monkeypatch.setattr(uvicorn, "run", start)
    monkeypatch.setattr(ttc_graph.local, "LocalModelServer", start)
    return started


@pytest.fixture()
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "majority.yaml"
    path.write_text("kind: best_of_n\nname: maj\nn: 2\nselection: majority\n")
    return path


@pytest.fixture()
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    return path


def commands(spec: Path) -> dict[str, list[str]]:
    """Every command that can start a local model, with the arguments it needs besides options."""
    study = spec.parent / "study.yaml"
    return {
        "solve": ["solve", "q"],
        "eval": ["eval", "--dataset", "gsm8k"],
        "study run": ["study", "run", str(study)],
        "serve": ["serve"],
        "run": ["run", str(spec), "q"],
        "models serve": ["models", "serve"],
    }


def invoke(args: list[str]) -> Any:
    return runner.invoke(cli.app, args, obj=StaticRuntime(ScriptedEndpoint(["\\boxed{4}"])))


def flat(result: Any) -> str:
    return " ".join(str(result.output).split())


def params_of(path: list[str]) -> dict[str, Any]:
    group: Any = typer.main.get_command(cli.app)
    for name in path:
        group = group.commands[name]
    return {opt: p for p in group.params for opt in getattr(p, "opts", ())}


@pytest.mark.parametrize("command", ["solve", "eval", "study run", "serve", "run", "models serve"])
def test_every_command_that_starts_a_local_model_takes_gguf(command: str, spec: Path) -> None:
    path = commands(spec)[command]
    names = [a for a in path if not a.endswith((".yaml", "q")) and not a.startswith("-") and a != "gsm8k"]
    assert "--gguf" in params_of(names)


@pytest.mark.parametrize("command", ["solve", "eval", "study run", "serve", "models serve"])
@pytest.mark.parametrize("bad", [["--parallel", "0"], ["--threads", "0"]])
def test_a_bad_local_server_option_exits_2_before_anything_starts(
    command: str, bad: list[str], spec: Path, nothing_starts: list[Any]
) -> None:
    result = invoke([*commands(spec)[command], *bad])
    assert result.exit_code == 2, result.output
    assert bad[0] in flat(result)
    assert nothing_starts == []


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (["--max-run-requests", "0"], "run_requests"),
        (["--max-seconds", "inf"], "seconds"),
        (["--max-seconds", "nan"], "seconds"),
        (["--max-seconds", "-1"], "seconds"),
        (["--max-verifier-samples", "0"], "verifier_samples"),
        (["--max-runs", "0"], "--max-runs"),
        (["--port", "70000"], "--port"),
        (["--native-n", "maybe"], "native-n"),
    ],
)
def test_serve_checks_every_option_before_it_starts(bad: list[str], needle: str, nothing_starts: list[Any]) -> None:
    result = invoke(["serve", *bad])
    assert result.exit_code == 2, result.output
    assert needle in flat(result)
    assert nothing_starts == []


def test_models_serve_passes_arguments_after_a_double_dash_to_llama_server(
    gguf: Path, nothing_starts: list[Any]
) -> None:
    result = invoke(["models", "serve", "--gguf", str(gguf), "--parallel", "2", "--", "--metrics", "-c", "4096"])
    assert isinstance(result.exception, Started), result.output
    (args, kwargs) = nothing_starts[0]
    assert args == (gguf,)
    assert kwargs["extra_args"] == ["--metrics", "-c", "4096"] and kwargs["parallel"] == 2


def test_models_serve_still_takes_its_old_model_flag(gguf: Path, nothing_starts: list[Any]) -> None:
    result = invoke(["models", "serve", "--model", str(gguf)])
    assert isinstance(result.exception, Started), result.output
    assert nothing_starts[0][0] == (gguf,)


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--gguf", "nowhere.gguf"], "is not a file"), (["stray"], "after --")],
)
def test_models_serve_bad_input_exits_2(args: list[str], needle: str, nothing_starts: list[Any]) -> None:
    result = invoke(["models", "serve", *args])
    assert result.exit_code == 2, result.output
    assert needle in flat(result)
    assert nothing_starts == []


def test_run_takes_base_url_and_model_for_the_specs_policy(spec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []

    def build_endpoint(policy: Any) -> Any:
        built.append(policy)
        return ScriptedEndpoint(["So \\boxed{5}."])

    monkeypatch.setattr("ttc_graph.specs.build.build_endpoint", build_endpoint)
    result = invoke(["run", str(spec), "q", "--base-url", "http://h.test/v1", "--model", "m7"])
    assert result.exit_code == 0, result.output
    assert built[0].kind == "openai" and built[0].base_url == "http://h.test/v1" and built[0].model == "m7"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--base-url", "http://h.test/v1"], "go together"),
        (["--model", "m7"], "go together"),
        (["--gguf", "nowhere.gguf"], "is not a file"),
        (["--gguf", "GGUF", "--base-url", "http://h.test/v1"], "not both"),
    ],
)
def test_run_policy_options_bad_input_exits_2_before_any_request(
    args: list[str], needle: str, spec: Path, gguf: Path, nothing_starts: list[Any]
) -> None:
    args = [str(gguf) if a == "GGUF" else a for a in args]
    result = invoke(["run", str(spec), "q", *args])
    assert result.exit_code == 2, result.output
    assert needle in flat(result)
    assert nothing_starts == []
