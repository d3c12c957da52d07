"""ArithmeticVerifier (claims, safe evaluation, step scores), CombinedVerifier, and their spec kinds (no network)."""

from __future__ import annotations

import builtins
import inspect
import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttc_graph import create_beam_search, create_best_of_n
from ttc_graph.endpoints.base import RequestUsage
from ttc_graph.errors import ConfigurationError, VerifierError
from ttc_graph.specs import SpecError, parse_spec, spec_json_schema
from ttc_graph.specs.build import build_verifier
from ttc_graph.specs.models import ArithmeticVerifierSpec, CombinedVerifierSpec
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.verifiers import (
    ArithmeticVerifier,
    CombinedVerifier,
    ConfidenceVerifier,
    FunctionVerifier,
    Score,
    VerificationResult,
    Verifier,
    VerifyItem,
    arithmetic,
)
from ttc_graph.verifiers.arithmetic import evaluate, find_claims
from ttc_graph.verifiers.combined import combine_scores

Q = "Janet has 16 eggs."


def verdicts(text: str) -> list[bool]:
    return [c.holds for c in find_claims(text)]


async def verify_one(verifier: Verifier, *steps: str, logprobs: tuple[float, ...] | None = None) -> Score:
    result = await verifier.verify([VerifyItem(Q, tuple(steps), logprobs)])
    assert len(result.scores) == 1
    return result.scores[0]


# -- 1. claims: the same step written right and wrong --------------------------------------------------------

# (right, wrong): the right step's claims all hold, the wrong step has a claim that fails.
PAIRS = {
    "plain division": ("48 / 2 = 24", "48 / 2 = 26"),
    "latex frac and times": (r"\frac{3}{4} \times 12 = 9", r"\frac{3}{4} \times 12 = 8"),
    "nested dfrac": (r"\dfrac{\frac{1}{2}}{4} = 0.125", r"\dfrac{\frac{1}{2}}{4} = 0.25"),
    "currency and thousands": ("$1,200 - 300 = $900", "$1,200 - 300 = $1,000"),
    "escaped dollars": (r"\$51.50 + \$67.50 = \$119.00", r"\$51.50 + \$67.50 = \$120.00"),
    "unit after the result": ("5 * 3 = 15 apples", "5 * 3 = 16 apples"),
    "latex units": (
        r"\[ 3 \text{ eggs} \times 16 \text{ eggs/day} = 48 \text{ eggs} \]",
        r"\[ 3 \text{ eggs} \times 16 \text{ eggs/day} = 46 \text{ eggs} \]",
    ),
    "price per unit": (
        r"39 \text{ eggs} \times \$2/\text{egg} = \$78",
        r"39 \text{ eggs} \times \$2/\text{egg} = \$87",
    ),
    "percent of": ("20% of 50 = 10", "20% of 50 = 12"),
    "latex percent of": (r"25\% \text{ of } 4 = 1", r"25\% \text{ of } 4 = 2"),
    "percent as points": (r"\frac{12}{20} \times 100 = 60\%", r"\frac{12}{20} \times 100 = 70\%"),
    "percent times": ("80 * 25% = 20", "80 * 25% = 25"),
    "cdot": (r"2 \cdot 3 = 6", r"2 \cdot 3 = 5"),
    "unicode times": ("6 × 7 = 42", "6 × 7 = 48"),
    "unicode division": ("84 ÷ 2 = 42", "84 ÷ 2 = 44"),
    "letter x": ("5 x 3 = 15", "5 x 3 = 53"),
    "letter x without spaces": ("5x3 = 15", "5x3 = 16"),
    "word operators": ("12 divided by 4 = 3", "3 times 4 = 7"),
    "left right parentheses": (r"\left( 2 + 3 \right) \times 4 = 20", r"\left( 2 + 3 \right) \times 4 = 14"),
    "latex thousands": (r"1{,}200 + 300 = 1{,}500", r"1\,200 / 4 = 400"),
    "powers": ("2^{10} = 1024", "3 ** 2 = 6"),
    "negative result": ("7 - 10 = -3", "7 - 10 = 3"),
    "boxed result": (r"5 + 5 = \boxed{10}", r"5 + 5 = \boxed{11}"),
    "approx rounds": (r"\frac{20}{8.50} \approx 2.35", r"\frac{20}{8.50} \approx 2.57"),
    "implicit product": ("2(3 + 4) = 14", "2(3 + 4) = 10"),
    "sqrt": (r"\sqrt{16} + 1 = 5", r"\sqrt{16} + 1 = 17"),
    "in a sentence": (
        "She pays $19.50 * (1 - 0.25) = $14.625, so about $14.63.",
        "Kyle paid $19.50 * (1 - 0.25) = $16.25.",
    ),
}


