"""What model requests cost: the usage record every endpoint and verifier returns and the ledger adds up."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RequestUsage"]


@dataclass(slots=True)
class RequestUsage:
    """What some requests cost, counted once per request (never once per choice).

    ``unconfirmed_tokens`` are the ``max_tokens`` reserved by attempts whose answer was lost after they were sent
    (a client timeout, a dropped connection, an unreadable body): the server may have generated up to that many
    tokens without the client learning how many, so a token budget counts them. ``cost`` is what the requests cost
    in dollars where the endpoint knows its model's price.
    """

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed_requests: int = 0
    unconfirmed_tokens: int = 0
    cost: float = 0.0
    """Dollars, at the endpoint's price of its model (:mod:`ttc_graph.prices`); 0 where it has none."""

    def add(self, other: RequestUsage) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.failed_requests += other.failed_requests
        self.unconfirmed_tokens += other.unconfirmed_tokens
        self.cost += other.cost
