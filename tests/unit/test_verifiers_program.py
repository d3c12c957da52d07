"""ProgramVerifier: programs sampled once per question, run in the sandbox, candidates scored by agreement."""

from __future__ import annotations

import asyncio

import pytest

import ttc_graph
import ttc_graph.verifiers
from ttc_graph.errors import ConfigurationError
from ttc_graph.strategies.stepwise import scores_prefixes
from ttc_graph.testing import FakeCall, ScriptedEndpoint
from ttc_graph.verifiers import (
    ArithmeticVerifier,
    CombinedVerifier,
    ConfidenceVerifier,
    ProgramVerifier,
    VerifyItem,
)
from ttc_graph.verifiers.program import agreement_score, extract_program
from ttc_graph.verifiers.sandbox import Sandbox

Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?"


def block(code: str) -> str:
    return f"Here is the program:\n```python\n{code}\n```\n"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(cpu_seconds=1, memory_mb=128, workers=2) as box:
        yield box


def item(text: str, question: str = Q, logprobs: tuple[float, ...] | None = None) -> VerifyItem:
    return VerifyItem(question, tuple(s for s in text.split("\n\n") if s.strip()) or ("",), logprobs)


def test_extract_program() -> None:
    assert extract_program(block("answer = 1")) == "answer = 1"
    assert extract_program("```py\nx = 2\nprint(x)\n```") == "x = 2\nprint(x)"
    assert extract_program("```python\nanswer = 3\n") == "answer = 3"  # cut off by max_tokens
    assert extract_program("answer = 4") == "answer = 4"
    assert extract_program("```\n\n```") is None
    assert extract_program("") is None
    assert extract_program("text ``` inline") is None


def test_agreement_score_is_the_smoothed_share() -> None:
    assert agreement_score("72", ["72", "72.0", "72", "70"]) == pytest.approx((3 + 0.5) / 5)
    assert agreement_score("70", ["72", "72", "72", "70"]) == pytest.approx(1.5 / 5)
    assert agreement_score(None, ["72", "72"]) == pytest.approx(0.5 / 3)
    assert agreement_score("72", [None, None]) == 0.5
    assert agreement_score("72", []) == 0.5
    assert agreement_score("1/2", ["0.5"], prior=0.0, prior_weight=0.0) == 1.0
    assert agreement_score("72", [], prior_weight=0.0) == 0.5


async def test_candidates_score_by_agreement_with_the_programs(sandbox: Sandbox) -> None:
    programs = [
        block("answer = 48 + 48 / 2"),
        block("april = 48\nmay = april // 2\nprint(april + may)"),
        block("answer = 48 + 24"),
        block("answer = 48 * 2"),
    ]
    endpoint = ScriptedEndpoint(programs)
    verifier = ProgramVerifier(endpoint, programs=4, sandbox=sandbox)
    result = await verifier.verify(
        [
            item("48 + 24 = 72\n\nThe answer is \\boxed{72}."),
            item("48 * 2 = 96\n\n\\boxed{96}"),
            item("I am not sure."),
        ]
    )
    values = [s.value for s in result.scores]
    assert values == pytest.approx([3.5 / 5, 1.5 / 5, 0.5 / 5])
    assert len(endpoint.calls) == 1 and endpoint.calls[0].n == 4
    call = endpoint.calls[0]
    assert call.params is not None and call.params.temperature == 0.8 and call.params.max_tokens == 256
    assert call.messages[-1]["content"].startswith(Q + "\n\nWrite a short Python program")
    assert result.usage.requests == 1 and result.usage.completion_tokens > 0


async def test_programs_are_sampled_once_per_question_even_concurrently(sandbox: Sandbox) -> None:
    endpoint = ScriptedEndpoint([block("answer = 72")], delay=0.01)
    verifier = ProgramVerifier(endpoint, programs=2, sandbox=sandbox)
    first, second = await asyncio.gather(
        verifier.verify([item("\\boxed{72}")]), verifier.verify([item("\\boxed{70}"), item("\\boxed{72}")])
    )
    assert len(endpoint.calls) == 1
    assert first.scores[0].value == pytest.approx(2.5 / 3)
    assert [s.value for s in second.scores] == pytest.approx([0.5 / 3, 2.5 / 3])
    assert first.usage.requests + second.usage.requests == 1  # the sampling batch carries the usage
    third = await verifier.verify([item("\\boxed{72}")])
    assert len(endpoint.calls) == 1 and third.usage.requests == 0


async def test_each_question_gets_its_own_programs(sandbox: Sandbox) -> None:
    def script(call: FakeCall, index: int) -> str:
        return block("answer = 1") if "first" in call.messages[-1]["content"] else block("answer = 2")

    endpoint = ScriptedEndpoint(script)
    verifier = ProgramVerifier(endpoint, programs=1, sandbox=sandbox)
    result = await verifier.verify([item("\\boxed{1}", "first"), item("\\boxed{1}", "second")])
    assert [s.value for s in result.scores] == pytest.approx([0.75, 0.25])
    assert len(endpoint.calls) == 2


async def test_no_valid_program_scores_the_neutral_prior(sandbox: Sandbox) -> None:
    replies = [
        block("import os\nanswer = 1"),
        block("while True:\n    pass"),
        block("x = ("),
        "I cannot write code for this.\n```\n```",
        block("print('no number here')"),
    ]
    verifier = ProgramVerifier(ScriptedEndpoint(replies), programs=5, sandbox=sandbox)
    result = await verifier.verify([item("\\boxed{72}"), item("no answer")])
    assert [s.value for s in result.scores] == [0.5, 0.5]
    found, sampled_now = await verifier.programs_for(Q)
    assert not sampled_now and found.valid == 0
    assert [r.error if r else None for r in found.results] == ["forbidden", "timeout", "syntax", None, None]