@pytest.mark.parametrize(("right", "wrong"), PAIRS.values(), ids=PAIRS.keys())
def test_a_right_step_holds_and_its_wrong_twin_fails(right: str, wrong: str) -> None:
    good, bad = verdicts(right), verdicts(wrong)
    assert good and all(good), find_claims(right)
    assert bad and not all(bad), find_claims(wrong)


def test_a_chain_gives_one_claim_per_adjacent_pair() -> None:
    assert verdicts("2 * (3 + 4) = 2 * 7 = 14") == [True, True]
    assert verdicts("2 * (3 + 4) = 2 * 7 = 15") == [True, False]
    assert verdicts("3 + 4 = 7 = 8") == [True, False]
    assert verdicts(r"\(\frac{20}{3} - 1 = \frac{20}{3} - \frac{3}{3} = \frac{17}{3}\) liters") == [True, True]
    claims = find_claims("$12 + $8 = $20 = $25")
    assert [(c.left, c.right) for c in claims] == [("12 + 8", "20"), ("20", "25")]
    assert [(c.left_value, c.right_value) for c in claims] == [(20.0, 20.0), (20.0, 25.0)]


def test_separate_statements_in_one_step_are_separate_claims() -> None:
    assert verdicts("First 3 + 4 = 7, then 7 * 2 = 14 and finally 14 - 4 = 9.") == [True, True, False]
    assert verdicts("1. 3 + 4 = 7\n2. 7 * 2 = 15") == [True, False]


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ("1 / 3 = 0.33", True),  # rounded to the digits written
        ("2 / 3 = 0.67", True),
        ("2 / 3 = 0.66", False),  # truncated, not rounded
        ("10 / 4 = 2.5", True),
        ("100 / 3 = 33.3", True),
        ("7 / 2 = 3", False),  # a whole number allows no tie: floor division is an error
        ("10 / 4 = 2", False),
        ("1000 / 3 = 333", True),  # unambiguous rounding to a whole number
        ("0.1 + 0.2 = 0.3", True),  # float noise
        ("1,234,567 * 3 = 3,703,701", True),
        ("1,234,567 * 3 = 3,703,700", False),  # large results must be exact
        ("13.00 / 8.50 = 1.628571", False),
    ],
)
def test_tolerance_is_the_precision_written(text: str, holds: bool) -> None:
    assert verdicts(text) == [holds]


def test_rel_tol_widens_the_tolerance() -> None:
    assert verdicts("1,000 + 5 = 1,004") == [False]
    assert [c.holds for c in find_claims("1,000 + 5 = 1,004", rel_tol=1e-2)] == [True]


@pytest.mark.parametrize(
    "text",
    [
        "2x + 4 = 5",  # algebra: the variable cuts the left side
        "T = 21 - 9T",
        "15x = 3740",
        "time4 = 4  # hours",  # code
        "walking_speed = running_speed / 2",
        "delivery_fee = 0.25 * initial_bill",
        "1 hour = 60 minutes",  # a conversion, not arithmetic
        "1 dozen = 12 eggs",
        "half of 180 = 90",  # the left operand is a word
        r"\text{Allen's age 10 years from now} = 99",
        r"\text{Total} = \text{A} \times 40 + \text{B} \times 60",
        "x = 5",
        "The answer is 42.",
        "",
        "R = 31 - 23",  # no right side
        r"\frac{15}{2} + 2 = \frac{19}{",  # cut off mid-formula
    ],
)
def test_text_without_checkable_arithmetic_has_no_claims(text: str) -> None:
    assert find_claims(text) == []


