"""Strategy specs: examples build, defaults stay in step with the factories, bad input fails with its path."""

from __future__ import annotations

import inspect
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import pytest
from langgraph.graph import StateGraph
from pydantic_core import PydanticUndefined
from typer.testing import CliRunner

import ttc_graph.local.lazy as lazy
import ttc_graph.specs as specs
import ttc_graph.specs.build as build_module
from ttc_graph.cli import app
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.local.lazy import LocalEndpoint
from ttc_graph.specs import (
    BeamSearchSpec,
    BestOfNSpec,
    ConfidenceVerifierSpec,
    DVTSSpec,
    EnvEndpointSpec,
    LLMJudgeVerifierSpec,
    LocalEndpointSpec,
    OpenAIEndpointSpec,
    PythonVerifierSpec,
    RevisionsSpec,
    RewardModelVerifierSpec,
    SpecError,
    StrategySpec,
    build_endpoint,
    build_graph,
    build_verifier,
    load_spec,
    parse_spec,
    spec_json_schema,
)
from ttc_graph.strategies import (
    create_beam_search,
    create_best_of_n,
    create_dvts,
    create_mcts,
    create_particle_filtering,
    create_revisions,
)
from ttc_graph.testing import ScriptedEndpoint
from ttc_graph.verifiers import (
    ConfidenceVerifier,
    FunctionVerifier,
    LLMJudgeVerifier,
    RewardModelVerifier,
    Verifier,
)
from ttc_graph.verifiers.base import VerifyItem

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "ttc_graph" / "presets").glob("*.yaml"))
SOLUTION = "Add them.\n\nSo 3 + 4 = 7. \\boxed{7}"
STRATEGY_KINDS = {"best_of_n", "beam_search", "dvts", "particle_filtering", "mcts", "revisions", "compute_optimal"}
# Spec fields that describe the spec itself or are resolved before the factory (endpoints and verifiers).
META_FIELDS = {"kind", "name", "description"}

runner = CliRunner()


def flat(text: str) -> str:
    """Command output with rich's line wrapping undone."""
    return " ".join(text.split())


def scripted() -> ScriptedEndpoint:
    return ScriptedEndpoint([SOLUTION])


def strategy_classes() -> list[type]:
    return list(get_args(get_args(StrategySpec)[0]))


def problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.problems, "a SpecError must list its problems"
    return info.value.problems


def problem_at(data: dict[str, Any], path: str) -> str:
    """The reason reported at ``path`` (fails listing every problem if there is none there)."""
    problems = problems_of(data)
    reasons = [reason for where, reason in problems if where == path]
    assert reasons, f"no problem at {path!r}; got {problems}"
    return reasons[0]


def no_server_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to start an embedded local server fail the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a local model server was started")

    monkeypatch.setattr(lazy, "shared_server", refuse)
    monkeypatch.setattr("ttc_graph.local.server.LocalModelServer.start", refuse)


# -- 1. the examples -----------------------------------------------------------------------------------------


