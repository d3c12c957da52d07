"""The one map from verifier names to verifier objects: spec kinds (``kind: confidence``) and the short names of
the command line and sweeps (``--verifier confidence-group``).

A verifier spec is a :mod:`ttc_graph.specs` model or a plain mapping with the same fields; a mapping leaves out
what it does not set and the verifier's own defaults apply. This package does not import ``specs`` (``specs``
imports it): an LLM judge with its own endpoint needs ``build_endpoint``, which ``specs`` passes in.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.verifiers.arithmetic import ArithmeticVerifier
from ttc_graph.verifiers.base import Verifier
from ttc_graph.verifiers.combined import CombinedVerifier
from ttc_graph.verifiers.confidence import ConfidenceVerifier
from ttc_graph.verifiers.deadline import check_timeout
from ttc_graph.verifiers.function import FunctionVerifier
from ttc_graph.verifiers.judge import LLMJudgeVerifier
from ttc_graph.verifiers.program import ProgramVerifier
from ttc_graph.verifiers.reward_model import RewardModelVerifier

__all__ = [
    "NAMED_VERIFIERS",
    "VERIFIER_BUILDERS",
    "VERIFIER_NAMES",
    "EndpointBuilder",
    "VerifierBuilder",
    "build_verifier",
    "named_verifier",
]

EndpointBuilder = Callable[[Any], Endpoint]
"""Builds the endpoint an endpoint spec names (:func:`ttc_graph.specs.build_endpoint`)."""

VerifierBuilder = Callable[[Any, Endpoint, EndpointBuilder | None], Verifier]
"""``(spec, policy, build_endpoint) -> verifier`` for one spec kind."""


def _get(spec: Any, name: str, default: Any = None) -> Any:
    return spec.get(name, default) if isinstance(spec, Mapping) else getattr(spec, name, default)


def _options(spec: Any, *names: str) -> dict[str, Any]:
    """The fields ``spec`` sets among ``names`` (a model sets all of them; a mapping those it holds)."""
    if isinstance(spec, Mapping):
        return {n: spec[n] for n in names if n in spec}
    return {n: getattr(spec, n) for n in names}


def _own_endpoint(spec: Any, policy: Endpoint, build_endpoint: EndpointBuilder | None) -> Endpoint:
    """The endpoint a model-calling verifier spec names, else the policy."""
    endpoint = _get(spec, "endpoint")
    if endpoint is not None and build_endpoint is None:
        raise ConfigurationError("verifier.endpoint: an endpoint spec needs build_endpoint (use ttc_graph.specs)")
    return build_endpoint(endpoint) if endpoint is not None and build_endpoint else policy


def _judge(spec: Any, policy: Endpoint, build_endpoint: EndpointBuilder | None) -> Verifier:
    endpoint = _own_endpoint(spec, policy, build_endpoint)
    return LLMJudgeVerifier(endpoint, **_options(spec, "mode", "aggregation", "samples"))


def _program(spec: Any, policy: Endpoint, build_endpoint: EndpointBuilder | None) -> Verifier:
    endpoint = _own_endpoint(spec, policy, build_endpoint)
    options = _options(spec, "programs", "temperature", "max_tokens", "prior", "prior_weight")
    return ProgramVerifier(endpoint, **options)


def _confidence(spec: Any, policy: Endpoint, build_endpoint: EndpointBuilder | None) -> Verifier:
    return ConfidenceVerifier(**_options(spec, "method", "window"))


def _reward_model(spec: Any, policy: Endpoint, build_endpoint: EndpointBuilder | None) -> Verifier:
    return RewardModelVerifier(
        _get(spec, "base_url"), _get(spec, "model"), **_options(spec, "step_separator", "aggregation")
    )


def _arithmetic(spec: Any, policy: Endpoint, build_endpoint: EndpointBuilder | None) -> Verifier:
    return ArithmeticVerifier(**_options(spec, "prior", "prior_weight", "rel_tol", "aggregation"))


def _combined(spec: Any, policy: Endpoint, build_endpoint: EndpointBuilder | None) -> Verifier:
    parts = [build_verifier(part, policy, build_endpoint=build_endpoint) for part in _get(spec, "parts", ())]
    options = _options(spec, "weights", "how", "granularity", "aggregation")
    return CombinedVerifier([p for p in parts if p is not None], **options)


def _python(spec: Any, policy: Endpoint, build_endpoint: EndpointBuilder | None) -> Verifier:
    target = str(_get(spec, "target", ""))
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"verifier.target: cannot import {target!r}: {exc}") from exc
    if isinstance(obj, Verifier):
        return obj
    if not callable(obj):
        raise ConfigurationError(f"verifier.target: {target!r} is not callable (got {type(obj).__name__})")
    return FunctionVerifier(obj)


VERIFIER_BUILDERS: dict[str, VerifierBuilder] = {
    "llm_judge": _judge,
    "confidence": _confidence,
    "reward_model": _reward_model,
    "arithmetic": _arithmetic,
    "combined": _combined,
    "python": _python,
    "program": _program,
}
"""The builder of each verifier spec kind."""


def build_verifier(spec: Any, policy: Endpoint, *, build_endpoint: EndpointBuilder | None = None) -> Verifier | None:
    """The verifier ``spec`` describes (None for None); an LLM judge or a program verifier without its own endpoint
    calls ``policy``."""
    if spec is None:
        return None
    kind = _get(spec, "kind")
    builder = VERIFIER_BUILDERS.get(kind)
    if builder is None:
        raise ConfigurationError(f"verifier: unknown verifier spec {spec!r}")
    verifier = builder(spec, policy, build_endpoint)
    timeout = check_timeout(_get(spec, "timeout"), f"verifier {kind}: timeout")
    if timeout is not None:
        verifier.timeout = timeout
    return verifier


NAMED_VERIFIERS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "confidence": {"kind": "confidence", "method": "mean"},
    "confidence-group": {"kind": "confidence", "method": "group"},
    "judge": {"kind": "llm_judge"},
    "program": {"kind": "program"},
}
"""The short names of ``ttc solve/eval --verifier`` and of sweep strategies, as verifier specs."""

VERIFIER_NAMES = tuple(NAMED_VERIFIERS)


def named_verifier(name: str, policy: Endpoint, *, mode: Literal["process", "outcome"] = "outcome") -> Verifier | None:
    """The verifier a short name stands for (``none`` is None); a judge judges with ``policy`` in ``mode``."""
    if name not in NAMED_VERIFIERS:
        raise ConfigurationError(f"verifier: unknown {name!r}; use one of {', '.join(VERIFIER_NAMES)}")
    spec = NAMED_VERIFIERS[name]
    if spec is not None and spec["kind"] == "llm_judge":
        spec = {**spec, "mode": mode}
    return build_verifier(spec, policy)
