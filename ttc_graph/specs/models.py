"""Strategy specs: a pydantic discriminated union that describes any strategy as data (YAML, JSON, forms)."""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ttc_graph.budget import Budget
from ttc_graph.defaults import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_MAX_STEPS,
    DEFAULT_PATH_SELECTION,
    DEFAULT_REVISION_SELECTION,
    DEFAULT_SEARCH_SELECTION,
    DEFAULT_SELECTION,
    DEFAULT_STEP_DELIMITER,
    DEFAULT_STEP_MAX_TOKENS,
    DEFAULT_STEP_TEMPERATURE,
    DEFAULT_TEMPERATURE,
)
from ttc_graph.errors import ConfigurationError
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.selection import FinalSelection, RevisionSelection, Selection
from ttc_graph.strategies.mcts import check_mcts
from ttc_graph.strategies.particle_filtering import check_particle_filtering
from ttc_graph.strategies.revisions import split_budget
from ttc_graph.strategies.search import resolve_width
from ttc_graph.verifiers.aggregation import DEFAULT_AGGREGATION
from ttc_graph.verifiers.base import Aggregation
from ttc_graph.verifiers.combined import check_weights

__all__ = [
    "ArithmeticVerifierSpec",
    "BeamSearchSpec",
    "BestOfNSpec",
    "CombinedVerifierSpec",
    "ComputeOptimalSpec",
    "ConfidenceVerifierSpec",
    "DVTSSpec",
    "EndpointSpec",
    "EnvEndpointSpec",
    "LLMJudgeVerifierSpec",
    "LocalEndpointSpec",
    "MCTSSpec",
    "OpenAIEndpointSpec",
    "ParticleFilteringSpec",
    "ProgramVerifierSpec",
    "PythonVerifierSpec",
    "RevisionsSpec",
    "RewardModelVerifierSpec",
    "StrategySpec",
    "VerifierSpec",
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # every number a finite one

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        """``n: true`` is a mistake, not 1: pydantic's lax mode would take a bool for a number."""
        for name, value in data.items() if isinstance(data, dict) else ():
            field = cls.model_fields.get(name)
            if isinstance(value, bool) and field is not None and field.annotation in _NUMBERS:
                raise ValueError(f"{name}: expected a number, got {value!r}")
        return data


_NUMBERS: tuple[Any, ...] = (int, float, int | None, float | None)


# -- endpoints ---------------------------------------------------------------------------------------------


class EnvEndpointSpec(_Spec):
    """``TTC_BASE_URL`` / ``TTC_MODEL`` / ``TTC_API_KEY`` if set, else the embedded local model."""

    kind: Literal["env"] = "env"


class OpenAIEndpointSpec(_Spec):
    """Any OpenAI-compatible server."""

    kind: Literal["openai"] = "openai"
    base_url: str
    model: str = Field(min_length=1)
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    max_concurrency: int = Field(16, ge=1)
    native_n: bool | None = None
    continuation: Literal["auto", "completions", "prefill", "prompt"] = "auto"
    slots: int | None = Field(None, ge=1, description="llama.cpp's parallel slots: send slot hints (id_slot).")
    llamacpp_n: bool = Field(False, description="llama.cpp: a call's n samples in one /completion request.")
    slot_copy: bool = Field(
        False, description="llama.cpp (with slots and --slot-save-path): copy a beam's slot to its siblings' slots."
    )


class LocalEndpointSpec(_Spec):
    """The embedded llama.cpp server; ``model`` is a GGUF path (default: the bundled SmolLM2-135M)."""

    kind: Literal["local"] = "local"
    model: str | None = None
    parallel: int = Field(4, ge=1)


EndpointSpec = Annotated[EnvEndpointSpec | OpenAIEndpointSpec | LocalEndpointSpec, Field(discriminator="kind")]


# -- verifiers ---------------------------------------------------------------------------------------------


class _VerifierSpec(_Spec):
    timeout: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Seconds one call may take; past it, its items stay unscored."
    )


