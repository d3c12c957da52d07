"""The paper's section-7 exchange between pretraining and inference FLOPs."""

from __future__ import annotations

from dataclasses import dataclass

from ttc_graph.errors import ConfigurationError

__all__ = ["FlopsExchange", "flops_exchange"]


@dataclass(frozen=True, slots=True)
class FlopsExchange:
    pretrain_flops: float
    """X = 6 · P · D_pretrain of the small model."""
    inference_flops: float
    """Y = 2 · P · D_inference of the small model."""
    ratio: float
    """R = D_inference / D_pretrain."""
    larger_total_flops: float
    """Pretraining plus inference of the model ``scale`` times larger on the same tokens."""
    test_time_multiplier: float
    """How many times its base inference compute the small model may spend to match the larger model's total."""


def flops_exchange(params: float, pretrain_tokens: float, inference_tokens: float, scale: float) -> FlopsExchange:
    """Compare a model of ``params`` with test-time compute against one ``scale`` times larger.

    Matching total FLOPs: 6·P·Dp + 2·P·Di·k = 6·sP·Dp + 2·sP·Di gives k = s + 3(s − 1)/R. Small R (little
    inference) leaves much room for test-time compute; large R leaves little, as the paper discusses.
    """
    if min(params, pretrain_tokens, inference_tokens) <= 0 or scale < 1:
        raise ConfigurationError("flops: params and token counts must be > 0 and scale >= 1")
    ratio = inference_tokens / pretrain_tokens
    larger = 6 * scale * params * pretrain_tokens + 2 * scale * params * inference_tokens
    return FlopsExchange(
        pretrain_flops=6 * params * pretrain_tokens,
        inference_flops=2 * params * inference_tokens,
        ratio=ratio,
        larger_total_flops=larger,
        test_time_multiplier=scale + 3 * (scale - 1) / ratio,
    )
