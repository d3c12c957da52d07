"""Golden runs of the five step-wise searches: their full output must not change unless a change means it to.

Each case runs one strategy (beam search, lookahead search, DVTS, particle filtering, MCTS; two settings each, fixed
seeds) against a deterministic scripted policy and deterministic verifiers, and records everything observable:
the answer, every candidate (id, text, scores, meta), the usage ledger, the stop reason, the diagnostics, the
errors, every progress event, the graph's drawing and the sequence of requests the policy endpoint saw (prefix,
``n`` and sampling parameters, in order). The record lives in ``__snapshots__/step_search_golden.json``.

To regenerate it after an intended change of behaviour (say why in the commit)::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_search_golden.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path as FilePath
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from tests.steptree import DELIM, Path, hashed, path_of
from ttc_graph import Budget, create_beam_search, create_dvts, create_mcts, create_particle_filtering
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.verifiers import Score, VerificationResult, Verifier, VerifyItem

GOLDEN = FilePath(__file__).parent / "__snapshots__" / "step_search_golden.json"
QUESTION = "What is 6 * 7?"
OUTPUT_KEYS = ("question", "answer", "candidates", "usage", "stop_reason", "errors", "diagnostics", "messages")


class GoldenTree:
    """A deterministic step-level policy.

    The j-th sample of a request continuing path P is the step of path ``P + (j,)`` (a first step's label also
    carries its request's seed, so DVTS subtrees differ). A path finishes where ``finishes`` says; a first step
    whose hash is high is cut off by the token limit (``"length"``) and finished by its continuation, and a step
    longer than its request's ``max_tokens`` words is cut there.
    """

    def __init__(self) -> None:
        self.endpoint = ScriptedEndpoint(self._respond)
        self._pos: dict[int, int] = {}

    @property
    def calls(self) -> list[FakeCall]:
        return self.endpoint.calls

    def _respond(self, call: FakeCall, index: int) -> tuple[str, str]:
        pos = self._pos.get(id(call), 0)
        self._pos[id(call)] = pos + 1
        prefix = call.prefix or ""
        if prefix and not prefix.endswith(DELIM):  # continue a step the token limit cut off
            return (f" continued {pos}", "stop")
        steps = prefix.split(DELIM)[:-1] if prefix else []
        parent = path_of(steps[-1]) if steps else ()
        seed = call.params.seed if call.params is not None else None
        path = (*parent, str(pos)) if parent else (f"s{seed}-{pos}",)
        label = f"[{'.'.join(path)}]"
        if len(path) == 1 and hashed(path) > 0.85:
            return (f"{label} half", "length")
        text = f"{label} step {len(path)}"
        if finishes(path):
            text += f" \\boxed{{{answer(path)}}}"
        limit = call.params.max_tokens if call.params is not None else None
        if limit is not None and len(text.split()) > limit:  # one token a word, as the endpoint counts them
            return (" ".join(text.split()[:limit]), "length")
        return (text, "stop")


def finishes(path: Path) -> bool:
    return (len(path) >= 2 and hashed(path) < 0.3) or len(path) >= 4


def answer(path: Path) -> str:
    return str(40 + int(hashed(path[:2]) * 4))


def last_path(text: str) -> Path:
    return path_of(text.split(DELIM)[-1])


def callable_prm(question: str, text: str) -> float:
    """A plain-callable verifier: the hash of the last step's path; it fails on a few paths (unscored beams)."""
    assert question == QUESTION
    path = last_path(text)
    if 0.45 <= hashed(path) < 0.5:
        raise RuntimeError(f"no score for {'.'.join(path)}")
    return hashed(path)


class StepPRM(Verifier):
    """A process verifier: every step gets the hash of its path (so aggregations differ)."""

    granularity = "process"

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        out = []
        for item in items:
            per_step = tuple(0.05 + 0.9 * hashed((*path_of(s), "prm")) for s in item.steps)
            out.append(Score(per_step[-1], step_scores=per_step))
        return VerificationResult(out)


Build = Callable[[Any], Any]
CASES: dict[str, Build] = {
    "beam_search/n4-w2": lambda policy: create_beam_search(policy, callable_prm, n=4, beam_width=2, seed=3),
    "beam_search/n16-sqrt-min-prm": lambda policy: create_beam_search(
        policy, StepPRM(), n=16, beam_width="sqrt", aggregation="min", max_steps=3, temperature=0.6, seed=11
    ),
    "lookahead/n4-w2-k1": lambda policy: create_beam_search(
        policy, callable_prm, n=4, beam_width=2, lookahead=1, seed=5
    ),
    "lookahead/n8-w4-k2-tokens": lambda policy: create_beam_search(
        policy, StepPRM(), n=8, beam_width=4, lookahead=2, aggregation="mean", seed=2,
        budget=Budget(generations=24, tokens=120),
    ),
    "dvts/n8-w2": lambda policy: create_dvts(policy, callable_prm, n=8, beam_width=2, seed=7),
    "dvts/n16-w4-k1-maxsteps": lambda policy: create_dvts(
        policy, StepPRM(), n=16, beam_width=4, lookahead=1, max_steps=2, aggregation="prod", seed=13
    ),
    "particle_filtering/n8-multinomial": lambda policy: create_particle_filtering(
        policy, callable_prm, n=8, seed=5
    ),
    "particle_filtering/n8-systematic-score-weighted-tokens": lambda policy: create_particle_filtering(
        policy, StepPRM(), n=8, resampling="systematic", weighting="score", selection="weighted",
        softmax_temperature=0.5, aggregation="min", seed=9, budget=Budget(tokens=50),
    ),
    "mcts/n8-e2": lambda policy: create_mcts(policy, callable_prm, n=8, expansions=2, seed=4),
    "mcts/n4-e2-rollout1-depth2-weighted": lambda policy: create_mcts(
        policy, StepPRM(), n=4, expansions=2, exploration=0.5, max_depth=2, rollout=1, selection="weighted",
        aggregation="last", seed=6,
    ),
}  # fmt: skip


def plain(value: Any) -> Any:
    """``value`` as JSON data; usage's wall-clock ``seconds`` dropped, messages as (type, name, content)."""
    if isinstance(value, BaseMessage):
        return {"type": value.type, "name": value.name, "content": value.content}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def request(call: FakeCall) -> dict[str, Any]:
    p = call.params
    params = None
    if p is not None:
        params = {
            "temperature": p.temperature, "max_tokens": p.max_tokens, "stop": list(p.stop or ()), "seed": p.seed,
            "timeout": p.timeout, "logprobs": p.logprobs, "retry_lost": p.retry_lost,
        }  # fmt: skip
    return {"messages": [dict(m) for m in call.messages], "n": call.n, "prefix": call.prefix, "params": params}


async def record(build: Build) -> dict[str, Any]:
    tree = GoldenTree()
    graph = build(tree.endpoint).compile()
    events: list[Any] = []
    final: dict[str, Any] = {}
    async for mode, chunk in graph.astream({"question": QUESTION}, stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(chunk)
        else:
            final = chunk
    return json.loads(
        json.dumps(
            plain(
                {
                    "output": {k: final[k] for k in OUTPUT_KEYS if k in final},
                    "events": events,
                    "requests": [request(c) for c in tree.calls],
                    "graph": graph.get_graph().draw_mermaid(),
                }
            )
        )
    )


def load_golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_search_run_equals_its_golden_record(case: str):
    got = await record(CASES[case])
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden = load_golden()
        golden[case] = got
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    expected = load_golden().get(case)
    assert expected is not None, f"no golden record of {case}; run with UPDATE_GOLDEN=1 to create it"
    for part in ("requests", "events", "output", "graph"):
        assert got[part] == expected[part], f"{case}: {part} differ from the golden record"


async def test_the_cases_exercise_every_path_worth_pinning():
    """The golden cases are only worth their record if they reach the branches a refactor could change."""
    golden = load_golden()
    assert set(golden) == set(CASES)
    stops = {case: g["output"]["stop_reason"] for case, g in golden.items()}
    assert {"complete", "max_steps", "budget:tokens"} <= set(stops.values())
    requests = [r for g in golden.values() for r in g["requests"]]
    assert any(r["prefix"] and not r["prefix"].endswith(DELIM) for r in requests)  # a partial step was continued
    assert any(r["params"]["temperature"] == 0.0 for r in requests)  # lookahead / MCTS rollouts
    errors = [e for g in golden.values() for e in g["output"].get("errors", [])]
    assert any("no score for" in e for e in errors)  # an unscored beam
    for g in golden.values():  # every run drew something and answered from its candidates
        assert g["requests"] and g["output"]["candidates"]
