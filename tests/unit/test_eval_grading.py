"""Grading: GSM8K by exact number (strict-match, then flexible-extract), MATH by answer equivalence."""

from __future__ import annotations

from fractions import Fraction

import pytest

from ttc_graph.eval import grade, numeric_value
from ttc_graph.eval.grading import grade_solution


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        ("18", True),
        ("18.0", True),
        ("$18", True),
        ("\\$18.00", True),
        ("18 dollars", True),
        ("\\frac{36}{2}", True),
        ("x = 18", True),
        ("18.5", False),
        ("19", False),
        ("eighteen", False),
        ("", False),
        (None, False),
    ],
)
def test_gsm8k_numeric_match(predicted: str | None, expected: bool) -> None:
    assert grade("gsm8k", predicted, "18") is expected


def test_gsm8k_thousands_and_negatives() -> None:
    assert grade("gsm8k", "1,000", "1000")
    assert grade("gsm8k", "-3", "-3")
    assert not grade("gsm8k", "3", "-3")


def test_math_uses_equivalence() -> None:
    assert grade("math500", "\\frac{1}{2}", "0.5")
    assert grade("math500", "\\dfrac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}")
    assert grade("math500", "(3, -1)", "(3,-1)")
    assert not grade("math500", "\\frac{1}{3}", "0.5")
    assert not grade("math500", None, "0.5")
    assert grade("jsonl", "x^2+1", "1+x^2")


def test_numeric_value() -> None:
    assert numeric_value("$1,234.50") == Fraction(2469, 2)
    assert numeric_value("\\frac{3}{4}") == Fraction(3, 4)
    assert numeric_value("x^2") is None
    assert numeric_value(None) is None


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        ("she makes 18 every day", True),  # flexible-extract: the last number of a prediction that is prose
        ("$18 per day", True),
        ("-$18", False),
        ("17 or 18", True),  # the last number counts, as in lm-evaluation-harness
        ("18 or 17", False),
        ("x^2", False),  # an exponent is not a value
    ],
)
def test_gsm8k_flexible_extract_of_a_prediction(predicted: str, expected: bool) -> None:
    assert grade("gsm8k", predicted, "18") is expected


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ("9 * 2 = 18\n#### 18", True),  # strict-match: the marker
        ("The answer is 18. Check: 18 / 2 = 9.", True),  # a marker wins over the last number
        ("She sells 9 eggs, so she makes $18 every day.", True),  # flexible-extract: the last number
        ("A: 1,018", False),
        ("Total: 1,000 + 18 = 1,018 dollars.", False),
        ("I cannot tell.", False),
    ],
)
def test_grade_solution_gsm8k(solution: str, expected: bool) -> None:
    assert grade_solution("gsm8k", solution, "18") is expected


def test_grade_solution_math_needs_an_equivalent_answer() -> None:
    assert grade_solution("math500", "So $x = \\boxed{\\frac{1}{2}}$.", "0.5")
    assert grade_solution("math500", "The answer is $\\dfrac{\\sqrt3}{2}$.", "\\frac{\\sqrt{3}}{2}")
    assert not grade_solution("math500", "The area is 2 and the answer is \\boxed{3}.", "2")
    assert not grade("math500", "the area is 1/2", "\\frac{1}{2}")  # no last-number guess outside GSM8K