def test_a_conversion_is_skipped_but_the_arithmetic_after_it_is_checked() -> None:
    assert [(c.left, c.right, c.holds) for c in find_claims("2 hours = 2 * 60 = 120 minutes")] == [
        ("2 * 60", "120", True)
    ]


# -- 2. the safe evaluator -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("2 ^ 3 ^ 2", 512.0),  # right-associative
        ("-2^2", -4.0),
        ("--3", 3.0),
        ("50%", 0.5),
        ("(10 + 10)%", 0.2),
        (r"\frac{1}{4} + \$2", 2.25),
        ("12 apples / 4", 3.0),
        ("1,000,000 / 1,000", 1000.0),
        (".5 * 4", 2.0),
    ],
)
def test_evaluate_reads_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    "expression",
    [
        "10 / 0",
        "0 ^ -1",
        "2 ^ 1000",  # exponent bound
        "9" * 400,  # magnitude bound
        "10^18 * 10^18",
        "(-8) ^ 0.5",
        "(" * 200 + "1" + ")" * 200,  # depth bound
        "-" * 500 + "1",
        "__import__('os').system('echo hacked')",
        "().__class__.__bases__[0].__subclasses__()",
        "lambda: 1",
        "1 +",
        "(1 + 2",
        "",
    ],
)
def test_evaluate_refuses_what_is_not_bounded_arithmetic(expression: str) -> None:
    assert evaluate(expression) is None


def test_model_text_never_reaches_eval_or_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/exec called on model text")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    assert verdicts("__import__('os').system('x') + 1 = 2; 2 + 2 = 4") == [True]
    assert evaluate("3 * (2 + 1)") == 9.0
    assert "eval(" not in inspect.getsource(arithmetic) and "exec(" not in inspect.getsource(arithmetic)


MATHY = st.lists(
    st.sampled_from(
        [
            *"0123456789+-*/^()=.,%$ xX×÷·≈−\n{}\\_",
            *(r"\frac", r"\dfrac", r"\sqrt", r"\text{", r"\times", r"\cdot", r"\div", r"\left(", r"\right)", r"\$"),
            *(r"\%", r"\[", r"\]", r"\boxed{", "of ", " apples ", "divided by ", "{,}", r"\,", "**", "e", "T"),
        ]
    ),
    max_size=60,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), MATHY))
def test_reading_any_text_never_raises(text: str) -> None:
    # the unguarded reader: find_claims adds a catch-all on top, so this is where a bug would show
    claims = arithmetic._find_claims(text, 1e-9)
    for c in claims:
        assert isinstance(c.holds, bool)
        assert math.isfinite(c.left_value) and math.isfinite(c.right_value)
        assert abs(c.left_value) <= 1e18 and abs(c.right_value) <= 1e18
    value = evaluate(text)
    assert value is None or math.isfinite(value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=80), MATHY), max_size=5))
def test_the_verifier_scores_any_steps_in_the_unit_interval(steps: list[str]) -> None:
    verifier = ArithmeticVerifier()
    score = verifier.score(steps)
    if any(s.strip() for s in steps):
        assert score.value is not None and score.step_scores is not None
        assert len(score.step_scores) == len(steps)
        assert all(0.0 <= v <= 1.0 for v in score.step_scores)
        assert score.value == score.step_scores[-1]
    else:
        assert score.value is None and score.error


# -- 3. the verifier ---------------------------------------------------------------------------------------


async def test_step_scores_are_the_running_smoothed_share_of_claims_that_hold() -> None:
    steps = ("Let us add the eggs.", "2 + 2 = 4", "3 * 3 = 10", "So the answer is 4.", "4 + 4 = 8 and 8 - 1 = 7")
    score = await verify_one(ArithmeticVerifier(), *steps)
    # (held + 1 * 0.5) / (claims + 1): no claim yet -> 0.5; a step without claims keeps the running score
    assert score.step_scores == pytest.approx((0.5, 0.75, 0.5, 0.5, 3.5 / 5))
    assert score.value == pytest.approx(3.5 / 5)  # last: the share over the whole solution
    assert (await verify_one(ArithmeticVerifier(aggregation="min"), *steps)).value == pytest.approx(0.5)
    bare = await verify_one(ArithmeticVerifier(prior=1.0, prior_weight=0.0), *steps)
    assert bare.step_scores == pytest.approx((1.0, 1.0, 0.5, 0.5, 0.75))


