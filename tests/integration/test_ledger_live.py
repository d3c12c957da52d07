"""The ledger equals what llama.cpp generated, with no flag: counted by the server's own ``/metrics`` counters.

llama.cpp answers an ``n > 1`` request with ``n`` choices but reports one choice's completion tokens (this build:
``n=4, max_tokens=128`` → 4 choices cut at 128 tokens, usage 128, 512 tokens generated). The counter
``llamacpp:tokens_predicted_total`` counts every token the server generated, so its change over a run is the
number the run's ledger must show.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from ttc_graph import LangChainEndpoint, OpenAIEndpoint, create_beam_search, create_best_of_n
from ttc_graph.endpoints import SamplingParams
from ttc_graph.endpoints.n_usage import forget_verdicts, n_usage_verdict
from ttc_graph.local import LocalModelServer
from ttc_graph.specs import build_graph, parse_spec

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy, whatever env says
QUESTION = "What is 2 + 3? Answer with \\boxed{}."


@pytest.fixture(scope="module")
def metered() -> Iterator[LocalModelServer]:
    """A server of its own with ``--metrics``, so no other test's requests land in its counters."""
    with LocalModelServer(parallel=4, extra_args=["--metrics"]) as server:
        yield server


@pytest.fixture(autouse=True)
def _judge_afresh() -> None:
    forget_verdicts()


def counter(server: LocalModelServer, name: str) -> int:
    """A counter of the server's ``/metrics`` (``llamacpp:<name>``) since it started."""
    with _OPENER.open(server.server_root + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f"llamacpp:{name}"):
                return int(float(line.split()[-1]))
    raise AssertionError(f"llama-server /metrics has no llamacpp:{name}")


def generated(server: LocalModelServer) -> int:
    """Completion tokens the server has generated since it started."""
    return counter(server, "tokens_predicted_total")


def evaluated(server: LocalModelServer) -> int:
    """Prompt tokens the server has evaluated (not taken from a slot's cache) since it started."""
    return counter(server, "prompt_tokens_total")


def chat(server: LocalModelServer, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        server.base_url + "/chat/completions",
        json.dumps({"model": server.model_name, **body}).encode(),
        {"Content-Type": "application/json"},
    )
    with _OPENER.open(request, timeout=120) as resp:
        return dict(json.loads(resp.read()))


def endpoint(server: LocalModelServer) -> OpenAIEndpoint:
    """What a user writes: a base URL and a model, no ``native_n``."""
    return OpenAIEndpoint(server.base_url, server.model_name, "local")


def test_the_endpoints_verdict_matches_what_the_server_reports(metered: LocalModelServer) -> None:
    before = generated(metered)
    raw = chat(metered, {"messages": [{"role": "user", "content": "Tell a story."}], "n": 3, "max_tokens": 12})
    served = generated(metered) - before
    reported = raw["usage"]["completion_tokens"]
    assert len(raw["choices"]) == 3

    ep = endpoint(metered)
    before = generated(metered)
    graph = create_best_of_n(ep, n=3, selection="majority", max_tokens=12).compile()
    out = graph.invoke({"question": "Tell a story."})
    assert out["usage"]["completion_tokens"] == generated(metered) - before
    assert n_usage_verdict(metered.server_root, ep.model) is (reported >= served)
    assert ep.native_n is (reported >= served)


@pytest.mark.parametrize("api", ["invoke", "ainvoke"])
def test_best_of_n_ledger_equals_tokens_generated(metered: LocalModelServer, api: str) -> None:
    ep = endpoint(metered)
    graph = create_best_of_n(ep, n=4, selection="majority", max_tokens=16, temperature=0.8).compile()
    for _ in range(2):  # the first run finds the server out, the second runs on what it learned
        before = generated(metered)
        if api == "invoke":
            out = graph.invoke({"question": QUESTION})
        else:
            out = asyncio.run(graph.ainvoke({"question": QUESTION}))
        assert out["stop_reason"] == "complete", out.get("errors")
        assert out["usage"]["generations"] == 4
        assert out["usage"]["completion_tokens"] == generated(metered) - before


def test_beam_search_ledger_equals_tokens_generated(metered: LocalModelServer) -> None:
    def score(question: str, solution: str) -> float:
        return min(1.0, len(solution) / 200)

    graph = create_beam_search(
        endpoint(metered), score, n=4, beam_width=2, max_steps=2, step_max_tokens=12, temperature=0.8
    ).compile()
    before = generated(metered)
    out = graph.invoke({"question": QUESTION})
    assert not out.get("errors")
    assert out["usage"]["completion_tokens"] == generated(metered) - before > 0


