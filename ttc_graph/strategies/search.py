"""Search against a verifier, one step at a time: beam search, lookahead search and DVTS."""

from __future__ import annotations

import math
from typing import Any, Literal

from ttc_graph.budget import Budget, check_n
from ttc_graph.defaults import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_MAX_STEPS,
    DEFAULT_SEARCH_SELECTION,
    DEFAULT_STEP_DELIMITER,
    DEFAULT_STEP_MAX_TOKENS,
    DEFAULT_STEP_TEMPERATURE,
)
from ttc_graph.endpoints.base import Endpoint
from ttc_graph.errors import ConfigurationError
from ttc_graph.graph import StrategyGraph
from ttc_graph.nodes.step_beam import SearchPlan
from ttc_graph.prompts import DEFAULT_SYSTEM_PROMPT
from ttc_graph.state import History, TTCContext, TTCInput, TTCOutput, TTCState
from ttc_graph.strategies.stepwise import (
    FinalSelection,
    StepSearchOptions,
    build_step_graph,
)
from ttc_graph.verifiers.aggregation import DEFAULT_AGGREGATION, Aggregation
from ttc_graph.verifiers.function import VerifierLike

__all__ = ["create_beam_search", "create_dvts", "resolve_width"]


def resolve_width(n: int, beam_width: int | Literal["sqrt"]) -> int:
    """M from ``beam_width``: an integer dividing ``n``, or ``"sqrt"`` for the divisor of ``n`` nearest sqrt(n)
    (so that ``n / M`` kept beams times ``M`` children is exactly ``n`` every round)."""
    check_n(n)
    if beam_width == "sqrt":
        divisors = [x for d in range(1, math.isqrt(n) + 1) if n % d == 0 for x in (d, n // d)]
        return min(divisors, key=lambda d: (abs(d - math.sqrt(n)), d))
    if not isinstance(beam_width, int) or beam_width < 1:
        raise ConfigurationError(f"beam_width: must be an integer >= 1 or 'sqrt', got {beam_width!r}")
    if n % beam_width:
        raise ConfigurationError(f"beam_width: {beam_width} does not divide n={n}; pick a divisor or 'sqrt'")
    return beam_width


def create_beam_search(
    policy: Endpoint,
    verifier: VerifierLike,
    *,
    n: int,
    beam_width: int | Literal["sqrt"] = DEFAULT_BEAM_WIDTH,
    max_steps: int = DEFAULT_MAX_STEPS,
    lookahead: int = 0,
    selection: FinalSelection = DEFAULT_SEARCH_SELECTION,
    aggregation: Aggregation = DEFAULT_AGGREGATION,
    budget: Budget | None = None,
    temperature: float = DEFAULT_STEP_TEMPERATURE,
    step_max_tokens: int = DEFAULT_STEP_MAX_TOKENS,
    seed: int | None = None,
    step_delimiter: str = DEFAULT_STEP_DELIMITER,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    history: History = "all",
    name: str | None = None,
    state_schema: type[Any] | None = None,
    context_schema: type[Any] | None = None,
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    """Beam search against a (process) verifier, the paper's way.

    Sample ``n`` first steps; keep the top ``n / beam_width`` by verifier score; expand each kept beam
    ``beam_width`` times; set finished beams aside; repeat until ``n`` beams finished, none is left, or
    ``max_steps`` rounds. The answer is best-of-N weighted over the top ``n`` finished beams (``selection="naive"``:
    the top-scored one). ``lookahead=k`` scores each candidate step after a temperature-0 rollout of up to ``k``
    more steps; the ledger charges ``n * (k + 1)`` generations. The verifier must score partial solutions (see
    :mod:`ttc_graph.strategies.stepwise`). ``history``, ``name``, ``state_schema`` and ``context_schema``: as in
    :func:`~ttc_graph.strategies.create_best_of_n`; every step request continues the answer after the conversation.
    """
    width = resolve_width(n, beam_width)
    options = StepSearchOptions.of(locals())
    plan = SearchPlan(n, width, 1, max(1, n // width), lookahead, max_steps)
    return build_step_graph("beam search", policy, verifier, plan, options, "beam_search")


def create_dvts(
    policy: Endpoint,
    verifier: VerifierLike,
    *,
    n: int,
    beam_width: int | Literal["sqrt"] = DEFAULT_BEAM_WIDTH,
    max_steps: int = DEFAULT_MAX_STEPS,
    lookahead: int = 0,
    selection: FinalSelection = DEFAULT_SEARCH_SELECTION,
    aggregation: Aggregation = DEFAULT_AGGREGATION,
    budget: Budget | None = None,
    temperature: float = DEFAULT_STEP_TEMPERATURE,
    step_max_tokens: int = DEFAULT_STEP_MAX_TOKENS,
    seed: int | None = None,
    step_delimiter: str = DEFAULT_STEP_DELIMITER,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    history: History = "all",
    name: str | None = None,
    state_schema: type[Any] | None = None,
    context_schema: type[Any] | None = None,
    asynchronous: bool = False,
) -> StrategyGraph[TTCState, TTCContext, TTCInput, TTCOutput]:
    """Diverse verifier tree search: ``n / beam_width`` independent subtrees, each expanding its current beam
    ``beam_width`` times and keeping its best child, so one strong early step cannot take over every beam. The
    other arguments are :func:`create_beam_search`'s; the answer is over every subtree's last children.

    ``asynchronous``: run the subtrees without rounds (one ``subtrees`` node, each subtree's next step started as
    soon as its own step is scored; :mod:`~ttc_graph.nodes.step_subtrees`). Off by default: round-wise, each round
    is a checkpointed super-step, while the node logs its steps through a ``@task`` whose writes reach the
    checkpointer in the background, so a process killed mid-search may redo the steps of its last moments; and
    on llama.cpp it measured no faster (docs/results.md, section 13)."""
    width = resolve_width(n, beam_width)
    options = StepSearchOptions.of(locals())
    plan = SearchPlan(n, width, n // width, 1, lookahead, max_steps, diverse=True, asynchronous=asynchronous)
    return build_step_graph("DVTS", policy, verifier, plan, options, "dvts")
