"""The scripted step-level policy's path helpers, shared by the particle filtering and MCTS tests.

A scripted step is ``"[p0.p1...] step d"``: its label is the path of choices that led to it.
"""

from __future__ import annotations

import hashlib
import re

from ttc_graph.testing import FakeCall

__all__ = ["DELIM", "TAG", "Path", "hashed", "parent_of", "path_of", "steps_of"]

DELIM = "\n\n"
TAG = re.compile(r"^\[([^\]]+)\]")

Path = tuple[str, ...]


def path_of(step: str) -> Path:
    m = TAG.match(step)
    assert m, f"not a scripted step: {step!r}"
    return tuple(m.group(1).split("."))


def steps_of(prefix: str | None) -> list[str]:
    if not prefix:
        return []
    assert prefix.endswith(DELIM), prefix
    return prefix.split(DELIM)[:-1]


def parent_of(call: FakeCall) -> Path:
    steps = steps_of(call.prefix)
    return path_of(steps[-1]) if steps else ()


def hashed(path: Path) -> float:
    digest = hashlib.sha256(".".join(path).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32