class LLMJudgeVerifierSpec(_VerifierSpec):
    """A chat model as a generative PRM (``process``) or outcome judge; ``endpoint`` defaults to the policy."""

    kind: Literal["llm_judge"] = "llm_judge"
    endpoint: EndpointSpec | None = None
    mode: Literal["process", "outcome"] = "process"
    aggregation: Aggregation = DEFAULT_AGGREGATION
    samples: int = Field(5, ge=1)


class ConfidenceVerifierSpec(_VerifierSpec):
    """The policy's own token confidence (no extra model call)."""

    kind: Literal["confidence"] = "confidence"
    method: Literal["mean", "group"] = "mean"
    window: int = Field(16, ge=1)


class RewardModelVerifierSpec(_VerifierSpec):
    """A PRM served by vLLM's pooling API (e.g. Qwen2.5-Math-PRM-7B)."""

    kind: Literal["reward_model"] = "reward_model"
    timeout: float | None = Field(120.0, gt=0, allow_inf_nan=False, description="Seconds one call may take.")
    base_url: str
    model: str = Field(min_length=1)
    step_separator: str = "<extra_0>"
    aggregation: Aggregation = DEFAULT_AGGREGATION


class PythonVerifierSpec(_VerifierSpec):
    """A Python callable ``(question, solution) -> float`` named as ``module:attribute``."""

    kind: Literal["python"] = "python"
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$")


class ArithmeticVerifierSpec(_VerifierSpec):
    """Checks the arithmetic written in each step (no model call); see ``ArithmeticVerifier``."""

    kind: Literal["arithmetic"] = "arithmetic"
    prior: float = Field(0.5, ge=0, le=1)
    prior_weight: float = Field(1.0, ge=0)
    rel_tol: float = Field(1e-9, ge=0, lt=1)
    aggregation: Aggregation = DEFAULT_AGGREGATION


class ProgramVerifierSpec(_VerifierSpec):
    """Agreement with programs the model writes for the question, run in a sandbox (an outcome verifier); see
    ``ProgramVerifier``. ``endpoint`` defaults to the policy."""

    kind: Literal["program"] = "program"
    endpoint: EndpointSpec | None = None
    programs: int = Field(4, ge=1)
    temperature: float = Field(0.8, ge=0)
    max_tokens: int = Field(256, ge=1)
    prior: float = Field(0.5, ge=0, le=1)
    prior_weight: float = Field(1.0, ge=0)


class CombinedVerifierSpec(_VerifierSpec):
    """A weighted ``product`` or ``geometric`` mean of other verifiers' scores; see ``CombinedVerifier``."""

    kind: Literal["combined"] = "combined"
    parts: list[VerifierSpec] = Field(min_length=1)
    weights: list[float] | None = None
    how: Literal["product", "geometric"] = "product"
    granularity: Literal["auto", "process", "outcome"] = "auto"
    aggregation: Aggregation = DEFAULT_AGGREGATION

    @model_validator(mode="after")
    def _check(self) -> CombinedVerifierSpec:
        try:
            check_weights(len(self.parts), self.weights)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
        return self


VerifierSpec = Annotated[
    LLMJudgeVerifierSpec
    | ConfidenceVerifierSpec
    | RewardModelVerifierSpec
    | PythonVerifierSpec
    | ArithmeticVerifierSpec
    | ProgramVerifierSpec
    | CombinedVerifierSpec,
    Field(discriminator="kind"),
]
CombinedVerifierSpec.model_rebuild()


# -- strategies --------------------------------------------------------------------------------------------


class _StrategySpec(_Spec):
    name: str | None = None
    description: str | None = None
    policy: EndpointSpec = Field(default_factory=EnvEndpointSpec)
    budget: Budget | None = None
    seed: int | None = None
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT

    def check_generations(self, cost: int) -> None:
        if self.budget is not None and self.budget.generations is not None and self.budget.generations < cost:
            raise ValueError(f"budget.generations: {self.budget.generations} is below this strategy's cost of {cost}")