def test_there_are_examples_of_every_core_kind() -> None:
    kinds = {load_spec(path).kind for path in EXAMPLES}
    assert {"best_of_n", "beam_search", "dvts", "revisions"} <= kinds


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_spec_validates_builds_and_compiles(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_server_starts(monkeypatch)
    spec = load_spec(path)
    assert spec.name, f"{path.name} should name its strategy"
    graph = build_graph(spec, policy=scripted())
    assert isinstance(graph, StateGraph)
    compiled = graph.compile()
    assert "prepare" in compiled.get_graph().nodes


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_spec_round_trips_through_json(path: Path) -> None:
    spec = load_spec(path)
    again = parse_spec(json.loads(spec.model_dump_json()))
    assert again == spec


async def test_a_built_example_runs_on_the_scripted_policy() -> None:
    spec = load_spec(ROOT / "ttc_graph" / "presets" / "best_of_n_majority.yaml")
    policy = scripted()
    out = await build_graph(spec, policy=policy).compile().ainvoke({"question": "What is 3 + 4?"})
    assert out["answer"] == "7"
    assert out["usage"]["generations"] == spec.n
    assert out["stop_reason"] == "complete"
    assert all(call.params is None or call.params.max_tokens in (None, spec.max_tokens) for call in policy.calls)


# -- 2. one source of truth for defaults --------------------------------------------------------------------


def default_mismatches(spec_cls: type, factory: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """{parameter: (factory default, spec default)} where both have a default and they differ."""
    out: dict[str, tuple[Any, Any]] = {}
    for name, param in inspect.signature(factory).parameters.items():
        field = spec_cls.model_fields.get(name)
        if field is None or param.default is inspect.Parameter.empty:
            continue
        if field.default is PydanticUndefined:
            continue  # required in the spec, or a default_factory (policy): no value to compare
        if field.default != param.default:
            out[name] = (param.default, field.default)
    return out


def shared_defaults(spec_cls: type, factory: Callable[..., Any]) -> set[str]:
    params = inspect.signature(factory).parameters
    return {
        name
        for name, p in params.items()
        if p.default is not inspect.Parameter.empty
        and name in spec_cls.model_fields
        and spec_cls.model_fields[name].default is not PydanticUndefined
    }


def _pairs() -> list[tuple[type, Callable[..., Any]]]:
    pairs: list[tuple[type, Callable[..., Any]]] = [
        (BestOfNSpec, create_best_of_n),
        (BeamSearchSpec, create_beam_search),
        (DVTSSpec, create_dvts),
        (specs.ParticleFilteringSpec, create_particle_filtering),
        (specs.MCTSSpec, create_mcts),
        (RevisionsSpec, create_revisions),
        (LLMJudgeVerifierSpec, LLMJudgeVerifier),
        (ConfidenceVerifierSpec, ConfidenceVerifier),
        (RewardModelVerifierSpec, RewardModelVerifier),
        (OpenAIEndpointSpec, OpenAIEndpoint),
        (LocalEndpointSpec, LocalEndpoint),
    ]
    compute_optimal_spec = getattr(specs, "ComputeOptimalSpec", None)
    if compute_optimal_spec is not None:
        from ttc_graph.compute_optimal import create_compute_optimal

        pairs.append((compute_optimal_spec, create_compute_optimal))
    return pairs


@pytest.mark.parametrize(("spec_cls", "factory"), _pairs(), ids=lambda x: getattr(x, "__name__", str(x)))
def test_spec_defaults_match_the_factory_defaults(spec_cls: type, factory: Callable[..., Any]) -> None:
    assert shared_defaults(spec_cls, factory), f"{spec_cls.__name__} shares no default with {factory.__name__}"
    assert default_mismatches(spec_cls, factory) == {}


def test_every_strategy_kind_is_checked_against_its_factory() -> None:
    checked = {cls for cls, _ in _pairs()}
    assert set(strategy_classes()) <= checked


def test_the_defaults_check_catches_a_drift() -> None:
    def drifted(
        policy: Any, verifier: Any = None, *, n: int, temperature: float = 0.9, max_tokens: int | None = None
    ) -> None:
        return None

    def other_prompt(policy: Any, *, n: int, selection: str = "weighted", system_prompt: str | None = None) -> None:
        return None

    assert default_mismatches(BestOfNSpec, drifted) == {"temperature": (0.9, 0.7)}
    assert set(default_mismatches(BestOfNSpec, other_prompt)) == {"system_prompt"}
    assert default_mismatches(BestOfNSpec, create_best_of_n) == {}


@pytest.mark.parametrize(
    ("spec_cls", "factory"),
    [
        (BestOfNSpec, create_best_of_n),
        (BeamSearchSpec, create_beam_search),
        (DVTSSpec, create_dvts),
        (specs.ParticleFilteringSpec, create_particle_filtering),
        (specs.MCTSSpec, create_mcts),
        (RevisionsSpec, create_revisions),
    ],
    ids=lambda x: getattr(x, "__name__", str(x)),
)
def test_every_spec_field_is_a_factory_parameter(spec_cls: type, factory: Callable[..., Any]) -> None:
    params = set(inspect.signature(factory).parameters)
    assert set(spec_cls.model_fields) - META_FIELDS - params == set()


SPEC_VALUES: list[dict[str, Any]] = [
    {
        "kind": "best_of_n", "n": 6, "selection": "naive", "adaptive": True, "temperature": 0.3, "max_tokens": 77,
        "seed": 11, "system_prompt": "Be brief.", "budget": {"generations": 6, "seconds": 30},
        "verifier": {"kind": "confidence", "method": "group", "window": 8},
    },
    {
        "kind": "beam_search", "n": 6, "beam_width": 3, "max_steps": 5, "lookahead": 1, "aggregation": "min",
        "temperature": 0.2, "step_max_tokens": 33, "step_delimiter": "\n", "seed": 3, "system_prompt": None,
        "budget": {"generations": 12}, "verifier": {"kind": "confidence"},
    },
    {
        "kind": "dvts", "n": 8, "beam_width": "sqrt", "max_steps": 4, "aggregation": "prod", "temperature": 0.5,
        "step_max_tokens": 21, "step_delimiter": "\n---\n", "seed": 5, "verifier": {"kind": "confidence"},
    },
    {
        "kind": "revisions", "n": 6, "chain_length": 3, "selection": "hierarchical", "stop_score": 0.8,
        "stop_on_repeat": False, "temperature": 0.1, "max_tokens": 55, "seed": 9, "budget": {"tokens": 900},
        "verifier": {"kind": "confidence"}, "revision_policy": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                             "model": "reviser"},
    },
]  # fmt: skip


@pytest.mark.parametrize("data", SPEC_VALUES, ids=lambda d: d["kind"])
def test_build_graph_passes_every_field_to_the_factory(data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec(data)
    seen: dict[str, Any] = {}

    def record(policy: Any, verifier: Any = None, **kwargs: Any) -> str:
        seen.update(kwargs, policy=policy, verifier=verifier)
        return "graph"

    monkeypatch.setitem(build_module.FACTORIES, spec.kind, record)
    policy = scripted()
    assert build_graph(spec, policy=policy) == "graph"
    assert seen["policy"] is policy
    assert isinstance(seen["verifier"], ConfidenceVerifier)
    for name in set(type(spec).model_fields) - META_FIELDS - {"policy", "verifier", "revision_policy"}:
        assert seen[name] == getattr(spec, name), name
    if spec.kind == "revisions":
        assert isinstance(seen["revision_policy"], OpenAIEndpoint)
        assert seen["revision_policy"].model == "reviser"


# -- 3. bad input fails validation with its path and reason ------------------------------------------------

MAJORITY = {"kind": "best_of_n", "n": 4, "selection": "majority"}
BEAM = {"kind": "beam_search", "n": 4, "beam_width": 2, "verifier": {"kind": "confidence"}}


def test_unknown_kind() -> None:
    reason = problem_at({"kind": "best_of_everything", "n": 4}, "kind")
    assert "best_of_everything" in reason and "best_of_n" in reason


def test_missing_kind() -> None:
    assert "kind" in problem_at({"n": 4}, "kind")


def test_unknown_nested_kind() -> None:
    reason = problem_at({**MAJORITY, "verifier": {"kind": "oracle"}}, "verifier.kind")
    assert "oracle" in reason and "llm_judge" in reason


def test_wrong_type() -> None:
    assert "integer" in problem_at({**MAJORITY, "n": "four"}, "n")


def test_not_a_mapping() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(["kind", "best_of_n"])
    assert info.value.problems == [("", "expected a mapping with a 'kind', got list")]


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({**MAJORITY, "samples": 4}, "samples"),
        ({**MAJORITY, "verifier": {"kind": "confidence", "foo": 1}}, "verifier.foo"),
        ({**MAJORITY, "policy": {"kind": "openai", "base_url": "http://x/v1", "model": "m", "bar": 1}}, "policy.bar"),
        ({**MAJORITY, "budget": {"generations": 4, "flops": 10}}, "budget.flops"),
        (
            {**MAJORITY, "verifier": {"kind": "llm_judge", "endpoint": {"kind": "local", "gpu": True}}},
            "verifier.endpoint.gpu",
        ),
    ],
    ids=["top-level", "verifier", "policy", "budget", "judge-endpoint"],
)
def test_unknown_field(data: dict[str, Any], path: str) -> None:
    assert "Extra inputs are not permitted" in problem_at(data, path)


