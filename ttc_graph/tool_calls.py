"""Tool calls as candidates: canonical arguments, action keys, schema checks, and a tolerant text parser.

Pure functions, no network. A candidate that carries tool calls (LangChain's ``ToolCall`` shape
``{"name", "args", "id"}``) is an *action*; :func:`action_key` is what votes over actions compare.

Canonical arguments (:func:`canonical_arguments`) are compact JSON with sorted keys and canonical numbers
(``1``, ``1.0`` and ``1e0`` are all ``1``; non-integral numbers in their shortest exact decimal form), string
values stripped of surrounding whitespace (``"Paris "`` and ``"Paris"`` vote together; the winning call is
executed with its own, unstripped arguments), nested lists and objects canonicalised alike. A blank or missing
argument string is ``{}`` (OpenAI sends ``""`` for a call without arguments). Text that is not JSON gives an
:class:`InvalidArguments` value (a ``str`` that never equals a canonical form), not an exception.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, TypeAlias

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from langchain_core.messages import ToolCall
from langchain_core.messages.tool import tool_call
from langchain_core.utils.function_calling import convert_to_openai_tool

from ttc_graph.errors import ConfigurationError
from ttc_graph.state import Candidate

__all__ = [
    "INVALID_PREFIX",
    "InvalidArguments",
    "ToolSpec",
    "ToolsLike",
    "action_key",
    "bfcl_tool_to_openai",
    "candidate_problems",
    "canonical_arguments",
    "is_action",
    "mark_invalid",
    "parse_text_tool_calls",
    "tool_specs",
    "validate_tool_calls",
]

INVALID_PREFIX = "<invalid>"
"""How an :class:`InvalidArguments` value starts; canonical JSON never starts with ``<``."""

_INT_DIGITS = 100  # integral numbers up to 10**100 are written out as integers, larger ones in E notation


class InvalidArguments(str):
    """The canonical form of arguments that are not JSON: ``<invalid>`` and the JSON-quoted raw text.

    Two calls with the same unparsable text still compare equal; none equals a call with valid arguments.
    ``reason`` says why the text does not parse.
    """

    reason: str

    def __new__(cls, raw: str, reason: str) -> InvalidArguments:
        self = super().__new__(cls, INVALID_PREFIX + json.dumps(raw.strip(), ensure_ascii=False))
        self.reason = reason
        return self

    @property
    def raw(self) -> str:
        """The unparsable argument text (stripped)."""
        return str(json.loads(self[len(INVALID_PREFIX) :]))


class _NotJSON(ValueError):
    """A value inside the arguments has no JSON form."""


# --------------------------------------------------------------------------------------- canonical arguments


def _number(d: Decimal) -> str:
    if not d.is_finite():
        raise _NotJSON(f"non-finite number {d}")
    if d == d.to_integral_value() and d.adjusted() < _INT_DIGITS:
        return str(int(d))
    return str(d.normalize())


def _canonical(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJSON(f"non-finite number {value}")
        return _number(Decimal(repr(value)))  # the shortest repr: 0.1 stays 0.1, not its binary expansion
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value.strip(), ensure_ascii=False)
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise _NotJSON(f"object key {k!r} is not a string")
            items.append((k, _canonical(v)))
        items.sort()
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{v}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    raise _NotJSON(f"{type(value).__name__} value has no JSON form")


def _reject_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not JSON")


def _loads(text: str) -> Any:
    """Strict JSON (no NaN/Infinity), numbers kept exact as :class:`~decimal.Decimal`/``int``."""
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


def _parse_arguments(args: Mapping[str, Any] | str | None) -> tuple[Any, str | None]:
    """(parsed value, None) or (None, why it does not parse)."""
    if args is None:
        return {}, None
    if isinstance(args, str):
        if not args.strip():
            return {}, None
        try:
            return _loads(args), None
        except (ValueError, RecursionError) as exc:
            return None, f"arguments are not valid JSON ({exc})"
    return args, None


def canonical_arguments(args: Mapping[str, Any] | str | None) -> str:
    """Arguments in canonical JSON (see the module docstring); :class:`InvalidArguments` when they do not parse.

    A string is parsed as JSON first; ``None`` and a blank string are ``{}``.
    """
    value, problem = _parse_arguments(args)
    raw = args if isinstance(args, str) else repr(args)
    if problem is not None:
        return InvalidArguments(raw, problem)
    try:
        return _canonical(value)
    except (_NotJSON, InvalidOperation, RecursionError) as exc:
        return InvalidArguments(raw, f"arguments have no JSON form ({exc})")


def _call_parts(call: Mapping[str, Any]) -> tuple[str, Any]:
    """A call's name and raw arguments, from LangChain's shape or OpenAI's nested one."""
    fn = call.get("function")
    if isinstance(fn, Mapping):
        return str(fn.get("name") or ""), fn.get("arguments")
    args = call.get("args", call.get("arguments"))
    return str(call.get("name") or ""), args


