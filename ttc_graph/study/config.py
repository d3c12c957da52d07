"""The study's configuration: questions, budgets, strategy templates and the verifier, validated up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ttc_graph._files import existing_file
from ttc_graph.compute_optimal.table import spec_at_budget
from ttc_graph.defaults import DEFAULT_EVAL_TEMPERATURE
from ttc_graph.errors import ConfigurationError
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.specs.io import SpecError
from ttc_graph.specs.models import StrategySpec
from ttc_graph.strategies.revisions import split_budget
from ttc_graph.strategies.search import resolve_width

__all__ = ["PoolSource", "StudyConfig", "load_study"]

_TAKES_VERIFIER = ("best_of_n", "beam_search", "dvts", "particle_filtering", "mcts", "revisions")
_SEARCH = ("beam_search", "dvts", "particle_filtering", "mcts")
_GRID_KEYS = ("questions", "budgets")  # a template's own part of the grid, not spec fields


class PoolSource(BaseModel):
    """Stored samples (a pool file of ``../shared/data/pools``) and the settings they were drawn with.

    Best-of-N templates reuse them only when every setting equals the study's own: same model, system prompt,
    temperature and ``max_tokens``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    model: str
    temperature: float
    max_tokens: int
    system_prompt: str = DEFAULT_SYSTEM_PROMPT


