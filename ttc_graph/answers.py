"""Final-answer extraction, normalisation, equivalence and grouping for math answers.

Fast path: pure string / regex / :class:`fractions.Fraction` work. Only answers that are not plain numbers and
whose normalised forms differ fall back to ``math_verify`` (symbolic LaTeX comparison), called without
signal-based timeouts so it works in worker threads and inside event loops.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Any

__all__ = [
    "answer_key",
    "answers_equal",
    "extract_answer",
    "group_answers",
    "gsm8k_reference",
    "last_number",
    "normalize_answer",
    "split_steps",
]

logger = logging.getLogger(__name__)

# Answers longer than this (after normalisation) are not handed to sympy: nothing bounds its run time.
_MAX_SYMBOLIC_LEN = 400
_REL_TOL = 1e-9
_POW = r"(?:\^|\*\*)"
_HUGE_RE = re.compile(  # giant exponents, nested / chained powers, big factorials
    _POW
    + r"\s*[{(]?\s*[-+]?\d{4,}|"
    + _POW
    + r"\s*[{(][^{}()]*"
    + _POW
    + "|"
    + _POW
    + r"\s*[\w.]+\s*"
    + _POW
    + r"|!\s*!|\d{4,}\s*!"
)

# --------------------------------------------------------------------------------------------- extraction

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_TOKEN_RE = re.compile(r"[^\s$]+")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_HASH_OK_RE = re.compile(r"^(?:\\\$|\$|[-+\u2212]|\\\(|\\frac|\\dfrac|\\tfrac|\()*\s*\.?\d")
_PHRASE_RE = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*(?:\*\*)?\s*:)[ \t*:]*", re.IGNORECASE)
# a line that starts with "Answer:", "Final answer:" or "A:" (markdown bold / quote / list marks allowed)
_ANSWER_LINE_RE = re.compile(r"^[ \t>*_#-]*(?:(?i:final\s+answer|answer)|A)[ \t*_]*[:：][ \t*_]*", re.MULTILINE)
# a number as written: 1,234.5 / 18 / 3/4 (a sign is read from the text before it, see last_number)
_NUMBER_RE = re.compile(r"(?<![\w.^])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?!\d)")
_ENUMERATOR_RE = re.compile(r"[.)][ \t]+\S")
_SIGNED_MONEY_RE = re.compile(r"^([-+\u2212])\s*\\?\$\s*(?=\d)")
_CLAUSE_RE = re.compile(
    r"^([-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*[,;:!?]+\s+[A-Za-z]"
)  # "7, and that is it" -> "7"
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'’]+")
_UNITS_ONLY_RE = re.compile(
    r"^([-+\u2212]?\d[\d,]*(?:\.\d+)?)\s+([A-Za-z][A-Za-z'’]*(?:[\s/-]+[A-Za-z][A-Za-z'’]*){0,3})$"
)
_LATEX_CHARS = frozenset("\\{}^_")
_WORD_STOP = frozenset({"and", "or", "to", "i", "e", "pi", "x", "y", "n", "k", "times", "plus", "minus", "over"})


class _DropTimeoutNotice(logging.Filter):
    """Hides math_verify's one-off "Timeout is disabled" warning: we disable it on purpose (thread safety)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutNotice())


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[start] == "{"`` and the index after it; None if unclosed."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":  # skip escaped characters such as \{ and \}
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of the matching ``}`` for every closed ``{`` (escaped ``\\{`` / ``\\}`` ignored), in one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _last_boxed(text: str) -> str | None:
    """Content of the last balanced, non-empty ``\\boxed{...}`` / ``\\fbox{...}`` (also ``\\boxed 5``)."""
    pairs: dict[int, int] | None = None
    for m in reversed(list(_BOXED_RE.finditer(text))):
        j = m.end()
        if j < len(text) and text[j] == "{":
            if pairs is None:
                pairs = _brace_pairs(text)
            close = pairs.get(j)
            content = text[j + 1 : close].strip() if close is not None else ""
        elif m.group(0).endswith((" ", "\t")) and (tok := _TOKEN_RE.match(text, j)):  # "\boxed 5"
            content = tok.group(0).rstrip(".")
        else:
            continue
        if content:
            return content
    return None


def _number_word_count(s: str) -> tuple[list[re.Match[str]], int]:
    return list(_NUMBER_RE.finditer(s)), len(_WORD_RE.findall(s))


def _clean_phrase(raw: str) -> str:
    """The answer in the text after a marker: the value, without trailing prose, punctuation, currency or units."""
    s = raw.strip()
    # "The final answer is 5. I hope it is correct." -> "5"; decimals such as 3.5 survive (no space after dot)
    s = re.split(r"\.(?:\s|$)", s, maxsplit=1)[0]
    s = s.replace("**", "").strip()
    for _ in range(3):
        s = s.strip().strip("$").strip()
        s = _SIGNED_MONEY_RE.sub(r"\1", s.removeprefix("\\$")).strip()  # "-$10" -> "-10"
        if (s.startswith("\\(") and s.endswith("\\)")) or (s.startswith("\\[") and s.endswith("\\]")):
            s = s[2:-2]
        s = s.rstrip(".,;:!?").strip()
    if _LATEX_CHARS.isdisjoint(s):
        if m := _CLAUSE_RE.match(s):  # "7, and that is it" -> "7"; "1,000" is not a clause break
            s = m.group(1)
        # "18 dollars", "1,234 eggs per week" -> the number (not "2 pi", "3 and 4")
        if (m := _UNITS_ONLY_RE.match(s)) and _WORD_STOP.isdisjoint(m.group(2).lower().replace("/", " ").split()):
            return m.group(1)
        # prose around exactly one number: "She makes $18 every day" -> "18"
        numbers, words = _number_word_count(s)
        if len(numbers) == 1 and words >= 2:
            return _signed(s, numbers[0])
    return s


def _answer_like(s: str) -> bool:
    """Whether marker text reads as an answer rather than the start of an explanation ("Let's think...")."""
    return any(ch.isdigit() for ch in s) or not _LATEX_CHARS.isdisjoint(s) or len(s.split()) <= 3


def _signed(text: str, m: re.Match[str]) -> str:
    """The number a match covers, with the minus sign written right before it (not the "-" of "16-3")."""
    number = m.group(0)
    i = m.start() - 1
    while i >= 0 and text[i] == "$":
        i -= 1
    if i >= 0 and text[i] in "-\u2212" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in ")]}")):
        return "-" + number
    return number