async def test_a_solution_without_claims_scores_the_prior() -> None:
    score = await verify_one(ArithmeticVerifier(prior=0.7), "We think.", "The answer is 4.")
    assert score.step_scores == (0.7, 0.7) and score.value == 0.7


async def test_right_arithmetic_outscores_wrong_arithmetic() -> None:
    verifier = ArithmeticVerifier()
    right = await verify_one(verifier, r"\frac{48}{2} = 24", r"24 \times \$3 = \$72", r"\boxed{72}")
    wrong = await verify_one(verifier, r"\frac{48}{2} = 24", r"24 \times \$3 = \$62", r"\boxed{62}")
    assert right.value is not None and wrong.value is not None and right.value > 0.5 >= wrong.value


async def test_the_verifier_is_a_free_process_verifier() -> None:
    verifier = ArithmeticVerifier()
    assert verifier.granularity == "process"
    assert getattr(verifier, "needs_logprobs", False) is False
    result = await verifier.verify([VerifyItem(Q, ("1 + 1 = 2",)), VerifyItem(Q, ("1 + 1 = 3",))])
    assert result.usage == RequestUsage()
    assert [s.value for s in result.scores] == [0.75, 0.25]
    assert (await verifier.verify([])).scores == []


async def test_an_empty_solution_is_unscored() -> None:
    score = await verify_one(ArithmeticVerifier(), " ", "")
    assert score.value is None and score.error and "empty" in score.error


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"prior": 1.5}, "prior"),
        ({"prior": True}, "prior"),
        ({"prior": math.nan}, "prior"),
        ({"prior_weight": -1}, "prior_weight"),
        ({"rel_tol": 1.0}, "rel_tol"),
        ({"rel_tol": -0.1}, "rel_tol"),
        ({"aggregation": "max"}, "aggregation"),
    ],
)
def test_bad_arithmetic_settings_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^{problem}:"):
        ArithmeticVerifier(**kwargs)


async def test_best_of_n_picks_the_solution_whose_arithmetic_holds() -> None:
    script = ["24 * 3 = 62\n\nThe answer is \\boxed{62}.", "24 * 3 = 72\n\nThe answer is \\boxed{72}."]
    for verifier in (
        ArithmeticVerifier(),
        CombinedVerifier([ArithmeticVerifier(), FunctionVerifier(lambda q, s: 0.9)]),
    ):
        graph = create_best_of_n(ScriptedEndpoint(script), verifier, n=2, selection="naive")
        out = await graph.compile().ainvoke({"question": Q})
        assert out["answer"] == "72"
        assert out["usage"].get("verify", {}).get("requests", 0) == 0


async def test_beam_search_keeps_the_beam_whose_arithmetic_holds() -> None:
    def respond(call: FakeCall, index: int) -> str:
        if not call.prefix:  # the wrong first step comes first, so a tie or no verifier would keep it
            return "2 + 2 = 5" if index % 2 == 0 else "2 + 2 = 4"
        return "So \\boxed{5}." if "= 5" in call.prefix else "So \\boxed{4}."

    policy = ScriptedEndpoint(respond)
    for verifier in (ArithmeticVerifier(), CombinedVerifier([ArithmeticVerifier(), ArithmeticVerifier()])):
        out = (
            await create_beam_search(policy, verifier, n=2, beam_width=2, max_steps=3)
            .compile()
            .ainvoke({"question": Q})
        )
        assert out["answer"] == "4"


# -- 4. combinations -------------------------------------------------------------------------------------------


