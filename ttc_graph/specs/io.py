"""Reading, validating and describing specs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import TypeAdapter, ValidationError

from ttc_graph._files import existing_file
from ttc_graph.errors import ConfigurationError
from ttc_graph.specs.models import EndpointSpec, StrategySpec, VerifierSpec

__all__ = ["SpecError", "load_spec", "parse_spec", "spec_json_schema"]

_ADAPTER: TypeAdapter[StrategySpec] = TypeAdapter(StrategySpec)
_TAGS = frozenset(
    m.model_fields["kind"].default
    for union in (StrategySpec, EndpointSpec, VerifierSpec)
    for m in get_args(get_args(union)[0])
)


class SpecError(ConfigurationError):
    """A spec failed validation; ``problems`` lists (field path, reason)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        lines = "\n".join(f"  {path or '(root)'}: {reason}" for path, reason in problems)
        super().__init__(f"{source}: invalid spec\n{lines}")
        self.problems = problems


# "beam_width: 3 does not divide n=4": a model validator naming the field it is about.
_NAMED = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*): (.+)$", re.DOTALL)


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        # Drop the discriminator tags pydantic inserts (e.g. 'best_of_n') so paths read like the YAML.
        loc = [str(p) for p in err["loc"] if p not in _TAGS]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("kind")
        elif err["type"] == "value_error" and (named := _NAMED.match(msg)):
            # Cross-field checks run on the whole model; report them at the field they name.
            loc.extend(named[1].split("."))
            msg = named[2]
        out.append((".".join(loc), msg))
    return out


def parse_spec(data: Any, source: str = "spec") -> StrategySpec:
    """A validated spec from plain data (a dict from YAML or JSON)."""
    if not isinstance(data, dict):
        raise SpecError(source, [("", f"expected a mapping with a 'kind', got {type(data).__name__}")])
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise SpecError(source, _problems(exc)) from exc


def load_spec(path: str | Path) -> StrategySpec:
    """A validated spec from a YAML (or JSON) file."""
    file = existing_file(path, "spec")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(str(file), [("", f"not valid YAML: {exc}")]) from exc
    spec = parse_spec(data, str(file))
    table = getattr(spec, "table", None)
    if isinstance(table, str) and not Path(table).is_absolute():
        # Paths inside a spec are relative to the spec file, wherever it is run from.
        spec = spec.model_copy(update={"table": str((file.parent / table).resolve())})
    return spec


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of a strategy spec, for editors and forms."""
    schema = _ADAPTER.json_schema()
    schema["title"] = "ttc_graph strategy spec"
    return json.loads(json.dumps(schema))