class StudyConfig(BaseModel):
    """One study: every (question, template, budget) is one live run, best-of-N templates from one pool.

    ``templates`` are strategy specs without ``n`` (it comes from the budget, as in a policy table); a
    template may say ``chain_length: full`` for fully sequential revisions (one chain of ``budget`` attempts).
    ``verifier`` is a verifier spec given to every template that takes one and names none itself. ``families``
    adds compute-optimal fits that choose only among a family's templates.

    A trimmed grid: a template may say ``questions: N`` (its first N of the study's questions) and ``budgets:
    [...]`` (a subset of the study's) to run on less than the whole grid; the study's ``questions`` and
    ``budgets`` are then the largest and the union. A question counts as complete when every template that runs on
    it is stored at each of that template's budgets, and every comparison states on how many questions it rests.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    model: str = Field(min_length=1, description="The served model, as the pools name it.")
    dataset: str = "gsm8k"
    questions: int = Field(60, ge=1, description="The first N questions of the data set.")
    budgets: tuple[int, ...] = Field(min_length=1)
    verifier: dict[str, Any]
    templates: dict[str, dict[str, Any]] = Field(min_length=1)
    baseline: str = "bon_weighted"
    temperature: float = Field(DEFAULT_EVAL_TEMPERATURE, ge=0)
    max_tokens: int = Field(512, ge=1)
    seed: int = 0
    concurrency: int = Field(2, ge=1)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    pool: PoolSource | None = None
    pool_size: int | None = Field(
        None,
        ge=2,
        description="Samples per question's best-of-N pool that the report reads (None: twice the largest budget)."
        " Its first half scores best-of-N (weighted, majority, pass@N: the mean over every N-subset of them) in every"
        " comparison with a template; its second half bins the question's difficulty, so a bin and best-of-N's score"
        " are independent draws. A question whose pool holds fewer is left out of every comparison with best-of-N.",
    )
    nested_revisions: bool = Field(
        False,
        description="Derive a revisions template's smaller budgets from the chains of its largest (the paper's"
        " replay) wherever they nest: no more chains, each no longer. Saves their model time; their wall seconds"
        " are then not measured.",
    )
    router_probes: int = Field(
        4,
        ge=1,
        description="Probe samples of the routable table (table_routed.json): difficulty from the mean verifier score"
        " of a question's first k samples, charged to the budget as the router charges them.",
    )
    rescore: dict[str, Any] | None = Field(
        None,
        description="A second, outcome-only verifier (``kind: program``) that ``ttc study rescore`` runs offline on"
        " every pool question: its program answers are stored per question, and the report scores best-of-N"
        " weighted with the study's verifier times it beside the study's verifier alone.",
    )
    families: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Families of templates to fit compute-optimal within as well as across all templates, as the"
        " paper analyses search (its Figure 4) and revisions (Figure 8) apart; each family holds the baseline.",
    )

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 for b in value) or len(set(value)) != len(value):
            raise ValueError(f"must be distinct integers >= 1, got {list(value)}")
        return tuple(sorted(value))

    @field_validator("rescore")
    @classmethod
    def _rescore(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from ttc_graph.specs.models import ProgramVerifierSpec

            if value.get("kind") != "program":
                raise ValueError(f"must be a program verifier (kind: program), got kind {value.get('kind')!r}")
            ProgramVerifierSpec.model_validate(value)
        return value

    @model_validator(mode="after")
    def _grid(self) -> StudyConfig:
        for name, entry in self.templates.items():
            own = entry.get("budgets")
            if own is not None and (
                not isinstance(own, list | tuple)
                or not own
                or len(set(own)) != len(own)
                or not set(own) <= set(self.budgets)
            ):
                raise ValueError(
                    f"templates.{name}.budgets: must be distinct budgets of the study's {list(self.budgets)},"
                    f" got {own!r}"
                )
            count = entry.get("questions")
            if count is not None and (
                isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= self.questions
            ):
                raise ValueError(
                    f"templates.{name}.questions: must be an integer in 1..{self.questions} (the study's),"
                    f" got {count!r}"
                )
            for budget in self.budgets_of(name):
                self.spec_for(name, budget)  # raises naming the template and budget
        if self.pool_size is not None and self.pool_size % 2:
            raise ValueError(f"pool_size: must be even (half scores, half bins), got {self.pool_size}")
        if self.router_probes > max(self.budgets):
            raise ValueError(
                f"router_probes: {self.router_probes} probes exceed the largest budget ({max(self.budgets)})"
            )
        if self.baseline not in self.templates or self.templates[self.baseline].get("kind") != "best_of_n":
            raise ValueError(f"baseline: {self.baseline!r} must name a best_of_n template")
        for family, members in self.families.items():
            unknown = sorted(set(members) - set(self.templates))
            if unknown:
                raise ValueError(f"families.{family}: unknown templates {unknown}; known: {sorted(self.templates)}")
            if self.baseline not in members or len(set(members)) < 2:
                raise ValueError(
                    f"families.{family}: must hold the baseline {self.baseline!r} and at least one other template"
                )
        return self

    @property
    def pool_samples(self) -> int:
        """The pool the report reads per question: ``pool_size``, or twice the largest budget."""
        return self.pool_size if self.pool_size is not None else 2 * max(self.budgets)

    @property
    def scoring_samples(self) -> int:
        """How many of a pool's first samples score best-of-N (the rest, up to ``pool_samples``, bin)."""
        return self.pool_samples // 2

    def template(self, name: str) -> dict[str, Any]:
        """Template ``name`` with the study's verifier and sampling settings filled in (``n`` not yet)."""
        if name not in self.templates:
            raise ConfigurationError(f"templates: unknown template {name!r}; known: {sorted(self.templates)}")
        out = {k: v for k, v in self.templates[name].items() if k not in _GRID_KEYS}
        kind = out.get("kind")
        if kind not in _TAKES_VERIFIER:
            raise ConfigurationError(f"templates.{name}: unknown kind {kind!r}; use one of {list(_TAKES_VERIFIER)}")
        if "n" in out:
            raise ConfigurationError(f"templates.{name}: a template must not set n (it comes from the budget)")
        needs_verifier = not (kind == "best_of_n" and out.get("selection") == "majority")
        if needs_verifier and "verifier" not in out:
            out["verifier"] = self.verifier
        out.setdefault("temperature", self.temperature)
        out.setdefault("system_prompt", self.system_prompt)
        if kind not in _SEARCH:
            out.setdefault("max_tokens", self.max_tokens)
        return out

    def spec_for(self, name: str, budget: int) -> StrategySpec:
        """The concrete spec template ``name`` runs at ``budget`` generations."""
        source = f"templates.{name} at budget {budget}"
        try:
            return spec_at_budget(self.template(name), budget, source=source)
        except SpecError:
            raise
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}: {exc}") from exc

    def reuses_pool(self) -> bool:
        """Whether the configured pool was drawn with exactly the study's sampling settings."""
        p = self.pool
        return p is not None and (p.model, p.temperature, p.max_tokens, p.system_prompt) == (
            self.model,
            self.temperature,
            self.max_tokens,
            self.system_prompt,
        )

    def budgets_of(self, name: str) -> tuple[int, ...]:
        """The budgets template ``name`` runs at: its own ``budgets``, else the study's."""
        own = self.templates[name].get("budgets")
        return tuple(sorted(own)) if own is not None else self.budgets

    def questions_of(self, name: str) -> int:
        """How many of the study's first questions template ``name`` runs on: its own ``questions``, else all."""
        own = self.templates[name].get("questions")
        return int(own) if own is not None else self.questions

    def trimmed(self) -> bool:
        """Whether some template runs on less than the whole grid (questions or budgets)."""
        return any(any(k in t for k in _GRID_KEYS) for t in self.templates.values())

    def grid_templates(self) -> list[str]:
        """The templates that run on every question of the study (the fits over every template choose among
        these; with no overrides, every template)."""
        return [n for n in self.templates if self.questions_of(n) == self.questions]

    def nested_in(self, name: str, budget: int) -> int | None:
        """The budget whose run ``name`` at ``budget`` is derived from (the template's largest), or None: it runs
        live."""
        largest = max(self.budgets_of(name))
        if not self.nested_revisions or budget == largest or self.templates[name].get("kind") != "revisions":
            return None
        small, large = (self.spec_for(name, b) for b in (budget, largest))
        chains, length = split_budget(small.n, small.chain_length)  # type: ignore[union-attr]
        most, longest = split_budget(large.n, large.chain_length)  # type: ignore[union-attr]
        return largest if chains <= most and length <= longest else None

    def same_as(self, name: str, budget: int) -> str | None:
        """An earlier template that runs the very same spec at ``budget`` on every question ``name`` covers (beam
        search M = 4 and M = √N at N = 16), whose run is then ``name``'s too: one run, not two of one thing."""
        if name not in self.live_templates():
            return None
        spec = _concrete(self.spec_for(name, budget))
        for other in self.live_templates():
            if other == name:
                return None
            if (
                budget in self.budgets_of(other)
                and self.questions_of(other) >= self.questions_of(name)
                and self.nested_in(other, budget) is None
                and _concrete(self.spec_for(other, budget)) == spec
            ):
                return other
        return None

    def source_of(self, name: str, budget: int) -> tuple[str, int] | None:
        """The (template, budget) run that ``name`` at ``budget`` is replayed from (:meth:`nested_in`,
        :meth:`same_as`), or None: it runs live."""
        nested = self.nested_in(name, budget)
        if nested is not None:
            return name, nested
        other = self.same_as(name, budget)
        return None if other is None else (other, budget)

    def covers(self, template: str, budget: int, index: int | None = None) -> bool:
        """Whether a ``(template, budget)`` row (of the question at 0-based ``index``, when given) is this
        config's: a database may also hold a follow-up config's templates or questions, run under the same name
        and settings."""
        return (
            template in self.templates
            and budget in self.budgets_of(template)
            and (index is None or index < self.questions_of(template))
        )

    def live_templates(self) -> list[str]:
        return [n for n, t in self.templates.items() if t.get("kind") != "best_of_n"]

    def pool_templates(self) -> list[str]:
        return [n for n, t in self.templates.items() if t.get("kind") == "best_of_n"]


def _concrete(spec: StrategySpec) -> dict[str, Any]:
    """``spec`` as data, with ``"sqrt"`` widths and chain lengths resolved at its ``n``."""
    data = spec.model_dump(mode="json")
    n = data.get("n")
    if isinstance(n, int) and data.get("beam_width") == "sqrt":
        data["beam_width"] = resolve_width(n, "sqrt")
    if isinstance(n, int) and data.get("chain_length") in ("sqrt", "full"):
        data["chain_length"] = split_budget(n, data["chain_length"])[1]
    return data


def load_study(path: str | Path) -> StudyConfig:
    """A validated study config from YAML; every problem names its field, before any model call."""
    file = existing_file(path, "study")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"study: {file} is not YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"study: {file} must hold a mapping")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"study: {file}: {problems}") from exc
