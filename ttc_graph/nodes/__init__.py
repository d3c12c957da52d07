"""The nodes strategies are built from: prepare, propose, verify, select, the budget controllers, and the step
searches' round engine and policies (``step_rounds``, ``step_verify``, ``step_beam``, ``step_particles``,
``step_mcts``)."""

from ttc_graph.nodes.budget_controller import (
    AdaptiveStop,
    SamplingDefaults,
    make_best_of_n_controller,
    route_plan,
)
from ttc_graph.nodes.expand import Beam, ExpandTask, make_expand_node
from ttc_graph.nodes.prepare import make_prepare_node, prepare_node, question_of
from ttc_graph.nodes.propose import ProposeTask, make_candidate, make_propose_node
from ttc_graph.nodes.select import make_select_node
from ttc_graph.nodes.step_beam import SearchPlan, make_search_controller, make_search_verify_node
from ttc_graph.nodes.verify import make_verify_node, verify_candidates

__all__ = [
    "AdaptiveStop",
    "Beam",
    "ExpandTask",
    "ProposeTask",
    "SamplingDefaults",
    "SearchPlan",
    "make_best_of_n_controller",
    "make_candidate",
    "make_expand_node",
    "make_prepare_node",
    "make_propose_node",
    "make_search_controller",
    "make_search_verify_node",
    "make_select_node",
    "make_verify_node",
    "prepare_node",
    "question_of",
    "route_plan",
    "verify_candidates",
]
