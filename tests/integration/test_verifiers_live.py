"""Verifiers against the real llama.cpp server: an LLM judge on GSM8K reference solutions and confidence scores.

SmolLM2-135M is a weak judge, so these tests check the plumbing (real top logprobs parsed into scores in [0, 1],
correct and corrupted solutions told apart by *some* margin), not the judge's accuracy.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ttc_graph.endpoints import OpenAIEndpoint, SamplingParams
from ttc_graph.verifiers import ConfidenceVerifier, LLMJudgeVerifier, ScoreCache, VerifyItem

_CALC = re.compile(r"<<[^>]*>>")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def data_dir() -> Path:
    env = os.environ.get("TTC_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def gsm8k_pairs(k: int = 3, max_lines: int = 2) -> list[tuple[VerifyItem, VerifyItem]]:
    """(reference, corrupted) solutions of the first ``k`` GSM8K test questions whose reference has at most
    ``max_lines`` lines (few steps keep the process judge's requests few); one step per line, then the answer."""
    path = data_dir() / "gsm8k" / "test.jsonl"
    if not path.exists():
        pytest.skip(f"GSM8K data not found at {path} (set TTC_DATA_DIR)")
    pairs = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            body, _, gold = row["answer"].rpartition("####")
            steps = [_CALC.sub("", s).strip() for s in body.strip().splitlines() if s.strip()]
            if len(steps) > max_lines:
                continue
            gold = gold.strip().replace(",", "")
            correct = (*steps, f"The answer is {gold}.")
            # Corrupt the result of the last calculation (an intermediate step) and the final answer; the steps
            # before it stay shared with the reference, as sibling beams share a prefix.
            last = steps[-1]
            num = list(_NUMBER.finditer(last))[-1]
            wrong_last = last[: num.start()] + str(int(float(num.group())) + 3) + last[num.end() :]
            corrupted = (*steps[:-1], wrong_last, f"The answer is {int(float(gold)) + 7}.")
            pairs.append((VerifyItem(row["question"], correct), VerifyItem(row["question"], corrupted)))
            if len(pairs) == k:
                break
    return pairs


@pytest.fixture(scope="module")
def pairs() -> list[tuple[VerifyItem, VerifyItem]]:
    return gsm8k_pairs(3)


def test_corruption_changes_first_step_and_answer(pairs: list[tuple[VerifyItem, VerifyItem]]) -> None:
    for good, bad in pairs:
        assert len(good.steps) == len(bad.steps) >= 3
        assert good.steps[:-2] == bad.steps[:-2]
        assert good.steps[-2] != bad.steps[-2]
        assert good.steps[-1] != bad.steps[-1]


async def test_process_judge_on_gsm8k(endpoint: OpenAIEndpoint, pairs: list[tuple[VerifyItem, VerifyItem]]) -> None:
    cache = ScoreCache()
    judge = LLMJudgeVerifier(endpoint, mode="process", cache=cache)
    items = [item for pair in pairs for item in pair]
    result = await judge.verify(items)
    assert judge.logprobs_supported is True  # llama.cpp returns top logprobs on chat completions
    for score in result.scores:
        assert score.scored, score.error
        assert score.step_scores is not None
        assert all(0.0 <= s <= 1.0 for s in score.step_scores)
        assert score.value == score.step_scores[-1]
    for i in range(0, len(items), 2):
        good, bad = result.scores[i], result.scores[i + 1]
        assert good.step_scores != bad.step_scores
        assert good.value != bad.value
    shared = sum(len(good.steps) - 2 for good, _ in pairs)  # each pair shares the prefixes before the corruption
    prefixes = sum(len(item.steps) for item in items)
    assert result.usage.requests == prefixes - shared == cache.misses
    assert cache.hits == shared
    assert result.usage.prompt_tokens > 0

    again = await judge.verify(items)  # every prefix is cached now: no request at all
    assert again.usage.requests == 0
    assert [s.value for s in again.scores] == [s.value for s in result.scores]


async def test_outcome_judge_on_gsm8k(endpoint: OpenAIEndpoint, pairs: list[tuple[VerifyItem, VerifyItem]]) -> None:
    judge = LLMJudgeVerifier(endpoint, mode="outcome")
    items = [item for pair in pairs for item in pair]
    result = await judge.verify(items)
    assert result.usage.requests == len(items)
    values = []
    for score in result.scores:
        assert score.scored, score.error
        assert score.value is not None and 0.0 <= score.value <= 1.0
        values.append(score.value)
    for i in range(0, len(values), 2):
        assert values[i] != values[i + 1]


async def test_confidence_of_sampled_solutions(endpoint: OpenAIEndpoint) -> None:
    question = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    result = await endpoint.generate(
        [{"role": "user", "content": question}],
        n=3,
        params=SamplingParams(temperature=0.8, max_tokens=16, logprobs=True, seed=7),
    )
    items = [VerifyItem(question, (g.text,), g.token_logprobs) for g in result.generations]
    assert all(item.token_logprobs for item in items)
    for verifier in (ConfidenceVerifier("mean"), ConfidenceVerifier("group", window=4)):
        out = await verifier.verify(items)
        assert out.usage.requests == 0
        for score in out.scores:
            assert score.scored, score.error
            assert score.value is not None and 0.0 < score.value <= 1.0