class BestOfNSpec(_StrategySpec):
    """Best-of-N: ``weighted`` (the paper's), ``naive`` or ``majority``; ``adaptive`` stops early; samples cut off
    by ``max_tokens`` ``lose`` (default) or ``vote``."""

    kind: Literal["best_of_n"] = "best_of_n"
    n: int = Field(ge=1)
    selection: Selection = DEFAULT_SELECTION
    adaptive: bool = False
    verifier: VerifierSpec | None = None
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    truncated: Literal["lose", "vote"] = "lose"

    @model_validator(mode="after")
    def _check(self) -> BestOfNSpec:
        if self.verifier is None and self.selection != "majority":
            raise ValueError(f"verifier: selection={self.selection!r} needs a verifier; use selection='majority'")
        return self


def _scores_prefixes(spec: VerifierSpec) -> bool:
    """Whether a verifier spec builds a step-wise verifier (see ``ttc_graph.strategies.stepwise``)."""
    if isinstance(spec, LLMJudgeVerifierSpec):
        return spec.mode == "process"
    if isinstance(spec, ProgramVerifierSpec):
        return False
    if isinstance(spec, CombinedVerifierSpec):
        return all(_scores_prefixes(part) for part in spec.parts)
    return True


def _checked(check: Any, *args: Any, **kwargs: Any) -> Any:
    """``check(...)``, its :class:`ConfigurationError` as the ``ValueError`` pydantic reports."""
    try:
        return check(*args, **kwargs)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from exc


class _StepSpec(_StrategySpec):
    """What every step-wise search takes (``StepSearchOptions``); its verifier must score partial solutions."""

    n: int = Field(ge=1)
    verifier: VerifierSpec
    max_steps: int = Field(DEFAULT_MAX_STEPS, ge=1)
    lookahead: int = Field(0, ge=0)
    aggregation: Aggregation = DEFAULT_AGGREGATION
    temperature: float = Field(DEFAULT_STEP_TEMPERATURE, ge=0)
    step_max_tokens: int = Field(DEFAULT_STEP_MAX_TOKENS, ge=1)
    step_delimiter: str = Field(DEFAULT_STEP_DELIMITER, min_length=1)

    @model_validator(mode="after")
    def _check_step(self) -> _StepSpec:
        if not _scores_prefixes(self.verifier):
            raise ValueError(
                "verifier: not step-wise (an outcome judge scores whole solutions only); use a process verifier"
            )
        self.check_generations(self.n * (self.lookahead + 1))
        return self


class _SearchSpec(_StepSpec):
    beam_width: int | Literal["sqrt"] = DEFAULT_BEAM_WIDTH
    selection: FinalSelection = DEFAULT_SEARCH_SELECTION

    @model_validator(mode="after")
    def _check(self) -> _SearchSpec:
        _checked(resolve_width, self.n, self.beam_width)
        return self


class BeamSearchSpec(_SearchSpec):
    """Beam search against a verifier (``lookahead`` > 0 gives lookahead search)."""

    kind: Literal["beam_search"] = "beam_search"


class DVTSSpec(_SearchSpec):
    """Diverse verifier tree search: ``n / beam_width`` independent subtrees."""

    kind: Literal["dvts"] = "dvts"
    asynchronous: bool = False


class ParticleFilteringSpec(_StepSpec):
    """Particle filtering (Puri et al., 2025): ``n`` particles resampled every step by the softmax of their scores'
    logits (``weighting: score``: of the scores)."""

    kind: Literal["particle_filtering"] = "particle_filtering"
    selection: FinalSelection = DEFAULT_PATH_SELECTION
    softmax_temperature: float = Field(1.0, gt=0)
    resampling: Literal["multinomial", "systematic"] = "multinomial"
    weighting: Literal["logit", "score"] = "logit"

    @model_validator(mode="after")
    def _check_plan(self) -> ParticleFilteringSpec:
        _checked(
            check_particle_filtering, self.n, max_steps=self.max_steps, lookahead=self.lookahead,
            softmax_temperature=self.softmax_temperature, resampling=self.resampling, weighting=self.weighting,
        )  # fmt: skip
        return self