_PLAIN_NAME = re.compile(r"[\w.:/-]+")


def action_key(tool_calls: Iterable[Mapping[str, Any]]) -> str:
    """What two actions must share to vote together: each call's name and canonical arguments, as a multiset.

    Parallel calls compare regardless of order but duplicates count; call ids are ignored. One line per call,
    ``name{canonical arguments}``, lines sorted. ``""`` for no calls.
    """
    lines = []
    for call in tool_calls:
        name, args = _call_parts(call)
        shown = name if _PLAIN_NAME.fullmatch(name) else json.dumps(name, ensure_ascii=False)
        lines.append(shown + canonical_arguments(args))
    return "\n".join(sorted(lines))


def is_action(candidate: Mapping[str, Any]) -> bool:
    """Whether a candidate carries at least one tool call (an action) rather than a final answer."""
    return bool(candidate.get("tool_calls"))


# ----------------------------------------------------------------------------------------------- tool specs


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the model sees it: name, description and the JSON schema of its arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    @classmethod
    def from_tool(cls, tool: Any) -> ToolSpec:
        """From an OpenAI tool dict, a bare ``{"name", "description", "parameters"}`` dict, a LangChain tool,
        a pydantic model or a typed function (the last three through ``convert_to_openai_tool``).

        The parameters must be a valid JSON schema (a :class:`ConfigurationError` names the tool otherwise;
        BFCL specs need :func:`bfcl_tool_to_openai` first).
        """
        if isinstance(tool, ToolSpec):
            return tool
        try:
            fn = convert_to_openai_tool(tool)["function"]
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"tools: cannot read {tool!r:.80} as a tool ({exc})") from exc
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"tools: a tool has no name: {tool!r:.80}")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, Mapping):
            raise ConfigurationError(f"tools: {name!r}: parameters must be a JSON schema object")
        params = dict(params)
        try:
            jsonschema.validators.validator_for(params, default=Draft202012Validator).check_schema(params)
        except SchemaError as exc:
            hint = " (BFCL specs: convert them with bfcl_tool_to_openai)" if _has_bfcl_types(params) else ""
            raise ConfigurationError(
                f"tools: {name!r}: parameters are not a valid JSON schema: {exc.message}{hint}"
            ) from exc
        return cls(name, str(fn.get("description") or ""), params)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)},
        }


ToolsLike: TypeAlias = Mapping[str, ToolSpec] | Sequence[Any]
"""A list of tools in any form :meth:`ToolSpec.from_tool` reads, or the mapping :func:`tool_specs` returns."""


def tool_specs(tools: ToolsLike) -> dict[str, ToolSpec]:
    """Tools by name. Two tools with one name are a :class:`ConfigurationError`."""
    if isinstance(tools, Mapping) and all(isinstance(v, ToolSpec) for v in tools.values()):
        return dict(tools)
    if isinstance(tools, Mapping | str):
        raise ConfigurationError("tools: expected a list of tools")
    out: dict[str, ToolSpec] = {}
    for tool in tools:
        spec = ToolSpec.from_tool(tool)
        if spec.name in out:
            raise ConfigurationError(f"tools: two tools are named {spec.name!r}")
        out[spec.name] = spec
    return out


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=Draft202012Validator)
    return cls(schema)


