"""Every strategy as an uncompiled graph for ``langgraph dev`` / LangGraph Studio (see ``langgraph.json``).

The policy comes from ``TTC_BASE_URL`` / ``TTC_MODEL`` / ``TTC_API_KEY``, or the embedded local model (started on
the first request) when they are unset. Per-run knobs (budget, temperature, max_tokens, seed) are the graphs'
context schema, so Studio shows them as the run's configuration.
"""

from __future__ import annotations

from langgraph.graph import StateGraph

from ttc_graph.specs import build_graph, parse_spec

__all__ = ["beam_search", "best_of_n", "dvts", "majority_vote", "mcts", "particle_filtering", "revisions"]

_JUDGE = {"kind": "llm_judge", "mode": "process"}


def _graph(spec: dict[str, object]) -> StateGraph:
    return build_graph(parse_spec(spec, "studio"))


best_of_n = _graph({"kind": "best_of_n", "n": 4, "selection": "weighted", "verifier": {"kind": "confidence"}})
majority_vote = _graph({"kind": "best_of_n", "n": 8, "selection": "majority", "adaptive": True, "max_tokens": 256})
beam_search = _graph({"kind": "beam_search", "n": 4, "beam_width": 2, "max_steps": 8, "verifier": _JUDGE})
dvts = _graph({"kind": "dvts", "n": 4, "beam_width": 2, "max_steps": 8, "verifier": _JUDGE})
particle_filtering = _graph({"kind": "particle_filtering", "n": 4, "max_steps": 8, "verifier": _JUDGE})
mcts = _graph({"kind": "mcts", "n": 4, "expansions": 2, "max_steps": 8, "verifier": _JUDGE})
revisions = _graph({"kind": "revisions", "n": 4, "chain_length": 2, "selection": "majority", "max_tokens": 256})
