"""The text tool-call parser on replies the benchmark model (Qwen2.5-Coder-0.5B-Instruct on llama.cpp, which does
not turn them into ``tool_calls``) really wrote, collected from its answers to the live tests' and benchmarks'
requests, plus the forms other models use."""

from __future__ import annotations

from typing import Any

import pytest

from ttc_graph.tool_calls import parse_text_tool_calls

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def calls(text: str, tools: Any = None) -> list[tuple[str, dict[str, Any]]]:
    return [(c["name"], c["args"]) for c in parse_text_tool_calls(text, tools)]


PARIS = [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize(
    "reply",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris"\n  }\n}\n```',
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '{\n    "name": "get_weather",\n    "arguments": {\n        "city": "Paris"\n    }\n}',
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',  # a stray closing fence
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    ],
    ids=["bare", "fenced-pretty", "fenced", "pretty", "stray-fence", "tags"],
)
def test_the_forms_the_model_writes_a_call_in(reply: str) -> None:
    assert calls(reply, [WEATHER]) == PARIS


def test_a_call_that_lacks_its_last_brace_is_closed() -> None:
    reply = '{"name": "calculator", "arguments": {"expression": "120 - 12 - 2 * 12"}'  # a real reply, stop-finished
    assert calls(reply, [CALCULATOR]) == [("calculator", {"expression": "120 - 12 - 2 * 12"})]


def test_a_reply_cut_inside_a_value_is_not_a_call() -> None:
    reply = '{"name": "calculator", "arguments": {"expression": "2 * 2 * 10 * 10 * 10 * 10 *'  # cut at max_tokens
    assert calls(reply, [CALCULATOR]) == []
    assert calls('{"name": "calculator", "arguments": {"expression": "1"]}', [CALCULATOR]) == []  # mismatched


def test_one_call_per_line_is_parallel_calls() -> None:
    reply = (
        '{"name": "calculator", "arguments": {"expression": "123 * 45 + 6"}}\n'
        '{"name": "calculator", "arguments": {"expression": "(123 * 45) + 6"}}\n'
    )
    assert calls(reply, [CALCULATOR]) == [
        ("calculator", {"expression": "123 * 45 + 6"}),
        ("calculator", {"expression": "(123 * 45) + 6"}),
    ]


def test_calls_to_tools_the_request_did_not_offer_are_dropped() -> None:
    reply = '{"name": "dailyRevenue", "arguments": {"eggsEaten": 3, "eggsBaked": 4, "pricePerFreshDuckEgg": 2}}'
    assert calls(reply, [CALCULATOR]) == []
    assert calls(reply) == [("dailyRevenue", {"eggsEaten": 3, "eggsBaked": 4, "pricePerFreshDuckEgg": 2})]


@pytest.mark.parametrize(
    "reply",
    [
        "To get the weather in Paris right now, you can use the following function call:\n\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n\nThe `get_weather` function returns an object.',
        "Let's approach this step-by-step:\n\n1. The function `get_weather` is called with a `city` parameter.",
        '<response>\n{"name": "janet\'s_ducks", "arguments": {"total_eggs": 16, "total_muffins": 4 * muffins}}\n'
        "</response>",
        "The answer is 5541.",
    ],
    ids=["json-in-prose", "prose", "not-json", "answer"],
)
def test_prose_and_invalid_json_are_not_calls(reply: str) -> None:
    assert calls(reply, [WEATHER, CALCULATOR]) == []