def validate_tool_calls(tool_calls: Iterable[Mapping[str, Any]], tools: ToolsLike | None) -> list[str]:
    """Problems with ``tool_calls`` (empty when they are valid): unknown tool names, arguments that do not parse
    or are not an object, arguments that fail the tool's JSON schema (its ``$schema`` draft, 2020-12 when unset).

    ``tools=None`` means the request's tools are not known: only the arguments' JSON is checked.
    """
    specs = None if tools is None else tool_specs(tools)
    problems: list[str] = []
    for i, call in enumerate(tool_calls):
        name, raw = _call_parts(call)
        where = f"call {i} ({name!r})" if name else f"call {i}"
        if not name:
            problems.append(f"{where}: no tool name")
            continue
        if specs is not None and name not in specs:
            known = ", ".join(sorted(specs)) or "none"
            problems.append(f"{where}: unknown tool (known: {known})")
            continue
        value, problem = _parse_arguments(raw)
        if problem is not None:
            problems.append(f"{where}: {problem}")
            continue
        if not isinstance(value, Mapping):
            problems.append(f"{where}: arguments must be a JSON object, got {type(value).__name__}")
            continue
        try:
            plain = json.loads(_canonical_exact(value))
        except _NotJSON as exc:
            problems.append(f"{where}: arguments have no JSON form ({exc})")
            continue
        if specs is None:
            continue
        validator = _validator(json.dumps(specs[name].parameters, sort_keys=True, default=str))
        for err in sorted(validator.iter_errors(plain), key=lambda e: list(e.absolute_path)):
            path = "/".join(str(p) for p in err.absolute_path)
            problems.append(f"{where}: arguments{'/' + path if path else ''}: {err.message}")
    return problems


def _canonical_exact(value: Any) -> str:
    """JSON of ``value`` that keeps strings as they are (schema checks see the real arguments)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            return float(obj) if obj != obj.to_integral_value() else int(obj)
        if isinstance(obj, tuple):
            return list(obj)
        raise _NotJSON(f"{type(obj).__name__} value has no JSON form")

    try:
        return json.dumps(value, default=default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _NotJSON(str(exc)) from exc


def candidate_problems(candidate: Mapping[str, Any], tools: ToolsLike | None = None) -> list[str]:
    """Why a candidate is invalid: problems already recorded in ``meta["invalid"]`` plus, for an action,
    :func:`validate_tool_calls` against ``tools`` (only the arguments' JSON when ``tools`` is None)."""
    recorded = (candidate.get("meta") or {}).get("invalid") or []
    recorded = [recorded] if isinstance(recorded, str) else [str(p) for p in recorded]
    found = validate_tool_calls(candidate.get("tool_calls") or [], tools) if is_action(candidate) else []
    return recorded + [p for p in found if p not in recorded]


def mark_invalid(candidates: Iterable[Candidate], tools: ToolsLike | None = None) -> list[Candidate]:
    """Copies of ``candidates`` whose invalid actions carry their problems in ``meta["invalid"]``.

    Valid candidates are returned as they are; the inputs are never modified.
    """
    specs = None if tools is None else tool_specs(tools)
    out: list[Candidate] = []
    for cand in candidates:
        problems = candidate_problems(cand, specs)
        if problems:
            cand = {**cand, "meta": {**cand.get("meta", {}), "invalid": problems}}  # type: ignore[typeddict-item]
        out.append(cand)
    return out


# ----------------------------------------------------------------------------------------------------- BFCL

_BFCL_TYPES = {
    "dict": "object",
    "float": "number",
    "double": "number",
    "int": "integer",
    "tuple": "array",
    "list": "array",
    "bool": "boolean",
    "str": "string",
    "String": "string",
}


def _has_bfcl_types(schema: Any) -> bool:
    return _bfcl_schema(schema) != schema


def _bfcl_schema(schema: Any) -> Any:
    """A BFCL parameter schema in JSON Schema terms (``dict`` -> ``object``, ``float`` -> ``number``, ...)."""
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            if value == "any":
                continue  # BFCL's "any": no type constraint
            if isinstance(value, list):
                out[key] = [_BFCL_TYPES.get(v, v) for v in value if v != "any"]
            else:
                out[key] = _BFCL_TYPES.get(value, value)
        elif key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, Mapping):
            out[key] = {k: _bfcl_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "contains", "additionalItems"):
            out[key] = [_bfcl_schema(v) for v in value] if isinstance(value, list) else _bfcl_schema(value)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            out[key] = [_bfcl_schema(v) for v in value]
        else:
            out[key] = value
    if out.get("type") == "object" and schema.get("type") == "dict" and "properties" not in out:
        out["properties"] = {}
    return out


