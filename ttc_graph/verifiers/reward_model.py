"""A process reward model (e.g. Qwen2.5-Math-PRM-7B) served by vLLM's pooling API.

Wire format, as vLLM documents it:

- Serve: ``vllm serve Qwen/Qwen2.5-Math-PRM-7B`` (``--runner pooling`` is detected). vLLM's
  ``Qwen2ForProcessRewardModel`` pools with ``STEP`` pooling at the ``<extra_0>`` token (id 151651) and a softmax
  over the two labels, so each step yields ``[P(negative), P(positive)]``.
  https://docs.vllm.ai/en/latest/models/pooling_models/reward/ (process reward models, ``token_classify``)
  https://docs.vllm.ai/en/v0.9.2/api/vllm/model_executor/models/qwen2_rm.html (STEP pooler, step_tag_id 151651)
- Request: ``POST {root}/pooling`` with the chat form ``{"model", "messages", "task": "token_classify"}``; the
  server renders the model's chat template with ``add_generation_prompt=false`` (the default of pooling chat
  requests), exactly as the model card's ``apply_chat_template(..., add_generation_prompt=False)``.
  https://docs.vllm.ai/en/latest/models/pooling_models/pooling/ (Pooling API; input as for the Embeddings API,
  ``"task": "token_classify"`` for rewards) and examples/pooling/pooling/pooling_online.py (``messages`` form).
- Conversation (Qwen2.5-Math-PRM-7B model card, https://huggingface.co/Qwen/Qwen2.5-Math-PRM-7B): system
  "Please reason step by step, and put your final answer within \\boxed{}.", user = the question, assistant =
  the steps joined by ``<extra_0>`` with a trailing ``<extra_0>``; the step reward is the softmax probability of
  the positive class at each ``<extra_0>``.
- Response (``PoolingResponse``): ``{"id", "object": "list", "created", "model",
  "data": [{"index": 0, "object": "pooling", "data": [[p_neg, p_pos], ...one row per step]}],
  "usage": {"prompt_tokens", "total_tokens", ...}}``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from typing import Any

import httpx

from ttc_graph.endpoints.base import RequestUsage
from ttc_graph.endpoints.retry import RetryConfig, call_with_retries
from ttc_graph.errors import ConfigurationError, EndpointError, VerifierError
from ttc_graph.verifiers.aggregation import DEFAULT_AGGREGATION, Aggregation, aggregate, check_aggregation
from ttc_graph.verifiers.base import Score, VerificationResult, Verifier, VerifyItem
from ttc_graph.verifiers.cache import CacheKey, ScoreCache, resolve_cache

__all__ = ["QWEN_PRM_SYSTEM_PROMPT", "RewardModelVerifier", "parse_step_rows"]

QWEN_PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
_PAIR_SUM_TOLERANCE = 0.02  # softmax rows in bf16 still sum to 1 within this


def parse_step_rows(data: Any, n_steps: int, positive_index: int = 1) -> tuple[float, ...]:
    """Step scores from a pooling result's ``data`` (one ``[p_neg, p_pos]`` row per step).

    Raises :class:`VerifierError` naming the problem when the rows are not ``n_steps`` probability pairs.
    """
    if not isinstance(data, list):
        raise VerifierError(f"pooled data is {type(data).__name__}, expected a list of [negative, positive] rows")
    if data and not isinstance(data[0], list):
        raise VerifierError(
            "pooled data is a flat list, expected one [negative, positive] row per step "
            "(is the server using STEP pooling for this model?)"
        )
    if len(data) != n_steps:
        raise VerifierError(
            f"got {len(data)} step rows for {n_steps} steps (does the server's step tag match the step separator?)"
        )
    scores = []
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != 2:
            size = len(row) if isinstance(row, list) else type(row).__name__
            raise VerifierError(f"step row {i + 1} is not a [negative, positive] pair (got {size})")
        values = []
        for v in row:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not 0 <= v <= 1:
                raise VerifierError(f"step row {i + 1} has {v!r}, outside [0, 1] (are the rows logits, not softmax?)")
            values.append(float(v))
        if abs(sum(values) - 1.0) > _PAIR_SUM_TOLERANCE:
            raise VerifierError(f"step row {i + 1} {row!r} does not sum to 1 (not a softmax over two classes)")
        scores.append(values[positive_index])
    return tuple(scores)


class RewardModelVerifier(Verifier):
    """Per-step scores from a PRM behind vLLM's ``/pooling`` API (Qwen2.5-Math-PRM-7B by default format).

    One request scores every step of a solution (a step's reward depends only on the text before it), so with a
    ``cache`` each solution costs at most one request, solutions whose steps are all known cost none, and of
    several solutions sharing a prefix in one batch only the longest is sent. ``base_url`` is the server root
    (a trailing ``/v1`` is dropped). Transient failures are retried under ``retry`` like every model call; an
    item whose request fails, or whose rows have the wrong shape, is unscored with the error; a body that is
    not a JSON object raises :class:`VerifierError` for the batch.
    """

    granularity = "process"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        step_separator: str = "<extra_0>",
        api_key: str | None = None,
        system_prompt: str | None = QWEN_PRM_SYSTEM_PROMPT,
        aggregation: Aggregation = DEFAULT_AGGREGATION,
        task: str | None = "token_classify",
        positive_index: int = 1,
        timeout: float = 120.0,
        retry: RetryConfig | None = None,
        cache: ScoreCache | bool = True,
        max_concurrency: int = 16,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if not base_url or not str(base_url).strip():
            raise ConfigurationError("base_url: the vLLM server URL is required (e.g. http://localhost:8000)")
        if not model or not str(model).strip():
            raise ConfigurationError("model: the served reward model name is required")
        if not step_separator:
            raise ConfigurationError("step_separator: must be a non-empty string")
        check_aggregation(aggregation)
        if positive_index not in (0, 1):
            raise ConfigurationError(f"positive_index: must be 0 or 1, got {positive_index!r}")
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency: must be >= 1, got {max_concurrency}")
        root = str(base_url).rstrip("/")
        self.base_url = root[:-3] if root.endswith("/v1") else root
        self.model = str(model)
        self.step_separator = step_separator
        self._api_key = api_key
        self.system_prompt = system_prompt
        self.aggregation = aggregation
        self.task = task
        self.positive_index = positive_index
        self.timeout = timeout
        self.retry = retry or RetryConfig()
        self.cache = resolve_cache(cache)
        self.max_concurrency = max_concurrency
        self.http_client = http_client
        self._scope = f"prm:{self.model}@{self.base_url}:{step_separator}:{system_prompt}"

    @property
    def name(self) -> str:
        return f"RewardModelVerifier({self.model}@{self.base_url})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/pooling"

    def request_body(self, question: str, steps: Sequence[str]) -> dict[str, Any]:
        """The JSON body that scores ``steps`` (one ``step_separator`` after each step)."""
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": self.step_separator.join(steps) + self.step_separator})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.task:
            body["task"] = self.task
        return body

    # -- one request ---------------------------------------------------------------------------------------

    async def _score_prefix(
        self, client: httpx.AsyncClient, question: str, steps: tuple[str, ...], sem: asyncio.Semaphore
    ) -> tuple[tuple[float, ...] | None, RequestUsage, str | None]:
        """Step scores of ``steps`` (or None and an error), and the request's usage."""
        body = self.request_body(question, steps)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

        async def call() -> httpx.Response:
            resp = await client.post(self.url, json=body, headers=headers, timeout=self.timeout)
            resp.raise_for_status()
            return resp

        usage = RequestUsage()
        try:
            async with sem:
                resp = await call_with_retries(call, self.retry, f"pooling on {self.name}")
        except EndpointError as exc:
            usage.failed_requests += 1
            return None, usage, f"reward model request failed: {exc}"
        usage.requests += 1
        try:
            payload = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VerifierError(f"{self.name}: response is not JSON: {resp.text[:200]!r}") from exc
        if not isinstance(payload, dict):
            raise VerifierError(f"{self.name}: response is JSON {type(payload).__name__}, expected an object")
        tokens = payload.get("usage")
        if isinstance(tokens, dict):
            usage.prompt_tokens = int(tokens.get("prompt_tokens") or 0)
            usage.completion_tokens = int(tokens.get("completion_tokens") or 0)
        data = payload.get("data")
        if not isinstance(data, list) or not data:
            return None, usage, "reward model response has no 'data' list"
        first = data[0]
        if not isinstance(first, dict) or "data" not in first:
            return None, usage, "reward model response data[0] has no 'data' field"
        try:
            return parse_step_rows(first["data"], len(steps), self.positive_index), usage, None
        except VerifierError as exc:
            return None, usage, f"reward model response: {exc}"

    # -- batches -------------------------------------------------------------------------------------------

    async def verify(self, items: Sequence[VerifyItem]) -> VerificationResult:
        plans: list[list[CacheKey] | None] = []
        errors: dict[int, str] = {}
        for i, item in enumerate(items):
            if not any(s.strip() for s in item.steps):
                errors[i] = "empty solution: no steps to score"
                plans.append(None)
            elif any(self.step_separator in s for s in item.steps):
                errors[i] = f"a step contains the step separator {self.step_separator!r}"
                plans.append(None)
            else:
                steps = tuple(item.steps)
                plans.append([ScoreCache.key(item.question, steps[: j + 1], self._scope) for j in range(len(steps))])

        known: dict[CacheKey, float] = {}
        if self.cache is not None:
            known, missing = self.cache.partition(k for plan in plans if plan for k in plan)
            requests = _longest_first(missing)
        else:
            requests = [plan[-1] for plan in plans if plan]
        failed: dict[CacheKey, str] = {}
        usage = RequestUsage()
        sem = asyncio.Semaphore(self.max_concurrency)
        client = self.http_client or httpx.AsyncClient(timeout=self.timeout)
        try:
            outcomes = await asyncio.gather(
                *(self._score_prefix(client, k[1], k[2], sem) for k in requests), return_exceptions=True
            )
        finally:
            if self.http_client is None:
                await client.aclose()
        batch_error = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if batch_error is not None:
            raise batch_error
        per_request: list[tuple[float, ...] | None] = []
        for key, out in zip(requests, outcomes, strict=True):
            assert not isinstance(out, BaseException)
            step_scores, req_usage, err = out
            usage.add(req_usage)
            per_request.append(step_scores)
            scope, question, prefix = key
            for j in range(1, len(prefix) + 1):
                sub = (scope, question, prefix[:j])
                if step_scores is not None:
                    known[sub] = step_scores[j - 1]
                    if self.cache is not None:
                        self.cache.store(sub, step_scores[j - 1])
                elif sub not in known:
                    failed.setdefault(sub, err or "reward model gave no score")

        scores: list[Score] = []
        uncached_results = iter(per_request)
        for i, plan in enumerate(plans):
            if plan is None:
                scores.append(Score(None, error=errors[i]))
                continue
            if self.cache is None:
                values = next(uncached_results)
                if values is None:
                    scores.append(Score(None, error=failed.get(plan[-1], "reward model gave no score")))
                    continue
            else:
                missing_key = next((k for k in plan if k not in known), None)
                if missing_key is not None:
                    scores.append(Score(None, error=failed.get(missing_key, "reward model gave no score")))
                    continue
                values = tuple(known[k] for k in plan)
            scores.append(Score(aggregate(values, self.aggregation), values))
        return VerificationResult(scores, usage)


def _longest_first(missing: Sequence[CacheKey]) -> list[CacheKey]:
    """The fewest prefixes whose requests cover all of ``missing`` (a request scores every shorter prefix)."""
    covered: set[CacheKey] = set()
    chosen: list[CacheKey] = []
    for key in sorted(missing, key=lambda k: len(k[2]), reverse=True):
        if key in covered:
            continue
        chosen.append(key)
        scope, question, prefix = key
        covered.update((scope, question, prefix[:j]) for j in range(1, len(prefix) + 1))
    return chosen