def _is_enumerator(text: str, m: re.Match[str]) -> bool:
    """Whether a number is a list marker ("34. Calculate ...", "2) Add ..."), not a value."""
    line_start = text.rfind("\n", 0, m.start()) + 1
    return not text[line_start : m.start()].strip(" \t*#>-") and _ENUMERATOR_RE.match(text, m.end()) is not None


def last_number(text: str) -> str | None:
    """The last number in ``text`` as written (``"1,234"``, ``"-5"``, ``"3.5"``, ``"3/4"``), list markers skipped.

    The last rule of :func:`extract_answer`; exponents (``x^2``) and digits inside words (``x2``) are not numbers.
    """
    if not isinstance(text, str):
        return None
    for m in reversed(list(_NUMBER_RE.finditer(text))):
        if not _is_enumerator(text, m):
            return _signed(text, m)
    return None


def _after_marker(text: str, end: int) -> str:
    """The cleaned text after a marker ending at ``end``: the rest of its line, else the next non-empty line."""
    line_end = text.find("\n", end)
    cand = _clean_phrase(text[end : line_end if line_end >= 0 else len(text)])
    if not cand:
        rest = text[end:].lstrip("\n")
        cand = _clean_phrase(rest.split("\n", 1)[0] if rest else "")
    return cand if cand and _answer_like(cand) else ""


def _explicit_answer(text: str) -> str | None:
    if "\\boxed" in text or "\\fbox" in text:
        boxed = _last_boxed(text)
        if boxed is not None:
            return boxed
    if "####" in text:
        for m in reversed(list(_HASH_RE.finditer(text))):
            cand = m.group(1).strip()
            if _HASH_OK_RE.match(cand) and (cleaned := _clean_phrase(cand)):
                return cleaned
    for pattern in (_PHRASE_RE, _ANSWER_LINE_RE):
        for m in reversed(list(pattern.finditer(text))):
            if cand := _after_marker(text, m.end()):
                return cand
    return None


