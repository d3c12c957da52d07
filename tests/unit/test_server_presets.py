"""The pieces of ``ttc serve`` without HTTP: presets, model names, overrides, caps, keys and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import ttc_graph.cli as cli
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.server.auth import authorize
from ttc_graph.server.config import API_KEYS_ENV, Limits, api_keys_from
from ttc_graph.server.errors import APIError, redact
from ttc_graph.server.planning import generation_cost, plan_run, token_need
from ttc_graph.server.presets import SHIPPED_PRESETS, apply_overrides, load_presets, resolve_model
from ttc_graph.server.protocol import parse_request
from ttc_graph.server.upstream import TrackedEndpoint, track_failures
from ttc_graph.specs import parse_spec
from ttc_graph.testing import ScriptedEndpoint

PRESETS = load_presets()
BEAM = {
    "kind": "beam_search",
    "n": 4,
    "lookahead": 1,
    "max_steps": 3,
    "step_max_tokens": 10,
    "verifier": {"kind": "confidence"},
}


def test_every_shipped_example_is_a_preset() -> None:
    assert {p.stem for p in SHIPPED_PRESETS.glob("*.yaml")} == set(PRESETS)


def test_user_presets_add_to_and_override_the_shipped_ones(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("kind: best_of_n\nn: 2\nselection: majority\n")
    (tmp_path / "best_of_n_majority.yaml").write_text("kind: best_of_n\nn: 6\nselection: majority\n")
    presets = load_presets([tmp_path])
    assert getattr(presets["mine"].spec, "n", None) == 2
    assert getattr(presets["best_of_n_majority"].spec, "n", None) == 6
    assert load_presets([tmp_path], shipped=False).keys() == {"mine", "best_of_n_majority"}


def test_an_invalid_user_preset_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: best_of_n\nn: 0\n")
    with pytest.raises(ConfigurationError, match=r"bad\.yaml"):
        load_presets([tmp_path])
    with pytest.raises(ConfigurationError, match="not a directory"):
        load_presets([tmp_path / "missing"])


@pytest.mark.parametrize(
    ("name", "known", "preset", "model"),
    [
        ("best_of_n_majority/m1", ("m1",), "best_of_n_majority", "m1"),
        ("best_of_n_majority", ("m1",), "best_of_n_majority", "default"),
        ("best_of_n_majority/Qwen/Qwen2.5-7B", None, "best_of_n_majority", "Qwen/Qwen2.5-7B"),
        ("m1", ("m1",), None, "m1"),
        ("Qwen/Qwen2.5-7B", ("Qwen/Qwen2.5-7B",), None, "Qwen/Qwen2.5-7B"),
        ("anything/else", None, None, "anything/else"),
    ],
)
def test_model_names(name: str, known: tuple[str, ...] | None, preset: str | None, model: str) -> None:
    target = resolve_model(name, PRESETS, "default", known)
    assert (target.preset.name if target.preset else None) == preset
    assert target.model == model


def test_an_unknown_model_is_a_404_naming_the_presets() -> None:
    with pytest.raises(APIError) as caught:
        resolve_model("nope/m1", PRESETS, "m1", ("m1",))
    assert caught.value.status == 404 and caught.value.param == "model"
    assert "best_of_n_majority" in caught.value.message


def test_budget_overrides_merge_and_other_fields_replace() -> None:
    spec = PRESETS["lookahead"].spec  # budget: {generations: 8}
    out = apply_overrides(spec, {"budget": {"seconds": 30}, "n": 2, "beam_width": 2})
    assert out.budget is not None and out.budget.generations == 8 and out.budget.seconds == 30
    assert getattr(out, "n", None) == 2


def test_a_verifier_override_is_checked_all_the_way_down() -> None:
    spec = PRESETS["best_of_n_weighted_confidence"].spec
    out = apply_overrides(
        spec, {"verifier": {"kind": "combined", "parts": [{"kind": "confidence"}, {"kind": "arithmetic"}]}}
    )
    assert out.verifier is not None and out.verifier.kind == "combined"
    nested = {
        "kind": "combined",
        "parts": [{"kind": "confidence"}, {"kind": "reward_model", "base_url": "http://x", "model": "m"}],
    }
    with pytest.raises(APIError, match="reward_model") as caught:
        apply_overrides(spec, {"verifier": nested})
    assert caught.value.param == "ttc.verifier.parts.1.kind"
    with pytest.raises(APIError) as caught:
        apply_overrides(spec, {"verifier": {"kind": "llm_judge", "endpoint": {"kind": "local"}}})
    assert caught.value.param == "ttc.verifier.endpoint"


def test_a_cross_field_override_error_names_the_field() -> None:
    with pytest.raises(APIError) as caught:
        apply_overrides(PRESETS["best_of_n_majority"].spec, {"selection": "weighted"})
    assert caught.value.param == "ttc.verifier" and caught.value.status == 400


@pytest.mark.parametrize(
    ("spec", "gens", "tokens"),
    [
        ({"kind": "best_of_n", "n": 8, "selection": "majority"}, 8, 8 * 512),
        ({"kind": "best_of_n", "n": 8, "selection": "majority", "max_tokens": 100}, 8, 800),
        ({"kind": "best_of_n", "n": 8, "selection": "majority", "budget": {"generations": 3, "tokens": 50}}, 3, 50),
        (BEAM, 8, 8 * 3 * 10),
        ({"kind": "revisions", "n": 4, "chain_length": 2, "selection": "majority", "max_tokens": 10}, 4, 40),
    ],
)
def test_costs(spec: dict[str, object], gens: int, tokens: int) -> None:
    parsed = parse_spec(spec)
    assert generation_cost(parsed) == gens
    assert token_need(parsed, None) == tokens


def test_a_plan_fills_the_axes_the_spec_leaves_open_with_the_caps() -> None:
    request = parse_request({"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10})
    plan = plan_run(PRESETS["best_of_n_majority"], "m1", request, Limits(tokens=1_000, seconds=60))
    assert plan.context.budget is not None
    assert plan.context.budget.tokens == 1_000 and plan.context.budget.seconds == 60
    assert plan.context.max_tokens == 10
    with pytest.raises(APIError, match="cap") as caught:
        plan_run(PRESETS["best_of_n_majority"], "m1", request, Limits(tokens=39))
    assert caught.value.param == "max_tokens" and caught.value.code == "cap_exceeded"


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def test_a_tools_request_drops_the_default_system_prompt_but_keeps_a_preset_s_own() -> None:
    asks = [{"role": "user", "content": "Weather in Paris?"}]
    plain = plan_run(PRESETS["best_of_n_majority"], "m1", parse_request({"model": "x", "messages": asks}), Limits())
    assert plain.spec.system_prompt and "boxed" in plain.spec.system_prompt
    request = parse_request({"model": "x", "messages": asks, "tools": [WEATHER]})
    assert plan_run(PRESETS["best_of_n_majority"], "m1", request, Limits()).spec.system_prompt is None
    own = parse_spec({"kind": "best_of_n", "n": 2, "selection": "majority", "system_prompt": "Call tools."})
    preset = type(PRESETS["best_of_n_majority"])("own", own, "own.yaml")
    assert plan_run(preset, "m1", request, Limits()).spec.system_prompt == "Call tools."
    with_system = parse_request({"model": "x", "messages": [{"role": "system", "content": "Be brief."}, *asks],
                                 "tools": [WEATHER]})  # fmt: skip
    assert plan_run(PRESETS["best_of_n_majority"], "m1", with_system, Limits()).spec.system_prompt == "Be brief."


def test_keys_come_from_the_option_and_the_environment() -> None:
    env = {API_KEYS_ENV: "key-aaaaaaaa, key-bbbbbbbb\nkey-aaaaaaaa"}
    assert api_keys_from(["key-cccccccc"], env) == ("key-cccccccc", "key-aaaaaaaa", "key-bbbbbbbb")
    assert api_keys_from([], {}) == ()
    with pytest.raises(ConfigurationError, match="8 characters"):
        api_keys_from(["short"], {})


def test_authorize() -> None:
    authorize(None, [])  # no keys: open
    authorize("Bearer key-aaaaaaaa", ["key-bbbbbbbb", "key-aaaaaaaa"])
    authorize("bearer key-aaaaaaaa", ["key-aaaaaaaa"])
    for header in (None, "", "Bearer", "Bearer key-x", "Token key-aaaaaaaa"):
        with pytest.raises(APIError) as caught:
            authorize(header, ["key-aaaaaaaa"])
        assert caught.value.status == 401


def test_redact() -> None:
    assert redact("key sk-123456 leaked", ["sk-123456"]) == "key *** leaked"
    assert redact("short", ["", "x"]) == "short"


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--upstream", "http://127.0.0.1:1/v1"], "--upstream-model"),
        (["--native-n", "maybe", "--upstream", "http://127.0.0.1:1/v1", "--upstream-model", "m"], "native-n"),
        (["--api-key", "short"], "8 characters"),
        (["--max-runs", "0"], "--max-runs"),  # the flag the user typed, checked by the option itself
    ],
)
def test_serve_refuses_bad_options_before_starting(args: list[str], needle: str) -> None:
    result = runner.invoke(cli.app, ["serve", *args])
    assert result.exit_code == 2
    assert needle in result.output


async def test_a_tracked_endpoint_delegates_and_records_failures() -> None:
    inner = ScriptedEndpoint(["x"], native_n=False, fail_every=2)
    tracked = TrackedEndpoint(inner)
    assert tracked.native_n is False and tracked.name == "scripted" and tracked.script == ["x"]
    failures = track_failures()
    await tracked.generate([{"role": "user", "content": "q"}])
    with pytest.raises(EndpointError):
        await tracked.generate([{"role": "user", "content": "q"}])
    assert len(failures) == 1 and "failed" in str(failures[0])
