"""What a server's answer says about waiting: read from its headers once, handed up as data.

    retry-after-ms, retry-after (seconds or an HTTP date)   -> Hints.retry_after (seconds)
    x-should-retry: true/false                              -> Hints.should_retry
    x-ratelimit-{limit,remaining,reset}-{requests,tokens}   -> Hints.requests / Hints.tokens
    anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}   (also input-tokens, then
        output-tokens, when no tokens family is sent)      -> Hints.requests / Hints.tokens
    x-ratelimit-{limit,remaining,reset} (Together, OpenRouter: unsuffixed) -> Hints.requests
    x-ratelimit-{limit,remaining}-{req,tokens}-minute (Mistral, no reset) -> Hints.requests / Hints.tokens

A reset may be a duration ("6m0s", "1.5"), an RFC 3339 time (Anthropic) or a Unix time in
seconds or milliseconds (OpenRouter): a time is read as the seconds until it, never as a
duration of decades.

client.py calls ``parse`` on every answer; the retry policy and the throttle read the result.
Nothing here knows aiohttp: ``headers`` is any mapping with case-insensitive ``get``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

#: An answer's headers: any mapping with case-insensitive ``get`` (aiohttp's), or a plain dict.
Headers = Mapping[str, str]

_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Budget:
    """One ``x-ratelimit-*-{requests,tokens}`` triple; any part may be missing (Azure sends
    only ``remaining``). ``reset`` is seconds until the budget is whole again."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None


@dataclass(frozen=True, slots=True)
class Hints:
    """Everything an answer said about waiting; all None when it said nothing."""

    retry_after: float | None = None
    should_retry: bool | None = None
    requests: Budget | None = None
    tokens: Budget | None = None

    @property
    def budgets(self) -> bool:
        """The answer announced a rate limit."""
        return self.requests is not None or self.tokens is not None


NONE = Hints()


def parse(headers: Headers | None, now: float | None = None) -> Hints:
    """The hints in ``headers`` (NONE, shared, when there are none: the common case)."""
    if not headers:
        return NONE
    retry_after = parse_retry_after(headers, now)
    should = headers.get("x-should-retry")
    requests, tokens = _first(headers, REQUEST_FAMILIES, now), _first(headers, TOKEN_FAMILIES, now)
    if retry_after is None and should is None and requests is None and tokens is None:
        return NONE
    return Hints(retry_after, {"true": True, "false": False}.get(should or ""), requests, tokens)


def _family(remaining: str, limit: str, reset: str) -> tuple[str, str, str]:
    return remaining, limit, reset


def _anthropic(kind: str) -> tuple[str, str, str]:
    return _family(*(f"anthropic-ratelimit-{kind}-{part}" for part in ("remaining", "limit", "reset")))


#: (remaining, limit, reset) header names, in the order read: the first family present counts.
#: Anthropic's tokens budget is the most restrictive one in effect; else its input tokens (which
#: prompts spend), else its output tokens. The unsuffixed family (Together, OpenRouter) counts requests.
#: Mistral's per-minute family names no reset ("").
REQUEST_FAMILIES = (
    _family("x-ratelimit-remaining-requests", "x-ratelimit-limit-requests", "x-ratelimit-reset-requests"),
    _anthropic("requests"),
    _family("x-ratelimit-remaining", "x-ratelimit-limit", "x-ratelimit-reset"),
    _family("x-ratelimit-remaining-req-minute", "x-ratelimit-limit-req-minute", ""),
)
TOKEN_FAMILIES = (
    _family("x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens", "x-ratelimit-reset-tokens"),
    _anthropic("tokens"), _anthropic("input-tokens"), _anthropic("output-tokens"),
    _family("x-ratelimit-remaining-tokens-minute", "x-ratelimit-limit-tokens-minute", ""),
)


def _first(headers: Headers, families: tuple[tuple[str, str, str], ...], now: float | None) -> Budget | None:
    """The budget of the first family in ``headers`` with a readable limit or remaining."""
    for remaining_name, limit_name, reset_name in families:
        remaining, limit = headers.get(remaining_name), headers.get(limit_name)  # absent on most answers
        if remaining is None and limit is None:
            continue
        budget = Budget(_count(limit), _count(remaining), parse_reset(headers.get(reset_name), now))
        if budget.limit is not None or budget.remaining is not None:
            return budget
    return None


#: A reset at or above this many seconds is a Unix time (2001 on), not a duration; in ms above 1e12.
EPOCH_S, EPOCH_MS = 1e9, 1e12


def parse_reset(text: str | None, now: float | None = None) -> float | None:
    """Seconds until a budget is whole again: a duration, a Unix time (s or ms) or an RFC 3339
    time; None when unreadable. A time in the past is 0."""
    if text is None:
        return None
    seconds = parse_duration(text)
    if seconds is not None and seconds < EPOCH_S:
        return seconds
    now = time.time() if now is None else now
    if seconds is not None:
        return max(0.0, (seconds / 1000 if seconds >= EPOCH_MS else seconds) - now)
    try:
        from datetime import datetime
        when = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # a time without a zone cannot be placed
    return max(0.0, when.timestamp() - now)


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if 0 <= value < math.inf else None


def parse_duration(text: str | None) -> float | None:
    """Seconds in a Go duration ("1s", "6m0s", "20ms", "1m26.4s"), or a bare number of seconds.

    None when unreadable. ("20ms" is 0.02 s, not 20 minutes.)
    """
    if text is None:
        return None
    text = str(text).strip()
    seconds = _seconds(text)
    if seconds is not None or not text:
        return seconds
    total, pos = 0.0, 0
    for match in _GO_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNIT[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None


def parse_retry_after(headers: Headers, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date).

    None when absent, negative or unreadable; a date in the past is 0.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        seconds = _seconds(ms)
        if seconds is not None:
            return seconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    from email.utils import parsedate_to_datetime  # rare, and costly to import with chatmagic

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]  # None: TypeError, caught
    except (TypeError, ValueError):
        return None
    return value if 0 <= value < math.inf else None


def say(seconds: float) -> str:
    """A wait for people: "45 s", "10 min", "1h", "2.5h"."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g}h"
    if seconds >= 120:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"