def test_llamacpp_n_samples_a_shared_prefix_once_with_an_exact_ledger(metered: LocalModelServer) -> None:
    """``llamacpp_n``: four children of one partial answer are one ``/completion`` request; the server evaluates
    the prompt once (not four times) and the ledger equals what it generated, stop strings and EOS alike."""
    ep = OpenAIEndpoint(metered.base_url, metered.model_name, "local", llamacpp_n=True)
    messages = [{"role": "user", "content": "List three fruits, one per line, then say done."}]
    for stop in (("\n",), None):  # a stop string, then EOS or the length limit
        params = SamplingParams(temperature=0.9, max_tokens=24, seed=3, stop=stop)
        before, prompt_before = generated(metered), evaluated(metered)
        out = asyncio.run(ep.generate(messages, n=4, params=params, prefix=f"Fruits ({stop!r}):"))
        assert len(out.generations) == 4 and out.usage.requests == 1
        assert out.usage.completion_tokens == generated(metered) - before > 0
        assert sum(g.completion_tokens or 0 for g in out.generations) == out.usage.completion_tokens
        assert evaluated(metered) - prompt_before <= out.usage.prompt_tokens  # once, not once per child

    def score(question: str, solution: str) -> float:
        return min(1.0, len(solution) / 200)

    graph = create_beam_search(ep, score, n=8, beam_width=4, max_steps=2, step_max_tokens=12, temperature=0.8)
    before = generated(metered)
    out = graph.compile().invoke({"question": QUESTION})
    assert not out.get("errors")
    assert out["usage"]["completion_tokens"] == generated(metered) - before > 0
    assert out["usage"]["requests"] <= 2 * 2  # two rounds of two parents, one request each


def test_an_env_configured_spec_ledger_equals_tokens_generated(
    metered: LocalModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTC_BASE_URL", metered.base_url)
    monkeypatch.setenv("TTC_MODEL", metered.model_name)
    spec = parse_spec({"kind": "best_of_n", "n": 4, "selection": "majority", "max_tokens": 16})
    graph = build_graph(spec).compile()
    before = generated(metered)
    out = graph.invoke({"question": QUESTION})
    assert out["stop_reason"] == "complete", out.get("errors")
    assert out["usage"]["completion_tokens"] == generated(metered) - before


def test_a_chat_openai_policy_ledger_equals_tokens_generated(metered: LocalModelServer) -> None:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        base_url=metered.base_url, api_key="local", model=metered.model_name, max_tokens=16, max_retries=0
    )
    graph = create_best_of_n(LangChainEndpoint(model), n=3, selection="majority").compile()
    before = generated(metered)
    out = graph.invoke({"question": QUESTION})
    assert out["stop_reason"] == "complete", out.get("errors")
    assert out["usage"]["completion_tokens"] == generated(metered) - before


def test_slot_copy_spares_siblings_the_prefix_and_keeps_the_ledger_exact(metered: LocalModelServer) -> None:
    """A beam's path on slot 0, other paths on slots 1-3; four children hinted to slots 0-3. Without a copy the
    three siblings evaluate the beam's path again; with ``slot_copy`` (the server runs with ``--slot-save-path``,
    which ``LocalModelServer`` passes) slot 0's cache is copied to them first and almost nothing is evaluated."""
    messages = [{"role": "user", "content": "Count from one to twenty in words, separated by commas."}]
    filler = "one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, thirteen, fourteen, "

    def children(copy: bool, tag: str) -> tuple[int, int]:
        ep = metered.endpoint(slot_copy=copy)
        prefix = f"({tag}) {filler * 3}"
        one = SamplingParams(temperature=0.0, max_tokens=1, seed=1)
        asyncio.run(ep.generate(messages, n=3, params=replace(one, slots=(1, 2, 3)), prefix=f"[{tag}] other path: "))
        asyncio.run(ep.generate(messages, n=1, params=replace(one, slots=(0,)), prefix=prefix))
        before, prompt_before = generated(metered), evaluated(metered)
        params = SamplingParams(temperature=0.8, max_tokens=8, seed=5, slots=(0, 1, 2, 3))
        out = asyncio.run(ep.generate(messages, n=4, params=params, prefix=prefix))
        assert len(out.generations) == 4 and out.usage.completion_tokens == generated(metered) - before > 0
        assert ep.slot_copy is copy  # the server accepted the copies
        return evaluated(metered) - prompt_before, out.usage.prompt_tokens

    without, sent = children(False, "a")
    copied, _ = children(True, "b")
    assert without >= 3 * 40  # three siblings evaluate the path (about 60 tokens) again
    assert copied <= 4 * 2 < without  # each child evaluates at most its last prompt token or two
    assert sent > 4 * 60


def test_samples_of_one_prompt_evaluate_it_once_and_keep_the_ledger_exact(metered: LocalModelServer) -> None:
    """Four samples of a prompt no slot holds (best-of-N, a search's root): with ``slot_copy`` one request of one
    token evaluates it on one slot (the server samples that token from the prompt's logits) and the other three
    slots get a copy; without it each of the four evaluates the whole prompt. The priming token is in the ledger."""

    def sample(copy: bool, tag: str) -> tuple[int, int]:
        ep = metered.endpoint(slot_copy=copy)
        question = f"({tag}) Count from one to twenty in words, separated by commas. " * 3
        params = SamplingParams(temperature=0.8, max_tokens=8, seed=5)
        before, prompt_before = generated(metered), evaluated(metered)
        out = asyncio.run(ep.generate([{"role": "user", "content": question}], n=4, params=params))
        assert len(out.generations) == 4 and out.usage.completion_tokens == generated(metered) - before > 0
        assert out.usage.requests == 4 + copy and ep.slot_copy is copy
        return evaluated(metered) - prompt_before, out.usage.prompt_tokens // out.usage.requests

    without, prompt = sample(False, "a")
    copied, _ = sample(True, "b")
    assert prompt > 50 and without >= 4 * (prompt - 30)  # each sample evaluates the prompt (a template prefix cached)
    assert copied <= prompt + 4 * 2 < without  # once, then a token or two per sample
