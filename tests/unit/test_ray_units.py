"""Units run elsewhere write what the local path writes; bad cluster or checkpoint input fails before any model call.

Nothing here starts Ray or talks to a network: an inline runner sends every request through pickle (as Ray does)
and runs it in this process; Ray's error paths are driven with stand-ins.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import pickle
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from ttc_graph import cli, create_best_of_n
from ttc_graph.cli.runtime import Runtime, check_ray_options, replica_from_options
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.eval import ResultStore, SweepConfig, run_sweep
from ttc_graph.eval.datasets import Problem
from ttc_graph.eval.spec_runs import run_graph_over_dataset
from ttc_graph.eval.spec_units import replica_of, run_spec_on
from ttc_graph.scale import (
    CheckpointStoreError,
    ClusterError,
    EmbeddedServerSpec,
    RayUnits,
    UnitOutcome,
    UnitRequest,
    check_address,
    connect_ray,
    execute,
    parse_replica,
    postgres_checkpointer,
    run_durable,
)
from ttc_graph.scale.ray_runner import _check_versions, _Replica
from ttc_graph.specs import build_graph, parse_spec
from ttc_graph.specs.models import OpenAIEndpointSpec
from ttc_graph.study.config import StudyConfig
from ttc_graph.study.runner import run_study
from ttc_graph.testing import FakeCall, ScriptedEndpoint

DELIM = "\n\n"
PROBLEMS = [Problem(str(i), f"What is {i} + {i}?", str(2 * i)) for i in range(4)]


class Script:
    """Answers that depend on the request alone (question, prefix, seed, place in the request), never on timing."""

    def __init__(self, fail_question: str | None = None) -> None:
        self.fail_question = fail_question
        self._pos: dict[int, int] = {}

    def __call__(self, call: FakeCall, index: int) -> str:
        pos = self._pos.get(id(call), 0)
        self._pos[id(call)] = pos + 1
        question = next(m["content"] for m in call.messages if m["role"] == "user" and "What is" in m["content"])
        i = int(question.split()[2])
        if self.fail_question is not None and str(i) == self.fail_question:
            raise EndpointError("scripted outage", status_code=500)
        seed = None if call.params is None else call.params.seed
        digest = hashlib.sha256(f"{call.messages}|{call.prefix}|{seed}|{pos}".encode()).digest()
        answer = 2 * i + digest[0] % 2  # right or wrong, by the request
        if call.params is not None and call.params.stop:  # a search step
            return f"So the answer is \\boxed{{{answer}}}." if call.prefix else f"{i} + {i} = {answer}"
        return f"{i} + {i} = {answer}.{DELIM}So the answer is \\boxed{{{answer}}}."


class InlineRunner:
    """A unit runner that pickles each request and outcome (as Ray does) and runs the unit here."""

    def __init__(self, policy: Any, slots: int = 2) -> None:
        self.policy = policy
        self.slots = slots
        self.labels: list[str] = []

    async def run(self, request: UnitRequest) -> UnitOutcome:
        sent: UnitRequest = pickle.loads(pickle.dumps(request))
        self.labels.append(sent.label)
        outcome = await execute(self.policy, sent)
        back: UnitOutcome = pickle.loads(pickle.dumps(outcome))
        return back


class Never:
    """The driver's policy when units run elsewhere: any call is a bug."""

    name = "never"

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the driver's policy was called")


