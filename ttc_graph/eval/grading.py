"""Grading a predicted final answer against a data set's reference."""

from __future__ import annotations

from fractions import Fraction

from ttc_graph.answers import answer_key, answers_equal

__all__ = ["grade", "numeric_value"]


def numeric_value(answer: str | None) -> Fraction | None:
    """The exact number an answer states (``"$1,000.00"``, ``"18 eggs"``, ``"\\frac{36}{2}"``), else None."""
    key = answer_key(answer)
    if not key:
        return None
    try:
        return Fraction(key)
    except (ValueError, ZeroDivisionError):
        return None


def grade(dataset: str, predicted: str | None, reference: str) -> bool:
    """Whether ``predicted`` is correct: exact numeric match for ``gsm8k``, else :func:`answers_equal`
    (normalisation, then symbolic comparison with math-verify) for ``math500`` and ``jsonl``."""
    if predicted is None:
        return False
    if dataset == "gsm8k":
        want = numeric_value(reference)
        got = numeric_value(predicted)
        if want is None:  # a reference that is not a number: fall back to equivalence
            return answers_equal(predicted, reference)
        return got is not None and got == want
    return answers_equal(predicted, reference)