class MCTSSpec(_StepSpec):
    """Monte Carlo tree search over steps; ``n`` sampled steps per depth, as beam search with ``n`` beams.

    ``max_depth`` and ``rollout`` still load as deprecated aliases of ``max_steps`` and ``lookahead`` (they warn);
    an alias replaces the field it names, so a request's override of ``max_depth`` applies to a dumped spec.
    """

    kind: Literal["mcts"] = "mcts"
    selection: FinalSelection = DEFAULT_PATH_SELECTION
    expansions: int = Field(4, ge=1)
    exploration: float = Field(1.0, ge=0)
    asynchronous: bool = False

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not ({"max_depth", "rollout"} & data.keys()):
            return data
        data = dict(data)
        for old, new in (("max_depth", "max_steps"), ("rollout", "lookahead")):
            if old in data:
                if isinstance(data[old], bool):
                    raise ValueError(f"{old}: expected a number, got {data[old]!r}")
                warnings.warn(f"mcts: {old} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
                data[new] = data.pop(old)
        return data

    @model_validator(mode="after")
    def _check_plan(self) -> MCTSSpec:
        _checked(
            check_mcts, self.n, expansions=self.expansions, exploration=self.exploration, max_steps=self.max_steps,
            lookahead=self.lookahead,
        )  # fmt: skip
        return self


class RevisionsSpec(_StrategySpec):
    """``n / chain_length`` parallel chains of sequential revisions."""

    kind: Literal["revisions"] = "revisions"
    n: int = Field(ge=1)
    chain_length: int | Literal["sqrt", "full"]
    selection: RevisionSelection = DEFAULT_REVISION_SELECTION
    verifier: VerifierSpec | None = None
    revision_policy: EndpointSpec | None = None
    stop_score: float | None = Field(None, ge=0, le=1)
    stop_on_repeat: bool = False
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0)
    max_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> RevisionsSpec:
        try:
            split_budget(self.n, self.chain_length)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
        if self.verifier is None and self.selection == "hierarchical":
            raise ValueError("verifier: selection='hierarchical' needs a verifier; use selection='majority'")
        if self.stop_score is not None and self.verifier is None:
            raise ValueError("stop_score: needs a verifier")
        return self


class ComputeOptimalSpec(_StrategySpec):
    """Route each question by its predicted difficulty to the strategy a calibrated policy table names.

    ``budget: {generations: N}`` (one the table covers; no other limit) is what every routed run may spend. The old
    top-level ``generations: N`` still loads as a deprecated alias of it (it warns).
    """

    kind: Literal["compute_optimal"] = "compute_optimal"
    table: str = Field(min_length=1, description="Path of a policy table JSON (see ttc_graph.compute_optimal).")
    budget: Budget = Field(description="The budget in generations; must be one the table covers.")  # type: ignore[assignment]
    verifier: VerifierSpec
    probe_max_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _generations_alias(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "generations" not in data:
            return data
        data = dict(data)
        generations = data.pop("generations")
        if "budget" in data:
            raise ValueError("generations: a deprecated alias of budget.generations; give one of them")
        if isinstance(generations, bool):
            raise ValueError(f"generations: expected a number, got {generations!r}")
        warnings.warn(
            "compute_optimal: generations is deprecated; use budget: {generations: N}", DeprecationWarning, stacklevel=2
        )
        data["budget"] = {"generations": generations}
        return data

    @model_validator(mode="after")
    def _generations_only(self) -> ComputeOptimalSpec:
        if self.budget.generations is None:
            raise ValueError("budget.generations: required; the router's table is fitted in generations")
        others = [k for k in ("tokens", "seconds", "dollars") if getattr(self.budget, k) is not None]
        if others:
            raise ValueError(f"budget: compute_optimal spends generations only; {', '.join(others)} is not supported")
        if self.seed is not None:
            raise ValueError("seed: not supported by compute_optimal")
        return self


StrategySpec = Annotated[
    BestOfNSpec | BeamSearchSpec | DVTSSpec | ParticleFilteringSpec | MCTSSpec | RevisionsSpec | ComputeOptimalSpec,
    Field(discriminator="kind"),
]
