"""A safe arithmetic calculator for agents: numbers, ``+ - * / **`` and parentheses, parsed with :mod:`ast`.

Nothing is ever ``eval``-ed: the expression is parsed into a syntax tree and only number literals, the four
operations, powers and unary signs are evaluated, exactly, with :class:`fractions.Fraction` (``0.1 + 0.2`` is
``0.3``). A power with a fractional exponent is computed in floating point. Results are bounded in size, so an
expression such as ``9**9**9`` is refused rather than computed.
"""

from __future__ import annotations

import ast
import math
from fractions import Fraction

from langchain_core.tools import tool

from ttc_graph.errors import TTCError

__all__ = ["MAX_BITS", "MAX_LENGTH", "CalculatorError", "calculate", "calculator", "evaluate", "format_number"]

MAX_LENGTH = 500
"""The longest expression accepted, in characters."""
MAX_BITS = 4096
"""The largest numerator or denominator a result may have, in bits (about 1233 decimal digits)."""

Number = Fraction | float


class CalculatorError(TTCError, ValueError):
    """An expression that is not plain arithmetic, or whose value is undefined or too large."""


def _check_size(value: Number, expression: str) -> Number:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalculatorError(f"{expression!r}: the result is not a finite number")
        return value
    if max(abs(value.numerator).bit_length(), value.denominator.bit_length()) > MAX_BITS:
        raise CalculatorError(f"{expression!r}: the result is too large (over {MAX_BITS} bits)")
    return value


def _literal(node: ast.Constant, expression: str) -> Number:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalculatorError(f"{expression!r}: only numbers are allowed, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError(f"{expression!r}: the number {value!r} is not finite")
    return Fraction(value) if isinstance(value, int) else Fraction(repr(value))


def _power(base: Number, exponent: Number, expression: str) -> Number:
    if isinstance(exponent, Fraction) and exponent.denominator == 1 and isinstance(base, Fraction):
        e = abs(exponent.numerator)
        bits = max(abs(base.numerator).bit_length(), base.denominator.bit_length())
        if bits > 1 and (bits - 1) * e > MAX_BITS:
            raise CalculatorError(f"{expression!r}: the result is too large (over {MAX_BITS} bits)")
        if base == 0 and exponent < 0:
            raise CalculatorError(f"{expression!r}: zero to a negative power is undefined")
        return base**exponent.numerator
    try:
        result = float(base) ** float(exponent)
    except OverflowError as exc:
        raise CalculatorError(f"{expression!r}: the result is too large") from exc
    except ZeroDivisionError as exc:
        raise CalculatorError(f"{expression!r}: zero to a negative power is undefined") from exc
    if isinstance(result, complex):
        raise CalculatorError(f"{expression!r}: a negative number to a fractional power is not a real number")
    return result


def _binary(op: ast.operator, left: Number, right: Number, expression: str) -> Number:
    if isinstance(op, ast.Pow):
        return _power(left, right, expression)
    if isinstance(op, ast.Div) and right == 0:
        raise CalculatorError(f"{expression!r}: division by zero")
    try:
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div):
            return left / right
    except OverflowError as exc:
        raise CalculatorError(f"{expression!r}: the result is too large") from exc
    raise CalculatorError(f"{expression!r}: the operator {type(op).__name__} is not allowed (use + - * / **)")


def _eval(node: ast.AST, expression: str) -> Number:
    if isinstance(node, ast.Constant):
        return _literal(node, expression)
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.UAdd | ast.USub):
            raise CalculatorError(
                f"{expression!r}: the operator {type(node.op).__name__} is not allowed (use + - * / **)"
            )
        value = _eval(node.operand, expression)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left = _eval(node.left, expression)
        right = _eval(node.right, expression)
        return _check_size(_binary(node.op, left, right, expression), expression)
    raise CalculatorError(f"{expression!r}: {type(node).__name__} is not allowed; use numbers, + - * / ** and ()")


def evaluate(expression: str) -> Number:
    """The exact value of an arithmetic expression (a ``Fraction``, or a ``float`` after a fractional power).

    Raises :class:`CalculatorError` for anything but numbers, ``+ - * / **``, unary signs and parentheses, for a
    division by zero, a non-real or non-finite result, and for results or expressions too large.
    """
    if not isinstance(expression, str):
        raise CalculatorError(f"expected an expression string, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_LENGTH:
        raise CalculatorError(f"the expression is {len(text)} characters long; at most {MAX_LENGTH} are allowed")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise CalculatorError(f"{text!r}: not an arithmetic expression ({type(exc).__name__})") from exc
    try:
        return _check_size(_eval(tree.body, text), text)
    except RecursionError as exc:
        raise CalculatorError(f"{text!r}: the expression is nested too deeply") from exc


def format_number(value: Number) -> str:
    """A number as a model reads it: ``12``, ``3.5``, ``-0.125``; a non-terminating fraction as a float (``1/3`` →
    ``0.3333333333333333``)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:  # a terminating decimal: exact digits
        digits = 0
        while (value * 10**digits).denominator != 1:
            digits += 1
        scaled = abs(value.numerator * 10**digits // value.denominator)
        whole, frac = divmod(scaled, 10**digits)
        return f"{'-' if value < 0 else ''}{whole}.{frac:0{digits}d}"
    return repr(float(value))


def calculate(expression: str) -> str:
    """:func:`evaluate`, formatted by :func:`format_number`."""
    return format_number(evaluate(expression))


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression with numbers, + - * / ** and parentheses, e.g. "(3 + 4) * 2"."""
    try:
        return calculate(expression)
    except CalculatorError as exc:
        return f"Error: {exc}"