def bfcl_tool_to_openai(function: Mapping[str, Any]) -> dict[str, Any]:
    """A BFCL ``function`` entry as an OpenAI tool: BFCL's types (``dict``, ``float``, ``tuple``, ``any``...)
    become JSON Schema's; the name (dots and all) and everything else are kept."""
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise ConfigurationError(f"bfcl: a function needs a name: {function!r:.80}")
    params = _bfcl_schema(function.get("parameters") or {"type": "dict", "properties": {}})
    return {
        "type": "function",
        "function": {
            "name": function["name"],
            "description": str(function.get("description") or ""),
            "parameters": params,
        },
    }


# ---------------------------------------------------------------------------------------------- text parser

_TAG_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_CALL_KEYS = frozenset({"name", "arguments", "parameters", "args", "id", "type", "function"})
_ARG_KEYS = ("arguments", "parameters", "args")


_CLOSERS = {"{": "}", "[": "]"}


def _closed(text: str) -> str | None:
    """``text`` with the closing brackets it lacks at its end (a small model often drops the last ``}``); None when
    nothing is missing, a bracket does not match or a string is left open (a reply cut mid-value stays unread)."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in "}]" and (not stack or stack.pop() != ch):
            return None
    if in_string or not stack:
        return None
    return text + "".join(reversed(stack))


def _json_values(text: str) -> list[Any]:
    """The JSON value ``text`` holds (also several concatenated or one per line, or one that lacks its final
    closing brackets); [] when it is not JSON."""
    text = text.strip()
    if not text:
        return []
    try:
        return [_loads(text)]
    except (ValueError, RecursionError):
        pass
    repaired = _closed(text) if text[0] in _CLOSERS else None
    if repaired is not None:
        try:
            return [_loads(repaired)]
        except (ValueError, RecursionError):
            pass
    decoder = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)
    values, pos = [], 0
    while pos < len(text):
        try:
            value, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return []
        values.append(value)
        pos = end
        while pos < len(text) and text[pos] in " \t\r\n,;`":  # a stray fence ends a value too
            pos += 1
    return values


def _as_call(obj: Any) -> tuple[str, dict[str, Any]] | None:
    """(name, arguments) when ``obj`` is a call object in one of the known shapes, else None."""
    if not isinstance(obj, Mapping) or not set(obj) <= _CALL_KEYS:
        return None
    fn = obj.get("function")
    if isinstance(fn, Mapping):  # OpenAI's {"type": "function", "function": {"name", "arguments"}}
        if not set(fn) <= _CALL_KEYS:
            return None
        obj = fn
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    value = next((obj[k] for k in _ARG_KEYS if k in obj), None)
    for _ in range(2):  # arguments as a JSON string, or (some models) a JSON string of a JSON string
        if isinstance(value, str) or value is None:
            value, problem = _parse_arguments(value)
            if problem is not None:
                return None
    if not isinstance(value, Mapping):
        return None
    try:
        return name.strip(), json.loads(_canonical_exact(value))
    except _NotJSON:
        return None


def _calls_in(value: Any) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(value, Mapping) and set(value) == {"tool_calls"} and isinstance(value["tool_calls"], list):
        value = value["tool_calls"]
    items = value if isinstance(value, list) else [value]
    calls = [_as_call(v) for v in items]
    return [c for c in calls if c is not None] if all(c is not None for c in calls) else []


def _python_calls(text: str, known: Callable[[str], bool]) -> list[tuple[str, dict[str, Any]]]:
    """``name(a=1, b="x")`` lines (BFCL's own answer format) whose names are known tools, arguments literals."""
    try:
        text = text.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        tree = ast.parse(text, mode="exec")
    except (SyntaxError, ValueError, RecursionError):
        return []
    calls: list[tuple[str, dict[str, Any]]] = []
    for stmt in tree.body:
        exprs = stmt.value.elts if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Tuple) else None
        nodes = exprs if exprs is not None else [stmt.value] if isinstance(stmt, ast.Expr) else [None]
        for node in nodes:
            if not isinstance(node, ast.Call) or node.args:
                return []
            try:
                name = ast.unparse(node.func)
                args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
            except (ValueError, TypeError, SyntaxError, RecursionError):
                return []
            if not known(name) or len(args) != len(node.keywords):
                return []
            try:
                calls.append((name, json.loads(_canonical_exact(args))))
            except _NotJSON:
                return []
    return calls


