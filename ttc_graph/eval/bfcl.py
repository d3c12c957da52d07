"""The Berkeley Function Calling Leaderboard (BFCL v4) single-turn categories and its AST checker.

Files are read in place from ``data_dir() / "bfcl"``: ``BFCL_v4_<file>.json`` (one JSON object a line: ``id``,
``question`` as a list of turns of chat messages, ``function`` as BFCL tool specs) and
``possible_answer/BFCL_v4_<file>.json`` (``id``, ``ground_truth``: a list of accepted calls
``{name: {param: [accepted values]}}``; irrelevance has none, its right behaviour is to call no tool).

**Tools.** :func:`bfcl_tools` turns BFCL specs into OpenAI tools with JSON-schema types (``dict`` → ``object``,
``float`` → ``number``, ``tuple`` → ``array``, ``any`` → no type constraint), recursively; the BFCL-only
``optional`` keyword is dropped, everything else (``required``, ``enum``, ``default``, ...) is kept.

**Names.** A dotted BFCL name such as ``math.factorial`` is not a valid OpenAI function name for every server
(``^[A-Za-z0-9_-]{1,64}$``), so :func:`tool_name` replaces ``.`` by ``_``. That map is not injective in general
(``a.b`` and ``a_b`` collide), so it is made reversible per item: :func:`bfcl_name_map` returns
``{tool name: BFCL name}`` and raises :class:`ConfigurationError` on a collision (none occurs in v4).
:attr:`BFCLItem.names` holds that map and :func:`check_ast` accepts either spelling in a call.

**Checker.** :func:`check_ast` follows BFCL's Python AST checker (``ast_checker.py``):

- simple / multiple: exactly one call; its name is an accepted one; every parameter the spec requires is present;
  no parameter outside the spec or outside the accepted answer; every accepted parameter whose accepted values
  lack ``""`` is present (``""`` marks an optional parameter that may be omitted); every value is among the
  accepted values.
- parallel / parallel_multiple: as many calls as accepted calls, and a one-to-one matching between them (any
  order) where each pair passes the single-call check. A maximum bipartite matching is used, so a call that would
  fit two accepted calls never blocks the right assignment (BFCL's greedy pass can reject such outputs).
- irrelevance: valid iff there is no tool call.

Value comparison, recursively through lists and dicts:

- the value must have the spec's type (``integer`` excludes booleans and floats; ``float`` accepts ints), or the
  same kind as the accepted value it is compared with (BFCL's "variable" rule: an accepted string for an array
  parameter, such as ``"data['sales']"``, or an accepted ``null``, is matched as such);
- numbers compare by value, booleans only with booleans, ``null`` only with ``null``;
- strings compare after BFCL's normalisation :func:`normalize_string`: remove spaces and the characters
  ``, . / - _ * ^``, lowercase, and turn ``'`` into ``"`` (so ``"April 1, 2024"`` equals ``"april 1 2024"`` and
  ``"New York, NY"`` equals ``"new york ny"``, but ``"NYC"`` does not equal ``"New York"``);
- a list matches an accepted list of the same length element by element, in order (BFCL lists each accepted
  order as its own alternative);
- a dict matches an accepted dict whose values are themselves lists of accepted values: every key of the value is
  accepted and matches, every accepted key without ``""`` is present.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from ttc_graph._files import existing_file
from ttc_graph.errors import ConfigurationError
from ttc_graph.eval.sources import locate

__all__ = [
    "CATEGORIES",
    "BFCLItem",
    "Category",
    "CheckResult",
    "bfcl_name_map",
    "bfcl_tools",
    "canonical_calls",
    "check_ast",
    "load_bfcl",
    "normalize_string",
    "parse_tool_calls",
    "tool_name",
]

Category = Literal["simple", "multiple", "parallel", "parallel_multiple", "irrelevance"]

CATEGORIES: dict[str, str] = {
    "simple": "simple_python",
    "multiple": "multiple",
    "parallel": "parallel",
    "parallel_multiple": "parallel_multiple",
    "irrelevance": "irrelevance",
}
"""Category name → the BFCL v4 file stem (``BFCL_v4_<stem>.json``)."""

_JSON_TYPES = {
    "dict": "object",
    "object": "object",
    "float": "number",
    "number": "number",
    "tuple": "array",
    "array": "array",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
}
_BFCL_ONLY_KEYS = frozenset({"optional"})
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STRIPPED = re.compile(r"[ ,./\-_*^]")


@dataclass(frozen=True, slots=True)
class BFCLItem:
    """One BFCL question.

    ``messages`` are OpenAI chat messages, ``tools`` OpenAI tools (names as :func:`tool_name` maps them),
    ``functions`` the original BFCL specs, ``answers`` the accepted calls ``[{bfcl_name: {param: [accepted]}}]``
    (empty for irrelevance) and ``names`` the map from tool name back to BFCL name.
    """

    id: str
    category: Category
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    functions: list[dict[str, Any]]
    answers: list[dict[str, dict[str, list[Any]]]]
    names: dict[str, str]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The checker's verdict and, when invalid, why."""

    valid: bool
    reason: str

    def __bool__(self) -> bool:
        return self.valid


