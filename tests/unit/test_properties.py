"""Property-based tests (hypothesis), the bad-input suite: empty, huge, odd-unicode, deeply nested and wrongly typed
values.

- answer extraction and equality never raise, whatever they are given, and equality is symmetric (the text-only
  properties live in ``test_answers.py``; these add huge, nested and wrongly typed inputs);
- a random spec document builds a graph or raises a ConfigurationError naming a field, never anything else;
- merging ledgers is associative, has the empty ledger as identity and never loses a counter;
- the budget controllers never plan past a limit.
"""

from __future__ import annotations

import math
import re
import time
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttc_graph.answers import answer_key, answers_equal, extract_answer, normalize_answer
from ttc_graph.budget import COUNTERS, Budget, Remaining, merge_usage, policy_generations, remaining, usage_delta
from ttc_graph.errors import ConfigurationError
from ttc_graph.nodes.budget_controller import SamplingDefaults, make_best_of_n_controller
from ttc_graph.nodes.revision_controller import ChainPlan, make_revision_controller
from ttc_graph.nodes.step_beam import SearchPlan, make_search_controller
from ttc_graph.specs import build_graph, parse_spec
from ttc_graph.testing import ScriptedEndpoint
from ttc_graph.usage import RequestUsage

PROPERTY = settings(
    derandomize=True, database=None, deadline=None, max_examples=200, suppress_health_check=list(HealthCheck)
)

# -- values of every wrong kind ----------------------------------------------------------------------------------

odd_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8", categories=("Cc", "Cf", "Co", "Zs", "So", "Mn")), max_size=100),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),  # bytes that were never UTF-8
    st.integers(1, 20_000).map(lambda k: "9" * k),  # a huge number
    st.integers(1, 3_000).map(lambda k: "\\boxed{" * k + "7" + "}" * k),  # deeply nested braces
    st.integers(1, 3_000).map(lambda k: "{" * k),  # never closed
    st.integers(1, 500).map(lambda k: "The answer is " * k),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4), st.tuples(inner)
    ),
    max_leaves=12,
)


# -- answers ------------------------------------------------------------------------------------------------------


@settings(PROPERTY, max_examples=100)
@given(odd_text)
def test_extraction_never_raises_on_huge_nested_or_odd_text(text: str) -> None:
    for strict in (False, True):
        found = extract_answer(text, strict=strict)
        assert found is None or isinstance(found, str)
    assert isinstance(normalize_answer(text), str)


@settings(PROPERTY, max_examples=100)
@given(st.one_of(odd_text.filter(lambda s: len(s) <= 400), scalars, anything), st.one_of(odd_text, scalars, anything))
def test_answers_equal_never_raises_and_is_symmetric_for_any_value(a: Any, b: Any) -> None:
    forward = answers_equal(a, b)
    assert isinstance(forward, bool)
    assert forward == answers_equal(b, a)
    key = answer_key(a)
    assert key is None or isinstance(key, str)


@PROPERTY
@given(anything)
def test_extraction_of_a_wrongly_typed_value_is_none_or_a_string(value: Any) -> None:
    try:
        found = extract_answer(value)
    except (TypeError, AttributeError):  # a non-string is a caller's type error, never a crash inside
        return
    assert found is None or isinstance(found, str)


# -- spec documents -----------------------------------------------------------------------------------------------