class FixedProcess(Verifier):
    """A process verifier with fixed step scores per solution text, and a fixed cost per batch."""

    granularity = "process"

    def __init__(self, table: dict[str, tuple[float, ...] | None], requests: int = 0) -> None:
        self.table = table
        self.requests = requests

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        scores = []
        for item in items:
            steps = self.table[item.text]
            scores.append(Score(steps[-1], steps) if steps else Score(None, error="no reward"))
        return VerificationResult(scores, RequestUsage(requests=self.requests, prompt_tokens=10 * self.requests))


def const(value: float) -> FunctionVerifier:
    return FunctionVerifier(lambda q, s: value, name=f"const{value}")


def test_combine_scores() -> None:
    assert combine_scores([0.5, 0.8], [1, 1]) == pytest.approx(0.4)
    assert combine_scores([0.5, 0.8], [1, 3], "geometric") == pytest.approx((0.5 * 0.8**3) ** 0.25)
    assert combine_scores([0.5, 0.8], [2, 0]) == pytest.approx(0.25)
    assert combine_scores([0.0, 0.8], [0, 1]) == pytest.approx(0.8)  # a weight-0 part is ignored, even at 0
    assert combine_scores([0.0, 0.8], [1, 1], "geometric") == 0.0
    assert combine_scores([1.0, 1.0], [0.5, 0.5], "geometric") == 1.0


async def test_outcome_parts_combine_solution_scores() -> None:
    product = CombinedVerifier([const(0.5), const(0.8)])
    geometric = CombinedVerifier([const(0.5), const(0.8)], [1, 3], "geometric")
    assert product.granularity == "outcome" and geometric.granularity == "outcome"
    score = await verify_one(product, "x")
    assert score.value == pytest.approx(0.4) and score.step_scores is None
    assert (await verify_one(geometric, "x")).value == pytest.approx((0.5 * 0.8**3) ** 0.25)


async def test_process_parts_combine_step_by_step() -> None:
    a = FixedProcess({"s1\n\ns2\n\ns3": (0.9, 0.5, 0.8)}, requests=2)
    b = FixedProcess({"s1\n\ns2\n\ns3": (0.5, 1.0, 0.25)}, requests=3)
    combined = CombinedVerifier([a, b])
    assert combined.granularity == "process"
    result = await combined.verify([VerifyItem(Q, ("s1", "s2", "s3"))])
    score = result.scores[0]
    assert score.step_scores == pytest.approx((0.45, 0.5, 0.2))
    assert score.value == pytest.approx(0.2)  # aggregated by "last"
    assert result.usage.requests == 5 and result.usage.prompt_tokens == 50  # the parts' usage, summed
    by_min = await CombinedVerifier([a, b], aggregation="min").verify([VerifyItem(Q, ("s1", "s2", "s3"))])
    assert by_min.scores[0].value == pytest.approx(0.2) and by_min.scores[0].step_scores == score.step_scores
    mean = await CombinedVerifier([a, b], [1, 1], "geometric", aggregation="mean").verify(
        [VerifyItem(Q, ("s1", "s2", "s3"))]
    )
    expected = [math.sqrt(0.45), math.sqrt(0.5), math.sqrt(0.2)]
    assert mean.scores[0].step_scores == pytest.approx(expected)
    assert mean.scores[0].value == pytest.approx(sum(expected) / 3)


async def test_process_parts_disagreeing_on_steps_fall_back_to_solution_scores() -> None:
    a = FixedProcess({"s1\n\ns2": (0.9, 0.5)})
    b = FixedProcess({"s1\n\ns2": (0.5,)})
    score = await verify_one(CombinedVerifier([a, b]), "s1", "s2")
    assert score.value == pytest.approx(0.25) and score.step_scores is None


async def test_confidence_times_arithmetic_is_an_outcome_verifier_that_needs_logprobs() -> None:
    combined = CombinedVerifier([ConfidenceVerifier(), ArithmeticVerifier()])
    assert combined.granularity == "outcome"
    assert combined.needs_logprobs is True
    assert CombinedVerifier([ArithmeticVerifier()]).needs_logprobs is False
    score = await verify_one(combined, "2 + 2 = 4", logprobs=(math.log(0.8), math.log(0.8)))
    assert score.value == pytest.approx(0.8 * 0.75) and score.step_scores is None
    assert "ConfidenceVerifier" in combined.name and "ArithmeticVerifier" in combined.name


