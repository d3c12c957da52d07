"""Bearer-key authentication: constant-time comparison, errors that never echo a key."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from ttc_graph.server.errors import APIError

__all__ = ["authorize"]


def authorize(header: str | None, keys: Sequence[str]) -> None:
    """Raise a 401 unless ``header`` (``Authorization``) is ``Bearer <key>`` for one of ``keys``; no keys: open."""
    if not keys:
        return
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="missing_api_key",
        )
    given = token.strip().encode()
    # Compare against every key, so the time taken does not tell which one (or whether any) matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    if not matched:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
