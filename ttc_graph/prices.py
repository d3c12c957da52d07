"""What tokens cost in dollars: a :class:`Price` per model and a :class:`PriceTable` that finds a model's price.

:func:`default_prices` ships the standard-tier prices of common hosted models (OpenAI's GPT-4o, GPT-4.1, GPT-5 and
o-series; Anthropic's Claude through an OpenAI-compatible API) from ``prices.json``, which states its source pages
and date. They were written from knowledge as of that date, without network access to re-check the pages: pass
your own table (``OpenAIEndpoint(prices=...)``, ``ScriptedEndpoint(price=...)``, ``Budget(price=...)``) where they
differ. A model the table does not know costs nothing (a local llama.cpp model).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field

from ttc_graph.errors import ConfigurationError

__all__ = ["PER_TOKENS", "Price", "PriceTable", "default_prices", "price_of"]

PER_TOKENS = 1_000_000
"""Prices are in dollars per this many tokens."""


class Price(BaseModel):
    """Dollars per million tokens: ``input`` (prompt), ``output`` (completion) and ``cached_input`` (prompt tokens
    the provider served from its cache; the input price when not given)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)
    cached_input: float | None = Field(None, ge=0, allow_inf_nan=False)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """Dollars for one request's tokens (``cached_tokens`` of the ``prompt_tokens`` at the cached price)."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        dollars = (prompt_tokens - cached) * self.input + cached * cached_price + completion_tokens * self.output
        return dollars / PER_TOKENS


class PriceTable(BaseModel):
    """Prices by model name, with where they come from and when.

    :meth:`lookup` finds a model by its exact name, else without a provider prefix (``openai/gpt-4o``), else by the
    longest known name it starts with (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prices: dict[str, Price]
    source: str = ""
    date: str = ""
    note: str = ""

    def lookup(self, model: str) -> Price | None:
        """The price of ``model``, or None when the table does not know it."""
        name = model.strip().lower()
        for candidate in (name, name.rsplit("/", 1)[-1]):
            if candidate in self.prices:
                return self.prices[candidate]
            known = [k for k in self.prices if candidate.startswith(k)]
            if known:
                return self.prices[max(known, key=len)]
        return None


@cache
def default_prices() -> PriceTable:
    """The shipped table (``ttc_graph/prices.json``: its ``source``, ``date`` and ``note`` say where from)."""
    text = resources.files("ttc_graph").joinpath("prices.json").read_text(encoding="utf-8")
    return PriceTable.model_validate(json.loads(text))


def price_of(model: str, prices: PriceTable | Price | None = None) -> Price | None:
    """The price of ``model``: ``prices`` itself when it is a :class:`Price`, else looked up in ``prices`` (default:
    the shipped table)."""
    if isinstance(prices, Price):
        return prices
    if prices is not None and not isinstance(prices, PriceTable):
        raise ConfigurationError(f"prices: expected a Price or PriceTable, got {type(prices).__name__}")
    return (prices or default_prices()).lookup(model)