def extract_answer(text: str, *, strict: bool = False) -> str | None:
    """The final answer stated in a solution, or None. Never raises.

    The first rule that finds an answer wins:

    1. the last balanced ``\\boxed{...}`` / ``\\fbox{...}``;
    2. the last ``#### X`` whose X starts like a number (GSM8K's reference format);
    3. the last "the (final) answer is X" / "Final answer: X";
    4. the last line that starts with "Answer:", "Final answer:" or "A:";
    5. unless ``strict``: the last number of the final sentence that states one, i.e. the last number of the text
       (lm-evaluation-harness's GSM8K "flexible-extract").

    Rules 2-4 keep the value only: "7, and that is it." gives ``7``, "$1,234 dollars." gives ``1,234``,
    "she makes $18 every day" gives ``18``. ``strict=True`` accepts explicit markers only (rules 1-4); use it
    where a number is not enough, such as deciding that a search step finished its solution. Full solutions
    (proposals, majority vote, grading) use the whole chain.
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        found = _explicit_answer(text)
        if found is None and not strict:
            found = last_number(text)
        return found
    except Exception:  # never raise on user text
        logger.debug("answer extraction failed", exc_info=True)
    return None


# ---------------------------------------------------------------------------------------------- normalise

_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])\s*")
_SPACING_RE = re.compile(r"\\\\|\\[!,;:> ]|\\q?quad(?![a-zA-Z])")  # row breaks (two backslashes) are kept
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|°|\\degree(?![a-zA-Z])")
_PERCENT_RE = re.compile(r"\\?%")
_TEXT_CMD = r"\\(?:text|textbf|textit|textrm|mbox|mathrm|mathbf|rm)"
_UNIT_TEXT_RE = re.compile(_TEXT_CMD + r"\s*\{\s*[a-zA-Z][a-zA-Z\s./-]*\}\s*(?:\^\s*\{?\s*[23]\s*\}?)?\s*$")
_TEXT_UNWRAP_RE = re.compile(_TEXT_CMD + r"\s*\{([^{}]*)\}")
_PLAIN_UNIT_RE = re.compile(r"^([-+]?[\d.,/]*\d)\s+([a-zA-Z]+(?:[\s/-]+[a-zA-Z]+){0,2})\.?$")
_UNIT_STOP = frozenset({"and", "or", "to", "i", "e", "pi", "x", "y", "n", "k"})
_FRAC_SHORT_RE = re.compile(r"\\frac\s*(\d|[a-zA-Z]|\{[^{}]*\})\s*(\d|[a-zA-Z]|\{[^{}]*\})")
_SQRT_SHORT_RE = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_ASSIGN_RE = re.compile(r"^[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?\s*(?:=|\\in(?![a-zA-Z]))\s*(.+)$")
_SPACE_RE = re.compile(r"(\\[a-zA-Z]+)?\s+")
_CURRENCY_RE = re.compile(r"\\\$|\\(?:euro|pounds|yen)(?![a-zA-Z])|[€£¥₹]|\\textdollar")
_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL_RE = re.compile(r"(?<![\d.])(\d*)\.(\d+)(?![\d.])")
_PLAIN_NUM_RE = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")
_INT_RE = re.compile(r"^[-+]?\d+$")
_DEC_RE = re.compile(r"^[-+]?\d*\.\d+$")
_SLASH_RE = re.compile(r"^([-+]?)(\d*\.?\d+)/([-+]?\d*\.?\d+)$")
_NUM = r"[-+]?\d*\.?\d+"
_FRAC_RE = re.compile(r"^([-+]?)\\frac\{(" + _NUM + r")\}\{(" + _NUM + r")\}$")
_MIXED_RE = re.compile(r"^([-+]?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}$")
_CHOICE_RE = re.compile(r"^\(([A-Ea-e])\)$")


def _strip_wrappers(s: str) -> str:
    prev = None
    while prev != s:
        prev = s
        s = s.strip()
        if s.startswith("\\boxed{") and s.endswith("}"):
            got = _braced(s, 6)
            if got is not None and got[1] == len(s):
                s = got[0]
        s = s.strip("$").strip()
        for a, b in (("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(a) and s.endswith(b):
                s = s[2:-2]
        s = s.rstrip(".").rstrip()
    return s


def _collapse_spaces(s: str) -> str:
    """Drop whitespace except where it separates a LaTeX command from a following letter (``\\pi r``)."""

    def repl(m: re.Match[str]) -> str:
        cmd = m.group(1) or ""
        nxt = m.string[m.end() : m.end() + 1]
        return cmd + " " if cmd and nxt.isalpha() else cmd

    return _SPACE_RE.sub(repl, s)


def _canon_decimal(m: re.Match[str]) -> str:
    whole, frac = m.group(1) or "0", m.group(2).rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _fraction_str(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def _number_canon(s: str) -> str:
    """Canonical text of a whole-string number (int, decimal, fraction, mixed number); else ``s`` unchanged."""
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if s.startswith("\u2212"):
        s = "-" + s[1:]
    if _INT_RE.match(s):
        return str(int(s))
    if _DEC_RE.match(s):
        sign = "-" if s.startswith("-") else ""
        body = s.lstrip("+-")
        whole, _, frac = body.partition(".")
        whole = str(int(whole or "0"))
        frac = frac.rstrip("0")
        out = f"{whole}.{frac}" if frac else whole
        return "0" if out in ("0", "0.") else sign + out
    sign, num, den = "", "", ""
    if (m := _FRAC_RE.match(s)) or (m := _SLASH_RE.match(s)):
        sign, num, den = m.groups()
    elif m := _MIXED_RE.match(s):
        sign, whole, n, d = m.groups()
        if int(d) != 0:
            v = int(whole) + Fraction(int(n), int(d))
            return _fraction_str(-v if sign == "-" else v)
        return s
    if num:
        try:
            v = Fraction(num) / Fraction(den)
        except (ZeroDivisionError, ValueError):
            return s
        return _fraction_str(-v if sign == "-" else v)
    return s


@lru_cache(maxsize=8192)
def _normalize(answer: str) -> str:
    s = answer.strip()
    if _PLAIN_NUM_RE.match(s):  # fast path: the common plain-number answer
        return _number_canon(s)
    s = _strip_wrappers(s)
    s = s.replace("\\displaystyle", "").replace("{,}", ",")
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _SPACING_RE.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else "", s)
    s = _DEGREE_RE.sub("", s)
    s = _PERCENT_RE.sub("", s)
    s = _CURRENCY_RE.sub("", _SIGNED_MONEY_RE.sub(r"\1", s))
    # unit words after a value: "18 \text{ dollars}", "5\text{ cm}", "864 \mbox{ inches}^2"
    if _UNIT_TEXT_RE.search(s):
        stripped = _UNIT_TEXT_RE.sub("", s).strip()
        if stripped and re.search(r"[\d}]$|\\pi$", stripped):
            s = stripped
    prev = None
    while prev != s:
        prev = s
        s = _TEXT_UNWRAP_RE.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    if "\\frac" in s:
        s = _FRAC_SHORT_RE.sub(lambda m: f"\\frac{{{m.group(1).strip('{}')}}}{{{m.group(2).strip('{}')}}}", s)
    if "\\sqrt" in s:
        s = _SQRT_SHORT_RE.sub(r"\\sqrt{\1}", s)
    s = s.strip()
    if (m := _ASSIGN_RE.match(s)) and "=" not in m.group(1):
        s = m.group(1)
    s = _strip_wrappers(s)
    if (m := _PLAIN_UNIT_RE.match(s)) and not (set(m.group(2).lower().split()) & _UNIT_STOP):
        s = m.group(1)
    if _THOUSANDS_RE.match(s.strip()):
        s = s.strip().replace(",", "")
    s = _collapse_spaces(s)
    s = s.rstrip(".")
    if s.startswith("+"):
        s = s[1:]
    s = _DECIMAL_RE.sub(_canon_decimal, s)
    s = _number_canon(s)
    if m := _CHOICE_RE.match(s):
        s = m.group(1).upper()
    elif len(s) > 1 and s.isalpha():
        s = s.lower()
    return s


def normalize_answer(answer: str) -> str:
    """Canonical text of an answer: equal answers usually map to equal strings (fast, no sympy)."""
    if not isinstance(answer, str):
        return ""
    try:
        return _normalize(answer) if len(answer) <= 1000 else _normalize.__wrapped__(answer)
    except Exception:  # pragma: no cover - defensive
        logger.debug("normalisation failed", exc_info=True)
        return answer.strip()


# -------------------------------------------------------------------------------------------- equivalence


@lru_cache(maxsize=8192)
def _as_fraction(key: str) -> Fraction | None:
    """Exact value of a normalised key that is an int, decimal or integer fraction."""
    if not key or len(key) > 200:
        return None
    if _INT_RE.match(key) or _DEC_RE.match(key):
        return Fraction(key)
    if m := _SLASH_RE.match(key):
        sign, num, den = m.groups()
        try:
            v = Fraction(num) / Fraction(den)
        except (ZeroDivisionError, ValueError):
            return None
        return -v if sign == "-" else v
    return None


def _terminates(v: Fraction) -> bool:
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _numbers_equal(x: Fraction, y: Fraction) -> bool:
    if x == y:
        return True
    if _terminates(x) and _terminates(y):
        return False
    return math.isclose(x, y, rel_tol=_REL_TOL, abs_tol=0.0)


def _symbolic_ok(key: str) -> bool:
    """Whether a key is safe and meaningful to hand to math_verify."""
    if not key or len(key) > _MAX_SYMBOLIC_LEN:
        return False
    if len(key) > 1 and key.isalpha():  # plain words: "east" vs "seat" would be equal as symbol products
        return False
    # huge powers (10^{100000}) make sympy compute giant integers that no timeout can interrupt
    return _HUGE_RE.search(key) is None


@lru_cache(maxsize=4096)
def _mv_parse(key: str) -> tuple[Any, ...]:
    from math_verify import parse

    return tuple(parse(f"${key}$", parsing_timeout=None))  # type: ignore[arg-type]


@lru_cache(maxsize=8192)
def _mv_equal(a: str, b: str) -> bool:
    try:
        from math_verify import verify

        pa, pb = _mv_parse(a), _mv_parse(b)
        if not pa or not pb:
            return False
        return bool(verify(list(pa), list(pb), timeout_seconds=None))  # type: ignore[arg-type]
    except Exception:  # math_verify / sympy may raise anything, including timeouts
        logger.debug("math_verify failed on %r vs %r", a, b, exc_info=True)
        return False


def answers_equal(a: str | None, b: str | None) -> bool:
    """Whether two answers are equivalent (None never equals anything, not even None)."""
    if a is None or b is None or not isinstance(a, str) or not isinstance(b, str):
        return False
    ka, kb = normalize_answer(a), normalize_answer(b)
    if not ka or not kb:
        return False
    if ka == kb:
        return True
    fa, fb = _as_fraction(ka), _as_fraction(kb)
    if fa is not None and fb is not None:
        return _numbers_equal(fa, fb)
    if not (_symbolic_ok(ka) and _symbolic_ok(kb)):
        return False
    x, y = (ka, kb) if ka <= kb else (kb, ka)
    return _mv_equal(x, y)


def answer_key(answer: str | None) -> str | None:
    """Hashable grouping key: the reduced fraction (``"1/2"``, ``"1000"``) for numbers, else the normal form."""
    if answer is None or not isinstance(answer, str):
        return None
    key = normalize_answer(answer)
    value = _as_fraction(key)
    return _fraction_str(value) if value is not None else key


# ----------------------------------------------------------------------------------------------- grouping


def group_answers(answers: Sequence[str | None]) -> list[list[int]]:
    """Indices grouped by equivalent answer: groups by first appearance, indices ascending, None excluded."""
    buckets: dict[str, list[int]] = {}
    for i, ans in enumerate(answers):
        key = answer_key(ans)
        if key is None or key == "":
            continue
        buckets.setdefault(key, []).append(i)
    keys = list(buckets)
    numeric = [_as_fraction(k) is not None for k in keys]
    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if not all(numeric):
        for i in range(len(keys)):
            for j in range(i + 1, len(keys)):
                if numeric[i] and numeric[j]:
                    continue
                ri, rj = find(i), find(j)
                if ri == rj:
                    continue
                if answers_equal(answers[buckets[keys[i]][0]], answers[buckets[keys[j]][0]]):
                    parent[max(ri, rj)] = min(ri, rj)
    merged: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        merged.setdefault(find(i), []).extend(buckets[k])
    groups = [sorted(idx) for idx in merged.values()]
    groups.sort(key=lambda g: g[0])
    return groups


# ----------------------------------------------------------------------------------------------- helpers


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """Steps of a solution: ``text`` split on ``delimiter``, stripped, empty steps dropped."""
    if not text:
        return []
    if not delimiter:
        stripped = text.strip()
        return [stripped] if stripped else []
    return [s.strip() for s in text.split(delimiter) if s.strip()]


def gsm8k_reference(answer_field: str) -> str:
    """Gold answer of a GSM8K ``answer`` field: the text after the last ``####``, commas removed."""
    _, sep, tail = answer_field.rpartition("####")
    if not sep:
        raise ValueError("GSM8K answer field has no '####' marker")
    return tail.replace(",", "").strip()
