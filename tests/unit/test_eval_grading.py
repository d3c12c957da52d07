"""Grading: GSM8K by exact number, MATH by answer equivalence."""

from __future__ import annotations

from fractions import Fraction

import pytest

from ttc_graph.eval import grade, numeric_value


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
