"""Build endpoints, verifiers and graphs from specs: the one place specs turn into objects."""

from __future__ import annotations

import importlib
import os
from typing import Any

from langgraph.graph import StateGraph

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.specs.models import (
    ArithmeticVerifierSpec,
    BeamSearchSpec,
    BestOfNSpec,
    CombinedVerifierSpec,
    ComputeOptimalSpec,
    ConfidenceVerifierSpec,
    DVTSSpec,
    EndpointSpec,
    EnvEndpointSpec,
    LLMJudgeVerifierSpec,
    LocalEndpointSpec,
    MCTSSpec,
    OpenAIEndpointSpec,
    ParticleFilteringSpec,
    ProgramVerifierSpec,
    PythonVerifierSpec,
    RevisionsSpec,
    RewardModelVerifierSpec,
    StrategySpec,
    VerifierSpec,
)
from ttc_graph.state import History
from ttc_graph.strategies import (
    create_beam_search,
    create_best_of_n,
    create_dvts,
    create_mcts,
    create_particle_filtering,
    create_revisions,
)
from ttc_graph.verifiers import (
    ArithmeticVerifier,
    CombinedVerifier,
    ConfidenceVerifier,
    FunctionVerifier,
    LLMJudgeVerifier,
    ProgramVerifier,
    RewardModelVerifier,
    Verifier,
)

__all__ = ["build_endpoint", "build_graph", "build_verifier"]


def build_endpoint(spec: EndpointSpec) -> Endpoint:
    """The endpoint a spec names; local servers start lazily on the first request."""
    if isinstance(spec, OpenAIEndpointSpec):
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        return OpenAIEndpoint(
            spec.base_url,
            spec.model,
            key,
            max_concurrency=spec.max_concurrency,
            native_n=spec.native_n,
            continuation=spec.continuation,
        )
    from ttc_graph.local.lazy import LocalEndpoint

    if isinstance(spec, LocalEndpointSpec):
        return LocalEndpoint(spec.model, parallel=spec.parallel)
    if isinstance(spec, EnvEndpointSpec):
        url = os.environ.get("TTC_BASE_URL")
        if url:
            return OpenAIEndpoint(url, os.environ.get("TTC_MODEL", "default"), os.environ.get("TTC_API_KEY"))
        return LocalEndpoint(os.environ.get("TTC_LOCAL_MODEL") or None)
    raise ConfigurationError(f"policy: unknown endpoint spec {spec!r}")


def build_verifier(spec: VerifierSpec | None, policy: Endpoint) -> Verifier | None:
    """The verifier a spec names; an LLM judge or program verifier without its own endpoint uses the policy."""
    if spec is None:
        return None
    if isinstance(spec, LLMJudgeVerifierSpec):
        endpoint = build_endpoint(spec.endpoint) if spec.endpoint else policy
        return LLMJudgeVerifier(endpoint, mode=spec.mode, aggregation=spec.aggregation, samples=spec.samples)
    if isinstance(spec, ConfidenceVerifierSpec):
        return ConfidenceVerifier(spec.method, spec.window)
    if isinstance(spec, RewardModelVerifierSpec):
        return RewardModelVerifier(
            spec.base_url, spec.model, step_separator=spec.step_separator, aggregation=spec.aggregation
        )
    if isinstance(spec, ArithmeticVerifierSpec):
        return ArithmeticVerifier(
            prior=spec.prior, prior_weight=spec.prior_weight, rel_tol=spec.rel_tol, aggregation=spec.aggregation
        )
    if isinstance(spec, ProgramVerifierSpec):
        return ProgramVerifier(
            build_endpoint(spec.endpoint) if spec.endpoint else policy,
            programs=spec.programs,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            prior=spec.prior,
            prior_weight=spec.prior_weight,
        )
    if isinstance(spec, CombinedVerifierSpec):
        parts = [build_verifier(part, policy) for part in spec.parts]
        return CombinedVerifier(
            [p for p in parts if p is not None],
            spec.weights,
            spec.how,
            granularity=spec.granularity,
            aggregation=spec.aggregation,
        )
    if isinstance(spec, PythonVerifierSpec):
        module, _, attr = spec.target.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"verifier.target: cannot import {spec.target!r}: {exc}") from exc
        if isinstance(obj, Verifier):
            return obj
        if not callable(obj):
            raise ConfigurationError(f"verifier.target: {spec.target!r} is not callable (got {type(obj).__name__})")
        return FunctionVerifier(obj)
    raise ConfigurationError(f"verifier: unknown verifier spec {spec!r}")


