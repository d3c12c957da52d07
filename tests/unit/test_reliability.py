"""The weak spots a fault-injection probe found, each pinned by a test that failed before its fix.

- a malformed 200 body (JSON that does not parse, no choices) is retried like a 5xx;
- fan-outs (a beam's children, best-of-N's samples) keep every failed request's error and count every failure;
- an answer lost after its request was sent is charged at its ``max_tokens`` and, under a token budget, not retried,
  so ``Budget(tokens=...)`` holds even when answers are lost;
- ``max_tokens=0``, ``temperature < 0``, ``n=True`` and an unknown context field are ConfigurationErrors naming them;
- ``n`` above a ceiling needs a budget, and a fan-out keeps only what is in flight in memory;
- ``ttc solve`` / ``ttc run`` exit 1 when failed requests left no answer;
- an endpoint's HTTP clients are closed when the ``asyncio.run`` that opened them ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner

from ttc_graph import (
    Budget,
    TTCContext,
    create_beam_search,
    create_best_of_n,
    create_mcts,
    create_particle_filtering,
    create_revisions,
)
from ttc_graph.budget import MAX_UNBUDGETED_N, merge_usage, usage_delta
from ttc_graph.endpoints import OpenAIEndpoint, RetryConfig, SamplingParams
from ttc_graph.endpoints.base import bounded_gather
from ttc_graph.endpoints.n_usage import forget_verdicts, record_n_usage_verdict
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.nodes.budget_controller import MAX_ROUND_SAMPLES
from ttc_graph.specs import build_graph, parse_spec
from ttc_graph.testing import ScriptedEndpoint
from ttc_graph.usage import RequestUsage

BASE_URL = "http://mock.test/v1"
QUESTION = "What is 2 + 3?"
FAST_RETRY = RetryConfig(max_attempts=4, initial_backoff=0, jitter=0, max_backoff=0.01)


@pytest.fixture(autouse=True)
def _honest_mock() -> None:
    forget_verdicts()
    record_n_usage_verdict(BASE_URL.removesuffix("/v1"), True)


def answer(text: str, completion_tokens: int, finish: str = "stop") -> httpx2.Response:
    body = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens, "total_tokens": 5 + completion_tokens},
    }
    return httpx2.Response(200, json=body)


@dataclass
class Upstream:
    """A mocked server: ``respond(body, index)`` answers or raises; it tallies what it generated (``served``),
    counting a lost answer (an exception raised after the request arrived) at its ``max_tokens``."""

    respond: Callable[[dict[str, Any], int], httpx2.Response]
    bodies: list[dict[str, Any]] = field(default_factory=list)
    served: int = 0
    lost: int = 0

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content or b"{}")
        index = len(self.bodies)
        self.bodies.append(body)
        try:
            resp = self.respond(body, index)
        except httpx2.ReadTimeout:
            self.served += int(body.get("max_tokens") or 0)  # generated upstream, never delivered
            self.lost += 1
            raise
        if resp.status_code == 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.served += int(json.loads(resp.content)["usage"]["completion_tokens"])
        return resp

    def endpoint(self, **kwargs: Any) -> OpenAIEndpoint:
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("native_n", False)
        client = httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler))
        return OpenAIEndpoint(BASE_URL, "m", "sk", http_client=client, **kwargs)


# -- a malformed 200 is retried like a 5xx ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        httpx2.Response(200, content=b'{"id": "c", "choices": [', headers={"content-type": "application/json"}),
        httpx2.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": []}),
        httpx2.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m"}),
    ],
    ids=["unparsable-json", "empty-choices", "no-choices-key"],
)
async def test_a_malformed_200_is_retried(bad: httpx2.Response) -> None:
    up = Upstream(lambda body, i: bad if i == 0 else answer("fine \\boxed{5}", 4))
    result = await up.endpoint().generate([{"role": "user", "content": QUESTION}], params=SamplingParams(max_tokens=8))
    assert [g.text for g in result.generations] == ["fine \\boxed{5}"]
    assert len(up.bodies) == 2
    assert result.usage.requests == 1 and result.usage.completion_tokens == 4
    assert result.usage.unconfirmed_tokens == 8  # the unreadable answer may have been generated: its max_tokens


# -- fan-outs keep every failure --------------------------------------------------------------------------------


def failing_seeds(seeds: set[int]) -> Callable[[dict[str, Any], int], httpx2.Response]:
    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        if body.get("seed") in seeds:
            return httpx2.Response(400, json={"error": {"message": f"bad seed {body['seed']}"}})
        return answer(f"Step for seed {body.get('seed')}.", 3)

    return respond


def score(question: str, solution: str) -> float:
    return min(1.0, len(solution) / 100)


async def test_a_beam_keeps_every_failed_childs_error_and_count() -> None:
    up = Upstream(failing_seeds({1, 2}))
    graph = create_beam_search(up.endpoint(), score, n=4, beam_width=2, max_steps=1, seed=0).compile()
    out = await graph.ainvoke({"question": QUESTION})
    assert out["usage"]["failed_requests"] == 2
    assert sorted(e for e in out["errors"] if "bad seed" in e) == sorted(
        e for e in out["errors"] if "bad seed 1" in e or "bad seed 2" in e
    )
    assert sum("bad seed" in e for e in out["errors"]) == 2


async def test_a_beam_whose_every_child_failed_counts_them_all() -> None:
    up = Upstream(failing_seeds(set(range(4))))
    graph = create_beam_search(up.endpoint(), score, n=4, beam_width=2, max_steps=1, seed=0).compile()
    out = await graph.ainvoke({"question": QUESTION})
    assert out["usage"]["failed_requests"] == 4
    assert sum("bad seed" in e for e in out["errors"]) == 4


async def test_best_of_n_counts_every_failed_sample_of_a_chunk() -> None:
    up = Upstream(failing_seeds({10, 11, 12}))
    graph = create_best_of_n(up.endpoint(), n=3, selection="majority", seed=10).compile()
    out = await graph.ainvoke({"question": QUESTION})
    assert out["usage"]["by_kind"]["propose"]["failed_requests"] >= 3
    assert sum("bad seed" in e for e in out["errors"]) == out["usage"]["failed_requests"]


# -- a token budget holds when answers are lost -----------------------------------------------------------------


def losing(first: int, tokens_each: int = 10) -> Callable[[dict[str, Any], int], httpx2.Response]:
    """The first ``first`` requests are generated upstream and lost on the way back; the rest answer in full."""

    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        if index < first:
            raise httpx2.ReadTimeout("the answer was lost")
        return answer("So \\boxed{5}", min(tokens_each, int(body.get("max_tokens") or tokens_each)), "length")

    return respond


@pytest.mark.parametrize("family", ["best_of_n", "revisions", "beam_search"])
async def test_a_token_budget_holds_when_answers_are_lost(family: str) -> None:
    up = Upstream(losing(2))
    ep = up.endpoint(max_tokens=None)
    budget = Budget(tokens=40)
    if family == "best_of_n":
        graph = create_best_of_n(ep, n=4, selection="majority", budget=budget)
    elif family == "revisions":
        graph = create_revisions(ep, n=4, chain_length=2, selection="majority", budget=budget)
    else:
        graph = create_beam_search(ep, score, n=4, beam_width=2, max_steps=3, budget=budget, step_max_tokens=20)
    out = await graph.compile().ainvoke({"question": QUESTION})
    assert up.lost == 2
    assert up.served <= 40, (up.served, out["usage"])  # delivered + lost: what the server generated
    assert out["usage"]["completion_tokens"] + out["usage"]["unconfirmed_tokens"] >= up.served
    assert out["usage"]["unconfirmed_tokens"] == up.served - out["usage"]["completion_tokens"]


async def test_a_lost_answer_is_retried_without_a_token_budget() -> None:
    up = Upstream(losing(1))
    result = await up.endpoint().generate([{"role": "user", "content": QUESTION}], params=SamplingParams(max_tokens=6))
    assert len(result.generations) == 1 and len(up.bodies) == 2
    assert result.usage.unconfirmed_tokens == 6
    no_retry = SamplingParams(max_tokens=6, retry_lost=False)
    with pytest.raises(EndpointError, match="not retried") as info:
        await Upstream(losing(1)).endpoint().generate([{"role": "user", "content": QUESTION}], params=no_retry)
    assert info.value.usage == RequestUsage(failed_requests=1, unconfirmed_tokens=6)


def test_lost_tokens_count_against_the_budget_and_merge_like_any_counter() -> None:
    from ttc_graph.budget import remaining

    lost = usage_delta("propose", RequestUsage(0, 0, 0, 1, 16))
    ledger = merge_usage(usage_delta("propose", RequestUsage(1, 5, 10)), lost)
    assert ledger["unconfirmed_tokens"] == 16 and ledger["by_kind"]["propose"]["unconfirmed_tokens"] == 16
    assert remaining(Budget(tokens=40), ledger, None).tokens == 14
    assert "unconfirmed_tokens" not in merge_usage(usage_delta("propose", RequestUsage(1, 5, 10)), None)


# -- bad settings are refused, naming them ----------------------------------------------------------------------


POLICY = ScriptedEndpoint(["So \\boxed{5}"])


@pytest.mark.parametrize(
    ("build", "field_name"),
    [
        (lambda: create_best_of_n(POLICY, n=2, selection="majority", max_tokens=0), "max_tokens"),
        (lambda: create_best_of_n(POLICY, n=2, selection="majority", temperature=-0.5), "temperature"),
        (lambda: create_best_of_n(POLICY, n=True, selection="majority"), "n"),
        (lambda: create_revisions(POLICY, n=True, chain_length=1, selection="majority"), "n"),
        (lambda: create_revisions(POLICY, n=2, chain_length=1, selection="majority", temperature=-1), "temperature"),
        (lambda: create_beam_search(POLICY, score, n=True, beam_width=1), "n"),
        (lambda: create_beam_search(POLICY, score, n=2, beam_width=1, step_max_tokens=0), "step_max_tokens"),
        (lambda: create_beam_search(POLICY, score, n=2, beam_width=1, temperature=-1), "temperature"),
        (lambda: build_graph(parse_spec({"kind": "best_of_n", "n": True, "selection": "majority"})), "n"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(build: Callable[[], Any], field_name: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"\b{field_name}\b"):
        build()


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"n": True}, "n"),
        ({"n": 0}, "n"),
        ({"params": SamplingParams(max_tokens=0)}, "max_tokens"),
        ({"params": SamplingParams(temperature=-1)}, "temperature"),
        ({"params": SamplingParams(top_p=1.5)}, "top_p"),
    ],
)
async def test_an_endpoint_refuses_a_bad_request_before_sending_it(kwargs: dict[str, Any], field_name: str) -> None:
    up = Upstream(lambda body, i: answer("x", 1))
    with pytest.raises(ConfigurationError, match=rf"^{field_name}:"):
        await up.endpoint().generate([{"role": "user", "content": QUESTION}], **kwargs)
    assert up.bodies == []


async def test_an_unknown_context_field_is_named_not_a_type_error() -> None:
    policy = ScriptedEndpoint(["So \\boxed{5}"])
    graph = create_best_of_n(policy, n=2, selection="majority").compile()
    with pytest.raises(ConfigurationError, match=r"^context\.temprature: unknown field"):
        await graph.ainvoke({"question": QUESTION}, context={"temprature": 0.1})
    with pytest.raises(ConfigurationError, match=r"^context\.max_tokens"):
        await graph.ainvoke({"question": QUESTION}, context={"max_tokens": 0})
    with pytest.raises(ConfigurationError, match=r"^context\.user_id"):
        TTCContext(user_id="u")  # type: ignore[call-arg]
    out = await graph.ainvoke({"question": QUESTION}, context={"temperature": 0.1, "extra": {"user_id": "u"}})
    assert out["answer"] == "5" and policy.calls == policy.calls[:2]


# -- n has a ceiling without a budget; memory follows what is in flight -----------------------------------------


def test_n_above_the_ceiling_needs_a_budget() -> None:
    with pytest.raises(ConfigurationError, match=rf"^n: {MAX_UNBUDGETED_N + 1} is above {MAX_UNBUDGETED_N}"):
        create_best_of_n(POLICY, n=MAX_UNBUDGETED_N + 1, selection="majority")
    with pytest.raises(ConfigurationError, match=r"^n: .* without a budget"):
        create_revisions(POLICY, n=2 * MAX_UNBUDGETED_N, chain_length=2, selection="majority")
    for factory in (create_particle_filtering, create_mcts):
        with pytest.raises(ConfigurationError, match=rf"^n: {MAX_UNBUDGETED_N + 1} is above"):
            factory(POLICY, lambda q, s: 0.5, n=MAX_UNBUDGETED_N + 1)
        factory(POLICY, lambda q, s: 0.5, n=MAX_UNBUDGETED_N + 1, budget=Budget(generations=MAX_UNBUDGETED_N + 1))
    create_best_of_n(POLICY, n=10**9, selection="majority", budget=Budget(generations=8))


async def test_bounded_gather_keeps_only_the_limit_in_flight() -> None:
    live = peak = 0

    async def one(i: int) -> int:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0)
        live -= 1
        if i % 1000 == 999:
            raise ValueError(i)
        return i

    outcomes = await bounded_gather(one, 20_000, 8)
    assert peak == 8
    assert len(outcomes) == 20_000 and sum(isinstance(o, ValueError) for o in outcomes) == 20


async def test_a_huge_budgeted_best_of_n_plans_bounded_rounds() -> None:
    policy = ScriptedEndpoint(["So \\boxed{5}"], native_n=False)
    n = 3 * MAX_ROUND_SAMPLES + 10
    graph = create_best_of_n(policy, n=n, selection="majority", budget=Budget(generations=n)).compile()
    planned = [
        e["planned"]
        async for e in graph.astream({"question": QUESTION}, stream_mode="custom")
        if e.get("event") == "ttc.round"
    ]
    assert max(planned) <= MAX_ROUND_SAMPLES and sum(planned) == n
    assert len(policy.calls) == n


# -- the CLI exits 1 when failed requests left no answer --------------------------------------------------------


def test_solve_and_run_exit_1_when_requests_failed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ttc_graph import cli

    failing = ScriptedEndpoint(["x"], fail_every=1)
    args = ["solve", QUESTION, "--n", "2", "--selection", "majority"]
    solved = CliRunner().invoke(cli.app, args, obj=cli.StaticRuntime(failing))
    assert solved.exit_code == 1, solved.output
    assert "request(s) failed" in solved.output

    import ttc_graph.specs as specs

    real_build = specs.build_graph
    monkeypatch.setattr(specs, "build_graph", lambda spec, **kw: real_build(spec, policy=failing, **kw))
    spec = tmp_path / "bon.yaml"
    spec.write_text("kind: best_of_n\nn: 2\nselection: majority\n")
    ran = CliRunner().invoke(cli.app, ["run", str(spec), QUESTION])
    assert ran.exit_code == 1, ran.output
    assert "request(s) failed" in ran.output


# -- HTTP clients are closed with their event loop --------------------------------------------------------------


def test_clients_close_when_their_asyncio_run_ends() -> None:
    up = Upstream(lambda body, i: answer("x", 1))
    ep = OpenAIEndpoint(BASE_URL, "m", "sk", native_n=False, retry=FAST_RETRY)
    opened = []

    async def call() -> None:
        clients = ep._clients.get()
        clients.api._client = httpx2.AsyncClient(transport=httpx2.MockTransport(up.handler))
        opened.append(clients)
        await ep.generate([{"role": "user", "content": QUESTION}])

    for _ in range(3):
        asyncio.run(call())
    assert len(opened) == 3 and all(c._closed for c in opened)
    assert all(c.http.is_closed and c.api.is_closed() for c in opened)


async def test_an_endpoint_closes_as_a_context_manager() -> None:
    async with OpenAIEndpoint(BASE_URL, "m", "sk") as ep:
        clients = ep._clients.get()
    assert clients._closed and clients.http.is_closed
