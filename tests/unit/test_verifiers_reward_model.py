"""RewardModelVerifier against an HTTP-level mock (respx) of vLLM's documented /pooling shapes."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
import respx

from ttc_graph.endpoints import RetryConfig
from ttc_graph.endpoints.base import RequestUsage
from ttc_graph.errors import ConfigurationError, VerifierError
from ttc_graph.verifiers import QWEN_PRM_SYSTEM_PROMPT, RewardModelVerifier, ScoreCache, VerifyItem
from ttc_graph.verifiers.reward_model import parse_step_rows

ROOT = "http://prm.test"
URL = f"{ROOT}/pooling"
MODEL = "Qwen/Qwen2.5-Math-PRM-7B"
Q = "What is 2 + 3 * 4?"
FAST_RETRY = RetryConfig(max_attempts=3, initial_backoff=0, jitter=0, max_backoff=0.01)
NO_RETRY = RetryConfig(max_attempts=1, initial_backoff=0, jitter=0, max_backoff=0.01)


def pooling_response(rows: Any, prompt_tokens: int = 100) -> dict[str, Any]:
    """A vLLM PoolingResponse: one PoolingResponseData per input, ``data`` = [[p_neg, p_pos], ...]."""
    return {
        "id": "pool-123",
        "object": "list",
        "created": 1700000000,
        "model": MODEL,
        "data": [{"index": 0, "object": "pooling", "data": rows}],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0},
    }


def steps_of(request: httpx.Request) -> list[str]:
    body = json.loads(request.content)
    assistant = body["messages"][-1]["content"]
    assert assistant.endswith("<extra_0>")
    return assistant[: -len("<extra_0>")].split("<extra_0>")


def step_prob(step: str) -> float:
    return 0.1 if "bad" in step else 0.9


def prm_handler(request: httpx.Request) -> httpx.Response:
    """A PRM: one softmax row per <extra_0>; P(positive) from the step's text; 10 prompt tokens per step."""
    steps = steps_of(request)
    rows = [[round(1 - step_prob(s), 6), step_prob(s)] for s in steps]
    return httpx.Response(200, json=pooling_response(rows, prompt_tokens=10 * len(steps)))


def verifier(**kwargs: Any) -> RewardModelVerifier:
    kwargs.setdefault("retry", FAST_RETRY)
    return RewardModelVerifier(ROOT, MODEL, **kwargs)


@respx.mock
async def test_request_shape_follows_vllm_pooling_chat_form() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=pooling_response([[0.2, 0.8], [0.6, 0.4]])))
    prm = RewardModelVerifier(f"{ROOT}/v1/", MODEL, api_key="secret", retry=FAST_RETRY)
    await prm.verify([VerifyItem(Q, ("3 * 4 = 12.", "2 + 12 = 14."))])
    assert route.call_count == 1
    request = route.calls.last.request
    assert str(request.url) == URL  # the pooling API lives at the server root, not under /v1
    assert request.headers["authorization"] == "Bearer secret"
    assert json.loads(request.content) == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": QWEN_PRM_SYSTEM_PROMPT},
            {"role": "user", "content": Q},
            {"role": "assistant", "content": "3 * 4 = 12.<extra_0>2 + 12 = 14.<extra_0>"},
        ],
        "task": "token_classify",
    }
    assert QWEN_PRM_SYSTEM_PROMPT == "Please reason step by step, and put your final answer within \\boxed{}."


@respx.mock
async def test_request_options() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=pooling_response([[0.2, 0.8]])))
    prm = verifier(step_separator="\n\n", system_prompt=None, task=None)
    await prm.verify([VerifyItem(Q, ("a",))])
    body = json.loads(route.calls.last.request.content)
    messages = [{"role": "user", "content": Q}, {"role": "assistant", "content": "a\n\n"}]
    assert body == {"model": MODEL, "messages": messages}
    assert "authorization" not in route.calls.last.request.headers


@respx.mock
async def test_step_scores_are_positive_class_probabilities() -> None:
    respx.post(URL).mock(return_value=httpx.Response(200, json=pooling_response([[0.1, 0.9], [0.7, 0.3]], 57)))
    result = await verifier().verify([VerifyItem(Q, ("a", "b"))])
    (score,) = result.scores
    assert score.step_scores == pytest.approx((0.9, 0.3))
    assert score.value == pytest.approx(0.3)  # "last"
    assert result.usage == RequestUsage(requests=1, prompt_tokens=57)