def _call_id(index: int, name: str, args: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(f"{index}\n{name}\n{canonical_arguments(args)}".encode()).hexdigest()
    return f"call_{digest[:16]}"


def parse_text_tool_calls(text: str, tools: ToolsLike | None = None) -> list[ToolCall]:
    """Tool calls a model wrote as text instead of ``tool_calls``; [] when there are none. Never raises.

    Reads, in this order, the first form that yields calls: ``<tool_call>...</tool_call>`` tags (Qwen/Hermes; an
    unclosed last tag runs to the end), fenced code blocks (```` ```json ```` or any other or no language), and a
    bare JSON object or array that is the whole reply (one that lacks only its final closing brackets is closed;
    one cut inside a string is not read). JSON inside prose is not a call. A call object is ``{"name",
    "arguments"}`` (or ``"parameters"`` / ``"args"``; arguments may be a JSON string), OpenAI's ``{"function":
    {"name", "arguments"}}``, or a list of these; an object with any other key is not a call. With ``tools``, calls to
    unknown names are dropped, and Python-style ``name(key=literal, ...)`` lines (BFCL's answer format) in a
    fence or as the whole reply count too. Ids are ``call_`` and a hash of the call and its position.
    """
    try:
        names = None if tools is None else set(tool_specs(tools))
    except ConfigurationError:
        names = None
    if not isinstance(text, str):
        return []
    try:
        found = _find_calls(text, names)
    except (RecursionError, MemoryError):
        return []
    if names is not None:
        found = [(n, a) for n, a in found if n in names]
    return [tool_call(name=n, args=a, id=_call_id(i, n, a)) for i, (n, a) in enumerate(found)]


def _find_calls(text: str, names: set[str] | None) -> list[tuple[str, dict[str, Any]]]:
    def known(name: str) -> bool:
        return names is not None and name in names

    tags = _TAG_RE.findall(text)
    if tags:
        calls = [c for body in tags for c in _block_calls(body, known)]
        if calls:
            return calls
    fences = _FENCE_RE.findall(text)
    calls = [c for _lang, body in fences for c in _block_calls(body, known)]
    if calls:
        return calls
    return _block_calls(text, known)


def _block_calls(body: str, known: Callable[[str], bool]) -> list[tuple[str, dict[str, Any]]]:
    inner = _FENCE_RE.fullmatch(body.strip())
    if inner:
        body = inner.group(2)
    calls = [c for v in _json_values(body) for c in _calls_in(v)]
    return calls or _python_calls(body, known)
