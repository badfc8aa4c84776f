"""Prices and token estimates: what a request costs, before (an estimate) and after (the
server's token counts). Pure functions."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from chatmagic.errors import ConfigError

#: Price of a batch request relative to an interactive one, unless ``prices`` has a
#: ``"<model>@batch"`` entry.
BATCH_DISCOUNT = 0.5


def estimate_tokens(text: str) -> int:
    """A rough token count: ``ceil(len(text) / 4)``, at least 1. An estimate, not a tokenizer:
    real counts differ by model and language (often more for code and non-English text)."""
    return max(1, math.ceil(len(text) / 4))


_DATED = re.compile(r"-\d{4}(-\d{2}-\d{2})?$")  # gpt-4o-mini-2024-07-18, gpt-3.5-turbo-0125


def _price(model: str, prices: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """(input, output) dollars per 1M tokens for ``model``, or None if not priced.

    A dated name the server reports back (``gpt-4o-mini-2024-07-18``) uses the price of its
    undated name (``gpt-4o-mini``) when it has none of its own; nothing else is matched loosely.
    """
    if not prices or not model:
        return None
    entry = prices.get(model)
    if entry is None:
        m = _DATED.search(model)
        if m:
            entry = prices.get(model[:m.start()])
    if entry is None:
        return None
    try:
        p_in, p_out = (float(x) for x in entry)
    except (TypeError, ValueError):
        raise ConfigError(f"prices[{model!r}] must be [input_per_1M, output_per_1M] in dollars, "
                          f"got {entry!r}") from None
    if p_in < 0 or p_out < 0 or math.isnan(p_in) or math.isnan(p_out):
        raise ConfigError(f"prices[{model!r}] must not be negative, got {entry!r}")
    return p_in, p_out


def cost(prompt_tokens: int | None, completion_tokens: int | None, model: str,
         prices: Mapping[str, Any] | None) -> float | None:
    """Dollars for one request, from ``prices = {"model": [input_per_1M, output_per_1M]}``.

    None when ``prices`` has no entry for ``model``; a token count of None counts as 0.
    """
    p = _price(model, prices)
    if p is None:
        return None
    return ((prompt_tokens or 0) * p[0] + (completion_tokens or 0) * p[1]) / 1_000_000


def batch_cost(prompt_tokens: int | None, completion_tokens: int | None, model: str,
               prices: Mapping[str, Any] | None) -> float | None:
    """Dollars for one batch request: the ``"<model>@batch"`` price, else half the model's."""
    own = cost(prompt_tokens, completion_tokens, f"{model}@batch", prices)
    if own is not None:
        return own
    full = cost(prompt_tokens, completion_tokens, model, prices)
    return None if full is None else full * BATCH_DISCOUNT
