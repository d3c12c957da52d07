"""Copy a llama.cpp slot's KV cache to other slots before their requests, so no sibling evaluates the prefix again.

A step search sends a beam's children to several slots, and only one of them (the beam's own) holds the beam's
path; on every other slot the server evaluates the path's new part again. llama.cpp's slot actions
(``POST /slots/{id}?action=save`` and ``?action=restore``, enabled by ``llama-server --slot-save-path DIR``) write a
slot's state to a file in ``DIR`` and read it into another slot, in about a millisecond each for a few hundred
tokens (measured on the benchmark model). :func:`copy_slot` saves the home slot once and restores it into each
target; the server then finds the prefix cached there (it compares the restored tokens with the prompt, so a copy
that does not match costs nothing but the copy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from ttc_graph.errors import EndpointError

__all__ = ["SlotCopyUnsupported", "copy_slot", "copy_targets"]


class SlotCopyUnsupported(EndpointError):
    """The server refused a slot action: it is not llama.cpp, or runs without ``--slot-save-path``."""


def copy_targets(hints: Sequence[int | None] | None, slots: int) -> tuple[int, list[int]] | None:
    """``(home, targets)`` of a call's slot hints: the first hint is the slot holding the prefix, the other
    distinct hints receive it; None when there is nothing to copy."""
    if not hints or hints[0] is None:
        return None
    home = int(hints[0]) % slots
    targets = sorted({int(h) % slots for h in hints[1:] if h is not None} - {home})
    return (home, targets) if targets else None


async def _action(http: httpx.AsyncClient, root: str, slot: int, action: str, filename: str) -> None:
    try:
        resp = await http.post(f"{root}/slots/{slot}", params={"action": action}, json={"filename": filename})
    except httpx.HTTPError as exc:
        raise EndpointError(f"slot copy: {action} of slot {slot} failed: {exc}") from exc
    if resp.status_code in (400, 404, 501):
        raise SlotCopyUnsupported(
            f"slot copy: the server refused {action} of slot {slot} ({resp.status_code}: {resp.text[:200]}); it needs"
            " llama-server --slot-save-path DIR"
        )
    if resp.status_code >= 300:
        raise EndpointError(f"slot copy: {action} of slot {slot} failed ({resp.status_code}: {resp.text[:200]})")


async def copy_slot(http: httpx.AsyncClient, root: str, home: int, targets: Sequence[int], filename: str) -> None:
    """Save slot ``home`` of the llama.cpp server at ``root`` to ``filename`` and restore it into every target
    (concurrently; a busy slot's action waits on the server until the slot is idle)."""
    await _action(http, root, home, "save", filename)
    await asyncio.gather(*(_action(http, root, t, "restore", filename) for t in targets))
