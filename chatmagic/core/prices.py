"""Prices and token estimates: what a request costs, before (an estimate) and after (the
server's token counts).

Prices come from the user's ``prices`` option first (``{"model": [input, output]}``, dollars per
1M tokens, optionally ``[input, output, cache_read, cache_write]``), then from genai-prices'
bundled snapshot (pydantic's maintained price data; no network: a snapshot the user updated with
``genai_prices.UpdatePrices`` is used when there is one). A model neither knows is unpriced:
None, shown as "price unknown", never a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from chatmagic.errors import ConfigError


class Tokens(Protocol):
    """What is priced: the token counts of an answer or a record (``providers.answer.Answer``,
    ``results.Result``), with their meaning: prompt and completion counts include the rest."""

    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def completion_tokens(self) -> int | None: ...
    @property
    def cached_tokens(self) -> int | None: ...
    @property
    def cache_write_tokens(self) -> int | None: ...
    @property
    def reasoning_tokens(self) -> int | None: ...
    @property
    def model(self) -> str | None: ...


#: The fields of ``Counts``, in order.
COUNTED = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")


class Counts(NamedTuple):
    """Token counts as priced (a ``Tokens`` without its model)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None


def estimate_tokens(text: str) -> int:
    """A rough token count: ``ceil(len(text) / 4)``, at least 1. An estimate, not a tokenizer:
    real counts differ by model and language (often more for code and non-English text)."""
    return max(1, math.ceil(len(text) / 4))


_DATED = re.compile(r"-\d{4}(-\d{2}-\d{2})?$")  # gpt-4o-mini-2024-07-18, gpt-3.5-turbo-0125
_MILLION = Decimal(1_000_000)
#: Price of a batch request relative to an interactive one, for a model whose price data has no
#: batch price of its own (OpenAI, Anthropic and Groq bill their Batch APIs at half price).
BATCH_DISCOUNT = 0.5
#: chatmagic's provider profiles -> genai-prices provider ids; None: self-hosted, not priced.
PROVIDER_IDS: dict[str, str | None] = {
    "openai": "openai", "azure": "azure", "anthropic": "anthropic", "gemini": "google", "groq": "groq",
    "openrouter": "openrouter", "mistral": "mistral", "together": "together", "deepseek": "deepseek",
    "ollama": None, "vllm": None}