def normal(store: ResultStore, run: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and pools without wall-clock fields, in key order."""
    rows = []
    for r in store.rows(run):
        d = asdict(r)
        d.pop("seconds")
        d["details"] = {k: v for k, v in d["details"].items() if k != "wall_seconds"}
        d["details"].get("usage", {}).pop("seconds", None)
        rows.append(d)
    pools = {
        q: [{k: v for k, v in s.items() if k != "seconds"} for s in samples] for q, samples in store.pools(run).items()
    }
    return sorted(rows, key=lambda d: (d["strategy"], d["budget"], d["question_id"])), pools


# -- the sweep through the hook ---------------------------------------------------------------------------------


def sweep_config(**kw: Any) -> SweepConfig:
    strategies = ["best_of_n:majority", "revisions:majority", "revisions:last"]
    return SweepConfig.make("r", "gsm8k", strategies, "1,2,4", max_tokens=32, seed=5, concurrency=2, **kw)


def test_a_sweep_config_travels_as_data_and_is_validated_again() -> None:
    config = SweepConfig.make(
        "r", "gsm8k", ["best_of_n:weighted:judge", "beam_search:2", "dvts:sqrt", "revisions:hierarchical:judge"],
        "2,4", max_tokens=16, seed=1, model="m",
    )  # fmt: skip
    data = json.loads(json.dumps(config.as_data()))
    assert SweepConfig.from_data(data) == config
    with pytest.raises(ConfigurationError, match="beam width"):
        SweepConfig.from_data(data | {"strategies": ["beam_search:0"]})


async def test_a_sweep_run_elsewhere_writes_what_the_local_sweep_writes(tmp_path: Path) -> None:
    config = sweep_config()
    with ResultStore(tmp_path / "local.sqlite") as local:
        here = await run_sweep(ScriptedEndpoint(Script()), PROBLEMS, config, local)
        expected = normal(local, "r")
    events: list[str] = []
    runner = InlineRunner(ScriptedEndpoint(Script()), slots=3)
    with ResultStore(tmp_path / "ray.sqlite") as store:
        report = await run_sweep(
            Never(), PROBLEMS, config, store, runner=runner, progress=lambda e: events.append(f"{e.kind} {e.label}")
        )
        assert normal(store, "r") == expected
        assert report.failed_units == here.failed_units == 0
        assert report.rows_written == len(store.rows("r")) == here.rows_written  # no unit written twice
        assert (report.generations, report.requests) == (here.generations, here.requests)
        assert sorted(runner.labels) == sorted(e.removeprefix("done ") for e in events if e.startswith("done"))
        assert len(runner.labels) == len(set(runner.labels)) == report.units
        again = await run_sweep(Never(), PROBLEMS, config, store, runner=runner)  # resumes exactly as locally
    assert (again.units, again.rows_written) == (0, 0)


async def test_a_failed_unit_elsewhere_is_reported_and_left_for_the_rerun(tmp_path: Path) -> None:
    config = sweep_config()
    with ResultStore(tmp_path / "local.sqlite") as local:
        here = await run_sweep(ScriptedEndpoint(Script(fail_question="1")), PROBLEMS, config, local)
        expected = normal(local, "r")
    runner = InlineRunner(ScriptedEndpoint(Script(fail_question="1")))
    with ResultStore(tmp_path / "ray.sqlite") as store:
        report = await run_sweep(Never(), PROBLEMS, config, store, runner=runner)
        assert normal(store, "r") == expected
        assert report.failed_units == here.failed_units > 0
        assert sorted(report.failures) == sorted(here.failures)
        rerun = await run_sweep(Never(), PROBLEMS, config, store, runner=InlineRunner(ScriptedEndpoint(Script())))
    assert rerun.units == here.failed_units and rerun.failed_units == 0


async def test_a_runner_excludes_a_separate_judge() -> None:
    with pytest.raises(ConfigurationError, match="judge_policy"):
        await run_sweep(Never(), PROBLEMS, sweep_config(), ResultStore(":memory:"), runner=InlineRunner(Never()),
                        judge_policy=Never())  # fmt: skip


# -- the study through the hook ---------------------------------------------------------------------------------


def study_config(tmp_path: Path, nested: bool = False) -> StudyConfig:
    pool = tmp_path / "pool.jsonl"
    with pool.open("w") as fh:  # question 0 has stored samples the driver hands over; the others are drawn
        text = f"0 + 0 = 0.{DELIM}So \\boxed{{0}}."
        fh.write(json.dumps({"idx": 0, "samples": [{"text": text, "tokens": 9, "mean_lp": -0.1}] * 4}) + "\n")
    return StudyConfig.model_validate(
        {
            "name": "t", "model": "m", "budgets": [2, 4], "verifier": {"kind": "arithmetic"},
            "nested_revisions": nested,
            "pool": {"path": str(pool), "model": "m", "temperature": 0.8, "max_tokens": 512},
            "templates": {
                "bon_weighted": {"kind": "best_of_n", "selection": "weighted"},
                "beam": {"kind": "beam_search", "beam_width": 2},
                "seq": {"kind": "revisions", "chain_length": "full", "selection": "hierarchical"},
            },
        }
    )  # fmt: skip


@pytest.mark.parametrize("nested", [False, True])
async def test_a_study_run_elsewhere_writes_what_the_local_study_writes(tmp_path: Path, nested: bool) -> None:
    config = study_config(tmp_path, nested)  # nested: seq b=2 is replayed from seq b=4, wherever that ran
    with ResultStore(tmp_path / "local.sqlite") as local:
        here = await run_study(ScriptedEndpoint(Script()), config, local, problems=PROBLEMS)
        expected = normal(local, "t")
    runner = InlineRunner(ScriptedEndpoint(Script()))
    with ResultStore(tmp_path / "ray.sqlite") as store:
        report = await run_study(Never(), config, store, problems=PROBLEMS, runner=runner)
        assert normal(store, "t") == expected
        assert expected[1]["0"][0]["source"] == "pool.jsonl"  # the stored pool reached the unit as data
        assert (report.finished, report.failed, report.generations, report.tokens) == (
            here.finished, here.failed, here.generations, here.tokens,
        )  # fmt: skip
        again = await run_study(Never(), config, store, problems=PROBLEMS, runner=runner)
        assert all(("seq", 2, p.id) in store.done("t") for p in PROBLEMS)
    assert again.units == 0


# -- ttc run SPEC --dataset through the hook ----------------------------------------------------------------------


async def test_a_spec_run_elsewhere_writes_what_the_local_spec_run_writes(tmp_path: Path) -> None:
    spec = parse_spec({"kind": "beam_search", "n": 4, "beam_width": 2, "seed": 3, "verifier": {"kind": "arithmetic"}})
    options: dict[str, Any] = {"strategy": "beam", "budget": 4, "problems": PROBLEMS, "dataset": "gsm8k", "run": "s"}
    with ResultStore(tmp_path / "local.sqlite") as local:
        graph = build_graph(spec, policy=ScriptedEndpoint(Script())).compile()
        here = await run_graph_over_dataset(graph, store=local, **options)
        expected = normal(local, "s")
    runner = InlineRunner(ScriptedEndpoint(Script()))
    seen: list[str] = []
    with ResultStore(tmp_path / "ray.sqlite") as store:
        rows = await run_spec_on(runner, spec, store=store, on_done=lambda r: seen.append(r.question_id), **options)
        assert normal(store, "s") == expected and len(rows) == len(here) == len(PROBLEMS)
        assert sorted(seen) == [p.id for p in PROBLEMS] and len(runner.labels) == len(PROBLEMS)
        again = await run_spec_on(InlineRunner(Never()), spec, store=store, **options)
    assert len(again) == len(PROBLEMS)


def test_a_spec_runs_on_replicas_of_its_own_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    url = {"kind": "openai", "base_url": "http://gpu:8000/v1", "model": "q"}
    assert (
        replica_of(parse_spec({"kind": "best_of_n", "n": 2, "selection": "majority", "policy": url})).kind == "openai"
    )
    local = parse_spec(
        {"kind": "best_of_n", "n": 2, "selection": "majority", "policy": {"kind": "local", "parallel": 3}}
    )
    assert replica_of(local) == EmbeddedServerSpec(parallel=3)
    monkeypatch.setenv("TTC_BASE_URL", "http://lb:8000/v1")
    env = replica_of(parse_spec({"kind": "best_of_n", "n": 2, "selection": "majority"}))
    assert isinstance(env, OpenAIEndpointSpec) and env.base_url == "http://lb:8000/v1"


# -- the Ray runner's own logic, with stand-ins -------------------------------------------------------------------


class FakeMethod:
    def __init__(self, behave: Any) -> None:
        self.behave = behave

    def remote(self, *args: Any) -> Any:
        return self.behave(*args)


class FakeActor:
    def __init__(self, behave: Any) -> None:
        self.run = FakeMethod(behave)
        self.calls = 0


def started(replicas: list[Any]) -> RayUnits:
    units = RayUnits({"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}, replicas=len(replicas))
    units._started = True
    units._replicas = [_Replica(i, handle) for i, handle in enumerate(replicas)]
    return units


async def test_a_replica_gone_for_good_hands_its_units_to_the_others() -> None:
    import ray

    async def dead(request: UnitRequest) -> UnitOutcome:
        raise ray.exceptions.ActorDiedError()

    async def alive(request: UnitRequest) -> UnitOutcome:
        return UnitOutcome(generations=1)

    units = started([FakeActor(dead), FakeActor(alive)])
    request = UnitRequest("sweep", "q0", {}, {"id": "0", "question": "?", "reference": "0"})
    assert (await units.run(request)).generations == 1
    assert [r.alive for r in units._replicas] == [False, True] and len(units.lost) == 1
    assert (await units.run(request)).generations == 1  # straight to the live one

    everyone_dead = started([FakeActor(dead), FakeActor(dead)])
    with pytest.raises(ClusterError, match="every replica is gone"):
        await everyone_dead.run(request)


async def test_a_runner_that_is_not_started_refuses_units() -> None:
    units = RayUnits({"kind": "embedded"}, replicas=1)
    with pytest.raises(ClusterError, match="not started"):
        await units.run(UnitRequest("sweep", "q0", {}, {"id": "0", "question": "?", "reference": "0"}))


def test_bad_addresses_and_versions_fail_before_any_model_call(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    for address in ("nonsense", "host:", ":6379", "ray://host:port"):
        with pytest.raises(ClusterError, match="HOST:PORT"):
            check_address(address)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def mismatch(**kwargs: Any) -> None:
        raise RuntimeError("Version mismatch: The cluster was started with:\n    Ray: 2.9.0\n    Python: 3.10.0")

    monkeypatch.setattr(ray, "init", mismatch)
    with pytest.raises(ClusterError, match="Ray version mismatch"):
        connect_ray("auto")

    def nothing_there(**kwargs: Any) -> None:
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", nothing_there)
    with pytest.raises(ClusterError, match="Could not find any running Ray instance"):
        connect_ray("auto")
    with pytest.raises(ClusterError, match=r"ttc_graph '0\.0\.1' there"):
        _check_versions({"ray": ray.__version__, "python": "3.11", "ttc_graph": "0.0.1"}, "replica 0")


def test_replica_specs_and_options_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="parallel"):
        parse_replica({"kind": "embedded", "parallel": 0})
    with pytest.raises(ConfigurationError, match="base_url"):
        parse_replica({"kind": "openai", "model": "m"})
    with pytest.raises(ConfigurationError, match="--replicas K"):
        RayUnits({"kind": "embedded"}, replicas=None)
    with pytest.raises(ConfigurationError, match="only with --ray"):
        check_ray_options(None, 2)
    with pytest.raises(ConfigurationError, match=">= 1"):
        check_ray_options("local", 0)
    spec = replica_from_options("http://gpu-node:8000/v1", "qwen", None, 4, None)
    assert (spec.kind, spec.api_key_env) == ("openai", "TTC_API_KEY")
    embedded = replica_from_options(None, None, Path("model.gguf"), 2, 1, 4096)
    assert embedded.kind == "embedded" and embedded.model == str(Path("model.gguf").resolve())
    assert RayUnits(embedded, replicas=3, concurrency=2).slots == 6
    assert RayUnits(spec, replicas=None, concurrency=5).slots == 5


# -- the command line -----------------------------------------------------------------------------------------------

runner = CliRunner()


def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"q": p.question, "a": p.reference}) + "\n" for p in PROBLEMS))
    return path


def eval_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "eval", "--run", "r", "--dataset", "jsonl", "--path", str(dataset(tmp_path)), "--question-field", "q",
        "--answer-field", "a", "--limit", "4", "--budgets", "1,2", "--strategy", "best_of_n:majority",
        "--strategy", "revisions:majority", "--seed", "3", "--db", str(tmp_path / "e.sqlite"), *extra,
    ]  # fmt: skip


def test_eval_on_a_runner_shows_progress_and_writes_every_unit_once(tmp_path: Path) -> None:
    inline = InlineRunner(ScriptedEndpoint(Script()))
    asked: dict[str, Any] = {}

    class OnInline(Runtime):
        @contextlib.contextmanager
        def ray(self, ray: str, replicas: int | None, concurrency: int, **options: Any) -> Iterator[Any]:
            asked.update(ray=ray, replicas=replicas, concurrency=concurrency)
            yield inline

    args = eval_args(tmp_path, "--ray", "10.0.0.1:6379", "--replicas", "2")
    result = runner.invoke(cli.app, args, obj=OnInline())
    assert result.exit_code == 0, result.output
    assert asked == {"ray": "10.0.0.1:6379", "replicas": 2, "concurrency": 2}
    with ResultStore(tmp_path / "e.sqlite") as store:
        assert len(store.rows("r")) == 4 * 2 * 2
    assert len(inline.labels) == len(set(inline.labels)) == 4 + 4 * 2
    assert "this call: 12 unit(s) run" in " ".join(result.output.split())


def test_eval_with_a_bad_ray_address_exits_2_and_keeps_what_was_written(tmp_path: Path) -> None:
    db = tmp_path / "e.sqlite"
    with ResultStore(db) as store:  # a run that has finished one question already
        first = InlineRunner(ScriptedEndpoint(Script()))
        config = SweepConfig.make("r", "jsonl", ["best_of_n:majority", "revisions:majority"], "1,2", seed=3)
        asyncio.run(run_sweep(Never(), PROBLEMS[:1], config, store, runner=first))
        before = normal(store, "r")
    result = runner.invoke(cli.app, eval_args(tmp_path, "--ray", "not-an-address"))
    assert result.exit_code == 2, result.output
    assert "use HOST:PORT" in " ".join(result.output.split())
    with ResultStore(db) as store:
        assert normal(store, "r") == before and before[0]
    bad = runner.invoke(cli.app, eval_args(tmp_path, "--replicas", "2"))
    assert bad.exit_code == 2 and "only with --ray" in " ".join(bad.output.split())


# -- durable runs -------------------------------------------------------------------------------------------------


async def test_a_durable_run_resumes_returns_a_finished_run_and_refuses_another_question() -> None:
    saver = InMemorySaver()
    first = ScriptedEndpoint(Script())
    graph = create_best_of_n(first, n=4, selection="majority", seed=1).compile(checkpointer=saver)
    out = await run_durable(graph, "What is 2 + 2?", "t1")
    again = ScriptedEndpoint(Script())
    graph2 = create_best_of_n(again, n=4, selection="majority", seed=1).compile(checkpointer=saver)
    assert await run_durable(graph2, "What is 2 + 2?", "t1") == out
    assert again.calls == []
    with pytest.raises(ConfigurationError, match="another question"):
        await run_durable(graph2, "What is 3 + 3?", "t1")


async def test_a_postgres_url_is_checked_before_connecting() -> None:
    for url in ("mysql://db/x", "http://127.0.0.1:5432/x"):
        with pytest.raises(ConfigurationError, match="postgresql://"):
            async with postgres_checkpointer(url):
                pass
    with pytest.raises(ConfigurationError, match="invalid URL"):
        async with postgres_checkpointer("postgresql://user@host:notaport/db"):
            pass
    assert issubclass(CheckpointStoreError, Exception)


def test_run_with_ray_needs_a_dataset(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("kind: best_of_n\nn: 2\nselection: majority\n")
    result = runner.invoke(cli.app, ["run", str(spec), "What is 1 + 1?", "--ray", "local"])
    assert result.exit_code == 2 and "not one QUESTION" in " ".join(result.output.split())


def test_run_with_postgres_refuses_a_dataset_and_a_bad_url(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("kind: best_of_n\nn: 2\nselection: majority\n")
    result = runner.invoke(cli.app, ["run", str(spec), "--dataset", "gsm8k", "--postgres", "postgresql://h/db"])
    assert result.exit_code == 2 and "not a --dataset" in " ".join(result.output.split())
    result = runner.invoke(cli.app, ["run", str(spec), "What is 1 + 1?", "--postgres", "sqlite:///x"])
    assert result.exit_code == 2 and "not a postgresql:// URL" in " ".join(result.output.split())
