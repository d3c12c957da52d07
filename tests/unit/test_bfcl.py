"""BFCL v4: the loader on the real files, the tool conversion, the AST checker and the benchmark report."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from tests.scripts import load_script
from ttc_graph.errors import ConfigurationError
from ttc_graph.eval.bfcl import (
    CATEGORIES,
    BFCLItem,
    bfcl_name_map,
    bfcl_tools,
    canonical_calls,
    check_ast,
    load_bfcl,
    normalize_string,
    parse_tool_calls,
    tool_name,
)
from ttc_graph.eval.datasets import data_dir
from ttc_graph.eval.sweep import wilson_interval

JSON_TYPES = {"object", "number", "array", "integer", "string", "boolean"}


def bfcl_root() -> Path:
    try:
        root = data_dir() / "bfcl"
    except ConfigurationError as exc:
        pytest.skip(f"BFCL data absent: {exc}")
    if not (root / "BFCL_v4_simple_python.json").is_file():
        pytest.skip(f"BFCL data absent: {root} has no BFCL_v4_simple_python.json (set TTC_DATA_DIR)")
    return root


@pytest.fixture(scope="module")
def items() -> dict[str, list[BFCLItem]]:
    root = bfcl_root()
    return {category: load_bfcl(category, root=root) for category in CATEGORIES}


def make_item(category: str, functions: list[dict[str, Any]], answers: list[dict[str, Any]]) -> BFCLItem:
    return BFCLItem(
        id=f"{category}_test",
        category=category,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "?"}],
        tools=bfcl_tools(functions),
        functions=functions,
        answers=answers,
        names=bfcl_name_map(functions),
    )


def call(function: str, /, **args: Any) -> dict[str, Any]:
    return {"name": function, "args": args, "id": f"call_{function}"}


# ----------------------------------------------------------------------------------- answers built from the data


def realize(accepted: Any) -> Any:
    """A concrete value from an accepted value: dicts of accepted lists take each key's first usable entry."""
    if isinstance(accepted, dict):
        out = {}
        for key, alternatives in accepted.items():
            if alternatives[0] != "":
                out[key] = realize(alternatives[0])
        return out
    if isinstance(accepted, list):
        return [realize(v) for v in accepted]
    return accepted


def first_answer(item: BFCLItem) -> list[dict[str, Any]]:
    """The first accepted answer as LangChain tool calls under their tool names: every parameter takes its first
    accepted value; ``""`` first means omit it, unless the spec requires it (then its first other value); a
    parameter the spec does not define is omitted when ``""`` allows it."""
    calls = []
    for accepted in item.answers:
        ((name, params),) = accepted.items()
        spec = next(f for f in item.functions if f["name"] == name)["parameters"]
        args = {}
        for param, alternatives in params.items():
            if param not in spec["properties"] and "" in alternatives:
                continue
            usable = [a for a in alternatives if a != ""]
            if alternatives[0] != "":
                args[param] = realize(alternatives[0])
            elif param in spec.get("required", []):
                args[param] = realize(usable[0])
        calls.append(call(tool_name(name), **args))
    return calls


def openai_shape(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["args"])}}
        for c in calls
    ]


# ------------------------------------------------------------------------------------------------------ loader


def test_counts_per_category() -> None:
    root = bfcl_root()
    expected = {"simple": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200, "irrelevance": 240}
    for category, stem in CATEGORIES.items():
        lines = [ln for ln in (root / f"BFCL_v4_{stem}.json").read_text().splitlines() if ln.strip()]
        loaded = load_bfcl(category)
        assert len(loaded) == len(lines) == expected[category]
        assert {i.category for i in loaded} == {category}
        assert len({i.id for i in loaded}) == len(loaded)
        assert all(i.id.startswith(stem) for i in loaded)
        if category == "irrelevance":
            assert all(i.answers == [] for i in loaded)
        else:
            assert all(i.answers for i in loaded)
        assert len(load_bfcl(category, limit=3)) == 3


def test_items_are_openai_chat(items: dict[str, list[BFCLItem]]) -> None:
    first = items["simple"][0]
    assert first.id == "simple_python_0"
    assert first.messages == [
        {"role": "user", "content": "Find the area of a triangle with a base of 10 units and height of 5 units."}
    ]
    for group in items.values():
        for item in group:
            assert item.messages and all(set(m) == {"role", "content"} for m in item.messages)
            assert len(item.tools) == len(item.functions)


