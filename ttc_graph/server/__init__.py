"""``ttc serve``: any strategy on any upstream model behind an OpenAI-compatible API (needs the ``serve`` extra).

Names are imported lazily, so ``ttc`` works without the extra installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "APIError",
    "EmbeddedUpstream",
    "Limits",
    "Preset",
    "ServeConfig",
    "Upstream",
    "create_app",
    "load_presets",
]

_HOME = {
    "APIError": "ttc_graph.server.errors",
    "EmbeddedUpstream": "ttc_graph.server.upstream",
    "Limits": "ttc_graph.server.config",
    "Preset": "ttc_graph.server.presets",
    "ServeConfig": "ttc_graph.server.config",
    "Upstream": "ttc_graph.server.upstream",
    "create_app": "ttc_graph.server.app",
    "load_presets": "ttc_graph.server.presets",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'ttc_graph.server' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
