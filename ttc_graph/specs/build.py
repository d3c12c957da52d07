"""Build endpoints, verifiers and graphs from specs: the one place specs turn into objects."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from langgraph.graph import StateGraph

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.specs.models import (
    BeamSearchSpec,
    BestOfNSpec,
    DVTSSpec,
    EndpointSpec,
    EnvEndpointSpec,
    LocalEndpointSpec,
    MCTSSpec,
    OpenAIEndpointSpec,
    ParticleFilteringSpec,
    RevisionsSpec,
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
from ttc_graph.strategies.stepwise import STEP_OPTIONS
from ttc_graph.verifiers import registry
from ttc_graph.verifiers.base import Verifier

__all__ = [
    "GRAPH_BUILDERS",
    "GraphBuilder",
    "build_endpoint",
    "build_graph",
    "build_verifier",
    "register_graph_builder",
]

GraphBuilder = Callable[[Any, Endpoint, "Verifier | None", dict[str, Any]], StateGraph[Any, Any, Any, Any]]
"""Builds the graph of a spec kind the layers above this one own: ``(spec, policy, verifier, common)``, where
``common`` holds the factory options every strategy takes (``budget``, ``seed``, ``system_prompt``, ``history``,
``name``)."""

GRAPH_BUILDERS: dict[str, GraphBuilder] = {}
"""Builders of spec kinds defined above ``specs`` (``compute_optimal``: :mod:`ttc_graph.compute_optimal` registers
it when imported, and ``import ttc_graph`` imports it)."""


def register_graph_builder(kind: str, builder: GraphBuilder) -> None:
    """Let :func:`build_graph` build specs of ``kind`` with ``builder`` (a package above ``specs`` owns it)."""
    GRAPH_BUILDERS[kind] = builder


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
    """The verifier a spec names (:mod:`ttc_graph.verifiers.registry`); an LLM judge without its own endpoint judges
    with the policy."""
    return registry.build_verifier(spec, policy, build_endpoint=build_endpoint)


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
            truncated=spec.truncated,
            **common,
        )
    if isinstance(spec, BeamSearchSpec | DVTSSpec | ParticleFilteringSpec | MCTSSpec):
        scorer = build_verifier_of(spec.verifier, pol)
        assert scorer is not None
        step = {**{name: getattr(spec, name) for name in STEP_OPTIONS if name in type(spec).model_fields}, **common}
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
    builder = GRAPH_BUILDERS.get(spec.kind)
    if builder is not None:
        return builder(spec, pol, build_verifier_of(getattr(spec, "verifier", None), pol), common)
    raise ConfigurationError(f"kind: no builder for {type(spec).__name__}")
