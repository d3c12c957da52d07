"""ScoreCache, LLMJudgeVerifier and ConfidenceVerifier over small fake endpoints (no network)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from ttc_graph import create_best_of_n
from ttc_graph.endpoints.base import (
    ChatMessage,
    Generation,
    GenerationResult,
    RequestUsage,
    SamplingParams,
    check_request,
)
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.verifiers import (
    ConfidenceVerifier,
    FunctionVerifier,
    LLMJudgeVerifier,
    ScoreCache,
    VerifyItem,
)
from ttc_graph.verifiers.cache import DEFAULT_CACHE_SIZE, resolve_cache
from ttc_graph.verifiers.confidence import lowest_group_logprob, mean_logprob
from ttc_graph.verifiers.judge import verdict_of, yes_probability

Q = "What is 2 + 3 * 4?"
LN = math.log


def latest_step(messages: Sequence[ChatMessage]) -> str:
    """The text being judged: the latest step (process prompt) or the whole solution (outcome prompt)."""
    content = messages[-1]["content"]
    if "Is the last step (Step " in content:
        number = content.rsplit("(Step ", 1)[1].split(")", 1)[0]
        return content.rsplit(f"Step {number}: ", 1)[1].split("\n\nIs the last step", 1)[0]
    return content.split("Proposed solution:\n", 1)[1].rsplit("\n\nIs this", 1)[0]


def p_yes_tops(p: float) -> dict[str, float]:
    """Top logprobs whose normalised P(Yes) is ``p`` (Yes/No variants split, plus an unrelated token)."""
    tops = {"The": LN(0.2)}
    if p > 0:
        tops |= {"Yes": LN(0.8 * p * 0.75), " yes": LN(0.8 * p * 0.25)}
    if p < 1:
        tops |= {"No": LN(0.8 * (1 - p) * 0.5), " NO": LN(0.8 * (1 - p) * 0.5)}
    return tops


@dataclass
class JudgeEndpoint:
    """A judge: ``tops(judged_text)`` gives the first position's top logprobs (None = a server without logprobs);
    sampled judgements come from ``samples`` round-robin. Each request costs RequestUsage(1, 10, n)."""

    tops: Callable[[str], dict[str, float] | None]
    samples: Sequence[str] = ("Yes",)
    delay: float = 0.0
    fail_on: Callable[[str], bool] = lambda text: False
    calls: list[tuple[list[ChatMessage], int, SamplingParams | None]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _sampled: int = 0

    @property
    def name(self) -> str:
        return "fake-judge"

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        self.calls.append((list(messages), n, params))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            text = latest_step(messages)
            if self.fail_on(text):
                raise EndpointError("judge is down", status_code=503)
            if params is not None and params.logprobs:
                tops = self.tops(text)
                if tops is None:
                    gens = [Generation("Yes", "length", 1)]
                else:
                    best = max(tops, key=lambda t: tops[t])
                    gens = [Generation(best, "length", 1, (tops[best],), (tops,))]
            else:
                gens = []
                for _ in range(n):
                    gens.append(Generation(self.samples[self._sampled % len(self.samples)], "length", 1))
                    self._sampled += 1
            return GenerationResult(gens, RequestUsage(1, 10, len(gens)))
        finally:
            self.in_flight -= 1


def scored_by_text(table: dict[str, float]) -> Callable[[str], dict[str, float] | None]:
    return lambda text: p_yes_tops(table[text])


# ------------------------------------------------------------------------------------------------ ScoreCache


def test_cache_get_put_counts_hits_and_misses() -> None:
    cache = ScoreCache()
    assert cache.get(Q, ("a",)) is None
    cache.put(Q, ("a",), 0.25)
    assert cache.get(Q, ["a"]) == 0.25
    assert cache.get(Q, ("a", "b")) is None
    assert cache.get("other question", ("a",)) is None
    assert cache.get(Q, ("a",), scope="another verifier") is None
    assert (cache.hits, cache.misses, len(cache)) == (1, 4, 1)
    assert cache.stats() == {"size": 1, "max_size": None, "hits": 1, "misses": 4}
    cache.clear()
    assert (cache.hits, cache.misses, len(cache)) == (0, 0, 0)


def test_cache_partition_dedupes_pending_keys() -> None:
    cache = ScoreCache()
    cache.put(Q, ("a",), 0.5)
    keys = [ScoreCache.key(Q, p) for p in [("a",), ("a", "b"), ("a",), ("a", "b"), ("a", "c")]]
    found, missing = cache.partition(keys)
    assert found == {ScoreCache.key(Q, ("a",)): 0.5}
    assert missing == [ScoreCache.key(Q, ("a", "b")), ScoreCache.key(Q, ("a", "c"))]
    assert (cache.hits, cache.misses) == (3, 2)


def test_cache_lru_evicts_least_recently_used() -> None:
    cache = ScoreCache(max_size=2)
    cache.put(Q, ("a",), 0.1)
    cache.put(Q, ("b",), 0.2)
    assert cache.get(Q, ("a",)) == 0.1  # "a" is now the most recent
    cache.put(Q, ("c",), 0.3)
    assert len(cache) == 2
    assert cache.get(Q, ("b",)) is None
    assert cache.get(Q, ("a",)) == 0.1
    assert cache.get(Q, ("c",)) == 0.3


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_cache_rejects_bad_max_size(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_size"):
        ScoreCache(max_size=bad)  # type: ignore[arg-type]


def test_resolve_cache() -> None:
    shared = ScoreCache()
    assert resolve_cache(shared) is shared
    own = resolve_cache(True)
    assert isinstance(own, ScoreCache) and own.max_size == DEFAULT_CACHE_SIZE  # a verifier's own cache is bounded
    assert LLMJudgeVerifier(JudgeEndpoint(lambda text: None)).cache.max_size == DEFAULT_CACHE_SIZE  # type: ignore[union-attr]
    assert resolve_cache(False) is None
    with pytest.raises(ConfigurationError):
        resolve_cache("yes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- Yes/No parsing


def test_yes_probability_sums_case_and_space_variants() -> None:
    tops = {
        "Yes": LN(0.30),
        " yes": LN(0.10),
        "YES": LN(0.05),
        "\u0120Yes": LN(0.05),  # byte-level BPE space marker
        "No": LN(0.20),
        " no": LN(0.05),
        "\u2581No": LN(0.05),  # SentencePiece space marker
        "Yesterday": LN(0.10),  # not a verdict
        "The": LN(0.10),
    }
    assert yes_probability(tops) == pytest.approx(0.5 / 0.8)


def test_yes_probability_normalises_against_no_only() -> None:
    assert yes_probability({"Yes": LN(0.3), "No": LN(0.1), "I": LN(0.6)}) == pytest.approx(0.75)
    assert yes_probability({"yes.": LN(0.01)}) == pytest.approx(1.0)
    assert yes_probability({" No": LN(0.9), "Sure": LN(0.1)}) == pytest.approx(0.0)


def test_yes_probability_none_when_neither() -> None:
    assert yes_probability({"The": -0.1, "Nope": -2.0, "Yesterday": -3.0}) is None
    assert yes_probability({}) is None


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("Yes", "yes"),
        (" yes.", "yes"),
        ("YES!", "yes"),
        ("**No**", "no"),
        ("no,", "no"),
        ("\u0120No", "no"),
        ("Yesterday", None),
        ("Nope", None),
        ("The", None),
        ("", None),
        ("Yes, it", "yes"),
    ],
)
def test_verdict_of(text: str, verdict: str | None) -> None:
    assert verdict_of(text) == verdict


# ----------------------------------------------------------------------------------------- LLM judge


async def test_process_judge_scores_every_prefix_from_logprobs() -> None:
    judge_ep = JudgeEndpoint(scored_by_text({"2 + 12": 0.9, "= 14": 0.6, "The answer is 14.": 0.3}))
    verifier = LLMJudgeVerifier(judge_ep, cache=False)
    assert verifier.granularity == "process"
    result = await verifier.verify([VerifyItem(Q, ("2 + 12", "= 14", "The answer is 14."))])
    (score,) = result.scores
    assert score.step_scores == pytest.approx((0.9, 0.6, 0.3))
    assert score.value == pytest.approx(0.3)  # aggregation "last"
    assert len(judge_ep.calls) == 3
    for messages, n, params in judge_ep.calls:
        assert n == 1
        assert params == SamplingParams(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=20)
        assert messages[0]["role"] == "system"
        assert Q in messages[-1]["content"]
    first, second, third = (call[0][-1]["content"] for call in judge_ep.calls)
    assert third == (
        f"Problem:\n{Q}\n\nSolution so far:\nStep 1: 2 + 12\nStep 2: = 14\nStep 3: The answer is 14.\n\n"
        "Is the last step (Step 3) correct? Answer Yes or No."
    )
    # Each prefix's prompt extends the previous one's up to the closing question (prompt-cache friendly).
    assert second.startswith(first.split("\n\nIs the last step")[0])
    assert third.startswith(second.split("\n\nIs the last step")[0])
    assert result.usage == RequestUsage(requests=3, prompt_tokens=30, completion_tokens=3)
    assert verifier.logprobs_supported is True


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("last", 0.5), ("min", 0.25), ("prod", 0.8 * 0.25 * 0.5), ("mean", (0.8 + 0.25 + 0.5) / 3)],
)
async def test_process_judge_aggregation(aggregation: str, expected: float) -> None:
    judge_ep = JudgeEndpoint(scored_by_text({"a": 0.8, "b": 0.25, "c": 0.5}))
    verifier = LLMJudgeVerifier(judge_ep, aggregation=aggregation)  # type: ignore[arg-type]
    (score,) = (await verifier.verify([VerifyItem(Q, ("a", "b", "c"))])).scores
    assert score.value == pytest.approx(expected)
    assert score.step_scores == pytest.approx((0.8, 0.25, 0.5))


async def test_outcome_judge_one_request_per_solution() -> None:
    judge_ep = JudgeEndpoint(scored_by_text({"a\n\nb": 0.7, "c": 0.2}))
    verifier = LLMJudgeVerifier(judge_ep, mode="outcome")
    assert verifier.granularity == "outcome"
    result = await verifier.verify([VerifyItem(Q, ("a", "b")), VerifyItem(Q, ("c",))])
    assert [s.value for s in result.scores] == pytest.approx([0.7, 0.2])
    assert all(s.step_scores is None for s in result.scores)
    assert len(judge_ep.calls) == 2
    assert "Is this solution's final answer correct?" in judge_ep.calls[0][0][-1]["content"]
    assert result.usage.requests == 2


async def test_judge_falls_back_to_sampling_without_logprobs() -> None:
    judge_ep = JudgeEndpoint(lambda text: None, samples=["Yes", " no", "yes.", "YES", "maybe"])
    verifier = LLMJudgeVerifier(judge_ep, mode="outcome", samples=5, cache=False)
    (score,) = (await verifier.verify([VerifyItem(Q, ("x",))])).scores
    assert score.value == pytest.approx(3 / 4)  # share of Yes among the yes/no answers
    (_, n1, p1), (_, n2, p2) = judge_ep.calls
    assert (n1, p1.logprobs if p1 else None) == (1, True)  # the probe that found no logprobs
    assert n2 == 5
    assert p2 == SamplingParams(temperature=1.0, max_tokens=2)
    assert verifier.logprobs_supported is False
    # Known now: the next judgement samples straight away (one request, not two).
    result = await verifier.verify([VerifyItem(Q, ("y",))])
    assert len(judge_ep.calls) == 3
    assert judge_ep.calls[-1][1] == 5
    assert result.usage == RequestUsage(requests=1, prompt_tokens=10, completion_tokens=5)


async def test_judge_use_logprobs_false_samples_only() -> None:
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(1.0), samples=["No", "Yes"])
    verifier = LLMJudgeVerifier(judge_ep, samples=4, temperature=0.7, use_logprobs=False)
    (score,) = (await verifier.verify([VerifyItem(Q, ("x",))])).scores
    assert score.value == pytest.approx(0.5)
    assert [(n, p) for _, n, p in judge_ep.calls] == [(4, SamplingParams(temperature=0.7, max_tokens=2))]


async def test_judge_neither_yes_nor_no_in_logprobs_is_unscored() -> None:
    judge_ep = JudgeEndpoint(lambda text: {"The": -0.1, "I": -2.0} if text == "b" else p_yes_tops(0.9))
    verifier = LLMJudgeVerifier(judge_ep)
    good, bad = (await verifier.verify([VerifyItem(Q, ("a",)), VerifyItem(Q, ("a", "b", "c"))])).scores
    assert good.value == pytest.approx(0.9)
    assert bad.value is None and not bad.scored
    assert bad.error is not None
    assert bad.error.startswith("step 2: judge answered neither Yes nor No")
    assert "'The'" in bad.error


async def test_judge_neither_yes_nor_no_in_samples_is_unscored() -> None:
    judge_ep = JudgeEndpoint(lambda text: None, samples=["Maybe", "The", "I think"])
    verifier = LLMJudgeVerifier(judge_ep, mode="outcome", samples=3)
    (score,) = (await verifier.verify([VerifyItem(Q, ("x",))])).scores
    assert score.value is None
    assert "neither Yes nor No in 3 sampled judgements" in (score.error or "")


@pytest.mark.parametrize("steps", [(), ("",), ("  ", "\n")])
async def test_judge_empty_steps_are_unscored_without_requests(steps: tuple[str, ...]) -> None:
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(1.0))
    for mode in ("process", "outcome"):
        verifier = LLMJudgeVerifier(judge_ep, mode=mode)  # type: ignore[arg-type]
        result = await verifier.verify([VerifyItem(Q, steps)])
        assert result.scores[0].value is None
        assert "no steps" in (result.scores[0].error or "")
        assert result.usage == RequestUsage()
    assert judge_ep.calls == []


async def test_judge_endpoint_failure_unscores_only_that_item() -> None:
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(0.6), fail_on=lambda text: text == "boom")
    verifier = LLMJudgeVerifier(judge_ep)
    ok, failed = (await verifier.verify([VerifyItem(Q, ("a",)), VerifyItem(Q, ("a", "boom"))])).scores
    assert ok.value == pytest.approx(0.6)
    assert failed.value is None
    assert "step 2: judge request failed" in (failed.error or "") and "judge is down" in (failed.error or "")
    # The failure is not cached: the next call asks again.
    await verifier.verify([VerifyItem(Q, ("a", "boom"))])
    assert [latest_step(m) for m, _, _ in judge_ep.calls].count("boom") == 2


async def test_judge_failed_request_is_charged() -> None:
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(0.6), fail_on=lambda text: text == "boom")
    result = await LLMJudgeVerifier(judge_ep, cache=False).verify([VerifyItem(Q, ("a", "boom"))])
    assert result.usage == RequestUsage(requests=1, prompt_tokens=10, completion_tokens=1, failed_requests=1)


BATCH = [
    VerifyItem(Q, ("s1", "s2", "s3")),
    VerifyItem(Q, ("s1", "s2", "s4")),
    VerifyItem(Q, ("s1", "s5")),
]  # 8 step prefixes, 5 distinct: s1 | s1 s2 | s1 s2 s3 | s1 s2 s4 | s1 s5


async def test_judge_cache_scores_each_shared_prefix_once() -> None:
    table = {"s1": 0.9, "s2": 0.8, "s3": 0.7, "s4": 0.2, "s5": 0.5, "s6": 0.4}
    judge_ep = JudgeEndpoint(scored_by_text(table))
    cache = ScoreCache()
    verifier = LLMJudgeVerifier(judge_ep, cache=cache)

    first = await verifier.verify(BATCH)
    assert len(judge_ep.calls) == 5
    assert (cache.hits, cache.misses, len(cache)) == (3, 5, 5)
    assert first.usage == RequestUsage(requests=5, prompt_tokens=50, completion_tokens=5)
    assert [s.step_scores for s in first.scores] == [
        pytest.approx((0.9, 0.8, 0.7)),
        pytest.approx((0.9, 0.8, 0.2)),
        pytest.approx((0.9, 0.5)),
    ]

    second = await verifier.verify(BATCH)
    assert len(judge_ep.calls) == 5  # nothing new to ask
    assert (cache.hits, cache.misses) == (11, 5)
    assert second.usage == RequestUsage()
    assert [s.step_scores for s in second.scores] == [s.step_scores for s in first.scores]

    third = await verifier.verify([VerifyItem(Q, ("s1", "s2", "s3", "s6"))])  # a beam grown by one step
    assert len(judge_ep.calls) == 6
    assert (cache.hits, cache.misses) == (14, 6)
    assert third.usage.requests == 1
    assert third.scores[0].value == pytest.approx(0.4)


async def test_judge_without_cache_asks_every_prefix() -> None:
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(0.5))
    verifier = LLMJudgeVerifier(judge_ep, cache=False)
    assert verifier.cache is None
    await verifier.verify(BATCH)
    await verifier.verify(BATCH)
    assert len(judge_ep.calls) == 16


async def test_judge_cache_keeps_modes_and_questions_apart() -> None:
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(0.5))
    cache = ScoreCache()
    process = LLMJudgeVerifier(judge_ep, cache=cache)
    outcome = LLMJudgeVerifier(judge_ep, mode="outcome", cache=cache)
    await process.verify([VerifyItem(Q, ("s1",))])
    await outcome.verify([VerifyItem(Q, ("s1",))])
    await process.verify([VerifyItem("another question", ("s1",))])
    assert len(judge_ep.calls) == 3
    assert cache.hits == 0


async def test_judge_scores_all_prefixes_concurrently() -> None:
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(0.5), delay=0.05)
    await LLMJudgeVerifier(judge_ep).verify(BATCH)
    assert judge_ep.max_in_flight == 5
    judge_ep2 = JudgeEndpoint(lambda text: p_yes_tops(0.5), delay=0.02)
    await LLMJudgeVerifier(judge_ep2, max_concurrency=2).verify(BATCH)
    assert judge_ep2.max_in_flight == 2


async def test_judge_sequential_prefixes_judges_each_solution_in_order() -> None:
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(0.5), delay=0.02)
    cache = ScoreCache()
    verifier = LLMJudgeVerifier(judge_ep, cache=cache, sequential_prefixes=True)
    result = await verifier.verify(BATCH)
    assert judge_ep.max_in_flight == 3  # chains: s1 s2 s3 | s4 (after s1 s2 in the first) | s5 (after s1)
    assert (cache.hits, cache.misses) == (3, 5)
    assert all(s.value == pytest.approx(0.5) for s in result.scores)
    order = [latest_step(m) for m, _, _ in judge_ep.calls]
    assert order.index("s1") < order.index("s2") < order.index("s3")
    # Without a cache every solution is one chain.
    judge_ep2 = JudgeEndpoint(lambda text: p_yes_tops(0.5), delay=0.02)
    await LLMJudgeVerifier(judge_ep2, cache=False, sequential_prefixes=True).verify(BATCH)
    assert (len(judge_ep2.calls), judge_ep2.max_in_flight) == (8, 3)


async def test_judge_previous_and_latest_step_placeholders() -> None:
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(0.5))
    template = "{question}|{previous_steps}|{latest_step}|{step_number}"
    verifier = LLMJudgeVerifier(judge_ep, prompt_template=template, system_prompt=None)
    assert verifier.messages_for(Q, ("a", "b"))[0]["content"] == f"{Q}|Step 1: a|b|2"
    assert verifier.messages_for(Q, ("a",))[0]["content"] == f"{Q}|(none)|a|1"


async def test_judge_custom_prompt_template() -> None:
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(0.5))
    template = "Q: {question}\n\nProposed solution:\n{solution}\n\nIs this right? {{Yes/No}}"
    verifier = LLMJudgeVerifier(judge_ep, mode="outcome", prompt_template=template, system_prompt=None)
    await verifier.verify([VerifyItem(Q, ("x",))])
    (messages, _, _) = judge_ep.calls[0]
    assert messages == [{"role": "user", "content": f"Q: {Q}\n\nProposed solution:\nx\n\nIs this right? {{Yes/No}}"}]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "both"}, "mode"),
        ({"aggregation": "max"}, "aggregation"),
        ({"samples": 0}, "samples"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"prompt_template": "Is {answer} right?"}, "prompt_template"),
        ({"mode": "outcome", "prompt_template": "{latest_step}"}, "prompt_template"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_judge_rejects_bad_configuration(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        LLMJudgeVerifier(JudgeEndpoint(lambda text: None), **kwargs)


def test_judge_rejects_non_endpoint() -> None:
    with pytest.raises(ConfigurationError, match="endpoint"):
        LLMJudgeVerifier(object())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ in a strategy graph


@dataclass
class Policy:
    """A policy answering from a fixed list of solutions, optionally with token logprobs."""

    texts: Sequence[str]
    logprobs: Sequence[Sequence[float]] | None = None
    params: list[SamplingParams | None] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "fake-policy"

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        n: int = 1,
        params: SamplingParams | None = None,
        prefix: str | None = None,
    ) -> GenerationResult:
        self.params.append(params)
        gens = []
        for i in range(n):
            text = self.texts[i % len(self.texts)]
            lps = tuple(self.logprobs[i % len(self.logprobs)]) if self.logprobs and params and params.logprobs else None
            gens.append(Generation(text, "stop", len(text.split()), lps))
        return GenerationResult(gens, RequestUsage(1, 5, sum(len(t.split()) for t in self.texts[:n])))


async def test_judge_in_best_of_n_weighted_charges_verify_usage() -> None:
    texts = ["3 * 4 = 12.\n\n2 + 12 = 14.\n\nThe answer is \\boxed{14}.", "2 + 3 = 5.\n\nThe answer is \\boxed{20}."]
    judge_ep = JudgeEndpoint(lambda text: p_yes_tops(0.1 if "20" in text or "5." in text else 0.9))
    graph = create_best_of_n(Policy(texts), LLMJudgeVerifier(judge_ep), n=4, selection="weighted").compile()
    out = await graph.ainvoke({"question": Q})
    assert out["answer"] == "14"
    verify = out["usage"]["by_kind"]["verify"]
    assert verify["requests"] > 0
    assert verify["requests"] == 5  # 3 + 2 distinct step prefixes; the repeated samples hit the cache
    assert verify["prompt_tokens"] == 50
    assert all(c["scored"] for c in out["candidates"])


async def test_confidence_in_best_of_n_asks_policy_for_logprobs() -> None:
    texts = ["The answer is \\boxed{14}.", "The answer is \\boxed{20}."]
    policy = Policy(texts, logprobs=[[-0.05, -0.1, -0.02], [-1.5, -2.0, -0.7]])
    graph = create_best_of_n(policy, ConfidenceVerifier(), n=2, selection="naive").compile()
    out = await graph.ainvoke({"question": Q})
    assert policy.params[0] is not None and policy.params[0].logprobs is True
    assert out["answer"] == "14"
    assert out["usage"]["by_kind"]["verify"]["requests"] == 0


# ---------------------------------------------------------------------------------------- confidence


async def test_confidence_mean() -> None:
    verifier = ConfidenceVerifier()
    assert verifier.needs_logprobs is True
    result = await verifier.verify([VerifyItem(Q, ("x",), (-0.1, -0.2, -0.3))])
    assert result.scores[0].value == pytest.approx(math.exp(-0.2))
    assert result.usage == RequestUsage()


async def test_confidence_group_takes_lowest_window() -> None:
    lps = (-0.1, -0.5, -0.3, -0.05, -0.9)
    # windows of 2: -0.3, -0.4, -0.175, -0.475 -> the last is the lowest
    verifier = ConfidenceVerifier("group", window=2)
    (score,) = (await verifier.verify([VerifyItem(Q, ("x",), lps)])).scores
    assert score.value == pytest.approx(math.exp(-0.475))
    # windows of 3: -0.3, -0.2833, -0.4167
    assert lowest_group_logprob(lps, 3) == pytest.approx((-0.3 - 0.05 - 0.9) / 3)
    assert lowest_group_logprob(lps, 1) == pytest.approx(-0.9)


async def test_confidence_group_shorter_than_window_is_whole_sequence() -> None:
    lps = (-0.1, -0.5, -0.3)
    (score,) = (await ConfidenceVerifier("group", window=16).verify([VerifyItem(Q, ("x",), lps)])).scores
    assert score.value == pytest.approx(math.exp(-0.3))
    assert lowest_group_logprob(lps, 3) == pytest.approx(mean_logprob(lps))


async def test_confidence_without_logprobs_is_unscored() -> None:
    result = await ConfidenceVerifier().verify([VerifyItem(Q, ("x",)), VerifyItem(Q, ("x",), ())])
    assert [s.value for s in result.scores] == [None, None]
    assert all("no token log-probabilities" in (s.error or "") for s in result.scores)


async def test_confidence_edge_values() -> None:
    verifier = ConfidenceVerifier("group", window=2)
    zero, one, bad, nan = (
        await verifier.verify(
            [
                VerifyItem(Q, ("x",), (-0.1, -math.inf, -0.2)),
                VerifyItem(Q, ("x",), (0.0, 1e-6, 0.0)),  # rounding above 0 is tolerated
                VerifyItem(Q, ("x",), (-0.1, 0.7)),
                VerifyItem(Q, ("x",), (-0.1, math.nan)),
            ]
        )
    ).scores
    assert zero.value == 0.0
    assert one.value == pytest.approx(1.0)
    assert bad.value is None and "not a log-probability" in (bad.error or "")
    assert nan.value is None


@pytest.mark.parametrize(("kwargs", "match"), [({"method": "median"}, "method"), ({"window": 0}, "window")])
def test_confidence_rejects_bad_configuration(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ConfidenceVerifier(**kwargs)


@pytest.mark.parametrize("bad", [True, "0.9", None, float("nan"), 1.5, -0.1])
async def test_a_function_verifier_must_return_a_real_number_in_the_unit_interval(bad: object) -> None:
    result = await FunctionVerifier(lambda question, solution: bad).verify([VerifyItem("q", "s")])
    score = result.scores[0]
    assert not score.scored and score.error is not None and "expected a number in [0, 1]" in score.error


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_sampling_knobs_must_be_finite(value: float) -> None:
    with pytest.raises(ConfigurationError, match="temperature: must be a finite number"):
        check_request(1, SamplingParams(temperature=value))
    with pytest.raises(ConfigurationError, match="temperature: must be a finite number"):
        create_best_of_n(JudgeEndpoint(lambda text: None), n=2, selection="majority", temperature=value)
