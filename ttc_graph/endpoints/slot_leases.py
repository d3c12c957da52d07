"""Server slots shared by concurrent searches: each search numbers its slots its own way, the endpoint leases them.

A step search hints every sample's llama.cpp slot (``id_slot``), so that a beam continues where its prefix's KV cache
is. Two searches on one server (a study's concurrent units, two users of ``ttc serve``) both number their slots from
0, and llama.cpp defers a request whose slot is busy until that slot is free: the searches would queue on the same
few slots while the others stay idle. :class:`SlotLeases` gives each (search, slot) pair a server slot of its own:

- a pair keeps the server slot it was given (its KV cache holds that search's path) for as long as it holds the lease;
- a new pair takes an idle slot: its own number when that is free and unleased (a search alone keeps its numbers,
  as the server sees them), else an unleased one, else the idle slot used longest ago, whose old pair loses it;
- when every slot is busy, the sample goes without a hint (the server's choice), so it never waits on one slot.

Leases are never released by the searches: a finished search's slots are simply the least recently used, and go
first. A hint without a search (``owner`` None) names the server slot itself, as before.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

__all__ = ["SlotLeases"]

_Key = tuple[str, int]


class SlotLeases:
    """The server slots of one llama.cpp server (``slots`` of them), leased to (search, slot) pairs; thread safe."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._lock = threading.Lock()
        self._slot_of: dict[_Key, int] = {}
        self._key_of: dict[int, _Key] = {}
        self._busy = [0] * slots  # requests in flight per server slot
        self._used = [0] * slots  # when each server slot was last sent or freed (a counter)
        self._clock = itertools.count(1)

    def acquire(self, owner: str | None, hints: Sequence[int | None]) -> tuple[int | None, ...]:
        """The server slot of each hint of search ``owner`` (None: no idle slot), counted busy until :meth:`release`."""
        with self._lock:
            out: list[int | None] = []
            for hint in hints:
                slot = None
                if hint is not None:
                    slot = int(hint) % self.slots if owner is None else self._place((owner, int(hint)))
                if slot is not None:
                    self._busy[slot] += 1
                    self._used[slot] = next(self._clock)
                out.append(slot)
            return tuple(out)

    def release(self, slots: Sequence[int | None]) -> None:
        """The requests on ``slots`` (what :meth:`acquire` returned) are done."""
        with self._lock:
            for slot in slots:
                if slot is not None:
                    self._busy[slot] = max(0, self._busy[slot] - 1)
                    self._used[slot] = next(self._clock)

    def hint_of(self, owner: str | None, slot: int | None) -> int | None:
        """Search ``owner``'s own number for server slot ``slot``, when it holds the lease (None otherwise)."""
        if owner is None or slot is None:
            return slot
        with self._lock:
            key = self._key_of.get(slot)
        return key[1] if key is not None and key[0] == owner else None

    def leased(self) -> dict[_Key, int]:
        """Every (search, slot) pair's server slot."""
        with self._lock:
            return dict(self._slot_of)

    def _place(self, key: _Key) -> int | None:
        slot = self._slot_of.get(key)
        if slot is not None:
            return slot
        idle = [s for s in range(self.slots) if self._busy[s] == 0]
        if not idle:
            return None
        unleased = [s for s in idle if s not in self._key_of]
        own = key[1] % self.slots
        if own in unleased:
            slot = own
        elif unleased:
            slot = unleased[0]
        else:
            slot = min(idle, key=lambda s: self._used[s])
            del self._slot_of[self._key_of[slot]]
        self._slot_of[key], self._key_of[slot] = slot, key
        return slot