def test_tools_are_valid_json_schema(items: dict[str, list[BFCLItem]]) -> None:
    checked = 0

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            assert "optional" not in node
            if "type" in node:
                assert node["type"] in JSON_TYPES
            for value in node.get("properties", {}).values():
                walk(value)
            walk(node.get("items"))

    for group in items.values():
        for item in group:
            for tool in item.tools:
                assert tool["type"] == "function"
                fn = tool["function"]
                assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", fn["name"])
                assert item.names[fn["name"]] in {f["name"] for f in item.functions}
                jsonschema.Draft7Validator.check_schema(fn["parameters"])
                assert fn["parameters"]["type"] == "object"
                walk(fn["parameters"])
                checked += 1
    assert checked > 1000


def test_dotted_names_map_reversibly(items: dict[str, list[BFCLItem]]) -> None:
    item = items["simple"][1]
    assert item.functions[0]["name"] == "math.factorial"
    assert item.tools[0]["function"]["name"] == "math_factorial"
    assert item.names == {"math_factorial": "math.factorial"}
    assert check_ast(item, [call("math_factorial", number=5)]).valid
    assert check_ast(item, [call("math.factorial", number=5)]).valid


def test_converted_required_lists_are_kept(items: dict[str, list[BFCLItem]]) -> None:
    for group in items.values():
        for item in group:
            for spec, tool in zip(item.functions, item.tools, strict=True):
                assert tool["function"]["parameters"].get("required", []) == spec["parameters"].get("required", [])


def test_unknown_category_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown category 'simple_java'.*simple, multiple"):
        load_bfcl("simple_java")
    with pytest.raises(ConfigurationError, match=r"BFCL_v4_parallel\.json does not exist"):
        load_bfcl("parallel", root=tmp_path)
    row = {"id": "parallel_0", "question": [[{"role": "user", "content": "?"}]], "function": [{"name": "f"}]}
    (tmp_path / "BFCL_v4_parallel.json").write_text(json.dumps(row) + "\n")
    with pytest.raises(ConfigurationError, match=r"possible_answer/BFCL_v4_parallel\.json does not exist"):
        load_bfcl("parallel", root=tmp_path)
    (tmp_path / "possible_answer").mkdir()
    (tmp_path / "possible_answer" / "BFCL_v4_parallel.json").write_text(json.dumps({"id": "other"}) + "\n")
    with pytest.raises(ConfigurationError, match="has no answer for item 'parallel_0'"):
        load_bfcl("parallel", root=tmp_path)


def test_missing_data_dir_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTC_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match=re.escape(str(tmp_path / "bfcl" / "BFCL_v4_simple_python.json"))):
        load_bfcl("simple")


def test_multi_turn_question_is_refused(tmp_path: Path) -> None:
    turn = [{"role": "user", "content": "?"}]
    row = {"id": "irrelevance_0", "question": [turn, turn], "function": [{"name": "f", "parameters": {}}]}
    (tmp_path / "BFCL_v4_irrelevance.json").write_text(json.dumps(row) + "\n")
    with pytest.raises(ConfigurationError, match=r"'irrelevance_0'.*exactly one turn"):
        load_bfcl("irrelevance", root=tmp_path)


# --------------------------------------------------------------------------------------------- tool conversion


def test_bfcl_tools_maps_types_recursively() -> None:
    spec = {
        "name": "geo.route",
        "description": "Route.",
        "parameters": {
            "type": "dict",
            "properties": {
                "start": {"type": "tuple", "items": {"type": "float"}},
                "stops": {
                    "type": "array",
                    "items": {"type": "dict", "properties": {"at": {"type": "float", "optional": True}}},
                },
                "data": {"type": "any", "description": "Anything."},
            },
            "required": ["start"],
            "optional": [],
        },
    }
    (tool,) = bfcl_tools([spec])
    assert tool == {
        "type": "function",
        "function": {
            "name": "geo_route",
            "description": "Route.",
            "parameters": {
                "type": "object",
                "properties": {
                    "start": {"type": "array", "items": {"type": "number"}},
                    "stops": {"type": "array", "items": {"type": "object", "properties": {"at": {"type": "number"}}}},
                    "data": {"description": "Anything."},
                },
                "required": ["start"],
            },
        },
    }
    jsonschema.Draft7Validator.check_schema(tool["function"]["parameters"])
    validator = jsonschema.Draft7Validator(tool["function"]["parameters"])
    assert validator.is_valid({"start": [1, 2.5], "data": {"x": 1}})
    assert not validator.is_valid({"start": "1,2"})
    assert not validator.is_valid({"stops": []})


