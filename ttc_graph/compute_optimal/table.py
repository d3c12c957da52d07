"""The compute-optimal policy table: which strategy to run per (difficulty bin, budget), as versioned JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ttc_graph._files import existing_file
from ttc_graph.compute_optimal.difficulty import DifficultyBins
from ttc_graph.errors import ConfigurationError
from ttc_graph.specs.io import SpecError, parse_spec
from ttc_graph.specs.models import StrategySpec

__all__ = ["TABLE_FORMAT", "PolicyTable", "load_table", "probe_share", "spec_at_budget", "strategy_cost"]

TABLE_FORMAT = "ttc_graph.compute_optimal/1"


def strategy_cost(template: dict[str, Any]) -> int:
    """Generations one unit of ``n`` costs: lookahead k makes every beam cost k + 1."""
    return int(template.get("lookahead", 0) or 0) + 1


def spec_at_budget(template: dict[str, Any], budget: int, *, source: str = "strategy") -> StrategySpec:
    """The concrete spec of a strategy template at a generation budget (``n`` filled in), validated."""
    cost = strategy_cost(template)
    if budget % cost:
        raise ConfigurationError(f"{source}: budget {budget} is not a multiple of its cost per beam ({cost})")
    return parse_spec({**template, "n": budget // cost}, source)


def probe_share(template: dict[str, Any], probes: int) -> int:
    """Generations of a route's budget that the router's probes take: none for best-of-N (the probes are its
    first samples), all of them for any other strategy, so probes plus route never exceed the budget."""
    return 0 if template.get("kind", "best_of_n") == "best_of_n" else probes


class PolicyTable(BaseModel):
    """Per (bin, budget) the best strategy, chosen by two-fold cross-validation on a calibration set.

    ``strategies`` are spec templates without ``n`` (filled in from the budget); ``table`` maps a bin
    ("1" = easiest) to a budget to a strategy name. ``report`` keeps the calibration's figures.

    A budget is the total the router spends, probes included: with predicted bins (``difficulty.probes`` > 0) a
    best-of-N route reuses the probes as samples, any other route runs at ``budget - probes`` generations.
    """

    model_config = ConfigDict(extra="forbid")

    format: str = TABLE_FORMAT
    difficulty: DifficultyBins
    budgets: list[int] = Field(min_length=1)
    strategies: dict[str, dict[str, Any]] = Field(min_length=1)
    table: dict[str, dict[str, str]]
    report: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> PolicyTable:
        if self.format != TABLE_FORMAT:
            raise ValueError(f"format: expected {TABLE_FORMAT!r}, got {self.format!r}")
        if any(b < 1 for b in self.budgets):
            raise ValueError(f"budgets: must all be >= 1, got {self.budgets}")
        for name, template in self.strategies.items():
            if "n" in template:
                raise ValueError(f"strategies.{name}: a template must not set n (it comes from the budget)")
        expected_bins = {str(b) for b in range(1, self.difficulty.n_bins + 1)}
        if set(self.table) != expected_bins:
            raise ValueError(f"table: needs bins {sorted(expected_bins)}, has {sorted(self.table)}")
        expected_budgets = {str(b) for b in self.budgets}
        for bin_, row in self.table.items():
            if set(row) != expected_budgets:
                raise ValueError(f"table.{bin_}: needs budgets {sorted(self.budgets)}, has {list(row)}")
        for bin_, row in self.table.items():
            for budget, name in row.items():
                if name not in self.strategies:
                    raise ValueError(f"table.{bin_}.{budget}: unknown strategy {name!r}")
                try:
                    self.spec_for(name, int(budget))
                except (SpecError, ConfigurationError) as exc:
                    raise ValueError(f"table.{bin_}.{budget}: {exc}") from exc
        return self

    def choose(self, bin_: int, budget: int) -> tuple[str, StrategySpec]:
        """The strategy name and concrete spec for a bin at a budget."""
        row = self.table.get(str(bin_))
        if row is None:
            raise ConfigurationError(f"table: no bin {bin_}; bins are 1..{self.difficulty.n_bins}")
        name = row.get(str(budget))
        if name is None:
            covered = sorted({int(b) for r in self.table.values() for b in r})
            raise ConfigurationError(f"budget: {budget} is not covered by the table (covered: {covered})")
        return name, self.spec_for(name, budget)

    def spend(self, name: str, budget: int) -> int:
        """Generations the route ``name`` itself runs at when the router's total is ``budget``."""
        return budget - probe_share(self.strategies[name], self.difficulty.probes)

    def spec_for(self, name: str, budget: int) -> StrategySpec:
        """The concrete spec of strategy ``name`` at a total router budget (see :meth:`spend`)."""
        spend = self.spend(name, budget)
        if spend < 1:
            raise ConfigurationError(
                f"strategies.{name}: a budget of {budget} leaves {spend} generations after"
                f" {self.difficulty.probes} probes"
            )
        return spec_at_budget(self.strategies[name], spend, source=f"strategies.{name}")

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return out


def load_table(path: str | Path) -> PolicyTable:
    """A validated table from JSON; problems name the field."""
    file = existing_file(path, "table")
    try:
        return PolicyTable.model_validate(json.loads(file.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"table: {file} is not JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"table: {file}: {problems}") from exc
