"""Particle filtering and MCTS against the real llama.cpp server (SmolLM2-135M), continuing partial solutions."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from ttc_graph import create_mcts, create_particle_filtering
from ttc_graph.answers import extract_answer
from ttc_graph.endpoints import OpenAIEndpoint
from ttc_graph.endpoints.base import ChatMessage, GenerationResult, SamplingParams
from ttc_graph.local import LocalModelServer
from ttc_graph.verifiers import FunctionVerifier

QUESTION = "What is 12 + 7? Put the final answer in \\boxed{}."
DELIM = "\n\n"
EQUATION = re.compile(r"(-?\d+)\s*([-+*x×])\s*(-?\d+)\s*=\s*(-?\d+)")
STEP_MAX_TOKENS = 40


def arithmetic_score(question: str, solution: str) -> float:
    """A rule-based step-wise verifier: the smoothed share of correct "a op b = c" equations, raised by 19."""
    ops = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "x": int.__mul__, "×": int.__mul__}
    equations = EQUATION.findall(solution)
    correct = sum(ops[op](int(a), int(b)) == int(c) for a, op, b, c in equations)
    score = (correct + 1) / (len(equations) + 2)
    if extract_answer(solution) == "19":
        score = (score + 1) / 2
    return score


@dataclass
class Recorder:
    """Passes requests to the server's endpoint and remembers (prefix, n, temperature, texts) of each."""

    inner: OpenAIEndpoint
    requests: list[tuple[str | None, int, float | None, list[str]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def continuation(self) -> str:
        return self.inner.continuation

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        result = await self.inner.generate(messages, n=n, params=params, prefix=prefix)
        temperature = params.temperature if params else None
        self.requests.append((prefix, n, temperature, [g.text for g in result.generations]))
        return result


async def stream(graph: Any) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    started = time.monotonic()
    events: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    async for mode, chunk in graph.astream({"question": QUESTION}, stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(chunk)
        else:
            out = chunk
    return out, events, time.monotonic() - started


def check_common(out: dict[str, Any], events: list[dict[str, Any]], policy: Recorder, max_steps: int) -> None:
    """What both searches must show on a real server: the ledger, the steps, the progress events."""
    assert out["usage"]["completion_tokens"] > 0
    assert out["usage"]["requests"] >= len(policy.requests) >= 1
    assert all(e["event"] == "ttc.round" and "steps_per_beam" in e for e in events)
    assert sum(n for _, n, t, _ in policy.requests if t) == sum(e["planned"] for e in events)
    assert out["stop_reason"] in ("complete", "max_steps") or out["stop_reason"].startswith("budget:")
    assert "steps_per_candidate" in out["diagnostics"]
    produced = {text.strip() for *_, texts in policy.requests for text in texts}
    assert out["candidates"]
    for cand in out["candidates"]:
        steps = cand["text"].split(DELIM)
        assert len(steps) == cand["meta"]["steps"] <= max_steps
        # every step came from the server (a step cut off by the token limit and continued starts with its first piece)
        assert all(any(piece and step.startswith(piece) for piece in produced) for step in steps), steps
        assert cand["scored"] and cand["score"] == arithmetic_score(QUESTION, cand["text"])
    for prefix, _, _, texts in policy.requests:  # only the continuation comes back, never the echoed prefix
        assert all(DELIM not in t.strip() for t in texts), texts
        if prefix and prefix.endswith(DELIM):
            assert all(not t.startswith(prefix) for t in texts)
    parsable = {c["answer"] for c in out["candidates"] if c["parsable"]}
    assert out["answer"] in parsable if parsable else out["answer"] is None


async def test_particle_filtering_end_to_end(local_server: LocalModelServer) -> None:
    policy = Recorder(local_server.endpoint())
    n, max_steps = 3, 3
    graph = create_particle_filtering(
        policy, FunctionVerifier(arithmetic_score), n=n, max_steps=max_steps, step_max_tokens=STEP_MAX_TOKENS,
        softmax_temperature=0.5, resampling="systematic", seed=1,
    ).compile()  # fmt: skip
    out, events, elapsed = await stream(graph)
    assert elapsed < 300  # only catches a hang (the host is shared)
    check_common(out, events, policy, max_steps)
    assert out["usage"]["generations"] == n
    assert len(out["candidates"]) == n  # finished particles keep their slot, live ones end as candidates
    for event in events:
        if event["particles"]:
            assert sum(p["weight"] for p in event["particles"]) == pytest.approx(1.0)
        if event["planned"]:  # every round resamples the slots finished particles left
            assert event["planned"] == n - event["finished"]
            assert sum(p["copies"] for p in event["particles"]) == (event["planned"] if event["round"] else 0)


async def test_mcts_end_to_end(local_server: LocalModelServer) -> None:
    policy = Recorder(local_server.endpoint())
    n, expansions, max_depth = 4, 2, 3
    graph = create_mcts(
        policy, FunctionVerifier(arithmetic_score), n=n, expansions=expansions, max_depth=max_depth,
        step_max_tokens=STEP_MAX_TOKENS, seed=1,
    ).compile()  # fmt: skip
    out, events, elapsed = await stream(graph)
    assert elapsed < 300
    check_common(out, events, policy, max_depth)
    assert out["usage"]["generations"] == n
    assert all(k <= expansions for _, k, _, _ in policy.requests)
    layers = events[-1]["layers"]  # sampled steps per depth of the final tree
    assert layers and all(1 <= int(depth) <= max_depth and count <= n for depth, count in layers.items())
    assert sum(layers.values()) == events[-1]["nodes"] <= sum(e["planned"] for e in events)