def test_bfcl_tools_rejects_unknown_types_and_collisions() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown type 'complex' at f\.z"):
        bfcl_tools([{"name": "f", "parameters": {"type": "dict", "properties": {"z": {"type": "complex"}}}}])
    with pytest.raises(ConfigurationError, match=r"'a\.b' and 'a_b' both map to tool name 'a_b'"):
        bfcl_tools([{"name": "a.b", "parameters": {}}, {"name": "a_b", "parameters": {}}])
    with pytest.raises(ConfigurationError, match="not a valid tool name"):
        bfcl_tools([{"name": "has space", "parameters": {}}])


# ----------------------------------------------------------------------------------------------------- checker


def test_first_accepted_answer_of_every_item_passes(items: dict[str, list[BFCLItem]]) -> None:
    for category, group in items.items():
        for item in group:
            calls = first_answer(item)
            result = check_ast(item, calls)
            assert result.valid, (item.id, result.reason)
            assert check_ast(item, openai_shape(calls)).valid, item.id
            if category != "irrelevance":
                reversed_calls = list(reversed(calls))
                assert check_ast(item, reversed_calls).valid, item.id


def test_wrong_function_name_is_rejected(items: dict[str, list[BFCLItem]]) -> None:
    for category in ("simple", "multiple"):
        for item in items[category][:50]:
            ((_, args),) = parse_tool_calls(first_answer(item))
            result = check_ast(item, [call("not_a_function", **args)])
            assert not result.valid and "not among the accepted" in result.reason
    multiple = next(i for i in items["multiple"] if len(i.functions) > 1)
    ((good, _),) = parse_tool_calls(first_answer(multiple))
    other = next(n for n in multiple.names if n != good)
    ((_, args),) = parse_tool_calls(first_answer(multiple))
    assert not check_ast(multiple, [call(other, **args)]).valid


def test_missing_required_argument_is_rejected(items: dict[str, list[BFCLItem]]) -> None:
    rejected = 0
    for category in ("simple", "multiple", "parallel", "parallel_multiple"):
        for item in items[category]:
            calls = first_answer(item)
            name = item.names[calls[0]["name"]]
            required = next(f for f in item.functions if f["name"] == name)["parameters"].get("required", [])
            if not required:
                continue
            calls[0] = call(calls[0]["name"], **{k: v for k, v in calls[0]["args"].items() if k != required[0]})
            result = check_ast(item, calls)
            assert not result.valid, item.id
            rejected += 1
    assert rejected > 900


def test_wrong_value_is_rejected(items: dict[str, list[BFCLItem]]) -> None:
    for item in items["simple"]:
        (c,) = first_answer(item)
        name = item.names[c["name"]]
        accepted = item.answers[0][name]
        for param, value in c["args"].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                wrong = {**c["args"], param: value + 1000}
                if not any(a == value + 1000 for a in accepted[param]):
                    result = check_ast(item, [call(c["name"], **wrong)])
                    assert not result.valid and param in result.reason, item.id
            elif isinstance(value, str):
                wrong = {**c["args"], param: value + " zzz"}
                result = check_ast(item, [call(c["name"], **wrong)])
                assert not result.valid and param in result.reason, item.id


def test_extra_argument_is_rejected(items: dict[str, list[BFCLItem]]) -> None:
    for category in ("simple", "multiple", "parallel", "parallel_multiple"):
        for item in items[category][:40]:
            calls = first_answer(item)
            calls[-1] = call(calls[-1]["name"], **calls[-1]["args"], made_up_parameter=1)
            result = check_ast(item, calls)
            assert not result.valid and "unexpected parameter 'made_up_parameter'" in result.reason, item.id


def test_parallel_needs_the_same_multiset(items: dict[str, list[BFCLItem]]) -> None:
    for category in ("parallel", "parallel_multiple"):
        for item in items[category]:
            calls = first_answer(item)
            assert not check_ast(item, calls[:-1]).valid, item.id  # one call short
            assert not check_ast(item, [*calls, calls[0]]).valid, item.id  # one call too many
            duplicated = [calls[0], *calls[:-1]]  # right count, but the last accepted call never made
            if canonical_calls(item, duplicated) != canonical_calls(item, calls):
                result = check_ast(item, duplicated)
                assert not result.valid, item.id
                # an accepted call left without a fit is named; duplicated accepted calls fail the matching
                assert re.search(r"no call matches accepted call|no one-to-one matching", result.reason)