KINDS = ["best_of_n", "beam_search", "dvts", "particle_filtering", "mcts", "revisions", "compute_optimal"]
FIELDS = [
    "n", "selection", "adaptive", "budget", "seed", "temperature", "max_tokens", "beam_width", "max_steps",
    "lookahead", "aggregation", "step_delimiter", "step_max_tokens", "chain_length", "stop_score", "stop_on_repeat",
    "policy", "verifier", "name", "description", "system_prompt", "expansions", "exploration", "max_depth",
    "rollout", "softmax_temperature", "resampling", "weighting", "table", "generations", "history",
]  # fmt: skip
GOOD = {
    "n": st.sampled_from([1, 2, 4, 8]),
    "selection": st.sampled_from(["majority", "weighted", "naive", "hierarchical", "last"]),
    "beam_width": st.sampled_from([1, 2, "sqrt"]),
    "chain_length": st.sampled_from([1, 2, "sqrt"]),
    "weighting": st.sampled_from(["logit", "score", "odds"]),
    "budget": st.fixed_dictionaries({}, optional={"generations": st.integers(-2, 10), "tokens": st.integers(-2, 99)}),
    "verifier": st.fixed_dictionaries(
        {"kind": st.sampled_from(["confidence", "llm_judge", "arithmetic", "reward_model", "combined", "bogus"])},
        optional={"mode": st.sampled_from(["process", "outcome", 3]), "parts": st.lists(anything, max_size=2)},
    ),
    "policy": st.fixed_dictionaries(
        {"kind": st.sampled_from(["openai", "env", "local", "nope"])},
        optional={"base_url": st.sampled_from(["http://127.0.0.1:9/v1", "", 5]), "model": odd_text},
    ),
}
field_value = st.sampled_from(FIELDS).flatmap(
    lambda name: st.tuples(st.just(name), st.one_of(GOOD.get(name, anything), anything, scalars))
)
documents = st.one_of(
    st.builds(
        lambda kind, items: {"kind": kind, **dict(items)},
        st.one_of(st.sampled_from(KINDS), scalars),
        st.lists(field_value, max_size=6),
    ),
    anything,
)
SPEC_FIELD = re.compile(r"^\s+([\w.()]+):", re.MULTILINE)


@settings(PROPERTY, max_examples=150)
@given(documents)
def test_a_random_spec_builds_or_names_the_field_at_fault(document: Any) -> None:
    policy = ScriptedEndpoint(["So \\boxed{1}"])
    try:
        build_graph(parse_spec(document), policy=policy)
    except ConfigurationError as exc:
        message = str(exc)
        named = SPEC_FIELD.findall(message) or re.findall(r"^([\w.]+):", message)
        assert named, f"no field named in: {message!r}"
        assert "\n" not in message or SPEC_FIELD.search(message), message
    assert policy.calls == []  # building never calls the model


# -- ledgers -------------------------------------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=10**12)
deltas = st.builds(
    lambda kind, usage, generations, seconds: {**usage_delta(kind, usage, generations=generations), "seconds": seconds},
    st.sampled_from(["propose", "verify", "revise"]),
    st.builds(RequestUsage, counts, counts, counts, counts, st.one_of(st.just(0), counts)),
    counts,
    st.floats(min_value=0, max_value=1e6),
)
ledgers = st.recursive(
    st.one_of(st.none(), st.just({}), deltas), lambda inner: st.builds(merge_usage, inner, inner), max_leaves=6
)


def _flat(ledger: dict[str, Any] | None) -> dict[str, Any]:
    """A ledger's counters with absent ones as 0 (a ledger holds ``unconfirmed_tokens`` only once it is non-zero)."""
    ledger = ledger or {}
    keys = (*COUNTERS, "unconfirmed_tokens")
    kinds = ledger.get("by_kind", {})
    return {
        "total": {k: ledger.get(k, 0) for k in keys},
        "by_kind": {kind: {k: c.get(k, 0) for k in keys} for kind, c in kinds.items() if any(c.values())},
        "seconds": float(ledger.get("seconds", 0.0)),
    }


@PROPERTY
@given(ledgers, ledgers, ledgers)
def test_merging_ledgers_is_associative_and_loses_no_counter(a: Any, b: Any, c: Any) -> None:
    left = merge_usage(merge_usage(a, b), c)
    right = merge_usage(a, merge_usage(b, c))
    assert left == right
    fa, fb, fc, total = _flat(a), _flat(b), _flat(c), _flat(left)
    for key, value in total["total"].items():
        assert value == fa["total"][key] + fb["total"][key] + fc["total"][key], key
    for kind in {*fa["by_kind"], *fb["by_kind"], *fc["by_kind"]}:
        for key, value in total["by_kind"][kind].items():
            parts = (f["by_kind"].get(kind, {}).get(key, 0) for f in (fa, fb, fc))
            assert value == sum(parts), (kind, key)
    assert total["seconds"] == max(fa["seconds"], fb["seconds"], fc["seconds"])
    assert merge_usage(left, None) == left and merge_usage({}, left) == merge_usage(None, left)
    for key in COUNTERS:  # every counter is there, whatever was merged
        assert key in merge_usage(a, b)


# -- the controllers never plan past a limit ----------------------------------------------------------------------

