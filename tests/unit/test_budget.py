"""Budgets and the usage ledger."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from tests.fakeclock import FakeClock
from ttc_graph.budget import (
    COUNTERS,
    Budget,
    Remaining,
    empty_usage,
    merge_usage,
    policy_generations,
    policy_tokens,
    remaining,
    usage_delta,
)
from ttc_graph.endpoints.base import RequestUsage


def test_usage_delta_charges_its_kind():
    delta = usage_delta("propose", RequestUsage(2, 30, 40, 1), generations=5)
    assert {k: delta[k] for k in COUNTERS} == {
        "generations": 5,
        "requests": 2,
        "prompt_tokens": 30,
        "completion_tokens": 40,
        "failed_requests": 1,
    }
    assert delta["by_kind"] == {"propose": {k: delta[k] for k in COUNTERS}}
    assert usage_delta("verify")["by_kind"]["verify"] == dict.fromkeys(COUNTERS, 0)


def test_merge_usage_adds_counters_overall_and_per_kind():
    a = usage_delta("propose", RequestUsage(1, 10, 20, 0), generations=4)
    b = usage_delta("propose", RequestUsage(2, 5, 7, 1), generations=3)
    c = usage_delta("verify", RequestUsage(1, 100, 0, 0))
    merged = merge_usage(merge_usage(a, b), c)
    for key in COUNTERS:
        assert merged[key] == a[key] + b[key] + c[key]
        assert merged["by_kind"]["propose"][key] == a[key] + b[key]
        assert merged["by_kind"]["verify"][key] == c[key]


def test_merge_usage_does_not_mutate_its_inputs():
    a = usage_delta("propose", RequestUsage(1, 10, 20, 0), generations=4)
    b = usage_delta("propose", RequestUsage(1, 10, 20, 0), generations=4)
    snapshot_a = {**a, "by_kind": {k: dict(v) for k, v in a["by_kind"].items()}}
    merge_usage(a, b)
    assert a == snapshot_a


def test_merge_usage_seconds_takes_the_max():
    a = {**empty_usage(), "seconds": 3.5}
    b = {**empty_usage(), "seconds": 1.25}
    assert merge_usage(a, b)["seconds"] == 3.5
    assert merge_usage(b, a)["seconds"] == 3.5
    assert merge_usage(a, {"seconds": 9.0})["seconds"] == 9.0


def test_merge_usage_with_empty_sides():
    a = usage_delta("propose", RequestUsage(1, 2, 3, 0), generations=1)
    assert merge_usage(None, a) == a
    assert merge_usage(a, None) == a
    assert merge_usage({}, a) == a
    assert merge_usage(None, None) == empty_usage()


def test_merge_usage_is_associative_on_counters():
    parts = [usage_delta("propose", RequestUsage(i, 2 * i, 3 * i, i % 2), generations=i) for i in range(1, 5)]
    left = merge_usage(merge_usage(merge_usage(parts[0], parts[1]), parts[2]), parts[3])
    right = merge_usage(parts[0], merge_usage(parts[1], merge_usage(parts[2], parts[3])))
    assert left == right


def test_policy_counters_ignore_verifier_spend():
    usage = merge_usage(
        merge_usage(
            usage_delta("propose", RequestUsage(1, 0, 100, 0), generations=4),
            usage_delta("revise", RequestUsage(1, 0, 30, 0), generations=2),
        ),
        usage_delta("verify", RequestUsage(1, 0, 1000, 0)),
    )
    assert policy_tokens(usage) == 130
    assert policy_generations(usage) == 6
    assert policy_tokens(None) == 0
    assert policy_generations({}) == 0


def test_remaining_without_budget_is_unlimited():
    rem = remaining(None, None, None)
    assert math.isinf(rem.generations) and math.isinf(rem.tokens) and math.isinf(rem.seconds)
    assert rem.exhausted is None


def test_remaining_generations_and_tokens():
    usage = merge_usage(
        usage_delta("propose", RequestUsage(1, 0, 120, 0), generations=3),
        usage_delta("verify", RequestUsage(1, 0, 999, 0)),
    )
    rem = remaining(Budget(generations=8, tokens=500), usage, None)
    assert rem.generations == 8 - 3
    assert rem.tokens == 500 - 120
    assert math.isinf(rem.seconds)
    assert rem.exhausted is None


def test_remaining_seconds_counts_wall_time_from_start(monkeypatch: pytest.MonkeyPatch):
    clock = FakeClock().install(monkeypatch, ["ttc_graph.budget"])
    started = clock.now
    clock.advance(4)
    rem = remaining(Budget(seconds=10), None, started)
    assert rem.seconds == 6.0 and rem.exhausted is None
    late = remaining(Budget(seconds=1), None, started + 2)
    assert late.seconds == -1.0
    assert late.exhausted == "seconds"
    assert math.isinf(remaining(Budget(seconds=1), None, None).seconds)


@pytest.mark.parametrize(
    ("budget", "generations", "tokens", "axis"),
    [
        (Budget(generations=4), 4, 0, "generations"),
        (Budget(generations=4), 5, 0, "generations"),
        (Budget(tokens=100), 1, 100, "tokens"),
        (Budget(generations=10, tokens=100), 10, 200, "generations"),
        (Budget(generations=10, tokens=100), 2, 200, "tokens"),
        (Budget(generations=10, tokens=100), 2, 50, None),
    ],
)
def test_exhausted_axis(budget: Budget, generations: int, tokens: int, axis: str | None):
    usage = usage_delta("propose", RequestUsage(1, 0, tokens, 0), generations=generations)
    assert remaining(budget, usage, None).exhausted == axis


@pytest.mark.parametrize(
    ("tokens", "samples", "wanted"),
    [(1000, 4, 512), (1000, 4, 100), (1000, 3, None), (7, 8, 512), (1000, 0, None), (64, 1, 512)],
)
def test_max_tokens_each_never_overruns_the_token_limit(tokens: int, samples: int, wanted: int | None):
    cap = Remaining(math.inf, tokens, math.inf).max_tokens_each(samples, wanted)
    assert cap is not None
    assert cap * max(samples, 1) <= tokens
    if wanted is not None:
        assert cap <= wanted
    # and it is the largest such share
    assert (cap + 1) * max(samples, 1) > tokens or (wanted is not None and cap == wanted)


def test_max_tokens_each_without_token_limit_keeps_what_was_wanted():
    unlimited = Remaining(math.inf, math.inf, math.inf)
    assert unlimited.max_tokens_each(8, 256) == 256
    assert unlimited.max_tokens_each(8, None) is None


@pytest.mark.parametrize("kwargs", [{"generations": 0}, {"tokens": 0}, {"seconds": 0}, {"seconds": -1}, {"nope": 1}])
def test_budget_validation(kwargs):
    with pytest.raises(ValidationError):
        Budget(**kwargs)


def test_budget_is_frozen():
    budget = Budget(generations=4)
    with pytest.raises(ValidationError):
        budget.generations = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"generations": True}, "generations"),
        ({"tokens": "10"}, "tokens"),
        ({"tokens": 2.5}, "tokens"),
        ({"seconds": float("nan")}, "seconds"),
        ({"seconds": float("inf")}, "seconds"),
        ({"seconds": "3"}, "seconds"),
    ],
)
def test_a_budget_takes_integer_counts_and_finite_seconds_only(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Budget(**fields)  # type: ignore[arg-type]
    assert caught.value.errors()[0]["loc"] == (field,)
    assert Budget(generations=4, tokens=100, seconds=2).seconds == 2.0  # an int is a number of seconds
