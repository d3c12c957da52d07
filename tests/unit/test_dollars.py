"""Money: prices per model, each request's cost in its usage, and ``Budget(dollars=...)`` held like a token budget."""

from __future__ import annotations

import math
from typing import Any

import httpx2
import pytest
from pydantic import ValidationError

from tests.unit.test_endpoints_openai import MESSAGES, MockServer, chat_body
from ttc_graph import Budget, create_best_of_n, create_revisions
from ttc_graph.budget import remaining, usage_delta
from ttc_graph.prices import Price, PriceTable, default_prices, price_of
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.usage import RequestUsage

PRICE = Price(input=10_000, output=1_000_000)  # $0.01 a prompt token, $1 a completion token: easy sums
ANSWER = "one two three four five six seven \\boxed{4}"


def honouring_max_tokens(call: FakeCall, index: int) -> tuple[str, str]:
    """Eight words, cut at the request's ``max_tokens`` (one token a word) as a server does."""
    words = ANSWER.split()
    cap = call.params.max_tokens if call.params is not None and call.params.max_tokens else len(words)
    return " ".join(words[:cap]), "stop" if cap >= len(words) else "length"


def ledger_cost(usage: dict[str, Any], price: Price) -> float:
    return price.cost(usage["prompt_tokens"], usage["completion_tokens"])


# -- prices ---------------------------------------------------------------------------------------------------------


def test_price_cost_per_million_tokens_with_cached_input() -> None:
    price = Price(input=2.5, output=10.0, cached_input=1.25)
    assert price.cost(1_000_000, 0) == pytest.approx(2.5)
    assert price.cost(0, 1_000_000) == pytest.approx(10.0)
    assert price.cost(1000, 100, cached_tokens=400) == pytest.approx((600 * 2.5 + 400 * 1.25 + 100 * 10) / 1e6)
    assert Price(input=1, output=2).cost(100, 0, cached_tokens=100) == pytest.approx(100 / 1e6)  # input price
    with pytest.raises(ValidationError):
        Price(input=-1, output=1)


def test_the_shipped_table_states_its_source_and_finds_models_by_name() -> None:
    table = default_prices()
    assert "pricing" in table.source.lower() and table.date
    assert table.lookup("gpt-4o-mini") == table.prices["gpt-4o-mini"]
    assert table.lookup("gpt-4o-mini-2024-07-18") == table.prices["gpt-4o-mini"]  # longest known prefix
    assert table.lookup("gpt-4o-2024-08-06") == table.prices["gpt-4o"]
    assert table.lookup("openai/gpt-4.1-mini") == table.prices["gpt-4.1-mini"]
    assert table.lookup("claude-3-5-sonnet-20241022") == table.prices["claude-3-5-sonnet"]
    assert table.lookup("o3-mini") == table.prices["o3-mini"]
    assert table.lookup("smollm2-135m-instruct") is None  # a local model costs nothing
    mine = PriceTable(prices={"my-model": PRICE})
    assert price_of("my-model", mine) == PRICE and price_of("anything", PRICE) == PRICE


def test_a_budget_takes_a_price_or_a_model_name() -> None:
    assert Budget(dollars=1, price="gpt-4o").price == default_prices().prices["gpt-4o"]
    with pytest.raises(ValidationError, match="no price known"):
        Budget(dollars=1, price="no-such-model")
    with pytest.raises(ValidationError):
        Budget(dollars=0)


# -- the ledger ------------------------------------------------------------------------------------------------------


def test_remaining_dollars_plan_the_completion_tokens_each_request_may_take() -> None:
    usage = usage_delta("propose", RequestUsage(2, 100, 10, cost=PRICE.cost(100, 10)), generations=2)
    assert usage["cost"] == pytest.approx(11.0)
    rem = remaining(Budget(dollars=31.0, price=PRICE), usage, None)
    assert rem.dollars == pytest.approx(20.0)
    assert rem.exhausted is None
    # 4 samples: $5 each, less one prompt's expected cost (50 tokens at $0.01) = 4 completion tokens each
    assert rem.max_tokens_each(4, None) == 4
    assert rem.max_tokens_each(4, 3) == 3
    assert rem.short_of(40) == "dollars"
    assert remaining(Budget(dollars=11.0, price=PRICE), usage, None).exhausted == "dollars"
    lost = usage_delta("propose", RequestUsage(failed_requests=1, unconfirmed_tokens=5))
    from ttc_graph.budget import merge_usage

    assert remaining(Budget(dollars=31.0, price=PRICE), merge_usage(usage, lost), None).dollars == pytest.approx(15.0)


def test_without_a_price_the_run_plans_at_its_own_dollars_per_completion_token() -> None:
    usage = usage_delta("propose", RequestUsage(1, 100, 10, cost=PRICE.cost(100, 10)), generations=1)
    rem = remaining(Budget(dollars=22.0), usage, None)
    assert rem.output_price == pytest.approx(11.0 / 10)  # an upper bound of the $1 output price
    assert rem.max_tokens_each(1, None) == 10
    assert math.isinf(remaining(Budget(dollars=1.0), None, None).max_tokens_each(1, None) or math.inf)