@pytest.mark.parametrize(
    ("aggregation", "expected"), [("last", 0.5), ("min", 0.2), ("prod", 0.9 * 0.2 * 0.5), ("mean", 1.6 / 3)]
)
@respx.mock
async def test_aggregation(aggregation: str, expected: float) -> None:
    respx.post(URL).mock(return_value=httpx.Response(200, json=pooling_response([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]])))
    (score,) = (await verifier(aggregation=aggregation).verify([VerifyItem(Q, ("a", "b", "c"))])).scores
    assert score.value == pytest.approx(expected)


@respx.mock
async def test_positive_index_zero() -> None:
    respx.post(URL).mock(return_value=httpx.Response(200, json=pooling_response([[0.9, 0.1]])))
    (score,) = (await verifier(positive_index=0).verify([VerifyItem(Q, ("a",))])).scores
    assert score.value == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"object": "list", "model": MODEL, "usage": {"prompt_tokens": 3}}, "no 'data' list"),
        ({**pooling_response([]), "data": []}, "no 'data' list"),
        ({**pooling_response([]), "data": [{"index": 0, "object": "pooling"}]}, "has no 'data' field"),
        (pooling_response([[0.1, 0.9]]), "got 1 step rows for 2 steps"),
        (pooling_response([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]), "got 3 step rows for 2 steps"),
        (pooling_response([0.9, 0.3]), "flat list"),
        (pooling_response([[0.1, 0.9], [0.2, 0.5, 0.3]]), "step row 2 is not a .negative, positive. pair"),
        (pooling_response([[0.1, 0.9], [-2.3, 1.7]]), "outside \\[0, 1\\]"),
        (pooling_response([[0.1, 0.9], [0.4, "0.6"]]), "outside \\[0, 1\\]"),
        (pooling_response([[0.1, 0.9], [0.3, 0.3]]), "does not sum to 1"),
        (pooling_response("AAAA"), "expected a list"),
    ],
)
@respx.mock
async def test_malformed_rows_leave_item_unscored(body: dict[str, Any], match: str) -> None:
    respx.post(URL).mock(return_value=httpx.Response(200, json=body))
    prm = verifier()
    result = await prm.verify([VerifyItem(Q, ("a", "b"))])
    (score,) = result.scores
    assert score.value is None
    assert score.error is not None
    assert score.error.startswith("reward model response")
    assert re.search(match, score.error), score.error
    assert result.usage.requests == 1
    assert prm.cache is not None and len(prm.cache) == 0  # nothing wrong is cached


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>Internal error</html>"),
        httpx.Response(200, json=[[0.1, 0.9]]),
        httpx.Response(200, json="ok"),
    ],
)
@respx.mock
async def test_body_not_a_json_object_raises_for_the_batch(response: httpx.Response) -> None:
    respx.post(URL).mock(return_value=response)
    with pytest.raises(VerifierError, match="response is"):
        await verifier().verify([VerifyItem(Q, ("a",)), VerifyItem(Q, ("b",))])


@respx.mock
async def test_transient_errors_are_retried() -> None:
    route = respx.post(URL).mock(
        side_effect=[
            httpx.Response(503, json={"error": "overloaded"}),
            httpx.ConnectError("refused"),
            httpx.Response(200, json=pooling_response([[0.25, 0.75]])),
        ]
    )
    result = await verifier().verify([VerifyItem(Q, ("a",))])
    assert route.call_count == 3
    assert result.scores[0].value == pytest.approx(0.75)
    assert result.usage.requests == 1


@respx.mock
async def test_client_errors_are_not_retried_and_unscore_the_item() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(400, json={"error": "task not supported"}))
    result = await verifier().verify([VerifyItem(Q, ("a",))])
    assert route.call_count == 1
    (score,) = result.scores
    assert score.value is None
    assert "reward model request failed" in (score.error or "") and "HTTP 400" in (score.error or "")
    assert result.usage == RequestUsage(failed_requests=1)


@respx.mock
async def test_retries_exhausted_unscore_the_item() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(502))
    result = await verifier(retry=FAST_RETRY).verify([VerifyItem(Q, ("a",))])
    assert route.call_count == 3
    assert "HTTP 502" in (result.scores[0].error or "")


