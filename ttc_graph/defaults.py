"""The library's defaults, each declared once: the factories, the spec models and the drivers read them from here.

Two sampling temperatures, on purpose: whole solutions (best-of-N, revisions, the router's probes, the chat model)
are sampled at :data:`DEFAULT_TEMPERATURE` (0.7), the value the factories have always had; the step searches sample
each step at :data:`DEFAULT_STEP_TEMPERATURE` (0.8), search-and-learn's setting for beam search and DVTS (the open
reproduction of Snell et al.), where a hotter step keeps a beam's children apart. The command line, sweeps and the
study sample every strategy at :data:`DEFAULT_EVAL_TEMPERATURE` (the step temperature), so strategies compared in
one table were sampled alike. Changing a value here changes results.
"""

from __future__ import annotations

from typing import Final

from ttc_graph.selection import FinalSelection, RevisionSelection, Selection

__all__ = [
    "DEFAULT_BEAM_WIDTH",
    "DEFAULT_EVAL_MAX_TOKENS",
    "DEFAULT_EVAL_TEMPERATURE",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_PATH_SELECTION",
    "DEFAULT_REVISION_SELECTION",
    "DEFAULT_SEARCH_SELECTION",
    "DEFAULT_SELECTION",
    "DEFAULT_STEP_DELIMITER",
    "DEFAULT_STEP_MAX_TOKENS",
    "DEFAULT_STEP_TEMPERATURE",
    "DEFAULT_TEMPERATURE",
]

DEFAULT_TEMPERATURE: Final = 0.7
"""Whole-solution sampling: best-of-N, revisions, the compute-optimal router's probes, ``TestTimeChatModel``."""

DEFAULT_STEP_TEMPERATURE: Final = 0.8
"""Each step of a step search (beam search, DVTS, particle filtering, MCTS)."""

DEFAULT_EVAL_TEMPERATURE: Final = DEFAULT_STEP_TEMPERATURE
"""``ttc solve`` / ``ttc eval``, sweeps and the study: one temperature for every strategy of a comparison."""

DEFAULT_MAX_TOKENS: Final = 512
"""Completion tokens per sample when neither the run nor the endpoint says (llama.cpp's own default is unbounded)."""

DEFAULT_EVAL_MAX_TOKENS: Final = 400
"""``ttc solve`` / ``ttc eval`` and sweeps: the length of each sample."""

DEFAULT_MAX_STEPS: Final = 40
"""The most steps a step search gives one solution."""

DEFAULT_STEP_MAX_TOKENS: Final = 256
"""The token limit of one step request (a step cut off there is continued)."""

DEFAULT_STEP_DELIMITER: Final = "\n\n"
"""What ends a step."""

DEFAULT_BEAM_WIDTH: Final = 4
"""Beam search and DVTS: children per kept beam (``n / 4`` beams kept)."""

DEFAULT_SELECTION: Selection = "weighted"
"""Best-of-N: the paper's best-of-N weighted."""

DEFAULT_SEARCH_SELECTION: FinalSelection = "weighted"
"""Beam search and DVTS: best-of-N weighted over the finished beams."""

DEFAULT_PATH_SELECTION: FinalSelection = "naive"
"""Particle filtering and MCTS: the top-scored finished path (their weights and values already rank paths)."""

DEFAULT_REVISION_SELECTION: RevisionSelection = "hierarchical"
"""Revisions: the paper's hierarchical selection (each chain's pick, then best-of-N weighted across chains)."""