# -- runs ------------------------------------------------------------------------------------------------------------


async def test_a_dollar_budget_stops_a_run_at_its_limit_with_the_ledgers_cost() -> None:
    policy = ScriptedEndpoint(honouring_max_tokens, price=PRICE)
    budget = Budget(dollars=20.0, price=PRICE)
    graph = create_revisions(policy, n=8, chain_length="full", selection="majority", budget=budget).compile()
    out = await graph.ainvoke({"question": "What is 2 + 2?"})
    usage = out["usage"]
    assert out["stop_reason"] == "budget:dollars"
    assert 1 < usage["generations"] < 8  # stopped by the dollars, not by n
    assert usage["cost"] == pytest.approx(ledger_cost(usage, PRICE))  # the ledger's tokens at the table's price
    assert usage["cost"] <= budget.dollars
    # planned before each request: no request could have taken more completion tokens than the dollars left bought
    assert all(c.params is not None and c.params.max_tokens is not None for c in policy.calls)
    assert usage["completion_tokens"] * PRICE.output / 1e6 <= budget.dollars


@pytest.mark.parametrize("native_n", [True, False])
async def test_best_of_n_splits_the_dollars_among_its_samples(native_n: bool) -> None:
    policy = ScriptedEndpoint(honouring_max_tokens, price=PRICE, native_n=native_n)
    budget = Budget(dollars=24.0, price=PRICE)
    out = (
        await create_best_of_n(policy, n=4, selection="majority", budget=budget)
        .compile()
        .ainvoke({"question": "What is 2 + 2?"})
    )
    assert all(c.params is not None and c.params.max_tokens == 6 for c in policy.calls)  # $24 / 4, whole tokens
    assert out["usage"]["cost"] == pytest.approx(ledger_cost(out["usage"], PRICE))
    assert out["usage"]["completion_tokens"] * PRICE.output / 1e6 <= budget.dollars


async def test_a_budget_smaller_than_one_token_each_stops_before_sampling() -> None:
    policy = ScriptedEndpoint(honouring_max_tokens, price=PRICE)
    graph = create_best_of_n(policy, n=8, selection="majority", budget=Budget(dollars=4.0, price=PRICE)).compile()
    out = await graph.ainvoke({"question": "What is 2 + 2?"})
    assert policy.calls == [] and out["stop_reason"] == "budget:dollars"


async def test_the_openai_endpoint_prices_each_request_with_cached_input() -> None:
    def respond(body: dict[str, Any], index: int) -> httpx2.Response:
        data = chat_body(["\\boxed{4}"], usage={"prompt_tokens": 1000, "completion_tokens": 100})
        data["usage"]["prompt_tokens_details"] = {"cached_tokens": 400}
        return httpx2.Response(200, json=data)

    server = MockServer(respond)
    result = await server.endpoint(model="gpt-4o-2024-08-06").generate(MESSAGES)
    gpt4o = default_prices().prices["gpt-4o"]
    assert result.usage.cost == pytest.approx(gpt4o.cost(1000, 100, cached_tokens=400))
    local = await server.endpoint(model="smollm2").generate(MESSAGES)
    assert local.usage.cost == 0.0
    mine = await server.endpoint(model="smollm2", prices=PRICE).generate(MESSAGES)
    assert mine.usage.cost == pytest.approx(PRICE.cost(1000, 100))


# -- ttc serve -------------------------------------------------------------------------------------------------------


async def test_ttc_serve_reports_the_cost_counts_it_and_caps_it() -> None:
    from tests.unit.test_server import MAJORITY, MODEL, chat, make, scrape
    from ttc_graph.server import Limits

    policy = ScriptedEndpoint(honouring_max_tokens, price=PRICE, native_n=False)
    h = make(policy, limits=Limits(dollars=1000.0))
    resp = await h.client.post("/v1/chat/completions", json=chat())
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]
    assert usage["ttc"]["cost"] == pytest.approx(PRICE.cost(usage["prompt_tokens"], usage["completion_tokens"]))
    metrics = await scrape(h)
    assert metrics[("ttc_cost_dollars_total", (("node", "propose"), ("preset", MAJORITY)))] == pytest.approx(
        usage["ttc"]["cost"]
    )
    over = await h.client.post("/v1/chat/completions", json=chat(ttc={"budget": {"dollars": 5000}}))
    assert over.status_code == 400 and over.json()["error"]["param"] == "ttc.budget.dollars"
    capped = make(ScriptedEndpoint(honouring_max_tokens, price=PRICE, native_n=False), limits=Limits(dollars=8.0))
    ok = await capped.client.post("/v1/chat/completions", json=chat())
    assert ok.status_code == 200, ok.text
    assert [c.params.max_tokens for c in capped.policy.calls] == [2] * 4  # $8 among 4 samples at $1 a token
    broke = make(ScriptedEndpoint(honouring_max_tokens, price=PRICE, native_n=False), limits=Limits(dollars=2.0))
    stopped = await broke.client.post("/v1/chat/completions", json=chat())  # under a token each: nothing is sent
    assert stopped.status_code == 502 and broke.upstream_requests == 0 and MODEL
