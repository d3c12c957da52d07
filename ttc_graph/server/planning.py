"""From a request on a preset to a run: the spec with its overrides, the caps checked, the run's context."""

from __future__ import annotations

from dataclasses import dataclass
from math import inf
from typing import Any

from langchain_core.messages import BaseMessage

from ttc_graph.budget import Budget
from ttc_graph.endpoints.openai_compat import DEFAULT_MAX_TOKENS
from ttc_graph.prices import Price
from ttc_graph.server.config import Limits
from ttc_graph.server.errors import APIError
from ttc_graph.server.presets import Preset, apply_overrides
from ttc_graph.server.protocol import ChatRequest, request_tools, strategy_input, unsupported_by_strategies
from ttc_graph.specs import ComputeOptimalSpec, StrategySpec
from ttc_graph.state import TTCContext

__all__ = [
    "RunPlan",
    "generation_cost",
    "override_ceilings",
    "plan_run",
    "stepwise",
    "token_need",
    "verifier_requests",
]


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Everything a strategy run needs, checked before any upstream request."""

    preset: Preset
    spec: StrategySpec
    model: str
    messages: list[BaseMessage]
    context: TTCContext


def stepwise(spec: StrategySpec) -> bool:
    """Whether ``spec`` samples steps (beam search, DVTS, MCTS, particle filtering) rather than whole answers."""
    return hasattr(spec, "step_max_tokens")


def generation_cost(spec: StrategySpec) -> int:
    """The most policy generations ``spec`` may spend: its strategy's cost, or its budget if lower.

    Lookahead and MCTS rollouts multiply ``n`` as the paper counts them (``n * (k + 1)``).
    """
    if isinstance(spec, ComputeOptimalSpec):
        cost = spec.budget.generations or 0  # the spec requires it
    else:
        cost = spec.n * (1 + getattr(spec, "lookahead", 0) + getattr(spec, "rollout", 0))
    if spec.budget is not None and spec.budget.generations is not None:
        cost = min(cost, spec.budget.generations)
    return cost


def token_need(spec: StrategySpec, length: int | None) -> int:
    """The most policy completion tokens ``spec`` may spend with per-sample ``length`` (its budget if lower).

    Step-wise: every generation may take ``max_steps`` (``max_depth``) steps of ``step_max_tokens``; other
    strategies: one sample of ``length`` (else the spec's ``max_tokens``, else the endpoint's default) per generation.
    """
    if stepwise(spec):
        depth = int(getattr(spec, "max_steps", None) or getattr(spec, "max_depth", None) or 1)
        need = generation_cost(spec) * depth * int(getattr(spec, "step_max_tokens", 1))
    else:
        per: int = length or getattr(spec, "max_tokens", None) or DEFAULT_MAX_TOKENS
        need = generation_cost(spec) * per
    if spec.budget is not None and spec.budget.tokens is not None:
        need = min(need, spec.budget.tokens)
    return need


def _capped_budget(spec: StrategySpec, length: int | None, limits: Limits) -> Budget:
    """The run's budget: the spec's, with the server's caps on the axes it leaves open; over a cap is a 400."""
    budget = spec.budget or Budget(generations=None, tokens=None, seconds=None)

    def refuse(param: str, message: str) -> APIError:
        return APIError(400, message, param=param, code="cap_exceeded")

    gens = generation_cost(spec)
    if gens > limits.generations:
        where = "ttc.budget.generations" if budget.generations is not None else "ttc.n"
        raise refuse(where, f"{where}: this run may draw {gens} generations, over the server's cap of "
                     f"{limits.generations}")  # fmt: skip
    if budget.tokens is not None and budget.tokens > limits.tokens:
        raise refuse("ttc.budget.tokens", f"ttc.budget.tokens: {budget.tokens} is over the server's cap of "
                     f"{limits.tokens} completion tokens")  # fmt: skip
    need = token_need(spec, length)
    if need > limits.tokens:
        where = "max_tokens" if length else "ttc.n"
        raise refuse(
            where,
            f"{where}: this run may generate up to {need} completion tokens, over the server's cap of {limits.tokens};"
            " lower n or the length per sample, or set ttc.budget.tokens",
        )
    if budget.seconds is not None and budget.seconds > limits.seconds:
        raise refuse("ttc.budget.seconds", f"ttc.budget.seconds: {budget.seconds:g} is over the server's cap of "
                     f"{limits.seconds:g} seconds")  # fmt: skip
    if budget.dollars is not None and limits.dollars is not None and budget.dollars > limits.dollars:
        raise refuse("ttc.budget.dollars", f"ttc.budget.dollars: {budget.dollars:g} is over the server's cap of "
                     f"${limits.dollars:g}")  # fmt: skip
    return Budget(
        generations=budget.generations,
        tokens=budget.tokens or limits.tokens,
        seconds=budget.seconds or limits.seconds,
        dollars=budget.dollars or limits.dollars,
        price=budget.price,
    )


_FAN_OUT = ("samples", "programs")
"""Verifier fields that multiply its requests."""


def _check_verifier_fan_out(verifier: object, limits: Limits, where: str) -> None:
    """A 400 naming the field when a verifier (or a part of a combined one) multiplies its requests past
    ``limits.verifier_samples``; checked before any upstream request."""
    if verifier is None:
        return
    for field in _FAN_OUT:
        value = getattr(verifier, field, None)
        if isinstance(value, int) and value > limits.verifier_samples:
            raise APIError(
                400,
                f"{where}.{field}: {value} is over the server's cap of {limits.verifier_samples} per candidate",
                param=f"{where}.{field}",
                code="cap_exceeded",
            )
    for i, part in enumerate(getattr(verifier, "parts", None) or ()):
        _check_verifier_fan_out(part, limits, f"{where}.parts.{i}")