async def test_empty_solutions_and_failed_requests_are_unscored(sandbox: Sandbox) -> None:
    endpoint = ScriptedEndpoint([block("answer = 72")], fail_every=1)
    verifier = ProgramVerifier(endpoint, programs=1, sandbox=sandbox)
    result = await verifier.verify([item("\\boxed{72}"), VerifyItem(Q, ("  ",))])
    assert result.scores[0].value is None and "program request failed" in (result.scores[0].error or "")
    assert result.scores[1].value is None and "empty" in (result.scores[1].error or "")
    assert result.usage.failed_requests == 1
    endpoint.fail_every = None  # a failure is not cached: the next batch asks again
    again = await verifier.verify([item("\\boxed{72}")])
    assert again.scores[0].value == pytest.approx(0.75)
    assert len(endpoint.calls) == 2


async def test_combines_with_confidence_and_arithmetic(sandbox: Sandbox) -> None:
    program = ProgramVerifier(ScriptedEndpoint([block("answer = 72")]), programs=3, sandbox=sandbox)
    combined = CombinedVerifier([ConfidenceVerifier(), ArithmeticVerifier(), program])
    assert combined.granularity == "outcome"
    assert combined.needs_logprobs
    result = await combined.verify([item("48 + 24 = 72\n\n\\boxed{72}", logprobs=(-0.1, -0.3))])
    expected = 0.8187307530779818 * (1.5 / 2) * (3.5 / 4)  # exp(-0.2) x arithmetic x programs
    assert result.scores[0].value == pytest.approx(expected)
    assert result.usage.requests == 1


def test_it_is_an_outcome_verifier_that_scores_no_prefixes() -> None:
    verifier = ProgramVerifier(ScriptedEndpoint(["x"]))
    assert verifier.granularity == "outcome"
    assert verifier.scores_prefixes is False
    assert not scores_prefixes(verifier)
    assert not scores_prefixes(CombinedVerifier([ArithmeticVerifier(), verifier]))
    assert verifier.name == "ProgramVerifier(scripted, k=4)"
    verifier.sandbox.close()


def test_settings_are_checked() -> None:
    endpoint = ScriptedEndpoint(["x"])
    for kwargs in (
        {"programs": 0},
        {"programs": True},
        {"temperature": -1},
        {"max_tokens": 0},
        {"prior": 2.0},
        {"prior_weight": -1},
        {"cache_size": 0},
        {"prompt": "no placeholder {answer}"},
    ):
        with pytest.raises(ConfigurationError):
            ProgramVerifier(endpoint, sandbox=Sandbox(), **kwargs)
    with pytest.raises(ConfigurationError):
        ProgramVerifier(object())  # type: ignore[arg-type]


async def test_custom_prompt_and_cache_bound(sandbox: Sandbox) -> None:
    endpoint = ScriptedEndpoint([block("answer = 1")])
    verifier = ProgramVerifier(
        endpoint, programs=1, prompt="Question: {question}", system_prompt=None, cache_size=1, sandbox=sandbox
    )
    await verifier.verify([item("\\boxed{1}", "a")])
    await verifier.verify([item("\\boxed{1}", "b")])
    await verifier.verify([item("\\boxed{1}", "a")])  # "a" was dropped for "b"
    assert len(endpoint.calls) == 3
    assert endpoint.calls[0].messages == [{"role": "user", "content": "Question: a"}]


def test_exported() -> None:
    assert ttc_graph.ProgramVerifier is ProgramVerifier
    assert "ProgramVerifier" in ttc_graph.__all__ and "ProgramVerifier" in ttc_graph.verifiers.__all__
    for name in ttc_graph.verifiers.__all__:
        assert hasattr(ttc_graph.verifiers, name)


def test_built_from_a_spec_on_the_policy_and_refused_by_step_wise_search() -> None:
    from ttc_graph.specs import build_verifier, parse_spec

    policy = ScriptedEndpoint(["x"])
    spec = parse_spec(
        {
            "kind": "best_of_n",
            "n": 4,
            "verifier": {
                "kind": "combined",
                "parts": [{"kind": "confidence"}, {"kind": "arithmetic"}, {"kind": "program", "programs": 2}],
            },
        }
    )
    combined = build_verifier(spec.verifier, policy)
    assert isinstance(combined, CombinedVerifier)
    program = combined.parts[2]
    assert isinstance(program, ProgramVerifier)
    assert program.endpoint is policy and program.programs == 2 and program.temperature == 0.8
    with pytest.raises(ValueError, match="step"):
        parse_spec({"kind": "beam_search", "n": 4, "verifier": {"kind": "program"}})


async def test_in_best_of_n_weighted_it_picks_the_programs_answer_and_charges_verify_usage(sandbox: Sandbox) -> None:
    from ttc_graph import create_best_of_n

    policy = ScriptedEndpoint(["48 + 24 = 72\n\n\\boxed{72}", "48 * 2 = 96\n\n\\boxed{96}", "\\boxed{96}"])
    programs = ScriptedEndpoint([block("print(48 + 48 // 2)")])
    verifier = ProgramVerifier(programs, programs=3, sandbox=sandbox)
    graph = create_best_of_n(policy, verifier, n=3, selection="weighted").compile()
    out = await graph.ainvoke({"question": Q})
    assert out["answer"] == "72"  # one sample against two: the programs' agreement outweighs the vote
    verify = out["usage"]["by_kind"]["verify"]
    assert verify["requests"] == 1 and verify["completion_tokens"] > 0
    assert len(programs.calls) == 1