def test_any_call_fails_irrelevance(items: dict[str, list[BFCLItem]]) -> None:
    for item in items["irrelevance"]:
        assert check_ast(item, []).valid
        assert check_ast(item, None).valid
        name = item.tools[0]["function"]["name"]
        result = check_ast(item, [call(name)])
        assert not result.valid and "expected no tool call" in result.reason


def test_simple_takes_exactly_one_call(items: dict[str, list[BFCLItem]]) -> None:
    item = items["simple"][0]
    (c,) = first_answer(item)
    assert not check_ast(item, []).valid
    assert "exactly 1 call, got 2" in check_ast(item, [c, c]).reason


FLOAT_FN = {
    "name": "geo.distance",
    "parameters": {
        "type": "dict",
        "properties": {
            "city": {"type": "string"},
            "km": {"type": "float"},
            "count": {"type": "integer"},
            "exact": {"type": "boolean"},
            "unit": {"type": "string"},
            "stops": {"type": "array", "items": {"type": "string"}},
            "area": {"type": "dict", "properties": {"width": {"type": "integer"}, "tag": {"type": "string"}}},
        },
        "required": ["city", "km"],
    },
}


def float_item(**accepted: list[Any]) -> BFCLItem:
    base = {"city": ["Los Angeles", "LA"], "km": [10.0], "unit": ["km", ""]}
    return make_item("simple", [FLOAT_FN], [{"geo.distance": {**base, **accepted}}])


def test_string_normalisation() -> None:
    assert normalize_string("April 1, 2024") == normalize_string("april 1 2024") == "april12024"
    assert normalize_string("New_York/NY-*^.") == "newyorkny"
    assert normalize_string("data['sales']") == 'data["sales"]'
    item = float_item()
    for city in ("Los Angeles", "los angeles", "LOS-ANGELES", "Los_Angeles.", "l.a."):
        assert check_ast(item, [call("geo_distance", city=city, km=10.0)]).valid, city
    for city in ("Los Angelos", "Los Angeles, CA", "L A X"):
        assert not check_ast(item, [call("geo_distance", city=city, km=10.0)]).valid, city


def test_int_is_accepted_for_float_but_not_float_for_int() -> None:
    item = float_item(count=[3])
    assert check_ast(item, [call("geo_distance", city="LA", km=10, count=3)]).valid
    result = check_ast(item, [call("geo_distance", city="LA", km=10, count=3.0)])
    assert not result.valid and "expects type integer, got float" in result.reason
    assert not check_ast(item, [call("geo_distance", city="LA", km="10", count=3)]).valid
    assert not check_ast(item, [call("geo_distance", city="LA", km=10.5, count=3)]).valid


def test_booleans_are_not_numbers() -> None:
    item = float_item(count=[1], exact=[True])
    assert check_ast(item, [call("geo_distance", city="LA", km=10.0, count=1, exact=True)]).valid
    assert not check_ast(item, [call("geo_distance", city="LA", km=10.0, count=True, exact=True)]).valid
    assert not check_ast(item, [call("geo_distance", city="LA", km=10.0, count=1, exact=1)]).valid


def test_untyped_dict_values_compare_by_kind() -> None:
    fn = {"name": "avg", "parameters": {"type": "dict", "properties": {"grades": {"type": "dict"}}}}
    item = make_item("simple", [fn], [{"avg": {"grades": [{"math": [1], "art": ["A+"], "pass": [True]}]}}])
    assert check_ast(item, [call("avg", grades={"math": 1.0, "art": "a+", "pass": True})]).valid
    for grades in ({"math": 1, "art": "A+", "pass": 1}, {"math": True, "art": "A+", "pass": True}):
        assert not check_ast(item, [call("avg", grades=grades)]).valid, grades


def test_optional_parameters() -> None:
    item = float_item(count=[3, ""])
    assert check_ast(item, [call("geo_distance", city="LA", km=10.0)]).valid  # unit and count may be omitted
    assert check_ast(item, [call("geo_distance", city="LA", km=10.0, unit="KM", count=3)]).valid
    strict = float_item(count=[3])
    result = check_ast(strict, [call("geo_distance", city="LA", km=10.0)])
    assert not result.valid and "'count' is missing and not optional" in result.reason
    required_but_blank = float_item(km=["", 10.0])
    result = check_ast(required_but_blank, [call("geo_distance", city="LA")])
    assert not result.valid and "missing required parameter 'km'" in result.reason
    unaccepted = check_ast(float_item(), [call("geo_distance", city="LA", km=10.0, count=3)])
    assert not unaccepted.valid and "unexpected parameter 'count'" in unaccepted.reason