def test_beam_width_must_divide_n() -> None:
    reason = problem_at({**BEAM, "beam_width": 3}, "beam_width")
    assert "does not divide n=4" in reason


def test_lookahead_must_not_be_negative() -> None:
    assert "greater than or equal to 0" in problem_at({**BEAM, "lookahead": -1}, "lookahead")


@pytest.mark.parametrize("kind", ["beam_search", "dvts"])
def test_budget_below_the_search_cost(kind: str) -> None:
    data = {**BEAM, "kind": kind, "lookahead": 1, "budget": {"generations": 7}}
    reason = problem_at(data, "budget.generations")
    assert "7 is below" in reason and "cost of 8" in reason
    assert parse_spec({**data, "budget": {"generations": 8}}).budget.generations == 8


def test_chain_length_must_divide_n() -> None:
    data = {"kind": "revisions", "n": 4, "chain_length": 3, "selection": "majority"}
    assert "does not divide n=4" in problem_at(data, "chain_length")


def test_hierarchical_revisions_need_a_verifier() -> None:
    reason = problem_at({"kind": "revisions", "n": 4, "chain_length": 2}, "verifier")
    assert "hierarchical" in reason and "needs a verifier" in reason


def test_weighted_best_of_n_needs_a_verifier() -> None:
    assert "needs a verifier" in problem_at({"kind": "best_of_n", "n": 4}, "verifier")