# --------------------------------------------------------------------------------------------------- tools


def tool_name(name: str) -> str:
    """The OpenAI function name of a BFCL name: ``.`` becomes ``_`` (``math.factorial`` → ``math_factorial``)."""
    return name.replace(".", "_")


def bfcl_name_map(functions: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``{tool name: BFCL name}`` for these specs; a name that maps to an invalid or already taken tool name raises."""
    mapping: dict[str, str] = {}
    for spec in functions:
        name = spec.get("name")
        if not isinstance(name, str):
            raise ConfigurationError(f"bfcl: a function spec has no string 'name': {dict(spec)!r:.200}")
        mapped = tool_name(name)
        if not _TOOL_NAME.match(mapped):
            raise ConfigurationError(f"bfcl: function name {name!r} is not a valid tool name even as {mapped!r}")
        if mapped in mapping:
            raise ConfigurationError(
                f"bfcl: function names {mapping[mapped]!r} and {name!r} both map to tool name {mapped!r}"
            )
        mapping[mapped] = name
    return mapping


def _json_schema(node: Any, where: str) -> Any:
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _BFCL_ONLY_KEYS:
            continue
        if key == "type":
            if value == "any":
                continue
            if value not in _JSON_TYPES:
                raise ConfigurationError(f"bfcl: unknown type {value!r} at {where}")
            out[key] = _JSON_TYPES[value]
        elif key == "properties" and isinstance(value, Mapping):
            out[key] = {name: _json_schema(prop, f"{where}.{name}") for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _json_schema(value, f"{where}[]")
        else:
            out[key] = value
    return out


def bfcl_tools(functions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tools (``{"type": "function", "function": {name, description, parameters}}``) for BFCL specs.

    Types become JSON-schema types recursively (``dict`` → ``object``, ``float`` → ``number``, ``tuple`` →
    ``array``, ``any`` → unconstrained) and names go through :func:`tool_name`; see :func:`bfcl_name_map` for the
    way back. An unknown type or a name collision raises :class:`ConfigurationError`.
    """
    bfcl_name_map(functions)
    tools: list[dict[str, Any]] = []
    for spec in functions:
        name = str(spec["name"])
        params = spec.get("parameters") or {"type": "dict", "properties": {}}
        parameters = _json_schema(params, name)
        parameters.setdefault("type", "object")
        parameters.setdefault("properties", {})
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": tool_name(name),
                    "description": str(spec.get("description", "")),
                    "parameters": parameters,
                },
            }
        )
    return tools


# -------------------------------------------------------------------------------------------------- loading


def _read_rows(file: Path) -> list[dict[str, Any]]:
    existing_file(file, "bfcl")
    rows: list[dict[str, Any]] = []
    with file.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"bfcl: {file}:{line_no} is not JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or "id" not in row:
                raise ConfigurationError(f"bfcl: {file}:{line_no} is not a JSON object with an 'id'")
            rows.append(row)
    return rows


