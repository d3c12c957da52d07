"""The agents' calculator: exact arithmetic on a parsed tree, everything else refused."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttc_graph.agents.calculator import MAX_LENGTH, CalculatorError, calculate, calculator, evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2", "3"),
        ("(3 + 4) * 2", "14"),
        ("3 + 4 * 2", "11"),
        ("0.1 + 0.2", "0.3"),
        ("7 / 2", "3.5"),
        ("-7 / 8", "-0.875"),
        ("6 / 3", "2"),
        ("1 / 3", "0.3333333333333333"),
        ("(1 / 3) * 3", "1"),
        ("2 ** 10", "1024"),
        ("2 ** -2", "0.25"),
        ("2 ** 3 ** 2", "512"),
        ("-2 ** 2", "-4"),
        ("(-2) ** 2", "4"),
        ("2 ** 0.5", "1.4142135623730951"),
        ("+5 - -5", "10"),
        ("1.5e-3 * 2", "0.003"),
        ("1_000 * 3", "3000"),
    ],
)
def test_arithmetic_is_evaluated_exactly(expression: str, expected: str) -> None:
    assert calculate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "match"),
    [
        ("__import__('os').system('true')", "Call is not allowed"),
        ("x + 1", "Name is not allowed"),
        ("(1).real", "Attribute is not allowed"),
        ("[1, 2][0]", "Subscript is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("1 if 1 else 2", "IfExp is not allowed"),
        ("1 < 2", "Compare is not allowed"),
        ("'a' * 3", "only numbers are allowed"),
        ("True + 1", "only numbers are allowed"),
        ("1j * 2", "only numbers are allowed"),
        ("7 % 2", "Mod is not allowed"),
        ("7 // 2", "FloorDiv is not allowed"),
        ("1 << 3", "LShift is not allowed"),
        ("not 1", "Not is not allowed"),
        ("~1", "Invert is not allowed"),
        ("1; 2", "not an arithmetic expression"),
        ("import os", "not an arithmetic expression"),
        ("", "empty expression"),
        ("1 / 0", "division by zero"),
        ("1 / (2 - 2)", "division by zero"),
        ("0 ** -1", "zero to a negative power"),
        ("(-8) ** (1 / 3)", "not a real number"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 5000", "too large"),
        ("1e400", "not finite"),
        ("2.0 ** 5000.5", "too large"),
        ("1" + " + 1" * MAX_LENGTH, "at most"),
    ],
)
def test_anything_but_arithmetic_or_an_undefined_value_is_refused(expression: str, match: str) -> None:
    with pytest.raises(CalculatorError, match=match):
        evaluate(expression)


def test_the_tool_returns_the_value_or_the_error_to_the_model() -> None:
    assert calculator.invoke({"expression": "6 * 7"}) == "42"
    reply = calculator.invoke({"expression": "open('/etc/passwd')"})
    assert reply.startswith("Error: ") and "Call is not allowed" in reply
    assert calculator.name == "calculator" and "expression" in calculator.args


def _tree(values: st.SearchStrategy[int]) -> st.SearchStrategy[tuple[str, Fraction]]:
    """Expressions with their exact value, built alongside (the test's own reference evaluation)."""
    leaf = values.map(lambda v: (str(v) if v >= 0 else f"({v})", Fraction(v)))

    def combine(children: st.SearchStrategy[tuple[str, Fraction]]) -> st.SearchStrategy[tuple[str, Fraction]]:
        def build(a: tuple[str, Fraction], op: str, b: tuple[str, Fraction]) -> tuple[str, Fraction]:
            if op == "/" and b[1] == 0:
                op = "*"
            value = {"+": a[1] + b[1], "-": a[1] - b[1], "*": a[1] * b[1], "/": a[1] / b[1] if b[1] else 0}[op]
            return f"({a[0]} {op} {b[0]})", value

        return st.builds(build, children, st.sampled_from("+-*/"), children)

    return st.recursive(leaf, combine, max_leaves=12)


@given(_tree(st.integers(-1000, 1000)))
def test_random_expressions_evaluate_to_their_exact_value(case: tuple[str, Fraction]) -> None:
    expression, value = case
    assert evaluate(expression) == value
