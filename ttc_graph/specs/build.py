"""Build endpoints, verifiers and graphs from specs: the one place specs turn into objects."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from langgraph.graph import StateGraph

from ttc_graph import strategies
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.endpoints.openai_compat import OpenAIEndpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.specs.models import (
    EndpointSpec,
    EnvEndpointSpec,
    LocalEndpointSpec,
    OpenAIEndpointSpec,
    RevisionsSpec,
    StrategySpec,
    VerifierSpec,
)
from ttc_graph.state import History
from ttc_graph.verifiers import registry
from ttc_graph.verifiers.base import Verifier

__all__ = [
    "FACTORIES",
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

FACTORIES: dict[str, Callable[..., StateGraph[Any, Any, Any, Any]]] = {
    "best_of_n": strategies.create_best_of_n,
    "beam_search": strategies.create_beam_search,
    "dvts": strategies.create_dvts,
    "particle_filtering": strategies.create_particle_filtering,
    "mcts": strategies.create_mcts,
    "revisions": strategies.create_revisions,
}
"""The factory of each strategy kind ``specs`` builds itself; a spec's fields are its keyword arguments."""

_NOT_OPTIONS = frozenset({"kind", "description", "policy", "verifier", "revision_policy"})
"""Spec fields that are no factory argument as they are: the spec's own, and the specs of what it builds."""

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
            slots=spec.slots,
            llamacpp_n=spec.llamacpp_n,
            slot_copy=spec.slot_copy,
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
    factory = FACTORIES.get(spec.kind)
    if factory is not None:  # the spec's fields are the factory's keyword arguments, by name
        options = {k: getattr(spec, k) for k in type(spec).model_fields if k not in _NOT_OPTIONS}
        if isinstance(spec, RevisionsSpec) and spec.revision_policy is not None:
            options["revision_policy"] = build_endpoint(spec.revision_policy)
        return factory(pol, build_verifier_of(getattr(spec, "verifier", None), pol), **{**options, **common})
    builder = GRAPH_BUILDERS.get(spec.kind)
    if builder is not None:
        return builder(spec, pol, build_verifier_of(getattr(spec, "verifier", None), pol), common)
    raise ConfigurationError(f"kind: no builder for {type(spec).__name__}")