def test_lists_and_dicts_compare_element_wise() -> None:
    item = float_item(
        stops=[["Santa Barbara", "Monterey"], ["Monterey", "Santa Barbara"]],
        area=[{"width": [20], "tag": ["North Wing", ""]}],
    )
    ok = {"city": "LA", "km": 10.0}
    assert check_ast(item, [call("geo_distance", **ok, stops=["monterey", "SANTA BARBARA"], area={"width": 20})]).valid
    tagged = {"width": 20, "tag": "north-wing"}
    assert check_ast(item, [call("geo_distance", **ok, stops=["Santa Barbara", "Monterey"], area=tagged)]).valid
    wrong: list[tuple[Any, dict[str, Any]]] = [
        (["Santa Barbara"], {"width": 20}),
        (["Santa Barbara", "Monterey", "Monterey"], {"width": 20}),
        (["Santa Barbara", "Monterey"], {"width": 21}),
        (["Santa Barbara", "Monterey"], {"width": 20.0}),
        (["Santa Barbara", "Monterey"], {"width": 20, "colour": "red"}),
        (["Santa Barbara", "Monterey"], {"tag": "North Wing"}),
        ("Santa Barbara, Monterey", {"width": 20}),
    ]
    for stops, area in wrong:
        assert not check_ast(item, [call("geo_distance", **ok, stops=stops, area=area)]).valid, (stops, area)


def test_accepted_string_for_a_non_string_parameter(items: dict[str, list[BFCLItem]]) -> None:
    item = next(i for i in items["parallel_multiple"] if i.id == "parallel_multiple_21")
    calls = first_answer(item)
    fit = next(c for c in calls if c["name"] == "linear_regression_fit")
    assert fit["args"]["x"] == "data['sales']"
    fit["args"]["x"] = 'data["sales"]'
    assert check_ast(item, calls).valid
    fit["args"]["x"] = [1, 2, 3]
    assert not check_ast(item, calls).valid