def build_graph(
    spec: StrategySpec,
    *,
    policy: Endpoint | None = None,
    verifier: Verifier | None = None,
    history: History | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled graph a strategy spec describes.

    ``policy`` overrides the spec's endpoint; ``verifier`` overrides the verifier of a spec that declares one;
    ``history`` (``all`` | ``last``) overrides the factory's default of what of a conversation reaches the model.
    """
    pol = policy or build_endpoint(spec.policy)

    def build_verifier_of(vspec: VerifierSpec | None, pol: Endpoint) -> Verifier | None:
        return verifier if (verifier is not None and vspec is not None) else build_verifier(vspec, pol)

    common: dict[str, Any] = {"budget": spec.budget, "seed": spec.seed, "system_prompt": spec.system_prompt}
    if history is not None:
        common["history"] = history
    if spec.name:
        common["name"] = spec.name
    if isinstance(spec, BestOfNSpec):
        return create_best_of_n(
            pol,
            build_verifier_of(spec.verifier, pol),
            n=spec.n,
            selection=spec.selection,
            adaptive=spec.adaptive,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            **common,
        )
    if isinstance(spec, BeamSearchSpec | DVTSSpec | ParticleFilteringSpec | MCTSSpec):
        scorer = build_verifier_of(spec.verifier, pol)
        assert scorer is not None
        step: dict[str, Any] = {
            "n": spec.n, "max_steps": spec.max_steps, "lookahead": spec.lookahead, "selection": spec.selection,
            "aggregation": spec.aggregation, "temperature": spec.temperature, "step_max_tokens": spec.step_max_tokens,
            "step_delimiter": spec.step_delimiter, **common,
        }  # fmt: skip
        if isinstance(spec, BeamSearchSpec | DVTSSpec):
            factory = create_beam_search if isinstance(spec, BeamSearchSpec) else create_dvts
            return factory(pol, scorer, beam_width=spec.beam_width, **step)
        if isinstance(spec, ParticleFilteringSpec):
            return create_particle_filtering(
                pol, scorer, softmax_temperature=spec.softmax_temperature, resampling=spec.resampling,
                weighting=spec.weighting, **step,
            )  # fmt: skip
        return create_mcts(pol, scorer, expansions=spec.expansions, exploration=spec.exploration, **step)
    if isinstance(spec, RevisionsSpec):
        return create_revisions(
            pol,
            build_verifier_of(spec.verifier, pol),
            n=spec.n,
            chain_length=spec.chain_length,
            selection=spec.selection,
            revision_policy=build_endpoint(spec.revision_policy) if spec.revision_policy else None,
            stop_score=spec.stop_score,
            stop_on_repeat=spec.stop_on_repeat,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            **common,
        )
    if isinstance(spec, ComputeOptimalSpec):
        from ttc_graph.compute_optimal import create_compute_optimal, load_table

        table = load_table(spec.table)
        covered = sorted({int(b) for row in table.table.values() for b in row})
        if spec.generations not in covered:
            raise ConfigurationError(f"generations: {spec.generations} is not covered by {spec.table} ({covered})")
        scorer = build_verifier_of(spec.verifier, pol)
        assert scorer is not None
        return create_compute_optimal(
            pol, scorer, table, budget=spec.generations, probe_max_tokens=spec.probe_max_tokens,
            system_prompt=spec.system_prompt, **{k: v for k, v in common.items() if k in ("history", "name")},
        )  # fmt: skip
    raise ConfigurationError(f"kind: no builder for {type(spec).__name__}")