def test_stop_score_needs_a_verifier() -> None:
    data = {"kind": "revisions", "n": 4, "chain_length": 2, "selection": "majority", "stop_score": 0.5}
    assert "needs a verifier" in problem_at(data, "stop_score")


def test_search_needs_a_verifier() -> None:
    assert "Field required" in problem_at({"kind": "dvts", "n": 4}, "verifier")


def test_openai_policy_needs_a_model() -> None:
    data = {**MAJORITY, "policy": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}
    assert problems_of(data) == [("policy.model", "Field required")]


def test_an_openai_policy_takes_llamacpp_slots_and_n() -> None:
    spec = {
        "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "slots": 8, "llamacpp_n": True,
        "slot_copy": True,
    }  # fmt: skip
    endpoint = build_module.build_endpoint(parse_spec({**MAJORITY, "policy": spec}).policy)
    assert isinstance(endpoint, OpenAIEndpoint)
    assert (endpoint.slots, endpoint.llamacpp_n, endpoint.slot_copy) == (8, True, True)
    assert problem_at({**MAJORITY, "policy": {**spec, "slots": 0}}, "policy.slots").startswith("Input should be")


def test_judge_endpoint_needs_a_model() -> None:
    data = {**MAJORITY, "verifier": {"kind": "llm_judge", "endpoint": {"kind": "openai", "base_url": "http://j/v1"}}}
    assert problem_at(data, "verifier.endpoint.model") == "Field required"


def test_every_problem_is_reported_at_once() -> None:
    data = {**MAJORITY, "n": 0, "temperature": -1, "unknown": True}
    paths = {path for path, _ in problems_of(data)}
    assert paths == {"n", "temperature", "unknown"}


def test_spec_error_message_names_source_path_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: beam_search\nn: 4\nbeam_width: 3\nverifier: {kind: confidence}\n")
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    assert isinstance(info.value, ConfigurationError)
    assert str(bad) in str(info.value)
    assert "beam_width: 3 does not divide n=4" in str(info.value)