budgets = st.one_of(
    st.none(),
    st.builds(
        Budget,
        generations=st.one_of(st.none(), st.integers(1, 64)),
        tokens=st.one_of(st.none(), st.integers(1, 5000)),
        seconds=st.one_of(st.none(), st.floats(0.5, 100)),
    ),
)
spent = st.builds(
    lambda gens, toks, lost, failed: usage_delta(
        "propose", RequestUsage(gens, 1, toks, failed, lost), generations=gens
    ),
    st.integers(0, 40),
    st.integers(0, 6000),
    st.integers(0, 200),
    st.integers(0, 5),
)
RUNTIME = SimpleNamespace(context=None, stream_writer=lambda event: None)


def assert_within(rem: Remaining, tasks: list[dict[str, Any]]) -> None:
    """Every task of the plan within what ``rem`` (measured before planning) allows."""
    samples = sum(t.get("k", 1) for t in tasks)
    assert all(t["max_tokens"] is None or t["max_tokens"] >= 1 for t in tasks)
    if tasks and not math.isinf(rem.tokens):
        assert sum(t.get("k", 1) * t["max_tokens"] for t in tasks) <= rem.tokens
        assert all(t.get("hold_tokens") for t in tasks)
    if tasks and not math.isinf(rem.seconds):
        assert all(t["timeout"] is not None and t["timeout"] <= rem.seconds + 1e-6 for t in tasks)
    assert samples == 0 or rem.exhausted is None


@PROPERTY
@given(st.integers(1, 600), budgets, spent, st.one_of(st.none(), st.integers(1, 600)), st.booleans())
async def test_best_of_n_never_plans_past_a_limit(
    n: int, budget: Budget | None, usage: dict[str, Any], max_tokens: int | None, adaptive: bool
) -> None:
    from ttc_graph.nodes.budget_controller import AdaptiveStop

    control = make_best_of_n_controller(
        n=n, defaults=SamplingDefaults(0.7, max_tokens, None, budget), adaptive=AdaptiveStop() if adaptive else None,
        batch=1,
    )  # fmt: skip
    started = time.time()
    state: Any = {"question": "q", "usage": usage, "round": 1, "candidates": [], "started_at": started}
    rem = remaining(budget, usage, started)
    update = await control(state, RUNTIME)  # type: ignore[arg-type]
    tasks = update["plan"]
    assert_within(rem, tasks)
    assert sum(t["k"] for t in tasks) <= max(0, min(rem.generations, n - policy_generations(usage)))


@PROPERTY
@given(st.integers(1, 8), st.integers(1, 4), budgets, spent, st.one_of(st.none(), st.integers(1, 600)))
async def test_revisions_never_plan_past_a_limit(
    chains: int, length: int, budget: Budget | None, usage: dict[str, Any], max_tokens: int | None
) -> None:
    control = make_revision_controller(ChainPlan(chains, length), SamplingDefaults(0.7, max_tokens, None, budget))
    started = time.time()
    state: Any = {"question": "q", "usage": usage, "round": 1, "candidates": [], "started_at": started}
    rem = remaining(budget, usage, started)
    update = await control(state, RUNTIME)  # type: ignore[arg-type]
    assert_within(rem, update["plan"])
    assert len(update["plan"]) <= max(0, rem.generations)


@PROPERTY
@given(st.sampled_from([(4, 2), (8, 2), (16, 4), (9, 3)]), st.integers(0, 2), budgets, spent, st.integers(1, 300))
async def test_search_never_plans_past_a_limit(
    shape: tuple[int, int], lookahead: int, budget: Budget | None, usage: dict[str, Any], step_tokens: int
) -> None:
    n, width = shape
    plan = SearchPlan(n, width, 1, n // width, lookahead, 40)
    control = make_search_controller(plan, SamplingDefaults(0.8, step_tokens, None, budget), "\n\n")
    started = time.time()
    state: Any = {"question": "q", "usage": usage, "round": 0, "candidates": [], "frontier": [], "started_at": started}
    rem = remaining(budget, usage, started)
    try:
        update = await control(state, RUNTIME)  # type: ignore[arg-type]
    except Exception as exc:  # a search the budget cannot pay for is refused before any request
        assert type(exc).__name__ == "BudgetError" and budget is not None and budget.generations is not None
        assert budget.generations < plan.generations
        return
    tasks = update["plan"]
    if tasks and not math.isinf(rem.tokens):  # rollouts included: every sample of the round within its share
        assert sum(t["k"] * t["max_tokens"] for t in tasks) * (lookahead + 1) <= rem.tokens
    assert_within(rem, tasks)
