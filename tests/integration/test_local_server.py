"""The embedded default model behind a real OpenAI-compatible HTTP server, as users reach vLLM or a hosted API."""

from __future__ import annotations

import httpx
import openai

from ttc_graph import create_best_of_n
from ttc_graph.endpoints import OpenAIEndpoint, SamplingParams
from ttc_graph.local import LocalModelServer

QUESTION = "What is 2 + 3? Put the final answer in \\boxed{}."


async def test_server_is_healthy_on_loopback(local_server: LocalModelServer) -> None:
    assert local_server.base_url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient() as client:
        resp = await client.get(local_server.base_url.removesuffix("/v1") + "/health")
    assert resp.status_code == 200
    assert local_server.started_in > 0


async def test_best_of_n_graph_end_to_end(endpoint: OpenAIEndpoint) -> None:
    graph = create_best_of_n(endpoint, None, n=4, selection="majority", max_tokens=48, seed=1).compile()
    out = await graph.ainvoke({"question": QUESTION})
    assert out["usage"]["generations"] == 4
    assert out["usage"]["requests"] >= 1
    assert out["usage"]["completion_tokens"] > 0
    assert out["usage"]["prompt_tokens"] > 0
    assert len(out["candidates"]) == 4
    assert all(c["text"] for c in out["candidates"])
    parsable = [c for c in out["candidates"] if c["parsable"]]
    if parsable:  # a 135M model may fail to box an answer; the selection must then still be one of them
        assert out["answer"] in {c["answer"] for c in parsable}
    else:
        assert out["answer"] is None
    assert out["stop_reason"] == "complete"


async def test_n_greater_than_one_usage_is_counted_per_request(local_server: LocalModelServer) -> None:
    """llama.cpp returns n choices but reports one choice's completion tokens; with logprobs the ledger
    knows every choice's length and records their sum instead of the under-count."""
    raw = openai.AsyncOpenAI(base_url=local_server.base_url, api_key="EMPTY", max_retries=0)
    resp = await raw.chat.completions.create(
        model=local_server.model_name,
        messages=[{"role": "user", "content": "Count from 1 to 5."}],
        n=3,
        max_tokens=16,
        temperature=0.8,
        logprobs=True,
    )
    assert len(resp.choices) == 3
    per_choice = [len(c.logprobs.content) for c in resp.choices]  # type: ignore[union-attr]
    reported = resp.usage.completion_tokens  # type: ignore[union-attr]

    ep = local_server.endpoint(native_n=True)
    result = await ep.generate(
        [{"role": "user", "content": "Count from 1 to 5."}],
        n=3,
        params=SamplingParams(max_tokens=16, temperature=0.8, logprobs=True),
    )
    assert len(result.generations) == 3
    assert result.usage.requests == 1
    assert result.usage.completion_tokens == sum(g.tokens or 0 for g in result.generations)
    assert result.usage.completion_tokens >= reported
    assert sum(per_choice) >= reported


async def test_logprobs(endpoint: OpenAIEndpoint) -> None:
    result = await endpoint.generate(
        [{"role": "user", "content": "Say hello."}],
        params=SamplingParams(max_tokens=8, temperature=0.0, logprobs=True, top_logprobs=3),
    )
    gen = result.generations[0]
    assert gen.token_logprobs and all(lp <= 0.0 for lp in gen.token_logprobs)
    assert gen.top_logprobs and all(1 <= len(t) <= 3 for t in gen.top_logprobs)
    assert gen.tokens == len(gen.token_logprobs)


async def test_assistant_prefix_continuation_is_stripped(local_server: LocalModelServer) -> None:
    ep = local_server.endpoint(continuation="prefill")
    prefix = "Step 1: The numbers are 2 and 3."
    result = await ep.generate(
        [{"role": "user", "content": QUESTION}],
        params=SamplingParams(max_tokens=24, temperature=0.0),
        prefix=prefix,
    )
    text = result.generations[0].text
    assert text and not text.startswith(prefix)


async def test_text_completions_with_server_template(local_server: LocalModelServer) -> None:
    ep = local_server.endpoint(continuation="completions")
    prompt = await ep.render_prompt([{"role": "user", "content": QUESTION}])
    assert QUESTION in prompt and len(prompt) > len(QUESTION)
    result = await ep.generate(
        [{"role": "user", "content": QUESTION}],
        params=SamplingParams(max_tokens=16, temperature=0.0),
        prefix="The answer is",
    )
    assert result.generations[0].text.strip()
    assert result.usage.completion_tokens > 0


async def test_stop_sequence(endpoint: OpenAIEndpoint) -> None:
    params = SamplingParams(max_tokens=64, temperature=0.0, stop=("\n",))
    result = await endpoint.generate([{"role": "user", "content": "List three colours, one per line."}], params=params)
    assert "\n" not in result.generations[0].text.strip("\n")


def test_sync_invoke_against_the_real_server(endpoint: OpenAIEndpoint) -> None:
    """graph.invoke runs the async nodes on private event loops; the endpoint keeps one client per loop."""
    graph = create_best_of_n(endpoint, None, n=2, selection="majority", max_tokens=24, seed=3).compile()
    out = graph.invoke({"question": QUESTION})
    assert out["usage"]["generations"] == 2
    assert out["usage"]["completion_tokens"] > 0
    assert len(out["candidates"]) == 2