def test_parallel_matching_is_not_greedy() -> None:
    fn = {"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}
    item = make_item("parallel", [fn], [{"f": {"x": [1, 2]}}, {"f": {"x": [1]}}])
    assert check_ast(item, [call("f", x=1), call("f", x=2)]).valid
    assert check_ast(item, [call("f", x=2), call("f", x=1)]).valid
    result = check_ast(item, [call("f", x=2), call("f", x=2)])
    assert not result.valid and "accepted call 1" in result.reason


def test_malformed_calls() -> None:
    item = float_item()
    bad_json = [{"id": "c", "type": "function", "function": {"name": "geo_distance", "arguments": "{city: LA"}}]
    result = check_ast(item, bad_json)
    assert not result.valid and "not a JSON object" in result.reason
    with pytest.raises(ConfigurationError, match="neither 'name' nor 'function'"):
        check_ast(item, [{"arguments": "{}"}])
    assert parse_tool_calls([{"function": {"name": "f", "arguments": ""}}]) == [("f", {})]


def test_canonical_calls_groups_equivalent_answers() -> None:
    fn = {"name": "m.f", "parameters": {"type": "dict", "properties": {"x": {"type": "float"}, "s": {}}}}
    item = make_item("parallel", [fn], [{"m.f": {"x": [1.0]}}, {"m.f": {"x": [2.0]}}])
    a = [call("m_f", x=1, s="New York"), call("m_f", x=2.0, s="b")]
    b = [call("m.f", s="b", x=2), call("m_f", s="new-york", x=1.0)]
    assert canonical_calls(item, a) == canonical_calls(item, b)
    assert canonical_calls(item, a) != canonical_calls(item, [call("m_f", x=1, s="New York")])
    assert canonical_calls(item, a) != canonical_calls(item, [call("m_f", x=1, s="Boston"), call("m_f", x=2, s="b")])


# ---------------------------------------------------------------------------------------------- benchmark report


def benchmark() -> ModuleType:
    return load_script("benchmarks/bfcl.py", "bfcl_benchmark")


def test_report_tables_each_category(capsys: pytest.CaptureFixture[str]) -> None:
    bench = benchmark()
    flags = [
        (True, True, True, True),
        (False, True, False, True),
        (False, False, False, True),
        (True, True, True, True),
    ]
    records = [
        {"category": "simple", "pass1": p1, "majority": m, "judge": j, "passn": pn, "tokens": 100 * (k + 1)}
        for k, (p1, m, j, pn) in enumerate(flags)
    ]
    records += [{"category": "irrelevance", "pass1": k < 1, "majority": False, "judge": k < 2, "passn": True,
                 "tokens": 10} for k in range(5)]  # fmt: skip
    text = report_and_capture(bench, records, capsys)
    lines = text.splitlines()
    assert lines[0].startswith("| category | items | pass@1 [95% CI] | majority@n [95% CI] | judge-weighted@n")
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert list(rows) == ["simple", "irrelevance", "all"]  # categories in BFCL order, then the pooled row
    low, high = wilson_interval(2, 4)
    assert f"50.0% [{100 * low:.1f}, {100 * high:.1f}]" in rows["simple"]
    low, high = wilson_interval(3, 4)
    assert f"75.0% [{100 * low:.1f}, {100 * high:.1f}]" in rows["simple"]
    assert rows["simple"].rstrip(" |").endswith("250")  # mean of 100, 200, 300, 400
    assert "| 5 | 20.0%" in rows["irrelevance"] and "0.0% [0.0," in rows["irrelevance"]
    low, high = wilson_interval(9, 9)
    assert f"100.0% [{100 * low:.1f}, 100.0]" in rows["all"]
    summary = bench.summarize(records)
    assert summary["all"]["items"] == 9 and summary["all"]["pass1"]["hits"] == 3
    assert summary["all"]["tokens"] == pytest.approx((1000 + 50) / 9)


def test_report_adds_pass_at_1_from_all_samples_when_records_hold_it(capsys: pytest.CaptureFixture[str]) -> None:
    bench = benchmark()
    records = [{"category": "simple", "pass1": k == 0, "pass1_mean": share, "majority": True, "judge": True,
                "passn": True, "tokens": 1} for k, share in enumerate([0.25, 0.75, 0.5, 0.5])]  # fmt: skip
    text = report_and_capture(bench, records, capsys)
    assert text.splitlines()[0].endswith("| pass@n [95% CI] | pass@1, mean of n [95% CI] | tokens/item |")
    row = bench.summarize(records)["simple"]["pass1_mean"]
    assert row["rate"] == pytest.approx(0.5) and 0.25 <= row["low"] < 0.5 < row["high"] <= 0.75
    assert "| 25.0% [" in text and "| 50.0% [" in text


def report_and_capture(bench: ModuleType, records: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> str:
    text = bench.report(records)
    assert capsys.readouterr().out.strip() == text
    return text


def test_report_rejects_incomplete_records() -> None:
    bench = benchmark()
    with pytest.raises(ConfigurationError, match=r"record 0 lacks \['judge'\]"):
        bench.report([{"category": "simple", "pass1": True, "majority": True, "passn": True, "tokens": 1}])


def test_benchmark_arguments() -> None:
    bench = benchmark()
    args = bench.parse_args(["--categories", "simple,parallel", "--limit", "5"])
    assert (args.categories, args.limit, args.n, args.out) == (["simple", "parallel"], 5, 8, "docs/bfcl.json")
    with pytest.raises(SystemExit):
        bench.parse_args(["--categories", "simple,java"])
    doc = bench.run_item.__doc__
    assert doc is not None and all(key in doc for key in ("pass1", "majority", "judge", "passn", "tokens"))


def test_a_rerun_reuses_finished_and_partial_records_of_the_same_settings(tmp_path: Path) -> None:
    bench = benchmark()
    out = tmp_path / "bfcl.json"
    config = {"base_url": "u", "model": "m", "n": 8, "temperature": 0.7, "max_tokens": 256}
    out.write_text(json.dumps({"config": {**config, "limit": 3}, "records": [{"id": "a"}, {"id": "b"}]}))
    assert set(bench._load_finished(out, config)) == {"a", "b"}
    assert bench._load_finished(out, {**config, "n": 4}) == {}  # another setting samples afresh
    partial = bench._partial_path(out)
    assert partial.name == "bfcl.partial.jsonl"
    lines = [
        {"config": config, "record": {"id": "c"}},
        {"config": {**config, "temperature": 1.0}, "record": {"id": "d"}},
    ]
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert set(bench._load_partial(partial, config)) == {"c"}
