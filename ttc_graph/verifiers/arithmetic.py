"""A process verifier without a model: checks the arithmetic written in each step (``48 / 2 = 24``).

Each step is normalised (LaTeX ``\\frac``, ``\\times``, ``\\cdot``, ``\\div``, ``\\left( \\right)``, ``\\text{}``
units, ``\\$``, thousands separators, percentages, ``x`` / ``×`` / ``÷``), split into tokens, and every chain
``a = b = c`` of arithmetic expressions yields one claim per adjacent pair. Both sides are evaluated by a small
recursive-descent parser over numbers, ``+ - * / ^``, unary minus and parentheses, with bounded depth, exponents
and magnitudes: model text is never passed to ``eval``. A claim holds when the sides agree up to the precision
written (a bare number ``0.33`` allows rounding to 2 decimals; a whole number only unambiguous rounding, so
``7 / 2 = 3`` fails) or within ``rel_tol``.

Scoring: step ``i`` scores the smoothed share of the claims in steps ``1..i`` that hold,
``(held + prior_weight * prior) / (claims + prior_weight)``, so a step without claims keeps the running score
(``prior`` before the first claim) and the default ``last`` aggregation scores the whole solution by the share of
all its claims that hold. Nothing here raises on any input string.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ttc_graph.errors import ConfigurationError
from ttc_graph.verifiers.aggregation import DEFAULT_AGGREGATION, Aggregation, aggregate, check_aggregation
from ttc_graph.verifiers.base import Score, VerificationResult, Verifier, VerifyItem

__all__ = ["ArithmeticVerifier", "Claim", "evaluate", "find_claims", "normalize"]

_MAX_DEPTH = 40  # nesting of parentheses / LaTeX groups
_MAX_TOKENS = 400  # tokens in one side of a claim
_MAX_ABS = 1e18  # larger intermediate values are not checked
_MAX_EXPONENT = 64
_ABS_TOL = 1e-9

# -- normalisation -----------------------------------------------------------------------------------------

_TEXT_MARK = "\x00"  # one opaque word standing for a \text{...} group (usually a unit)
_GROUP_COMMANDS = re.compile(
    r"\\(d?frac|tfrac|cfrac|sqrt|text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox|operatorname)(?![A-Za-z])"
)
_FRACS = {"frac", "dfrac", "tfrac", "cfrac"}
_TEXT_OPERATORS = {"of", "times", "plus", "minus", "x"}
_REPLACEMENTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"(?<=[0-9])\{,\}(?=[0-9]{3})", ","),  # 1{,}200
        (r"(?<=[0-9])\\[,!;: ](?=[0-9]{3}(?![0-9]))", ""),  # 1\,200
        (r"\\left\s*[(\[]|\\left\s*\\\{", "("),
        (r"\\right\s*[)\]]|\\right\s*\\\}", ")"),
        (r"\\(?:left|right)\s*\.", " "),
        (r"\\(?:times|cdot|ast)(?![A-Za-z])|[×·⋅∙✕]", " * "),
        (r"\\div(?![A-Za-z])|[÷∕]", " / "),
        (r"\\(?:approx|simeq|eq)(?![A-Za-z])|[≈]", " = "),
        (r"\\(?:neq|ne|leq?|geq?|lt|gt|pm|mp)(?![A-Za-z])|[≠≤≥±]|[<>!]=?|==?(?==)", " ; "),
        (r"\\%", "%"),
        (r"\\\$|\$", " "),
        (r"\\[\[\]()]|\\\\", " ; "),  # math delimiters and line breaks end a chain
        (r"\\(?:[,;:! ]|q?quad)(?![A-Za-z])|[~&]", " "),
        (r"[−–]", "-"),
        (r"\*\*", "^"),
        (r"(?<=[0-9)])\s*[xX]\s*(?=[0-9(.])", " * "),  # 5 x 3, 5x3, (2)x(3)
        (r"\bpercent\b", "%"),
    )
)


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of each ``{`` → index just past its matching ``}`` (unescaped braces; unbalanced ones left out)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, c in enumerate(text):
        if c in "{}" and i > 0 and text[i - 1] == "\\":
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i + 1
    return pairs


def _argument(text: str, pos: int, pairs: dict[int, int]) -> tuple[str, int] | None:
    """One LaTeX argument at ``pos``: a ``{...}`` group or a single character; None if missing or unbalanced."""
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos >= len(text):
        return None
    if text[pos] == "{":
        end = pairs.get(pos)
        return None if end is None else (text[pos + 1 : end - 1], end)
    if text[pos].isalnum():
        return text[pos], pos + 1
    return None


def _expand(text: str, depth: int = 0) -> str:
    """``text`` with ``\\frac``, ``\\sqrt`` and text-like groups rewritten into plain arithmetic or markers."""
    if depth > _MAX_DEPTH:
        return " ; "
    pairs = _brace_pairs(text)
    out: list[str] = []
    pos = 0
    while True:
        m = _GROUP_COMMANDS.search(text, pos)
        if m is None:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos : m.start()])
        name = m.group(1)
        first = _argument(text, m.end(), pairs)
        if first is None:
            out.append(" ; ")
            pos = m.end()
            continue
        if name in _FRACS:
            second = _argument(text, first[1], pairs)
            if second is None:
                out.append(" ; ")
                pos = m.end()
                continue
            out.append(f" (({_expand(first[0], depth + 1)})/({_expand(second[0], depth + 1)})) ")
            pos = second[1]
        elif name == "sqrt":
            out.append(f" (({_expand(first[0], depth + 1)})^(0.5)) ")
            pos = first[1]
        else:
            word = first[0].strip()
            out.append(f" {word} " if word in _TEXT_OPERATORS else f" {_TEXT_MARK} ")  # \\text{ of }
            pos = first[1]


def normalize(text: str) -> str:
    """A step in plain arithmetic notation: LaTeX groups expanded, operators, currency and spaces unified."""
    out = _expand(text)
    for pattern, replacement in _REPLACEMENTS:
        out = pattern.sub(replacement, out)
    return out.replace("\\boxed", " ").replace("{", "(").replace("}", ")")


# -- tokens ------------------------------------------------------------------------------------------------

_NUM, _OP, _POW, _LP, _RP, _EQ, _PCT, _WORD, _VAR, _TEXT, _SEP = (
    "num", "op", "pow", "lp", "rp", "eq", "pct", "word", "var", "text", "sep",
)  # fmt: skip
_TOKEN = re.compile(
    r"(?P<num>(?:[0-9]{1,3}(?:,[0-9]{3}(?![0-9]))+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)"
    r"|(?P<word>\\?[^\W\d][\w']*)"
    r"|(?P<op>[-+*/])|(?P<pow>\^)|(?P<lp>\()|(?P<rp>\))|(?P<eq>=)|(?P<pct>%)"
    rf"|(?P<text>{_TEXT_MARK})|(?P<space>[ \t\r\f\v]+)|(?P<sep>.|\n)",
    re.DOTALL,
)
_SINGLE_LETTER_WORDS = {"a", "A", "I"}
_WORD_OPS = {"times": "*", "plus": "+", "minus": "-", "x": "*", "X": "*"}
_TWO_WORD_OPS = {("divided", "by"): "/", ("multiplied", "by"): "*"}
_MAX_UNIT_WORDS = 4


@dataclass(slots=True)
class _Tok:
    kind: str
    text: str
    unit: bool = False  # a unit word followed this operand (and was dropped)


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or _SEP
        if kind == "space":
            continue
        value = m.group()
        if kind == _WORD and (
            (len(value) == 1 and value not in _SINGLE_LETTER_WORDS) or "_" in value or any(c.isdigit() for c in value)
        ):
            kind = _VAR  # x, T, time4, total_cost: a variable, never a unit
        tokens.append(_Tok(kind, value))
    return tokens


def _ends_operand(tok: _Tok | None) -> bool:
    return tok is not None and tok.kind in (_NUM, _RP, _PCT)


def _starts_operand(tok: _Tok | None) -> bool:
    return tok is not None and tok.kind in (_NUM, _LP)


def _rewrite(tokens: list[_Tok]) -> list[_Tok]:
    """Operator words (``times``, ``divided by``, ``20% of``) become operators; units after numbers are dropped."""
    out: list[_Tok] = []
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        prev = out[-1] if out else None
        nxt = tokens[i + 1] if i + 1 < n else None
        if tok.kind in (_WORD, _VAR) and _ends_operand(prev):
            pair = (tok.text.lower(), nxt.text.lower()) if nxt is not None else None
            if pair in _TWO_WORD_OPS and _starts_operand(tokens[i + 2] if i + 2 < n else None):
                out.append(_Tok(_OP, _TWO_WORD_OPS[pair]))  # type: ignore[index]
                i += 2
                continue
            word = tok.text.lower()
            op = "*" if word == "of" and prev is not None and prev.kind == _PCT else _WORD_OPS.get(word)
            if op and _starts_operand(nxt):
                out.append(_Tok(_OP, op))
                i += 1
                continue
        # units: up to a few words after an operand (or after "/" following one), before an operator or the end
        start = i + 1 if tok.kind == _OP and tok.text == "/" and _ends_operand(prev) else i
        if _ends_operand(prev) and start < n and tokens[start].kind in (_WORD, _TEXT):
            end = start
            while end < n and end - start < _MAX_UNIT_WORDS and tokens[end].kind in (_WORD, _TEXT):
                end += 1
            after = tokens[end] if end < n else None
            if after is None or after.kind in (_OP, _POW, _EQ, _RP, _SEP):
                prev.unit = True  # type: ignore[union-attr]
                i = end
                continue
        out.append(tok)
        i += 1
    return out


# -- evaluation --------------------------------------------------------------------------------------------


class _Unparsable(Exception):
    """The tokens are not one bounded arithmetic expression."""


def _checked(value: float) -> float:
    if not math.isfinite(value) or abs(value) > _MAX_ABS:
        raise _Unparsable("out of range")
    return value


class _Parser:
    """expr := term (('+'|'-') term)*; term := unary (('*'|'/') unary | implicit product)*;
    unary := ('-'|'+') unary | power; power := atom ('^' unary)?; atom := number '%'? | '(' expr ')' '%'?"""

    def __init__(self, tokens: Sequence[_Tok]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise _Unparsable("unexpected end")
        self.pos += 1
        return tok

    def parse(self) -> float:
        value = self.expr()
        if self.pos != len(self.tokens):
            raise _Unparsable("trailing tokens")
        return value

    def expr(self) -> float:
        value = self.term()
        while (tok := self.peek()) is not None and tok.kind == _OP and tok.text in "+-":
            self.pos += 1
            rhs = self.term()
            value = _checked(value + rhs if tok.text == "+" else value - rhs)
        return value

    def term(self) -> float:
        value = self.unary()
        while (tok := self.peek()) is not None:
            if tok.kind == _OP and tok.text in "*/":
                self.pos += 1
                rhs = self.unary()
                if tok.text == "/":
                    if rhs == 0:
                        raise _Unparsable("division by zero")
                    value = _checked(value / rhs)
                else:
                    value = _checked(value * rhs)
            elif tok.kind == _LP:  # 2(3 + 4), (1 + 2)(3)
                value = _checked(value * self.unary())
            else:
                break
        return value

    def unary(self) -> float:
        tok = self.peek()
        if tok is not None and tok.kind == _OP and tok.text in "+-":
            self.pos += 1
            self.enter()
            value = self.unary()
            self.depth -= 1
            return -value if tok.text == "-" else value
        return self.power()

    def power(self) -> float:
        base = self.atom()
        tok = self.peek()
        if tok is None or tok.kind != _POW:
            return base
        self.pos += 1
        self.enter()
        exponent = self.unary()
        self.depth -= 1
        if abs(exponent) > _MAX_EXPONENT or (base == 0 and exponent < 0):
            raise _Unparsable("exponent out of range")
        try:
            return _checked(math.pow(base, exponent))
        except (OverflowError, ValueError) as exc:
            raise _Unparsable("power out of range") from exc

    def atom(self) -> float:
        tok = self.take()
        if tok.kind == _NUM:
            value = _checked(float(tok.text.replace(",", "")))
        elif tok.kind == _LP:
            self.enter()
            value = self.expr()
            self.depth -= 1
            if self.take().kind != _RP:
                raise _Unparsable("unbalanced parenthesis")
        else:
            raise _Unparsable(f"unexpected {tok.text!r}")
        nxt = self.peek()
        if nxt is not None and nxt.kind == _PCT:
            self.pos += 1
            value /= 100.0
        return value

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Unparsable("nested too deeply")


def evaluate(expression: str) -> float | None:
    """The value of one arithmetic expression in any notation :func:`normalize` reads; None if it is not one."""
    try:
        tokens = [t for t in _rewrite(_tokenize(normalize(expression))) if t.kind != _SEP]
        if not tokens or len(tokens) > _MAX_TOKENS:
            return None
        return _Parser(tokens).parse()
    except (_Unparsable, RecursionError, ValueError, OverflowError, ZeroDivisionError):
        return None


# -- claims ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """``left = right`` as written in a step, both sides evaluated, and whether they agree."""

    left: str
    right: str
    left_value: float
    right_value: float
    holds: bool


@dataclass(slots=True)
class _Side:
    text: str
    value: float | None
    resolution: float | None  # half the last written digit's place, for a bare number (rounding allowed)
    has_unit: bool
    percent_points: float | None = None  # a bare percentage as its number: 60 for "60%" (12 / 20 * 100 = 60%)


def _literal_resolution(tokens: Sequence[_Tok]) -> float | None:
    """Half the place value of the last written digit when ``tokens`` are one bare number (``-3.75``, ``20%``)."""
    kinds = [t.kind for t in tokens]
    core = [t for t in tokens if t.kind not in (_LP, _RP)]
    if kinds.count(_LP) != kinds.count(_RP):
        return None
    if core and core[0].kind == _OP and core[0].text in "+-":
        core = core[1:]
    percent = bool(core) and core[-1].kind == _PCT
    if percent:
        core = core[:-1]
    if len(core) != 1 or core[0].kind != _NUM:
        return None
    text = core[0].text
    decimals = len(text.split(".", 1)[1]) if "." in text else 0
    return 0.5 * 10.0**-decimals / (100.0 if percent else 1.0)


def _side(tokens: list[_Tok]) -> _Side:
    text = " ".join(t.text for t in tokens)
    if not tokens or len(tokens) > _MAX_TOKENS:
        return _Side(text, None, None, False)
    try:
        value: float | None = _Parser(tokens).parse()
    except (_Unparsable, RecursionError, ValueError, OverflowError, ZeroDivisionError):
        value = None
    resolution = _literal_resolution(tokens)
    points = value * 100 if value is not None and resolution is not None and tokens[-1].kind == _PCT else None
    return _Side(text, value, resolution, any(t.unit for t in tokens), points)


_ARITHMETIC = (_NUM, _OP, _POW, _LP, _RP, _EQ, _PCT)


def _chains(tokens: list[_Tok]) -> list[list[_Side]]:
    """Maximal runs of arithmetic tokens that hold an ``=``, each split on ``=`` into sides.

    A side whose operand is cut off by a word is unreadable: the first side when a variable precedes the run
    (``2x + 4 = 5``) or the run starts with an operator after a word (``total - 5 = 3``), the last side when a
    variable follows it (``T = 21 - 9T``).
    """
    chains: list[list[_Side]] = []
    i, n = 0, len(tokens)
    while i < n:
        if tokens[i].kind not in _ARITHMETIC:
            i += 1
            continue
        start = i
        while i < n and tokens[i].kind in _ARITHMETIC:
            i += 1
        parts: list[list[_Tok]] = [[]]
        for tok in tokens[start:i]:
            if tok.kind == _EQ:
                parts.append([])
            else:
                parts[-1].append(tok)
        if len(parts) < 2:
            continue
        before = tokens[start - 1] if start > 0 else None
        after = tokens[i] if i < n else None
        if before is not None and (
            before.kind == _VAR
            or (before.kind != _SEP and parts[0] and parts[0][0].kind in (_OP, _POW))
            or (before.kind != _SEP and _literal_resolution(parts[0]) is not None)  # "half of 180 = 90"
        ):
            parts[0] = []
        if after is not None and after.kind == _VAR:
            parts[-1] = []
        chains.append([_side(part) for part in parts])
    return chains


def _holds(left: _Side, right: _Side, rel_tol: float) -> bool:
    if _agree(left, right, rel_tol):
        return True
    for side, other in ((left, right), (right, left)):
        if side.percent_points is not None and other.percent_points is None:
            as_points = _Side(side.text, side.percent_points, side.resolution and side.resolution * 100, False)
            if _agree(as_points, other, rel_tol):
                return True
    return False


def _agree(left: _Side, right: _Side, rel_tol: float) -> bool:
    assert left.value is not None and right.value is not None
    tol = max(_ABS_TOL, rel_tol * max(abs(left.value), abs(right.value)))
    diff = abs(left.value - right.value)
    for side in (left, right):
        if side.resolution is None:
            continue
        if side.resolution >= 0.5:  # a whole number: rounding must be unambiguous (7 / 2 = 3 is floor division)
            if diff < side.resolution * (1 - 1e-9):
                return True
        elif diff <= side.resolution * (1 + 1e-9):  # 1 / 3 = 0.33, 1 / 8 = 0.13
            return True
    return diff <= tol


def find_claims(text: str, rel_tol: float = 1e-9) -> list[Claim]:
    """Every checkable ``left = right`` in ``text`` (a chain ``a = b = c`` gives ``a = b`` and ``b = c``).

    A pair whose left side is a bare number followed by a unit (``1 hour = 60 minutes``, ``2 hours = 2 * 60``)
    is a conversion, not arithmetic, and is skipped. Never raises: text that cannot be read yields no claims.
    """
    try:
        return _find_claims(text, rel_tol)
    except Exception:  # a last guard: a reader of arbitrary model text must not take a run down
        return []


def _find_claims(text: str, rel_tol: float) -> list[Claim]:
    claims: list[Claim] = []
    for sides in _chains(_rewrite(_tokenize(normalize(text)))):
        for left, right in itertools.pairwise(sides):
            if left.value is None or right.value is None:
                continue
            if left.resolution is not None and (left.has_unit or (right.resolution is not None and right.has_unit)):
                continue  # a conversion: "1 hour = 60 minutes", "2 hours = 2 * 60"
            claims.append(Claim(left.text, right.text, left.value, right.value, _holds(left, right, rel_tol)))
    return claims


# -- the verifier ------------------------------------------------------------------------------------------


class ArithmeticVerifier(Verifier):
    """Scores every step by the arithmetic written so far; no model, no requests, never raises.

    Step ``i`` scores ``(held + prior_weight * prior) / (claims + prior_weight)`` over the claims of steps
    ``1..i`` (see :func:`find_claims`): a step without claims keeps the running score, a solution without any
    claim scores ``prior``. ``aggregation`` turns step scores into the solution score (``last``: the share over
    all claims). ``rel_tol`` is the relative tolerance beyond the rounding a bare number's written digits allow.
    """

    granularity = "process"

    def __init__(
        self,
        *,
        prior: float = 0.5,
        prior_weight: float = 1.0,
        rel_tol: float = 1e-9,
        aggregation: Aggregation = DEFAULT_AGGREGATION,
    ) -> None:
        if not _is_number(prior) or not 0.0 <= prior <= 1.0:
            raise ConfigurationError(f"prior: must be a number in [0, 1], got {prior!r}")
        if not _is_number(prior_weight) or prior_weight < 0:
            raise ConfigurationError(f"prior_weight: must be a number >= 0, got {prior_weight!r}")
        if not _is_number(rel_tol) or not 0.0 <= rel_tol < 1.0:
            raise ConfigurationError(f"rel_tol: must be a number in [0, 1), got {rel_tol!r}")
        check_aggregation(aggregation)
        self.prior = float(prior)
        self.prior_weight = float(prior_weight)
        self.rel_tol = float(rel_tol)
        self.aggregation = aggregation

    @property
    def name(self) -> str:
        return "ArithmeticVerifier"

    def step_scores(self, steps: Sequence[str]) -> tuple[float, ...]:
        """The running score after each step."""
        held = total = 0
        scores = []
        for step in steps:
            claims = find_claims(step, self.rel_tol) if isinstance(step, str) else []
            held += sum(c.holds for c in claims)
            total += len(claims)
            denominator = total + self.prior_weight
            scores.append((held + self.prior_weight * self.prior) / denominator if denominator else self.prior)
        return tuple(scores)

    def score(self, steps: Sequence[str]) -> Score:
        """The score of one solution given as steps; unscored when it has no non-blank step."""
        if not any(isinstance(s, str) and s.strip() for s in steps):
            return Score(None, error="empty solution: no steps to score")
        values = self.step_scores(steps)
        return Score(aggregate(values, self.aggregation), values)

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        return VerificationResult([self.score(item.steps) for item in items])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