def verifier_requests(verifier: object, candidates: int) -> int | None:
    """The most upstream requests ``verifier`` may send to score ``candidates`` whole answers, or None when that
    depends on the answers (a process judge judges every step): a judgement is one request, or ``samples`` when
    the upstream gives no logprobs; a program verifier asks once per question for ``programs`` programs."""
    kind = getattr(verifier, "kind", None)
    if verifier is None or kind in ("confidence", "arithmetic", "python"):
        return 0
    if kind == "llm_judge":
        if getattr(verifier, "mode", "process") == "process":
            return None
        return candidates * (1 + int(getattr(verifier, "samples", 1)))
    if kind == "program":
        return int(getattr(verifier, "programs", 1))
    if kind == "reward_model":
        return candidates
    if kind == "combined":
        parts = [verifier_requests(p, candidates) for p in getattr(verifier, "parts", ())]
        return None if any(p is None for p in parts) else sum(p or 0 for p in parts)
    return None


def _check_run_requests(spec: StrategySpec, limits: Limits) -> None:
    """A 400 when the run's worst case in upstream requests (policy and verifier) is known and over the cap."""
    if stepwise(spec) or isinstance(spec, ComputeOptimalSpec):
        return  # scored step by step: bounded at run time by the run's allowance
    gens = generation_cost(spec)
    scoring = verifier_requests(getattr(spec, "verifier", None), gens)
    if scoring is not None and gens + scoring > limits.run_requests:
        raise APIError(
            400,
            f"ttc.verifier: this run may send {gens + scoring} upstream requests ({scoring} of them its verifier's),"
            f" over the server's cap of {limits.run_requests} per run",
            param="ttc.verifier",
            code="cap_exceeded",
        )


def override_ceilings(limits: Limits) -> dict[str, float]:
    """The most each numeric ``ttc`` override (and each number of a ``ttc.verifier``) may be; the counts that
    multiply requests or tokens are also checked against the caps as a whole (:func:`generation_cost`,
    :func:`token_need`, :func:`verifier_requests`)."""
    return {
        "n": limits.generations,
        "generations": limits.generations,
        "beam_width": limits.generations,
        "chain_length": limits.generations,
        "expansions": limits.generations,
        "lookahead": limits.generations,
        "rollout": limits.generations,
        "max_steps": limits.tokens,
        "max_depth": limits.tokens,
        "max_tokens": limits.tokens,
        "step_max_tokens": limits.tokens,
        "probe_max_tokens": limits.tokens,
        "temperature": 2.0,
        "softmax_temperature": 100.0,
        "exploration": 100.0,
        "seed": 2**63 - 1,
        "samples": limits.verifier_samples,
        "programs": limits.verifier_samples,
        "window": 1 << 20,
        "prior_weight": 1e6,
    }


def _check_ceilings(values: Any, ceilings: dict[str, float], where: str) -> None:
    """A 400 naming the first number of ``values`` (a request's ``ttc`` object) over its ceiling."""
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        path = f"{where}.{key}"
        if isinstance(value, dict):
            _check_ceilings(value, ceilings, path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                _check_ceilings(item, ceilings, f"{path}.{i}")
        elif isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > ceilings.get(key, inf):
            raise APIError(
                400, f"{path}: {value!r} is over the server's cap of {ceilings[key]:g}", param=path, code="cap_exceeded"
            )


def plan_run(preset: Preset, model: str, request: ChatRequest, limits: Limits) -> RunPlan:
    """The checked plan of ``request`` on ``preset``; anything a strategy cannot honour or a cap refuses is a 400.

    The client's system message replaces the preset's system prompt. A request with ``tools`` and no system message
    gets none unless the preset sets ``system_prompt`` itself: the default prompt asks for reasoning and a boxed
    answer, which turns a tool call into an essay. ``temperature``, ``seed`` and the length per sample
    (``max_completion_tokens`` / ``max_tokens``, not for search, whose steps have ``ttc.step_max_tokens``) become
    the run's context.
    """
    unsupported_by_strategies(request)
    _check_ceilings(request.ttc, override_ceilings(limits), "ttc")
    messages, system = strategy_input(request)
    spec = apply_overrides(preset.spec, request.ttc)
    tools, tool_choice = request_tools(request)
    if system is not None:
        spec = spec.model_copy(update={"system_prompt": system})
    elif tools and "system_prompt" not in preset.spec.model_fields_set:
        spec = spec.model_copy(update={"system_prompt": None})
    length = request.length
    if length is not None and stepwise(spec):
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        raise APIError(
            400,
            f"{param}: {spec.kind} samples steps, not whole answers; set ttc.step_max_tokens and ttc.max_steps",
            param=param,
            code="unsupported_parameter",
        )
    _check_verifier_fan_out(getattr(spec, "verifier", None), limits, "ttc.verifier")
    _check_run_requests(spec, limits)
    budget = _capped_budget(spec, length, limits)
    context = TTCContext(
        budget=budget, temperature=request.temperature, max_tokens=length, seed=request.seed, tools=tools,
        tool_choice=tool_choice,
    )  # fmt: skip
    return RunPlan(preset, spec, model, messages, context)


def price_budget(context: TTCContext, policy: object) -> None:
    """Give a dollar budget without a price the upstream endpoint's price (``policy.price``), so the run plans each
    request's worst case from its first round."""
    budget = context.budget
    price = getattr(policy, "price", None)
    if budget is not None and budget.dollars is not None and budget.price is None and isinstance(price, Price):
        context.budget = budget.model_copy(update={"price": price})
