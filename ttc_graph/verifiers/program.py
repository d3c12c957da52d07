"""A program-checked outcome verifier: the model writes programs for the question, a sandbox runs them, and a
candidate scores by how many of the programs' answers agree with its final answer."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from ttc_graph.answers import answer_key, answers_equal, extract_answer
from ttc_graph.endpoints.base import ChatMessage, Endpoint, RequestUsage, SamplingParams
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.verifiers.base import Score, VerificationResult, Verifier, VerifyItem
from ttc_graph.verifiers.judge import check_template
from ttc_graph.verifiers.sandbox import ProgramResult, Sandbox

__all__ = [
    "DEFAULT_PROGRAM_PROMPT",
    "DEFAULT_PROGRAM_SYSTEM_PROMPT",
    "ProgramSet",
    "ProgramVerifier",
    "agreement_score",
    "extract_program",
]

DEFAULT_PROGRAM_SYSTEM_PROMPT = "You are a Python programmer. You answer with code only."
DEFAULT_PROGRAM_PROMPT = (
    "{question}\n\n"
    "Write a short Python program without comments that computes the answer and prints it. "
    "Reply with only a ```python code block."
)
"""Placeholder: ``{question}``."""

_FENCED = re.compile(r"```[ \t]*(?:python|py|Python|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_program(text: str) -> str | None:
    """The program in a reply: the first fenced code block (an unclosed one runs to the end), else the whole
    reply when it has no fence at all; None when there is no code."""
    if not isinstance(text, str) or not text.strip():
        return None
    m = _FENCED.search(text)
    if m is not None:
        code = m.group(1).strip("\n")
        return code if code.strip() else None
    if "```" in text:
        return None
    return text.strip()


def agreement_score(
    answer: str | None, program_answers: Sequence[str | None], *, prior: float = 0.5, prior_weight: float = 1.0
) -> float:
    """``(agreeing + prior_weight * prior) / (valid + prior_weight)``: the smoothed share of the programs that
    gave an answer (``valid``) whose answer equals ``answer``; ``prior`` when none gave one. A candidate without a
    final answer agrees with none."""
    valid = [a for a in program_answers if a is not None]
    denominator = len(valid) + prior_weight
    if denominator <= 0:
        return prior
    agree = 0
    if answer is not None:
        key = answer_key(answer)
        agree = sum(1 for a in valid if (key is not None and answer_key(a) == key) or answers_equal(answer, a))
    return min(1.0, max(0.0, (agree + prior_weight * prior) / denominator))


@dataclass(slots=True)
class ProgramSet:
    """The programs sampled for one question: their replies, programs, sandbox results and numeric answers."""

    replies: tuple[str, ...] = ()
    programs: tuple[str | None, ...] = ()
    results: tuple[ProgramResult | None, ...] = ()
    answers: tuple[str | None, ...] = ()
    usage: RequestUsage = field(default_factory=RequestUsage)
    error: str | None = None

    @property
    def valid(self) -> int:
        return sum(a is not None for a in self.answers)


def program_answer(result: ProgramResult | None) -> str | None:
    """The number a program gave (its ``answer``, last printed line or last value), or None."""
    if result is None or not result.ok or result.value is None:
        return None
    text = str(result.value)
    return extract_answer(text)


class ProgramVerifier(Verifier):
    """Scores a solution by agreement of its final answer with the answers of programs written for the question.

    For each question the ``endpoint`` (a code model) is asked once for ``programs`` short Python programs (one
    request with ``n=programs`` at ``temperature``, ``max_tokens`` each); each program (the first code block of a
    reply) runs in a :class:`~ttc_graph.verifiers.sandbox.Sandbox` (asteval in a worker process with CPU-time,
    memory and output limits: no imports, no dunder access, no files), and its number is the value of its
    ``answer`` variable, else its last printed line. A candidate scores
    ``(agreeing + prior_weight * prior) / (valid + prior_weight)`` over the programs that gave a number: with the
    defaults, 4 programs that all agree give 0.9, none 0.1. When no program gives a number the score is ``prior``
    (0.5, neutral, like :class:`ArithmeticVerifier` without claims), so a combination with confidence or
    arithmetic still ranks the question's candidates by its other parts; a candidate without a final answer
    agrees with no program. An empty solution, or a question whose program request failed, is unscored (with an
    error; a failed request is not cached, so the next batch asks again).

    The programs of a question are sampled once: cached by question and settings (at most ``cache_size``
    questions, least recently used dropped), and concurrent batches for the same question wait for one sampling.
    Their requests and tokens are this verifier's usage (counted in the batch that sampled them), as for
    :class:`LLMJudgeVerifier`. It is an outcome verifier: it judges the final answer, so it cannot score a
    partial solution (``scores_prefixes`` is False) and step-wise search refuses it; it serves best-of-N,
    revisions and, combined with a process verifier, the final choice.
    """

    granularity = "outcome"
    scores_prefixes: ClassVar[bool] = False

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        programs: int = 4,
        temperature: float = 0.8,
        max_tokens: int = 256,
        prompt: str | None = None,
        system_prompt: str | None = DEFAULT_PROGRAM_SYSTEM_PROMPT,
        prior: float = 0.5,
        prior_weight: float = 1.0,
        sandbox: Sandbox | None = None,
        cache_size: int | None = 4096,
    ) -> None:
        if not callable(getattr(endpoint, "generate", None)):
            raise ConfigurationError(
                f"endpoint: expected an endpoint with an async generate(), got {type(endpoint).__name__}"
            )
        if isinstance(programs, bool) or not isinstance(programs, int) or programs < 1:
            raise ConfigurationError(f"programs: must be an integer >= 1, got {programs!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature >= 0:
            raise ConfigurationError(f"temperature: must be a number >= 0, got {temperature!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigurationError(f"max_tokens: must be an integer >= 1, got {max_tokens!r}")
        for name, value in (("prior", prior), ("prior_weight", prior_weight)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigurationError(f"{name}: must be a finite number, got {value!r}")
        if not 0.0 <= prior <= 1.0:
            raise ConfigurationError(f"prior: must be in [0, 1], got {prior!r}")
        if prior_weight < 0:
            raise ConfigurationError(f"prior_weight: must be >= 0, got {prior_weight!r}")
        if cache_size is not None and (not isinstance(cache_size, int) or cache_size < 1):
            raise ConfigurationError(f"cache_size: must be an integer >= 1 or None, got {cache_size!r}")
        self.endpoint = endpoint
        self.programs = programs
        self.temperature = float(temperature)
        self.max_tokens = max_tokens
        self.prompt = check_template(prompt or DEFAULT_PROGRAM_PROMPT, ("question",), "prompt")
        self.system_prompt = system_prompt
        self.prior = float(prior)
        self.prior_weight = float(prior_weight)
        self.sandbox = sandbox if sandbox is not None else Sandbox()
        self.cache_size = cache_size
        self._sets: OrderedDict[str, asyncio.Future[ProgramSet]] = OrderedDict()
        digest = hashlib.sha1(f"{system_prompt}\x00{self.prompt}".encode()).hexdigest()[:10]
        endpoint_name = getattr(endpoint, "name", type(endpoint).__name__)
        self._scope = f"{endpoint_name}:{programs}:{self.temperature:g}:{max_tokens}:{digest}"

    @property
    def name(self) -> str:
        return f"ProgramVerifier({getattr(self.endpoint, 'name', type(self.endpoint).__name__)}, k={self.programs})"

    def messages_for(self, question: str) -> list[ChatMessage]:
        messages: list[ChatMessage] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": self.prompt.format(question=question)})
        return messages

    # -- programs ------------------------------------------------------------------------------------------

    async def sample(self, question: str) -> ProgramSet:
        """Sample and run the question's programs now (no cache); a failed request gives a set with ``error``."""
        params = SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens)
        try:
            result = await self.endpoint.generate(self.messages_for(question), n=self.programs, params=params)
        except EndpointError as exc:
            spent = exc.usage or RequestUsage(failed_requests=1)
            return ProgramSet(usage=spent, error=f"program request failed: {exc}")
        replies = tuple(g.text or "" for g in result.generations)
        return await self.run(replies, usage=result.usage)

    async def run(self, replies: Sequence[str], *, usage: RequestUsage | None = None) -> ProgramSet:
        """Extract and run the programs of ``replies`` (e.g. replies sampled earlier and stored)."""
        programs = tuple(extract_program(r) for r in replies)
        runnable = [p for p in programs if p is not None]
        ran = iter(await self.sandbox.arun_many(runnable) if runnable else [])
        results = tuple(next(ran) if p is not None else None for p in programs)
        answers = tuple(program_answer(r) for r in results)
        return ProgramSet(tuple(replies), programs, results, answers, usage or RequestUsage())

    async def programs_for(self, question: str) -> tuple[ProgramSet, bool]:
        """The question's programs, sampled once: ``(set, sampled_now)``. Concurrent callers share one sampling."""
        key = f"{self._scope}\x00{question}"
        future = self._sets.get(key)
        if future is not None:
            self._sets.move_to_end(key)
            return await asyncio.shield(future), False
        future = asyncio.get_running_loop().create_future()
        self._sets[key] = future
        try:
            found = await self.sample(question)
        except BaseException as exc:
            self._sets.pop(key, None)
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        if found.error is not None:
            self._sets.pop(key, None)  # not cached: the next batch asks again
        elif self.cache_size is not None:
            while len(self._sets) > self.cache_size:
                self._sets.popitem(last=False)
        future.set_result(found)
        return found, True

    def score_answer(self, answer: str | None, programs: ProgramSet) -> float:
        """The score of a candidate whose final answer is ``answer``."""
        return agreement_score(answer, programs.answers, prior=self.prior, prior_weight=self.prior_weight)

    # -- batches -------------------------------------------------------------------------------------------

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        questions = list(dict.fromkeys(item.question for item in items if any(s.strip() for s in item.steps)))
        found = await asyncio.gather(*(self.programs_for(q) for q in questions))
        sets = {q: s for q, (s, _) in zip(questions, found, strict=True)}
        usage = RequestUsage()
        for s, sampled_now in found:
            if sampled_now:
                usage.add(s.usage)
        scores: list[Score] = []
        for item in items:
            if not any(s.strip() for s in item.steps):
                scores.append(Score(None, error="empty solution: no final answer to check"))
                continue
            programs = sets[item.question]
            if programs.error is not None:
                scores.append(Score(None, error=programs.error))
                continue
            scores.append(Score(self.score_answer(extract_answer(item.text), programs)))
        return VerificationResult(scores, usage)