def check_prices(value: Any) -> dict[str, Any] | None:
    """The ``prices`` option: {model: [input, output(, cache_read(, cache_write))]} in dollars per
    1M tokens, or one clear ConfigError."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError('prices must be a dict such as {"gpt-4o-mini": [0.15, 0.60]} (dollars per 1M tokens)')
    for model, entry in value.items():
        _user_rate(str(model), entry)
    return dict(value)


def _user_rate(model: str, entry: Any) -> _Linear:
    try:
        numbers = [float(x) for x in entry]
    except (TypeError, ValueError):
        numbers = []
    if not 2 <= len(numbers) <= 4 or any(not math.isfinite(x) or x < 0 for x in numbers):
        raise ConfigError(f"prices[{model!r}] must be [input_per_1M, output_per_1M] (optionally then "
                          f"cache_read, cache_write) in non-negative dollars, got {entry!r}")
    p_in, p_out = numbers[0], numbers[1]
    read = numbers[2] if len(numbers) > 2 else p_in  # not said: cached input at the full price
    write = numbers[3] if len(numbers) > 3 else p_in
    per = [Decimal(repr(x)) / _MILLION for x in (p_in, p_out, read - p_in, write - p_in)]
    return _Linear(Decimal(0), per[0], per[1], per[2], per[3], Decimal(0))


@dataclass(frozen=True, slots=True)
class _Linear:
    """A price with no tiers: a fixed part plus dollars per token of each kind. ``read`` and
    ``write`` are what a cached or cache-written input token costs more (less) than a plain one."""

    fixed: Decimal
    input: Decimal
    output: Decimal
    read: Decimal
    write: Decimal
    reasoning: Decimal

    def cost(self, u: Counts) -> Decimal:
        return (self.fixed + self.input * (u.prompt_tokens or 0) + self.output * (u.completion_tokens or 0)
                + self.read * (u.cached_tokens or 0) + self.write * (u.cache_write_tokens or 0)
                + self.reasoning * (u.reasoning_tokens or 0))

    def scaled(self, factor: Decimal) -> _Linear:
        return _Linear(*(x * factor for x in (self.fixed, self.input, self.output, self.read, self.write,
                                              self.reasoning)))


class _Genai:
    """One model's price in genai-prices, computed by genai-prices itself; a price without tiers
    is reduced to its linear form (about 50x faster, exactly equal: checked when it is built)."""

    def __init__(self, model: Any, provider: Any, when: datetime, batch: bool):
        self.model, self.provider, self.when = model, provider, when
        self.context = {"processing": "batch"} if batch else None
        # no batch price in the data: the standard price at the batch discount
        own = batch and any(v.when == {"processing": "batch"} for v in (model.price_variants or ()))
        self.factor = Decimal(1) if own or not batch else Decimal(repr(BATCH_DISCOUNT))
        self.linear = self._linear()

    def exact(self, u: Counts) -> Decimal:
        from genai_prices import Usage as GenaiUsage
        values = {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
                  "cache_read_tokens": u.cached_tokens, "cache_write_tokens": u.cache_write_tokens,
                  "output_reasoning_tokens": u.reasoning_tokens}
        calc = self.model.calc_price(GenaiUsage(**values), self.provider, genai_request_timestamp=self.when,
                                     price_context=self.context)
        return Decimal(calc.total_price) * self.factor

    def _linear(self) -> _Linear | None:
        from genai_prices.types import TieredPrices
        prices = self.model.get_prices(self.when, self.context)
        if any(isinstance(v, TieredPrices) for v in vars(prices).values()):
            return None
        m = 1_000_000
        try:
            zero, i, o = self.exact(Counts()), self.exact(Counts(m)), self.exact(Counts(None, m))
            per = [(i - zero), (o - zero), self.exact(Counts(m, cached_tokens=m)) - i,
                   self.exact(Counts(m, cache_write_tokens=m)) - i, self.exact(Counts(None, m, reasoning_tokens=m)) - o]
        except (ValueError, ArithmeticError):
            return None
        linear = _Linear(zero, *(x / _MILLION for x in per))
        probe = Counts(1_234_567, 98_765, 345_678, 23_456, 4_321)
        return linear if linear.cost(probe) == self.exact(probe) else None

    def cost(self, u: Counts) -> Decimal:
        return self.linear.cost(u) if self.linear is not None else self.exact(u)


class Prices:
    """The prices of one run: ``cost`` of an answer, ``bound`` (the most a request can cost).

    ``base_url`` says whose price list to read when a provider genai-prices knows serves it, else
    ``provider`` (a chatmagic profile other than the default; ollama and vllm are not priced);
    otherwise (a local server, a gateway) the model is matched by its name alone.
    ``batch``: Batch API prices. Lookups are remembered for the run, misses too.
    """

    def __init__(self, user: Mapping[str, Any] | None = None, *, base_url: str | None = None,
                 provider: str | None = None, batch: bool = False, when: datetime | None = None):
        self.user = dict(user or {})
        self.base_url, self.provider, self.batch = base_url, provider, batch
        self.when = when or datetime.now(timezone.utc)
        self._rates: dict[str, _Linear | _Genai | None] = {}

    @classmethod
    def of(cls, settings: Any) -> Prices:
        """The prices of a run with these settings, the model asked for looked up already (the
        price data is read once per process, ~0.15 s, before anything is sent)."""
        prices = cls(settings.prices, base_url=settings.base_url, provider=getattr(settings, "provider", None),
                     batch=settings.batch)
        prices.rate(settings.model)
        return prices

    def rate(self, model: str | None) -> _Linear | _Genai | None:
        """The price of ``model`` (a dated name falls back to its undated user entry), or None."""
        if not model:
            return None
        if model not in self._rates:
            self._rates[model] = self.user_rate(model) or self._genai(model)
        return self._rates[model]

    def known(self, model: str | None) -> bool:
        return self.rate(model) is not None

    def cost(self, tokens: Tokens, asked: str | None = None) -> float | None:
        """Dollars for one answer, by the model that answered (``asked`` only when the server
        named none); None when unpriced or when its counts do not add up."""
        rate = self.rate(tokens.model) if tokens.model else self.rate(asked)
        if rate is None:  # before the counts are read: an unpriced model (a local one) costs no work an answer
            return None
        u = Counts(*(_whole(getattr(tokens, name)) for name in COUNTED))
        if u.prompt_tokens is None or u.completion_tokens is None:
            return None
        if ((u.cached_tokens or 0) + (u.cache_write_tokens or 0) > u.prompt_tokens
                or (u.reasoning_tokens or 0) > u.completion_tokens):
            return None  # counts a server made up: no figure rather than a wrong one
        return float(rate.cost(u))

    def bound(self, prompt_tokens: int, completion_tokens: int, model: str) -> float | None:
        """The most a request of ``model`` with these counts costs: every input token at the plain
        input price (none cached), tiers applied."""
        rate = self.rate(model)
        return None if rate is None else float(rate.cost(Counts(prompt_tokens, completion_tokens)))

    def user_rate(self, model: str) -> _Linear | None:
        names = [model]
        dated = _DATED.search(model)
        if dated:
            names.append(model[:dated.start()])
        for name in names:
            if self.batch:
                if f"{name}@batch" in self.user:
                    return _user_rate(f"{name}@batch", self.user[f"{name}@batch"])
                if name in self.user:
                    return _user_rate(name, self.user[name]).scaled(Decimal(repr(BATCH_DISCOUNT)))
            elif name in self.user:
                return _user_rate(name, self.user[name])
        return None

    def _genai(self, model: str) -> _Genai | None:
        try:
            from genai_prices import data_snapshot
        except (ImportError, OSError):  # only the user's prices then (OSError: no file descriptor left)
            return None
        snapshot = data_snapshot.get_snapshot()
        provider_id, url = None, None
        if self.provider is not None and self.provider in PROVIDER_IDS and PROVIDER_IDS[self.provider] is None:
            return None  # self-hosted: nobody bills per token
        if self.base_url and _served_by_provider(snapshot, self.base_url):
            url = self.base_url  # the server itself says whose prices apply
        elif self.provider not in (None, "openai"):  # the default profile says nothing of a gateway's URL
            provider_id = PROVIDER_IDS.get(str(self.provider), self.provider)
        try:
            provider, info = snapshot.find_provider_model(model, None, provider_id, url)
            return _Genai(info, provider, self.when, self.batch)
        except LookupError:
            return None
        except OSError:  # genai-prices imports modules as it computes; no descriptor left for one
            return None


#: What "price unknown" adds when genai-prices (the extra) is not installed.
INSTALL_HINT = "pip install 'chatmagic[prices]' for built-in prices"


def unknown_note() -> str:
    """How the summary and the dry run say "price unknown": with how to get built-in prices when
    genai-prices is not installed (only the user's ``prices`` are known then)."""
    return "price unknown" if genai_installed() else f"price unknown ({INSTALL_HINT})"


def genai_installed() -> bool:
    """genai-prices (the extra ``chatmagic[prices]``) is importable: built-in prices are known."""
    import importlib.util
    try:
        return importlib.util.find_spec("genai_prices") is not None
    except (ImportError, ValueError):
        return False


def _served_by_provider(snapshot: Any, base_url: str) -> bool:
    """A base URL of a provider genai-prices knows (api.openai.com, api.anthropic.com, ...)."""
    return any(re.match(p.api_pattern, base_url) for p in snapshot.providers)


def money(dollars: float) -> str:
    """Dollars as the summary line and the dry run show them."""
    if dollars >= 1:
        return f"${dollars:,.2f}"
    if dollars == 0 or dollars >= 0.0001:
        return f"${dollars:.4f}"
    return "<$0.0001"


def cost(prompt_tokens: int | None, completion_tokens: int | None, model: str,
         prices: Mapping[str, Any] | None) -> float | None:
    """Dollars for one request from the user's ``prices`` alone (no genai-prices); None when
    ``prices`` has no entry for ``model``; a token count of None counts as 0."""
    rate = Prices(prices).user_rate(model) if prices and model else None
    if rate is None:
        return None
    return float(rate.cost(Counts(prompt_tokens or 0, completion_tokens or 0)))


def _whole(value: object) -> int | None:
    """A count as priced: records may be edited by hand, so anything but an int is unknown."""
    return value if type(value) is int and value >= 0 else None
