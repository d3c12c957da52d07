"""Presets (named strategy specs), the ``<preset>/<upstream-model>`` model names and per-request spec overrides."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttc_graph.errors import ConfigurationError
from ttc_graph.server.errors import APIError
from ttc_graph.specs import SpecError, StrategySpec, load_spec, parse_spec

__all__ = [
    "OVERRIDABLE",
    "SHIPPED_PRESETS",
    "Preset",
    "Target",
    "apply_overrides",
    "load_presets",
    "resolve_model",
]

SHIPPED_PRESETS = Path(__file__).resolve().parents[1] / "presets"
"""The specs shipped in the package (``ttc_graph/presets``): one preset each, named after the file."""

OVERRIDABLE = frozenset(
    {
        "n", "budget", "selection", "verifier", "adaptive", "temperature", "max_tokens", "seed", "beam_width",
        "chain_length", "lookahead", "max_steps", "step_max_tokens", "step_delimiter", "aggregation", "stop_score",
        "stop_on_repeat", "generations", "probe_max_tokens", "expansions", "exploration", "max_depth", "rollout",
        "softmax_temperature", "resampling", "weighting",
    }
)  # fmt: skip
"""Spec fields a request may override through ``extra_body={"ttc": {...}}``.

Never the policy, a verifier's endpoint, a Python verifier or a reward model's URL: a client must not make the
server import code, call other hosts or send its keys elsewhere.
"""

_REMOTE_VERIFIERS = frozenset({"python", "reward_model"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class Preset:
    """A named strategy spec; its policy is replaced by the upstream model a request names."""

    name: str
    spec: StrategySpec
    source: str


@dataclass(frozen=True, slots=True)
class Target:
    """What a request's ``model`` names: a preset on an upstream model, or the upstream model alone."""

    preset: Preset | None
    model: str


def load_presets(dirs: Iterable[Path] = (), *, shipped: bool = True) -> dict[str, Preset]:
    """Presets from the YAML specs of ``dirs`` (after the shipped examples; a later file wins on a name).

    A spec that does not validate fails the start, naming its file.
    """
    sources = [SHIPPED_PRESETS] if shipped and SHIPPED_PRESETS.is_dir() else []
    presets: dict[str, Preset] = {}
    for folder in [*sources, *(Path(d).expanduser() for d in dirs)]:
        if not folder.is_dir():
            raise ConfigurationError(f"presets: {folder} is not a directory")
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            if not _NAME.match(path.stem):
                raise ConfigurationError(f"presets: {path.name}: a preset name may hold letters, digits, _ . -")
            presets[path.stem] = Preset(path.stem, load_spec(path), str(path))
    return presets


def resolve_model(
    name: str, presets: Mapping[str, Preset], default_model: str, known: Collection[str] | None
) -> Target:
    """The target of ``model``: ``<preset>/<upstream-model>``, ``<preset>`` (the default upstream model) or a plain
    upstream model (passed through). ``known`` lists the upstream's models (None: cannot tell, accept any).
    """
    head, sep, rest = name.partition("/")
    if head in presets:
        model = rest or default_model
        if rest and known is not None and model not in known:
            raise APIError(
                404,
                f"The upstream model '{model}' does not exist (upstream models: {', '.join(sorted(known))}).",
                param="model",
                code="model_not_found",
            )
        return Target(presets[head], model)
    if known is None or name in known:
        return Target(None, name)
    what = f"unknown preset '{head}' and no upstream model '{name}'" if sep else f"the model '{name}' does not exist"
    raise APIError(
        404,
        f"{what[0].upper()}{what[1:]} (presets: {', '.join(sorted(presets)) or 'none'}; "
        f"upstream models: {', '.join(sorted(known)) or 'none'}).",
        param="model",
        code="model_not_found",
    )


def _check_verifier(value: Any, where: str) -> None:
    if not isinstance(value, Mapping):
        return  # the spec's own validation names the wrong type
    kind = value.get("kind")
    if kind in _REMOTE_VERIFIERS:
        raise APIError(400, f"{where}.kind: '{kind}' verifiers cannot be set by a request", param=f"{where}.kind")
    if "endpoint" in value:
        raise APIError(
            400, f"{where}.endpoint: a verifier endpoint cannot be set by a request", param=f"{where}.endpoint"
        )
    for i, part in enumerate(value.get("parts") or []):
        _check_verifier(part, f"{where}.parts.{i}")


def apply_overrides(spec: StrategySpec, overrides: Any) -> StrategySpec:
    """``spec`` with a request's ``ttc`` overrides applied and validated; ``budget`` fields merge, others replace.

    A bad override is a 400 naming the field (``ttc.<path>``).
    """
    if overrides is None:
        return spec
    if not isinstance(overrides, Mapping):
        raise APIError(400, f"ttc: expected an object of spec overrides, got {type(overrides).__name__}", param="ttc")
    for key in overrides:
        if key not in OVERRIDABLE:
            raise APIError(
                400,
                f"ttc.{key}: cannot be overridden by a request (allowed: {', '.join(sorted(OVERRIDABLE))})",
                param=f"ttc.{key}",
            )
    if "verifier" in overrides:
        _check_verifier(overrides["verifier"], "ttc.verifier")
    data = spec.model_dump(mode="json")
    for key, value in overrides.items():
        if key == "budget" and isinstance(value, Mapping) and isinstance(data.get("budget"), dict):
            data["budget"] = {**data["budget"], **value}
        else:
            data[key] = value
    try:
        return parse_spec(data, "ttc")
    except SpecError as exc:
        path, _ = exc.problems[0] if exc.problems else ("", "")
        detail = "; ".join(f"ttc.{p}: {reason}" if p else f"ttc: {reason}" for p, reason in exc.problems)
        raise APIError(400, f"Invalid spec override: {detail}", param=f"ttc.{path}" if path else "ttc") from exc
