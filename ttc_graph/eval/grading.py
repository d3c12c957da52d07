"""Grading a predicted final answer against a data set's reference.

GSM8K follows lm-evaluation-harness's two conventions in one chain: "strict-match" (the number after ``#### N`` /
"The answer is N") first, then "flexible-extract" (the last number of the response) when no marker is present.
:func:`grade_solution` grades a whole response that way (it extracts with
:func:`~ttc_graph.answers.extract_answer`, whose fallback chain ends in the last number); :func:`grade` grades an
answer already extracted, reading the number it states (``"$1,000.00"``, ``"18 eggs"``) or, failing that, the
last number in it. MATH-500 and other data sets use :func:`~ttc_graph.answers.answers_equal` (normalisation,
then symbolic comparison with math-verify), never a last-number guess.
"""

from __future__ import annotations

from fractions import Fraction

from ttc_graph.answers import answer_key, answers_equal, extract_answer, last_number

__all__ = ["grade", "grade_solution", "numeric_value"]


def numeric_value(answer: str | None) -> Fraction | None:
    """The exact number an answer states (``"$1,000.00"``, ``"18 eggs"``, ``"\\frac{36}{2}"``), else None."""
    key = answer_key(answer)
    if not key:
        return None
    try:
        return Fraction(key)
    except (ValueError, ZeroDivisionError):
        return None


def _gsm8k_value(predicted: str) -> Fraction | None:
    """The number a GSM8K prediction states, else the last number in it (flexible-extract)."""
    value = numeric_value(predicted)
    if value is None and (last := last_number(predicted)) is not None:
        value = numeric_value(last)
    return value


def grade(dataset: str, predicted: str | None, reference: str) -> bool:
    """Whether the extracted answer ``predicted`` is correct.

    ``gsm8k``: exact numeric match, the prediction read as the number it states or else its last number
    (``"she makes 18 every day"`` grades as 18). ``math500`` and ``jsonl``: :func:`answers_equal`.
    """
    if predicted is None:
        return False
    if dataset == "gsm8k":
        want = numeric_value(reference)
        if want is None:  # a reference that is not a number: fall back to equivalence
            return answers_equal(predicted, reference)
        got = _gsm8k_value(predicted)
        return got is not None and got == want
    return answers_equal(predicted, reference)


def grade_solution(dataset: str, solution: str, reference: str) -> bool:
    """Whether a whole response is correct: its answer by the full extraction chain, then :func:`grade`."""
    return grade(dataset, extract_answer(solution), reference)