def test_load_spec_reports_yaml_errors_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: best_of_n\nn: [4\n")
    with pytest.raises(SpecError) as info:
        load_spec(broken)
    assert info.value.problems[0][0] == ""
    assert "not valid YAML" in info.value.problems[0][1]
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")


def test_validation_happens_before_any_model_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_server_starts(monkeypatch)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: revisions\nn: 4\nchain_length: 3\nselection: majority\n")
    result = runner.invoke(app, ["run", str(bad), "What is 3 + 4?"])
    assert result.exit_code == 2, result.output
    assert "chain_length: 3 does not divide n=4" in flat(result.output)


# -- the command line ---------------------------------------------------------------------------------------


def test_cli_validate_accepts_the_examples() -> None:
    result = runner.invoke(app, ["spec", "validate", *map(str, EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok") >= len(EXAMPLES)


def test_cli_validate_rejects_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            kind: best_of_n
            n: four
            selection: majority
            verifier: {kind: confidence, foo: 1}
            """
        )
    )
    result = runner.invoke(app, ["spec", "validate", str(EXAMPLES[0]), str(bad)])
    assert result.exit_code == 1, result.output
    output = flat(result.output)
    assert "invalid" in output
    assert "verifier.foo: Extra inputs are not permitted" in output
    assert "n: Input should be a valid integer" in output
    assert f"ok {EXAMPLES[0]}" in output  # the good file before it is still reported


def test_cli_validate_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["spec", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "does not exist" in flat(result.output)


def test_cli_schema_prints_the_json_schema() -> None:
    result = runner.invoke(app, ["spec", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema["discriminator"]["propertyName"] == "kind"
    mapping = schema["discriminator"]["mapping"]
    assert set(mapping) == STRATEGY_KINDS
    assert set(mapping) == {cls.model_fields["kind"].default for cls in strategy_classes()}
    for ref in mapping.values():
        assert ref.removeprefix("#/$defs/") in schema["$defs"]
    assert schema == spec_json_schema()


def test_schema_describes_nested_unions() -> None:
    defs = spec_json_schema()["$defs"]
    for name in ("EnvEndpointSpec", "OpenAIEndpointSpec", "LocalEndpointSpec", "LLMJudgeVerifierSpec",
                 "ConfidenceVerifierSpec", "RewardModelVerifierSpec", "PythonVerifierSpec"):  # fmt: skip
        assert name in defs
    assert defs["BeamSearchSpec"]["additionalProperties"] is False
    assert "n" in defs["BeamSearchSpec"]["required"]


# -- 4. composition -----------------------------------------------------------------------------------------

JUDGE_URL = "http://127.0.0.1:9/v1"
JUDGED_ELSEWHERE = {
    "kind": "revisions",
    "n": 4,
    "chain_length": 2,
    "verifier": {"kind": "llm_judge", "mode": "outcome", "endpoint": {"kind": "openai", "base_url": JUDGE_URL,
                                                                      "model": "judge-7b"}},
}  # fmt: skip


def test_judge_on_another_endpoint_is_built_on_that_endpoint() -> None:
    spec = parse_spec(JUDGED_ELSEWHERE)
    policy = scripted()
    judge = build_verifier(spec.verifier, policy)
    assert isinstance(judge, LLMJudgeVerifier)
    assert judge.endpoint is not policy
    assert isinstance(judge.endpoint, OpenAIEndpoint)
    assert judge.endpoint.base_url == JUDGE_URL
    assert judge.endpoint.model == "judge-7b"
    assert judge.mode == "outcome"


def test_build_graph_hands_the_elsewhere_judge_to_revisions(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def record(policy: Any, verifier: Any = None, **kwargs: Any) -> Any:
        seen.update(policy=policy, verifier=verifier)
        return create_revisions(policy, verifier, **kwargs)

    monkeypatch.setitem(build_module.FACTORIES, "revisions", record)
    policy = scripted()
    build_graph(parse_spec(JUDGED_ELSEWHERE), policy=policy).compile()
    assert seen["policy"] is policy
    assert seen["verifier"].endpoint.base_url == JUDGE_URL


def test_judge_without_endpoint_judges_with_the_policy() -> None:
    policy = scripted()
    judge = build_verifier(LLMJudgeVerifierSpec(samples=3, aggregation="min"), policy)
    assert isinstance(judge, LLMJudgeVerifier)
    assert judge.endpoint is policy
    assert (judge.samples, judge.aggregation) == (3, "min")


def test_judge_on_a_local_endpoint_starts_no_server_at_build(monkeypatch: pytest.MonkeyPatch) -> None:
    no_server_starts(monkeypatch)
    spec = load_spec(ROOT / "ttc_graph" / "presets" / "revisions_judged_elsewhere.yaml")
    judge = build_verifier(spec.verifier, scripted())
    assert isinstance(judge, LLMJudgeVerifier)
    assert isinstance(judge.endpoint, LocalEndpoint)
    assert judge.endpoint.parallel == 4


def test_other_verifiers_are_built_from_their_specs() -> None:
    policy = scripted()
    conf = build_verifier(ConfidenceVerifierSpec(method="group", window=8), policy)
    assert isinstance(conf, ConfidenceVerifier)
    assert (conf.method, conf.window) == ("group", 8)
    prm = build_verifier(
        RewardModelVerifierSpec(base_url="http://127.0.0.1:9/v1", model="prm", step_separator="<s>", aggregation="min"),
        policy,
    )
    assert isinstance(prm, RewardModelVerifier)
    assert prm.aggregation == "min"
    assert build_verifier(None, policy) is None


HELPER = """\
from types import SimpleNamespace

from ttc_graph.verifiers import FunctionVerifier

CALLS = []


def score(question, solution):
    CALLS.append((question, solution))
    return 0.75 if "7" in solution else 0.25


namespace = SimpleNamespace(half=lambda question, solution: 0.5)
ready = FunctionVerifier(lambda question, solution: 1.0, name="ready")
THRESHOLD = 0.5
"""


@pytest.fixture()
def helper_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "ttc_spec_helper_verifiers"
    (tmp_path / f"{name}.py").write_text(HELPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    return name


async def test_python_verifier_imports_its_target(helper_module: str) -> None:
    spec = parse_spec({**MAJORITY, "verifier": {"kind": "python", "target": f"{helper_module}:score"}})
    verifier = build_verifier(spec.verifier, scripted())
    assert isinstance(verifier, FunctionVerifier)
    result = await verifier.verify([VerifyItem("What is 3 + 4?", ("3 + 4 = 7",)), VerifyItem("q", ("5",))])
    assert [s.value for s in result.scores] == [0.75, 0.25]
    module = __import__(helper_module)
    assert module.CALLS == [("What is 3 + 4?", "3 + 4 = 7"), ("q", "5")]


async def test_python_verifier_target_may_be_dotted_or_a_verifier(helper_module: str) -> None:
    policy = scripted()
    half = build_verifier(PythonVerifierSpec(target=f"{helper_module}:namespace.half"), policy)
    assert isinstance(half, FunctionVerifier)
    assert (await half.verify([VerifyItem("q", ("a",))])).scores[0].value == 0.5
    ready = build_verifier(PythonVerifierSpec(target=f"{helper_module}:ready"), policy)
    assert isinstance(ready, Verifier)
    assert ready is __import__(helper_module).ready


async def test_python_verifier_spec_builds_a_graph(helper_module: str) -> None:
    spec = parse_spec({"kind": "best_of_n", "n": 2, "verifier": {"kind": "python", "target": f"{helper_module}:score"}})
    out = await build_graph(spec, policy=scripted()).compile().ainvoke({"question": "What is 3 + 4?"})
    assert out["answer"] == "7"
    assert [c["score"] for c in out["candidates"]] == [0.75, 0.75]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("ttc_no_such_module_xyz:score", "cannot import"),
        ("{helper}:missing", "cannot import"),
        ("{helper}:namespace.missing", "cannot import"),
        ("{helper}:THRESHOLD", "not callable"),
    ],
    ids=["module", "attribute", "nested-attribute", "not-callable"],
)
def test_bad_python_verifier_target(target: str, message: str, helper_module: str) -> None:
    spec = PythonVerifierSpec(target=target.format(helper=helper_module))
    with pytest.raises(ConfigurationError) as info:
        build_verifier(spec, scripted())
    assert str(info.value).startswith("verifier.target:")
    assert message in str(info.value)
    assert spec.target in str(info.value)


def test_python_verifier_target_must_name_module_and_attribute() -> None:
    reason = problem_at({**MAJORITY, "verifier": {"kind": "python", "target": "just_a_module"}}, "verifier.target")
    assert "pattern" in reason


def test_graph_with_a_bad_python_target_fails_at_build() -> None:
    spec = parse_spec({"kind": "best_of_n", "n": 2, "verifier": {"kind": "python", "target": "ttc_nope_xyz:f"}})
    with pytest.raises(ConfigurationError, match=r"^verifier\.target"):
        build_graph(spec, policy=scripted())


# -- 5. endpoints -------------------------------------------------------------------------------------------


def test_env_endpoint_uses_ttc_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTC_BASE_URL", "http://127.0.0.1:8123/v1")
    monkeypatch.setenv("TTC_MODEL", "served-model")
    monkeypatch.setenv("TTC_API_KEY", "sk-test")
    endpoint = build_endpoint(EnvEndpointSpec())
    assert isinstance(endpoint, OpenAIEndpoint)
    assert endpoint.base_url == "http://127.0.0.1:8123/v1"
    assert endpoint.model == "served-model"


def test_env_endpoint_without_ttc_base_url_is_a_lazy_local_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TTC_BASE_URL", "TTC_MODEL", "TTC_API_KEY", "TTC_LOCAL_MODEL"):
        monkeypatch.delenv(var, raising=False)
    no_server_starts(monkeypatch)
    servers_before = dict(lazy._SERVERS)
    endpoint = build_endpoint(EnvEndpointSpec())
    assert isinstance(endpoint, LocalEndpoint)
    assert endpoint.model is None
    assert endpoint._server is None
    assert servers_before == lazy._SERVERS
    # and a whole graph on it still costs nothing to build
    build_graph(parse_spec(MAJORITY)).compile()
    assert servers_before == lazy._SERVERS


def test_env_endpoint_honours_ttc_local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTC_BASE_URL", raising=False)
    monkeypatch.setenv("TTC_LOCAL_MODEL", "/models/tiny.gguf")
    endpoint = build_endpoint(EnvEndpointSpec())
    assert isinstance(endpoint, LocalEndpoint)
    assert endpoint.model == "/models/tiny.gguf"


def test_the_default_policy_is_the_env_endpoint() -> None:
    assert isinstance(parse_spec(MAJORITY).policy, EnvEndpointSpec)


def test_openai_endpoint_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-123")
    spec = OpenAIEndpointSpec(
        base_url="http://127.0.0.1:9/v1", model="m", api_key_env="MY_KEY", max_concurrency=3, native_n=False,
        continuation="prompt",
    )  # fmt: skip
    endpoint = build_endpoint(spec)
    assert isinstance(endpoint, OpenAIEndpoint)
    assert (endpoint.base_url, endpoint.model) == ("http://127.0.0.1:9/v1", "m")
    assert endpoint.native_n is False


def test_local_endpoint_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    no_server_starts(monkeypatch)
    endpoint = build_endpoint(LocalEndpointSpec(model="/models/x.gguf", parallel=2))
    assert isinstance(endpoint, LocalEndpoint)
    assert (endpoint.model, endpoint.parallel) == ("/models/x.gguf", 2)


def test_spec_policy_is_used_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def record(policy: Any, verifier: Any = None, **kwargs: Any) -> SimpleNamespace:
        seen["policy"] = policy
        return SimpleNamespace()

    monkeypatch.setitem(build_module.FACTORIES, "best_of_n", record)
    spec = parse_spec({**MAJORITY, "policy": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "p"}})
    build_graph(spec)
    assert isinstance(seen["policy"], OpenAIEndpoint) and seen["policy"].model == "p"
    override = scripted()
    build_graph(spec, policy=override)
    assert seen["policy"] is override