def _messages(row: dict[str, Any], file: Path) -> list[dict[str, Any]]:
    turns = row.get("question")
    if not isinstance(turns, list) or len(turns) != 1 or not isinstance(turns[0], list):
        raise ConfigurationError(f"bfcl: {file} item {row['id']!r}: 'question' must be a list of exactly one turn")
    messages = turns[0]
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ConfigurationError(f"bfcl: {file} item {row['id']!r}: a message lacks 'role' or 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def load_bfcl(category: str, limit: int | None = None, *, root: str | Path | None = None) -> list[BFCLItem]:
    """The items of one category (``simple``, ``multiple``, ``parallel``, ``parallel_multiple``, ``irrelevance``).

    ``root`` is the folder with the BFCL files (default ``data_dir() / "bfcl"``); ``limit`` keeps the first items.
    An unknown category, a missing file or an item without an accepted answer raises :class:`ConfigurationError`.
    """
    if category not in CATEGORIES:
        raise ConfigurationError(f"bfcl: unknown category {category!r}; use one of {', '.join(CATEGORIES)}")
    if limit is not None and limit < 0:
        raise ConfigurationError(f"limit: must be >= 0, got {limit}")
    folder = Path(root) if root is not None else locate("bfcl")  # the data folder, else the pull cache
    stem = CATEGORIES[category]
    file = folder / f"BFCL_v4_{stem}.json"
    rows = _read_rows(file)
    if limit is not None:
        rows = rows[:limit]
    answers: dict[str, Any] = {}
    if category != "irrelevance":
        answer_file = folder / "possible_answer" / f"BFCL_v4_{stem}.json"
        answers = {str(r["id"]): r.get("ground_truth") for r in _read_rows(answer_file)}
    items: list[BFCLItem] = []
    for row in rows:
        item_id = str(row["id"])
        functions = row.get("function")
        if not isinstance(functions, list) or not functions:
            raise ConfigurationError(f"bfcl: {file} item {item_id!r} has no 'function' list")
        accepted: list[Any] = []
        if category != "irrelevance":
            if item_id not in answers:
                raise ConfigurationError(f"bfcl: {answer_file} has no answer for item {item_id!r}")
            accepted = answers[item_id]
            if not isinstance(accepted, list) or not all(isinstance(c, dict) and len(c) == 1 for c in accepted):
                raise ConfigurationError(f"bfcl: {answer_file} item {item_id!r}: malformed 'ground_truth'")
        items.append(
            BFCLItem(
                id=item_id,
                category=cast(Category, category),
                messages=_messages(row, file),
                tools=bfcl_tools(functions),
                functions=functions,
                answers=accepted,
                names=bfcl_name_map(functions),
            )
        )
    return items


# ------------------------------------------------------------------------------------------------ tool calls


def parse_tool_calls(tool_calls: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, Any]]:
    """``[(name, args)]`` from LangChain calls ``{"name", "args", "id"}`` or OpenAI calls
    ``{"function": {"name", "arguments"}}`` (``arguments`` a JSON string or a dict).

    Arguments that are not valid JSON are returned as the raw string (the checker then rejects that call); a call of
    neither shape raises :class:`ConfigurationError`.
    """
    parsed: list[tuple[str, Any]] = []
    for call in tool_calls or []:
        if not isinstance(call, Mapping):
            raise ConfigurationError(f"tool_calls: expected a mapping, got {type(call).__name__}")
        if "function" in call and isinstance(call["function"], Mapping):
            name, args = call["function"].get("name"), call["function"].get("arguments", {})
        elif "name" in call:
            name, args = call["name"], call.get("args", call.get("arguments", {}))
        else:
            raise ConfigurationError(f"tool_calls: a call has neither 'name' nor 'function': {dict(call)!r:.200}")
        if not isinstance(name, str):
            raise ConfigurationError(f"tool_calls: a call's name is not a string: {name!r}")
        if isinstance(args, str):
            with contextlib.suppress(json.JSONDecodeError):
                args = json.loads(args) if args.strip() else {}
        parsed.append((name, args))
    return parsed


# ---------------------------------------------------------------------------------------------------- checker