@respx.mock
async def test_one_request_per_solution_and_shared_prefixes_once() -> None:
    route = respx.post(URL).mock(side_effect=prm_handler)
    cache = ScoreCache()
    prm = verifier(cache=cache)
    batch = [
        VerifyItem(Q, ("s1", "s2", "s3")),
        VerifyItem(Q, ("s1", "s2")),  # a prefix of the first: scored by the first's request
        VerifyItem(Q, ("s1", "bad")),
    ]
    first = await prm.verify(batch)
    assert route.call_count == 2
    assert sorted(len(steps_of(c.request)) for c in route.calls) == [2, 3]
    assert [s.step_scores for s in first.scores] == [
        pytest.approx((0.9, 0.9, 0.9)),
        pytest.approx((0.9, 0.9)),
        pytest.approx((0.9, 0.1)),
    ]
    assert (cache.hits, cache.misses, len(cache)) == (3, 4, 4)
    assert first.usage == RequestUsage(requests=2, prompt_tokens=50)

    second = await prm.verify(batch)
    assert route.call_count == 2
    assert second.usage == RequestUsage()
    assert [s.value for s in second.scores] == [s.value for s in first.scores]

    third = await prm.verify([VerifyItem(Q, ("s1", "s2", "s3", "bad"))])
    assert route.call_count == 3
    assert third.scores[0].step_scores == pytest.approx((0.9, 0.9, 0.9, 0.1))


@respx.mock
async def test_without_cache_every_solution_is_sent() -> None:
    route = respx.post(URL).mock(side_effect=prm_handler)
    prm = verifier(cache=False)
    batch = [VerifyItem(Q, ("s1", "s2")), VerifyItem(Q, ("s1",)), VerifyItem(Q, ("s1", "s2"))]
    result = await prm.verify(batch)
    assert route.call_count == 3
    assert [s.value for s in result.scores] == pytest.approx([0.9, 0.9, 0.9])
    await prm.verify(batch)
    assert route.call_count == 6


@respx.mock
async def test_failure_of_a_shared_request_unscores_the_items_it_covered() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "boom" in steps_of(request):
            return httpx.Response(400, json={"error": "bad request"})
        return prm_handler(request)

    respx.post(URL).mock(side_effect=handler)
    result = await verifier().verify(
        [VerifyItem(Q, ("s1", "boom")), VerifyItem(Q, ("s1", "s2")), VerifyItem(Q, ("s1", "boom", "s3"))]
    )
    failed, ok, failed_too = result.scores
    assert ok.value == pytest.approx(0.9)
    assert failed.value is None and "HTTP 400" in (failed.error or "")
    assert failed_too.value is None and "HTTP 400" in (failed_too.error or "")
    assert result.usage.failed_requests == 1  # one request covered both failing items


@respx.mock
async def test_items_that_cannot_be_scored_send_nothing() -> None:
    route = respx.post(URL).mock(side_effect=prm_handler)
    result = await verifier().verify(
        [VerifyItem(Q, ()), VerifyItem(Q, ("  ",)), VerifyItem(Q, ("a<extra_0>b",)), VerifyItem(Q, ("ok",))]
    )
    empty, blank, tagged, ok = result.scores
    assert "no steps" in (empty.error or "") and "no steps" in (blank.error or "")
    assert "contains the step separator" in (tagged.error or "")
    assert ok.value == pytest.approx(0.9)
    assert route.call_count == 1


@respx.mock
async def test_uses_the_given_http_client_and_leaves_it_open() -> None:
    respx.post(URL).mock(side_effect=prm_handler)
    async with httpx.AsyncClient() as client:
        prm = verifier(http_client=client)
        await prm.verify([VerifyItem(Q, ("a",))])
        assert not client.is_closed
        await prm.verify([VerifyItem(Q, ("b",))])


def test_parse_step_rows() -> None:
    assert parse_step_rows([[0.25, 0.75], [1.0, 0.0]], 2) == (0.75, 0.0)
    assert parse_step_rows([[0.25, 0.75]], 1, positive_index=0) == (0.25,)
    assert parse_step_rows([], 0) == ()
    with pytest.raises(VerifierError, match="flat list"):
        parse_step_rows([0.5], 1)
    with pytest.raises(VerifierError, match=r"not a \[negative, positive\] pair"):
        parse_step_rows([[0.5, 0.25, 0.25]], 1)
    with pytest.raises(VerifierError, match="outside"):
        parse_step_rows([[True, False]], 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": ""}, "base_url"),
        ({"model": " "}, "model"),
        ({"step_separator": ""}, "step_separator"),
        ({"aggregation": "max"}, "aggregation"),
        ({"positive_index": 2}, "positive_index"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_rejects_bad_configuration(kwargs: dict[str, Any], match: str) -> None:
    args = {"base_url": ROOT, "model": MODEL} | kwargs
    with pytest.raises(ConfigurationError, match=match):
        RewardModelVerifier(**args)
