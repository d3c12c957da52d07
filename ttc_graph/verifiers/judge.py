"""An LLM as a verifier: P(Yes) that the latest step (process) or the final answer (outcome) is correct."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ttc_graph.endpoints.base import ChatMessage, Endpoint, RequestUsage, SamplingParams
from ttc_graph.errors import ConfigurationError, EndpointError
from ttc_graph.verifiers.aggregation import DEFAULT_AGGREGATION, Aggregation, aggregate, check_aggregation
from ttc_graph.verifiers.base import Score, VerificationResult, Verifier, VerifyItem
from ttc_graph.verifiers.cache import CacheKey, ScoreCache, resolve_cache

__all__ = [
    "DEFAULT_JUDGE_SYSTEM_PROMPT",
    "DEFAULT_OUTCOME_PROMPT",
    "DEFAULT_PROCESS_PROMPT",
    "LLMJudgeVerifier",
    "check_template",
    "verdict_of",
    "yes_probability",
]

JudgeMode = Literal["process", "outcome"]

DEFAULT_JUDGE_SYSTEM_PROMPT = "You check math solutions. Reply with one word: Yes or No."
DEFAULT_PROCESS_PROMPT = (
    "Problem:\n{question}\n\n"
    "Solution so far:\n{steps}\n\n"
    "Is the last step (Step {step_number}) correct? Answer Yes or No."
)
"""Placeholders: ``{question}``, ``{steps}`` (numbered, latest last), ``{previous_steps}``, ``{latest_step}``,
``{step_number}``. The default keeps every prefix's prompt a textual prefix of the next one's up to the question
at the end, so servers with prompt caching (llama.cpp slots, vLLM prefix caching) reuse it."""
DEFAULT_OUTCOME_PROMPT = (
    "Problem:\n{question}\n\n"
    "Proposed solution:\n{solution}\n\n"
    "Is this solution's final answer correct? Answer Yes or No."
)
"""Placeholders: ``{question}``, ``{solution}``."""

# Space markers of byte-level BPE (Ġ) and SentencePiece (▁), quotes and trailing punctuation around a verdict.
_TOKEN_JUNK = " \t\r\n\u0120\u2581\"'`*_.,:;!?"
_FIRST_WORD = re.compile(r"[A-Za-z]+")


def verdict_of(text: str) -> Literal["yes", "no"] | None:
    """``"yes"`` / ``"no"`` for a token or a short answer such as ``" Yes"``, ``"NO."``, ``"**yes**"``; else None."""
    stripped = text.strip(_TOKEN_JUNK)
    match = _FIRST_WORD.match(stripped)
    word = match.group(0).lower() if match else ""
    if word == "yes":
        return "yes"
    if word == "no":
        return "no"
    return None


def yes_probability(top_logprobs: Mapping[str, float]) -> float | None:
    """P(Yes) normalised against No from one position's top log-probabilities (all case/space variants summed).

    None when neither a Yes nor a No token is among them.
    """
    yes = no = 0.0
    for token, logprob in top_logprobs.items():
        if logprob is None or math.isnan(logprob):
            continue
        word = token.strip(_TOKEN_JUNK).lower()  # whole-token match only: "Yesterday", "Nope" do not count
        if word == "yes":
            yes += math.exp(logprob)
        elif word == "no":
            no += math.exp(logprob)
    total = yes + no
    if total <= 0.0:
        return None
    return min(1.0, max(0.0, yes / total))


@dataclass(slots=True)
class _Judgement:
    value: float | None
    usage: RequestUsage = field(default_factory=RequestUsage)
    error: str | None = None


def check_template(template: str, names: Sequence[str], what: str) -> str:
    if not isinstance(template, str) or not template.strip():
        raise ConfigurationError(f"{what}: expected a non-empty template string")
    try:
        template.format(**dict.fromkeys(names, "x"))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigurationError(
            f"{what}: bad template ({type(exc).__name__}: {exc}); placeholders allowed: "
            + ", ".join("{" + n + "}" for n in names)
            + " (write literal braces as {{ and }})"
        ) from exc
    return template


class LLMJudgeVerifier(Verifier):
    """A chat model asked "is this step / answer correct? Yes or No", scored by P(Yes).

    Each judgement is one request with ``max_tokens=1``, temperature 0 and ``top_logprobs``; P(Yes) sums every
    Yes variant ("Yes", " yes", "YES", ...) and is normalised against the No variants. An endpoint that returns
    no logprobs is detected and then asked for ``samples`` judgements at ``temperature`` instead (the score is
    the share of Yes among the yes/no answers). A judge that answers neither Yes nor No leaves the item
    unscored, never a silent 0.

    ``mode="process"`` judges every step given the steps before it (step score = score of that prefix, solution
    score = ``aggregation`` of the step scores); ``mode="outcome"`` judges each whole solution once. With
    ``cache`` (a :class:`ScoreCache`, or True for a private one) a prefix shared by several solutions, or seen
    in an earlier call, is judged once. All judgements of a batch run concurrently (at most ``max_concurrency``
    at a time if given); with ``sequential_prefixes`` one solution's prefixes are judged in order instead (the
    solutions still concurrently), which lets a llama.cpp server reuse each slot's cached prompt. Their usage is
    returned in :attr:`VerificationResult.usage`.
    """

    granularity: JudgeMode = "process"

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        mode: JudgeMode = "process",
        aggregation: Aggregation = DEFAULT_AGGREGATION,
        samples: int = 5,
        cache: ScoreCache | bool = True,
        temperature: float = 1.0,
        top_logprobs: int = 20,
        use_logprobs: bool = True,
        prompt_template: str | None = None,
        system_prompt: str | None = DEFAULT_JUDGE_SYSTEM_PROMPT,
        max_concurrency: int | None = None,
        sequential_prefixes: bool = False,
    ) -> None:
        if not callable(getattr(endpoint, "generate", None)):
            raise ConfigurationError(
                f"endpoint: expected an endpoint with an async generate(), got {type(endpoint).__name__}"
            )
        if mode not in ("process", "outcome"):
            raise ConfigurationError(f"mode: unknown {mode!r}; use 'process' or 'outcome'")
        check_aggregation(aggregation)
        if not isinstance(samples, int) or samples < 1:
            raise ConfigurationError(f"samples: must be an integer >= 1, got {samples!r}")
        if not 1 <= top_logprobs <= 20:
            raise ConfigurationError(f"top_logprobs: must be in 1..20, got {top_logprobs!r}")
        if temperature < 0:
            raise ConfigurationError(f"temperature: must be >= 0, got {temperature!r}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency: must be >= 1 or None, got {max_concurrency!r}")
        self.endpoint = endpoint
        self.mode: JudgeMode = mode
        self.granularity = mode
        self.aggregation = aggregation
        self.samples = samples
        self.cache = resolve_cache(cache)
        self.temperature = temperature
        self.top_logprobs = top_logprobs
        self.max_concurrency = max_concurrency
        self.sequential_prefixes = sequential_prefixes
        if mode == "process":
            names: tuple[str, ...] = ("question", "steps", "previous_steps", "latest_step", "step_number")
            default = DEFAULT_PROCESS_PROMPT
        else:
            names, default = ("question", "solution"), DEFAULT_OUTCOME_PROMPT
        self.prompt_template = check_template(prompt_template or default, names, "prompt_template")
        self.system_prompt = system_prompt
        # None: not known yet; False: the endpoint returned no top logprobs, so sample instead.
        self._logprobs: bool | None = None if use_logprobs else False
        digest = hashlib.sha1(f"{system_prompt}\x00{self.prompt_template}".encode()).hexdigest()[:10]
        self._scope = f"judge:{mode}:{getattr(endpoint, 'name', type(endpoint).__name__)}:{digest}"

    @property
    def name(self) -> str:
        return f"LLMJudgeVerifier[{self.mode}]({getattr(self.endpoint, 'name', type(self.endpoint).__name__)})"

    @property
    def logprobs_supported(self) -> bool | None:
        """Whether the endpoint returned top logprobs (None until the first judgement)."""
        return self._logprobs

    # -- prompts -------------------------------------------------------------------------------------------

    def messages_for(self, question: str, steps: Sequence[str]) -> list[ChatMessage]:
        """The judge's chat for ``steps`` (process: is ``steps[-1]`` correct; outcome: is the solution correct)."""
        if self.mode == "process":
            numbered = [f"Step {i}: {s}" for i, s in enumerate(steps, 1)]
            content = self.prompt_template.format(
                question=question,
                steps="\n".join(numbered),
                previous_steps="\n".join(numbered[:-1]) or "(none)",
                latest_step=steps[-1],
                step_number=len(steps),
            )
        else:
            content = self.prompt_template.format(question=question, solution="\n\n".join(steps))
        messages: list[ChatMessage] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": content})
        return messages

    # -- one judgement -------------------------------------------------------------------------------------

    async def _judge(self, question: str, steps: tuple[str, ...], sem: asyncio.Semaphore | None) -> _Judgement:
        if sem is None:
            return await self._judge_unbounded(question, steps)
        async with sem:
            return await self._judge_unbounded(question, steps)

    async def _judge_unbounded(self, question: str, steps: tuple[str, ...]) -> _Judgement:
        return await self._judge_chat(self.messages_for(question, steps))

    async def _judge_chat(self, messages: list[ChatMessage]) -> _Judgement:
        """One judgement of a built judge chat: P(Yes) from the logprobs, else by sampling."""
        usage = RequestUsage()
        if self._logprobs is not False:
            params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
            try:
                result = await self.endpoint.generate(messages, n=1, params=params)
            except EndpointError as exc:
                usage.add(exc.usage or RequestUsage(failed_requests=1))  # every failed request of the call
                return _Judgement(None, usage, f"judge request failed: {exc}")
            usage.add(result.usage)
            gen = result.generations[0] if result.generations else None
            tops = gen.top_logprobs if gen is not None else None
            if tops and tops[0]:
                self._logprobs = True
                p = yes_probability(tops[0])
                if p is None:
                    shown = ", ".join(repr(t) for t in list(tops[0])[:5])
                    return _Judgement(None, usage, f"judge answered neither Yes nor No (top tokens: {shown})")
                return _Judgement(p, usage)
            if gen is None:
                return _Judgement(None, usage, "judge returned no generation")
            self._logprobs = False  # no top logprobs from this endpoint: sample from now on
        return await self._judge_by_sampling(messages, usage)

    async def _judge_by_sampling(self, messages: list[ChatMessage], usage: RequestUsage) -> _Judgement:
        params = SamplingParams(temperature=self.temperature, max_tokens=2)
        try:
            result = await self.endpoint.generate(messages, n=self.samples, params=params)
        except EndpointError as exc:
            usage.add(exc.usage or RequestUsage(failed_requests=1))  # every failed request of the call
            return _Judgement(None, usage, f"judge request failed: {exc}")
        usage.add(result.usage)
        votes = [verdict_of(g.text) for g in result.generations]
        yes, no = votes.count("yes"), votes.count("no")
        if yes + no == 0:
            shown = ", ".join(repr(g.text) for g in result.generations[:3])
            return _Judgement(
                None,
                usage,
                f"judge answered neither Yes nor No in {len(votes)} sampled judgements (e.g. {shown})",
            )
        return _Judgement(yes / (yes + no), usage)

    # -- batches -------------------------------------------------------------------------------------------

    def _keys(self, item: VerifyItem) -> list[CacheKey]:
        steps = tuple(item.steps)
        if self.mode == "outcome":
            return [ScoreCache.key(item.question, steps, self._scope)]
        return [ScoreCache.key(item.question, steps[: i + 1], self._scope) for i in range(len(steps))]

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        plans: list[list[CacheKey] | None] = []
        for item in items:
            plans.append(self._keys(item) if any(s.strip() for s in item.steps) else None)
        sem = asyncio.Semaphore(self.max_concurrency) if self.max_concurrency else None
        usage = RequestUsage()
        # Per item, one judgement per key (process: one per step prefix; outcome: one).
        judged: list[list[_Judgement]] = []
        if self.cache is not None:
            found, missing = self.cache.partition(k for plan in plans if plan for k in plan)
            groups = _chains(missing) if self.sequential_prefixes else [[k] for k in missing]
            results = await self._run(groups, sem)
            table = {k: _Judgement(v) for k, v in found.items()}
            outcomes = []
            for group, result in zip(groups, results, strict=True):
                for key, out in zip(group, result, strict=True):
                    table[key] = out
                    outcomes.append(out)
                    if out.value is not None:
                        self.cache.store(key, out.value)
            judged = [[table[k] for k in plan] if plan else [] for plan in plans]
        else:
            flat = [k for plan in plans if plan for k in plan]
            groups = [plan for plan in plans if plan] if self.sequential_prefixes else [[k] for k in flat]
            outcomes = [out for result in await self._run(groups, sem) for out in result]
            it = iter(outcomes)  # groups hold the keys in plan order
            judged = [[next(it) for _ in plan] if plan else [] for plan in plans]
        for out in outcomes:
            usage.add(out.usage)
        scores = [self._score(plan, js) for plan, js in zip(plans, judged, strict=True)]
        return VerificationResult(scores, usage)

    async def _run(self, groups: list[list[CacheKey]], sem: asyncio.Semaphore | None) -> list[list[_Judgement]]:
        """Judge every key: the groups concurrently, the keys of one group one after another."""

        async def chain(keys: list[CacheKey]) -> list[_Judgement]:
            return [await self._judge(k[1], k[2], sem) for k in keys]

        return list(await asyncio.gather(*(chain(g) for g in groups)))

    def _score(self, plan: list[CacheKey] | None, judgements: list[_Judgement]) -> Score:
        if plan is None:
            return Score(None, error="empty solution: no steps to judge")
        for i, j in enumerate(judgements):
            if j.value is None:
                where = f"step {i + 1}: " if self.mode == "process" else ""
                return Score(None, error=f"{where}{j.error or 'judge gave no verdict'}")
        values = tuple(float(j.value) for j in judgements if j.value is not None)
        if self.mode == "outcome":
            return Score(values[0])
        return Score(aggregate(values, self.aggregation), values)


def _chains(keys: Sequence[CacheKey]) -> list[list[CacheKey]]:
    """``keys`` (first-seen order) grouped into chains of growing prefixes: each key follows its parent prefix
    when the parent is the end of a chain, so one solution's prefixes are judged in order on a warm prompt cache."""
    chains: list[list[CacheKey]] = []
    tail_of: dict[CacheKey, int] = {}
    for key in keys:
        scope, question, prefix = key
        index = tail_of.pop((scope, question, prefix[:-1]), None)
        if index is None:
            chains.append([key])
            index = len(chains) - 1
        else:
            chains[index].append(key)
        tail_of[key] = index
    return chains