async def test_an_unscored_part_leaves_the_solution_unscored_naming_the_part() -> None:
    combined = CombinedVerifier([ArithmeticVerifier(), ConfidenceVerifier()])
    score = await verify_one(combined, "2 + 2 = 4")  # no logprobs: confidence cannot score
    assert score.value is None
    assert score.error is not None and score.error.startswith("parts[1] (ConfidenceVerifier[mean]): ")
    process = CombinedVerifier([FixedProcess({"s": None}), ArithmeticVerifier()])
    assert (await verify_one(process, "s")).error == "parts[0] (FixedProcess): no reward"


async def test_a_part_returning_the_wrong_number_of_scores_fails_the_batch() -> None:
    class Short(Verifier):
        async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
            return VerificationResult([])

    with pytest.raises(VerifierError, match=r"parts\[1\] \(Short\): returned 0 scores for 1 items"):
        await verify_one(CombinedVerifier([ArithmeticVerifier(), Short()]), "1 + 1 = 2")


def test_callables_are_accepted_as_parts() -> None:
    combined = CombinedVerifier([lambda q, s: 0.5, ArithmeticVerifier()])
    assert isinstance(combined.parts[0], FunctionVerifier) and combined.granularity == "outcome"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([],), {}, r"^parts: .*non-empty"),
        ((ArithmeticVerifier(),), {}, r"^parts: .*list"),
        (([ArithmeticVerifier(), 42],), {}, r"^parts\[1\]: expected a Verifier or a callable, got int"),
        (([ArithmeticVerifier(), None],), {}, r"^parts\[1\]: expected a Verifier or a callable, got None"),
        (([ArithmeticVerifier()], [1, 2]), {}, r"^weights: 2 weights for 1 parts"),
        (([ArithmeticVerifier(), ArithmeticVerifier()], [1, -1]), {}, r"^weights\[1\]: must be a finite number >= 0"),
        (([ArithmeticVerifier()], [math.inf]), {}, r"^weights\[0\]"),
        (([ArithmeticVerifier()], [True]), {}, r"^weights\[0\]"),
        (([ArithmeticVerifier()], "1"), {}, r"^weights: expected a list"),
        (([ArithmeticVerifier(), ArithmeticVerifier()], [0, 0]), {}, r"^weights: at least one"),
        (([ArithmeticVerifier()], None, "sum"), {}, r"^how: unknown 'sum'"),
        (([ArithmeticVerifier()],), {"aggregation": "max"}, r"^aggregation: unknown 'max'"),
        (([ArithmeticVerifier()],), {"granularity": "step"}, r"^granularity: unknown 'step'"),
        (
            ([ArithmeticVerifier(), ConfidenceVerifier()],),
            {"granularity": "process"},
            r"^parts\[1\] \(ConfidenceVerifier\): an outcome verifier cannot be part of a step-wise",
        ),
        (
            ([lambda q, s: 1.0],),
            {"granularity": "process"},
            r"^parts\[0\] \(FunctionVerifier\): an outcome verifier",
        ),
    ],
)
def test_bad_combinations_are_refused(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CombinedVerifier(*args, **kwargs)


def test_an_explicit_granularity_is_kept() -> None:
    assert CombinedVerifier([ArithmeticVerifier()], granularity="process").granularity == "process"
    assert CombinedVerifier([ArithmeticVerifier()], granularity="outcome").granularity == "outcome"
    assert CombinedVerifier([ArithmeticVerifier()]).granularity == "process"
    assert CombinedVerifier.granularity == "outcome"  # the class default is untouched by instances


# -- 5. spec kinds -------------------------------------------------------------------------------------------


def search_spec(verifier: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "beam_search", "n": 4, "verifier": verifier}


def test_arithmetic_and_combined_specs_build_their_verifiers() -> None:
    spec = parse_spec(
        search_spec(
            {
                "kind": "combined",
                "parts": [
                    {"kind": "arithmetic", "prior": 0.6, "aggregation": "min"},
                    {"kind": "combined", "parts": [{"kind": "confidence", "method": "group", "window": 4}]},
                ],
                "weights": [2, 1],
                "how": "geometric",
            }
        )
    )
    verifier = build_verifier(spec.verifier, ScriptedEndpoint(["x"]))  # type: ignore[union-attr]
    assert isinstance(verifier, CombinedVerifier)
    assert verifier.weights == (2.0, 1.0) and verifier.how == "geometric" and verifier.granularity == "outcome"
    arith, inner = verifier.parts
    assert isinstance(arith, ArithmeticVerifier) and arith.prior == 0.6 and arith.aggregation == "min"
    assert isinstance(inner, CombinedVerifier) and isinstance(inner.parts[0], ConfidenceVerifier)
    assert inner.parts[0].method == "group" and inner.parts[0].window == 4
    assert verifier.needs_logprobs is True


def test_a_process_combined_spec_builds_a_process_verifier() -> None:
    spec = parse_spec(search_spec({"kind": "combined", "parts": [{"kind": "arithmetic"}, {"kind": "arithmetic"}]}))
    verifier = build_verifier(spec.verifier, ScriptedEndpoint(["x"]))  # type: ignore[union-attr]
    assert isinstance(verifier, CombinedVerifier) and verifier.granularity == "process"


@pytest.mark.parametrize(
    ("verifier", "path", "message"),
    [
        ({"kind": "combined", "parts": []}, "verifier.parts", "at least 1"),
        ({"kind": "combined", "parts": [{"kind": "arithmetic"}], "weights": [1, 2]}, "verifier", "2 weights for 1"),
        ({"kind": "combined", "parts": [{"kind": "arithmetic"}], "weights": [-1]}, "verifier", "weights[0]: must"),
        ({"kind": "combined", "parts": [{"kind": "arithmetic"}], "how": "sum"}, "verifier.how", "'geometric'"),
        ({"kind": "combined", "parts": [{"kind": "nope"}]}, "verifier.parts.0.kind", "'nope'"),
        ({"kind": "combined", "parts": [{"kind": "arithmetic", "prior": 2}]}, "verifier.parts.0.prior", ""),
        ({"kind": "arithmetic", "prior": 2}, "verifier.prior", ""),
        ({"kind": "arithmetic", "rel_tol": 1}, "verifier.rel_tol", ""),
        ({"kind": "arithmetic", "extra": 1}, "verifier.extra", ""),
    ],
)
def test_bad_verifier_specs_fail_with_their_path(verifier: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(search_spec(verifier))
    text = str(info.value)
    assert path in text and message in text


def test_a_step_wise_combined_spec_with_an_outcome_part_is_refused_when_built() -> None:
    spec = parse_spec(
        search_spec(
            {"kind": "combined", "parts": [{"kind": "arithmetic"}, {"kind": "confidence"}], "granularity": "process"}
        )
    )
    with pytest.raises(ConfigurationError, match=r"parts\[1\] \(ConfidenceVerifier\)"):
        build_verifier(spec.verifier, ScriptedEndpoint(["x"]))  # type: ignore[union-attr]


@pytest.mark.parametrize(("spec_cls", "factory"), [(ArithmeticVerifierSpec, ArithmeticVerifier),
                                                    (CombinedVerifierSpec, CombinedVerifier)])  # fmt: skip
def test_verifier_spec_defaults_match_the_constructor(spec_cls: type, factory: type) -> None:
    params = inspect.signature(factory).parameters
    shared = [n for n, p in params.items() if p.default is not inspect.Parameter.empty and n in spec_cls.model_fields]
    assert shared
    for name in shared:
        assert spec_cls.model_fields[name].default == params[name].default, name


def test_the_schema_describes_the_new_kinds() -> None:
    defs = spec_json_schema()["$defs"]
    assert "ArithmeticVerifierSpec" in defs and "CombinedVerifierSpec" in defs
    assert defs["CombinedVerifierSpec"]["properties"]["parts"]["minItems"] == 1