def normalize_string(text: str) -> str:
    """BFCL's string normalisation: drop spaces and ``, . / - _ * ^``, lowercase, ``'`` → ``"``."""
    return _STRIPPED.sub("", text).lower().replace("'", '"')


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_type(value: Any, bfcl_type: Any) -> bool:
    """Whether ``value`` has the spec's type (unknown or ``any`` types accept everything)."""
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": _is_number,
        "number": _is_number,
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list | tuple),
        "tuple": lambda v: isinstance(v, list | tuple),
        "dict": lambda v: isinstance(v, dict),
        "object": lambda v: isinstance(v, dict),
    }
    check = checks.get(bfcl_type) if isinstance(bfcl_type, str) else None
    return True if check is None else check(value)


def _same_kind(value: Any, accepted: Any) -> bool:
    if accepted is None or isinstance(accepted, bool):
        return type(value) is type(accepted)
    if isinstance(accepted, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(accepted, float):
        return _is_number(value)
    if isinstance(accepted, list):
        return isinstance(value, list | tuple)
    return isinstance(value, type(accepted))


def _equal(value: Any, accepted: Any, schema: Mapping[str, Any] | None) -> bool:
    """Whether ``value`` matches one accepted value (a literal, a list of literals or a dict of accepted lists)."""
    if schema is not None and not (_has_type(value, schema.get("type")) or _same_kind(value, accepted)):
        return False
    if accepted is None:
        return value is None
    if isinstance(accepted, bool):
        return isinstance(value, bool) and value == accepted
    if _is_number(accepted):
        return _is_number(value) and value == accepted
    if isinstance(accepted, str):
        return isinstance(value, str) and normalize_string(value) == normalize_string(accepted)
    if isinstance(accepted, list):
        if not isinstance(value, list | tuple) or len(value) != len(accepted):
            return False
        items = schema.get("items") if schema is not None else None
        item_schema = items if isinstance(items, Mapping) else None
        return all(_equal(v, a, item_schema) for v, a in zip(value, accepted, strict=True))
    if isinstance(accepted, dict):
        return isinstance(value, dict) and _dict_problem(value, accepted, schema) is None
    return bool(value == accepted)


def _matches(value: Any, accepted: list[Any], schema: Mapping[str, Any] | None) -> bool:
    return any(_equal(value, a, schema) for a in accepted)


def _dict_problem(value: dict[str, Any], accepted: dict[str, Any], schema: Mapping[str, Any] | None) -> str | None:
    props = schema.get("properties") if schema is not None else None
    props = props if isinstance(props, Mapping) else {}
    for key, item in value.items():
        if key not in accepted:
            return f"unexpected key {key!r}"
        alternatives = accepted[key] if isinstance(accepted[key], list) else [accepted[key]]
        if not _matches(item, alternatives, props.get(key)):
            return f"key {key!r}: {item!r} is not among {alternatives!r}"
    for key, alternatives in accepted.items():
        if key not in value and not (isinstance(alternatives, list) and "" in alternatives):
            return f"missing key {key!r}"
    return None


def _spec(item: BFCLItem, name: str) -> Mapping[str, Any]:
    for spec in item.functions:
        if spec.get("name") == name:
            return spec
    raise ConfigurationError(f"bfcl: item {item.id!r} accepts a call to {name!r} but has no such function spec")


def _check_call(item: BFCLItem, name: str, args: Any, expected: dict[str, dict[str, list[Any]]]) -> str | None:
    """Why one parsed call does not match one accepted call, or None when it does."""
    (expected_name, accepted), *_ = expected.items()
    original = item.names.get(name, name)
    if original != expected_name:
        return f"function {original!r} is not {expected_name!r}"
    if not isinstance(args, dict):
        return f"{expected_name}: arguments are not a JSON object: {args!r:.200}"
    parameters = _spec(item, expected_name).get("parameters") or {}
    properties = parameters.get("properties") or {}
    for param in parameters.get("required") or []:
        if param not in args:
            return f"{expected_name}: missing required parameter {param!r}"
    for param, value in args.items():
        if param not in properties or param not in accepted:
            return f"{expected_name}: unexpected parameter {param!r}"
        schema = properties[param]
        alternatives = accepted[param]
        if not _matches(value, alternatives, schema):
            kind = schema.get("type", "any")
            if not _has_type(value, kind) and not any(_same_kind(value, a) for a in alternatives if a != ""):
                return f"{expected_name}: parameter {param!r} expects type {kind}, got {type(value).__name__} {value!r}"
            return f"{expected_name}: parameter {param!r} = {value!r} is not among the accepted {alternatives!r}"
    for param, alternatives in accepted.items():
        if param not in args and "" not in alternatives:
            return f"{expected_name}: parameter {param!r} is missing and not optional"
    return None


def _perfect_matching(fits: list[list[bool]]) -> list[int] | None:
    """A call index for every accepted call (``fits[answer][call]``) using each call once, or None."""
    owner: dict[int, int] = {}

    def place(answer: int, seen: set[int]) -> bool:
        for call, ok in enumerate(fits[answer]):
            if ok and call not in seen:
                seen.add(call)
                if call not in owner or place(owner[call], seen):
                    owner[call] = answer
                    return True
        return False

    for answer in range(len(fits)):
        if not place(answer, set()):
            return None
    by_answer = {answer: call for call, answer in owner.items()}
    return [by_answer[a] for a in range(len(fits))]


def check_ast(item: BFCLItem, tool_calls: Sequence[Mapping[str, Any]] | None) -> CheckResult:
    """BFCL's AST check of a model's tool calls for ``item`` (the rules are in the module docstring)."""
    calls = parse_tool_calls(tool_calls)
    if item.category == "irrelevance":
        if calls:
            return CheckResult(False, f"irrelevance: expected no tool call, got {[n for n, _ in calls]}")
        return CheckResult(True, "no tool call")
    if not calls:
        return CheckResult(False, "no tool call")
    if item.category in ("simple", "multiple"):
        if len(calls) != 1:
            return CheckResult(False, f"expected exactly 1 call, got {len(calls)}")
        name, args = calls[0]
        original = item.names.get(name, name)
        candidates = [a for a in item.answers if original in a]
        if not candidates:
            accepted = sorted({next(iter(a)) for a in item.answers})
            return CheckResult(False, f"function {original!r} is not among the accepted {accepted}")
        single = [_check_call(item, name, args, expected) for expected in candidates]
        if any(p is None for p in single):
            return CheckResult(True, "ok")
        return CheckResult(False, str(single[0]))
    if len(calls) != len(item.answers):
        return CheckResult(False, f"expected {len(item.answers)} calls, got {len(calls)}")
    problems = [[_check_call(item, n, a, expected) for n, a in calls] for expected in item.answers]
    if _perfect_matching([[p is None for p in row] for row in problems]) is not None:
        return CheckResult(True, "ok")
    for index, row in enumerate(problems):
        if all(p is not None for p in row):
            expected_name = next(iter(item.answers[index]))
            same_name = [
                f"call {k}: {p}" for k, ((n, _), p) in enumerate(zip(calls, row, strict=True))
                if item.names.get(n, n) == expected_name
            ]  # fmt: skip
            detail = "; ".join(same_name) if same_name else f"no call to {expected_name!r}"
            return CheckResult(False, f"no call matches accepted call {index} ({expected_name}): {detail}")
    return CheckResult(False, "every accepted call fits some call, but no one-to-one matching exists")


def _canonical(value: Any) -> Any:
    if isinstance(value, str):
        return ("s", normalize_string(value))
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if _is_number(value):
        return ("n", float(value))
    if isinstance(value, list | tuple):
        return ("l", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("d", tuple(sorted((str(k), _canonical(v)) for k, v in value.items())))
    return ("r", repr(value))


def canonical_calls(item: BFCLItem, tool_calls: Sequence[Mapping[str, Any]] | None) -> tuple[Any, ...]:
    """A hashable key equal for tool-call lists that differ only in call order, name spelling (dotted or mapped),
    argument order, int/float spelling or BFCL-normalised strings: the unit of a majority vote over samples."""
    calls = parse_tool_calls(tool_calls)
    return tuple(sorted((item.names.get(n, n), repr(_canonical(a))) for n, a in calls))
