"""Every strategy family through a fault-injecting proxy in front of the real llama.cpp server.

The proxy (``tests/faultproxy.py``) answers a seeded share of the sampling requests itself with a 429 (with
``Retry-After``), a 500 or 503, a connection reset, a stall past the client's timeout, or a malformed 200, and
forwards the rest, logging what the upstream served. Each run must complete within its budget, and its ledger must
equal what the server delivered, request for request and token for token. A lost answer (served upstream, never
delivered) is charged at its ``max_tokens``, so a token budget holds even then. Figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faultproxy import FaultProxy, FaultSchedule, metered_server, tokens_predicted
from ttc_graph import Budget, create_beam_search, create_best_of_n, create_dvts, create_revisions
from ttc_graph.budget import policy_generations
from ttc_graph.endpoints import OpenAIEndpoint, RetryConfig, SamplingParams
from ttc_graph.errors import EndpointError
from ttc_graph.local import LocalModelServer

QUESTION = "What is 7 + 5? Answer with \\boxed{}."
TIMEOUT = float(os.environ.get("TTC_FAULT_TIMEOUT", "8"))  # the client's timeout per attempt: a stall costs this
RETRY = RetryConfig(max_attempts=8, initial_backoff=0.05, max_backoff=0.5, jitter=0.05)
# Each run meets every fault kind early (scripted), then about 15% faults at random (seeded).
SCRIPT = ["429", "stall", None, "500", "malformed", None, "503", "reset", "no_choices", None]
RATES = {"429": 0.04, "500": 0.025, "503": 0.025, "reset": 0.02, "malformed": 0.02, "no_choices": 0.02}
TTC = str(Path(sys.executable).with_name("ttc"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalModelServer]:
    with metered_server() as server:
        yield server


def score(question: str, solution: str) -> float:
    """A deterministic stand-in verifier (no requests, so every request the proxy sees is the policy's)."""
    return (len(solution) % 17 + 1) / 18


def endpoint(proxy: FaultProxy, server: LocalModelServer, **kwargs: Any) -> OpenAIEndpoint:
    """What a user writes (a URL and a model: the n-usage probe runs), with a short timeout and patient retries."""
    kwargs.setdefault("timeout", TIMEOUT)
    return OpenAIEndpoint(proxy.url, server.model_name, "local", max_concurrency=4, retry=RETRY, **kwargs)


FAMILIES: dict[str, Callable[[OpenAIEndpoint], tuple[Any, Budget]]] = {
    "best_of_n": lambda ep: (
        create_best_of_n(ep, score, n=6, selection="weighted", max_tokens=12, seed=1, budget=Budget(generations=6)),
        Budget(generations=6),
    ),
    "beam_search": lambda ep: (
        create_beam_search(ep, score, n=4, beam_width=2, max_steps=3, step_max_tokens=12, seed=1),
        Budget(generations=4, seconds=900),
    ),
    "dvts": lambda ep: (
        create_dvts(ep, score, n=4, beam_width=2, max_steps=3, step_max_tokens=12, seed=1),
        Budget(generations=4, seconds=900),
    ),
    "revisions": lambda ep: (
        create_revisions(ep, score, n=4, chain_length=2, max_tokens=12, seed=1),
        Budget(generations=4, seconds=900),
    ),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_completes_through_faults_with_an_exact_ledger(upstream: LocalModelServer, family: str) -> None:
    schedule = FaultSchedule(RATES, seed=list(FAMILIES).index(family), script=SCRIPT)
    with FaultProxy(upstream.server_root, schedule, stall_seconds=3 * TIMEOUT) as proxy:
        graph, budget = FAMILIES[family](endpoint(proxy, upstream))
        generated_before = tokens_predicted(upstream.server_root)
        started = time.monotonic()
        out = graph.compile().invoke({"question": QUESTION}, context={"budget": budget})
        seconds = time.monotonic() - started
        records = proxy.snapshot()
    usage = out["usage"]
    delivered = [r for r in records if r.delivered]
    generated = tokens_predicted(upstream.server_root) - generated_before
    figures = (
        f"{family}: {proxy.summary()}; ledger {usage['requests']} requests / {usage['completion_tokens']} completion"
        f" tokens vs {len(delivered)} answers / {sum(r.served_tokens for r in delivered)} tokens delivered"
        f" (server generated {generated}); {usage['failed_requests']} failed for good; generations"
        f" {policy_generations(usage)}/{budget.generations}; stop {out['stop_reason']}; {seconds:.1f}s"
    )
    print(figures)
    assert out["stop_reason"] in ("complete", "max_steps"), (figures, out.get("errors"))
    assert sum(proxy.faults().values()) >= 4, figures
    assert policy_generations(usage) <= (budget.generations or 0), figures
    assert usage["completion_tokens"] == sum(r.served_tokens for r in delivered), figures
    assert usage["requests"] == len(delivered), figures
    assert usage["prompt_tokens"] == sum(r.prompt_tokens for r in delivered), figures


def test_a_token_budget_holds_when_answers_are_lost(upstream: LocalModelServer) -> None:
    """Answers served upstream and lost on the way back are charged at their max_tokens and not retried."""
    schedule = FaultSchedule({"lost": 0.2}, seed=5, script=["lost", None, None, "lost"])
    budget = Budget(tokens=60)
    with FaultProxy(upstream.server_root, schedule, stall_seconds=30) as proxy:
        ep = endpoint(proxy, upstream, native_n=False, max_tokens=None, timeout=min(TIMEOUT, 5.0))
        graph = create_best_of_n(ep, n=6, selection="majority", temperature=0.8, seed=3, budget=budget).compile()
        before = tokens_predicted(upstream.server_root)
        out = graph.invoke({"question": QUESTION})
        generated = tokens_predicted(upstream.server_root) - before
        served, delivered = proxy.served(), proxy.served(delivered_only=True)
        lost = [r for r in proxy.snapshot() if r.fault == "lost"]
    usage = out["usage"]
    figures = (
        f"token budget {budget.tokens}: {proxy.summary()}; {len(lost)} answers lost"
        f" ({sum(r.served_tokens for r in lost)} tokens); ledger completion {usage['completion_tokens']}"
        f" + unconfirmed {usage.get('unconfirmed_tokens', 0)};"
        f" server generated {generated}; stop {out['stop_reason']}"
    )
    print(figures)
    assert len(lost) >= 2, figures
    assert served <= 60 and generated <= 60, figures
    assert usage["completion_tokens"] == delivered, figures
    assert usage["completion_tokens"] + usage["unconfirmed_tokens"] >= served, figures
    assert usage["failed_requests"] == len(lost), figures  # a lost answer is given up, not retried


def test_a_request_that_times_out_is_cancelled_upstream() -> None:
    """Closing the connection on a client timeout makes llama.cpp stop generating (no token spent unseen); the
    attempt's max_tokens stays charged, since the server may have generated up to that many."""
    with metered_server(1) as server:  # a server of its own: no other request in flight or in its queue
        ep = OpenAIEndpoint(
            server.base_url, server.model_name, "local", native_n=False, timeout=2.0,
            retry=RetryConfig(max_attempts=1), extra_body={"ignore_eos": True},
        )  # fmt: skip
        params = SamplingParams(max_tokens=2000, temperature=0.8)
        prompt = [{"role": "user", "content": "Count from 1 to 100000."}]
        with pytest.raises(EndpointError, match="timed out") as info:
            asyncio.run(ep.generate(prompt, params=params))
        assert info.value.usage is not None and info.value.usage.unconfirmed_tokens == 2000
        # llama.cpp checks a non-streaming request's connection only once a second passes with no result for any
        # task on the server, and a /slots query is such a task: polled faster than that, the check never runs
        # (seen in CI with 0.25 s polls). So the polls are spaced wider than its 1 s polling interval.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 30
        busy: list[bool] = [True]
        while time.monotonic() < deadline:
            time.sleep(2.5)
            with opener.open(server.server_root + "/slots", timeout=10) as resp:
                busy = [bool(s.get("is_processing")) for s in json.loads(resp.read())]
            if not any(busy):
                break
        generated = tokens_predicted(server.server_root)
        log = Path(str(server.log_path)).read_text(errors="replace")
    cancelled = "cancel task" in log
    print(f"timed-out request (max_tokens 2000): slots busy {busy}, llama.cpp log 'cancel task': {cancelled}")
    assert not any(busy)
    assert "cancel task" in log
    assert generated < 2000


def test_the_cli_exits_1_when_every_request_fails(upstream: LocalModelServer, tmp_path: Path) -> None:
    spec = tmp_path / "bon.yaml"
    with FaultProxy(upstream.server_root, FaultSchedule({"500": 1.0})) as proxy:
        spec.write_text(
            f"kind: best_of_n\nn: 2\nselection: majority\nmax_tokens: 8\n"
            f"policy: {{kind: openai, base_url: '{proxy.url}', model: {upstream.model_name}}}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("TTC_BASE_URL")}
        solve = [TTC, "solve", QUESTION, "--n", "2", "--max-tokens", "8", "--base-url", proxy.url]
        solved = subprocess.run([*solve, "--model", upstream.model_name], capture_output=True, text=True, env=env)
        ran = subprocess.run([TTC, "run", str(spec), QUESTION], capture_output=True, text=True, env=env)
        figures = f"CLI, every request failing: {proxy.summary()}; solve exit {solved.returncode}, run {ran.returncode}"
    print(figures)
    assert solved.returncode == 1, solved.stdout + solved.stderr
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "request(s) failed" in solved.stdout and "request(s) failed" in ran.stdout


def test_repeated_asyncio_run_prints_no_event_loop_tracebacks(upstream: LocalModelServer) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, gc
        from ttc_graph import create_best_of_n
        from ttc_graph.endpoints import OpenAIEndpoint
        ep = OpenAIEndpoint({upstream.base_url!r}, {upstream.model_name!r}, "local", max_concurrency=2)
        graph = create_best_of_n(ep, n=2, selection="majority", max_tokens=4).compile()
        for _ in range(3):
            out = asyncio.run(graph.ainvoke({{"question": "Say hi."}}))
            assert out["usage"]["requests"] >= 2, out
            gc.collect()
        print("runs done")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    print(f"3 x asyncio.run in one process: exit {done.returncode}, stderr {len(done.stderr)} chars")
    assert done.returncode == 0 and "runs done" in done.stdout, done.stderr
    assert "Event loop is closed" not in done.stderr, done.stderr
    assert "Task exception was never retrieved" not in done.stderr, done.stderr


STREAM_SCRIPT = ["stream_cut", None, "stream_no_finish", "stream_no_choices", None, "stream_malformed", "stream_cut"]


def test_adaptive_best_of_n_streams_through_broken_streams_with_an_exact_ledger(upstream: LocalModelServer) -> None:
    """Adaptive best-of-N streams its samples: each broken stream (cut mid-way, ended without a finish_reason,
    without choices, malformed) is retried; what arrived is charged as completion tokens and the rest of its
    ``max_tokens`` as unconfirmed, so the ledger brackets what llama.cpp's ``/metrics`` says it generated."""
    from ttc_graph import AdaptiveStop

    schedule = FaultSchedule(seed=11, script=STREAM_SCRIPT)
    max_tokens = 24
    with FaultProxy(upstream.server_root, schedule, stall_seconds=3 * TIMEOUT) as proxy:
        ep = endpoint(proxy, upstream, native_n=False)
        never_decisive = AdaptiveStop(window=2, confidence=0.999999, min_samples=6)
        graph = create_best_of_n(
            ep, n=6, selection="majority", max_tokens=max_tokens, seed=2, adaptive=never_decisive
        ).compile()
        before = tokens_predicted(upstream.server_root)
        out = graph.invoke({"question": QUESTION})
        proxy_settled = time.monotonic() + 10
        while time.monotonic() < proxy_settled and tokens_predicted(upstream.server_root) < before + proxy.served():
            time.sleep(0.2)
        generated = tokens_predicted(upstream.server_root) - before
        records = proxy.snapshot()
    usage = out["usage"]
    delivered = [r for r in records if r.delivered]
    broken = [r for r in records if r.fault in ("stream_cut", "stream_no_finish")]
    empty = [r for r in records if r.fault in ("stream_no_choices", "stream_malformed")]
    arrived = sum(r.delivered_tokens for r in broken)
    figures = (
        f"adaptive streams: {proxy.summary()}; {len(broken)} broken after serving, {len(empty)} empty;"
        f" ledger {usage['requests']} requests / {usage['completion_tokens']} completion tokens"
        f" + {usage.get('unconfirmed_tokens', 0)} unconfirmed; delivered {len(delivered)} answers /"
        f" {sum(r.served_tokens for r in delivered)} tokens, {arrived} tokens of broken streams;"
        f" server generated {generated}; stop {out['stop_reason']}"
    )
    print(figures)
    assert all(r.body.get("stream") for r in records), figures  # the adaptive path streams every sample
    assert out["stop_reason"] == "complete" and policy_generations(usage) == 6, (figures, out.get("errors"))
    assert len(broken) == 3 and len(empty) == 2, figures
    assert usage["failed_requests"] == 0, figures  # every broken stream was retried
    assert usage["requests"] == len(delivered) == 6, figures
    # charged exactly: every delivered answer's usage plus the tokens each broken stream delivered
    assert usage["completion_tokens"] == sum(r.served_tokens for r in delivered) + arrived, figures
    empty_unconfirmed = len(empty) * max_tokens
    assert usage["unconfirmed_tokens"] == sum(max_tokens - r.delivered_tokens for r in broken) + empty_unconfirmed
    # and against the server's own counter: nothing generated goes uncharged
    assert usage["completion_tokens"] <= generated <= usage["completion_tokens"] + usage["unconfirmed_tokens"], figures
