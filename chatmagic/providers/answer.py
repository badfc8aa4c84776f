"""Reading the parts of an answer that every dialect shares: token counts, the two ``usage``
shapes (OpenAI's and Anthropic's, which many providers and gateways also send), string fields
and the request id. The ``Answer`` they fill is in ``providers/dialect.py``.

Token counts follow one convention for every provider, so they can be priced alike:
``prompt_tokens`` counts every input token, cached and cache-written ones included (OpenAI's
already does; Anthropic's ``input_tokens`` does not, so its parser adds
``cache_read_input_tokens`` and ``cache_creation_input_tokens``); ``completion_tokens`` counts
every output token, reasoning included (OpenAI's already does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict


class TokenCounts(TypedDict):
    """The token fields of an ``Answer``, as a usage shape gives them."""

    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None


#: Characters kept of a request id a server sent (an id, not a document).
REQUEST_ID_CHARS = 200


def count(value: object) -> int | None:
    """A token count: an int, or a string or float holding a whole number; else None."""
    if value is None or isinstance(value, bool):  # None first: most counts are absent, and float(None) raises
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if number.is_integer() and number >= 0 else None


def text_field(value: object) -> str | None:
    """A string field (refusal, reasoning) as it is; anything else (a number, a list) is None."""
    return value if isinstance(value, str) and value else None


def request_id(headers: object, scrub: Callable[[str], str] = str) -> str | None:
    """The id a provider gives each request, for a support ticket: ``x-request-id`` (OpenAI,
    Groq, ...), ``request-id`` (Anthropic), ``apim-request-id`` (Azure), or a batch result line's
    ``response.request_id``. Printable ASCII only,
    cut to ``REQUEST_ID_CHARS``: it is the server's text. ``scrub`` (the transport's, which
    knows the key) runs before the cut: a key cut in two would no longer be found."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name in ("x-request-id", "request-id", "apim-request-id", "request_id"):
        value = get(name)
        if isinstance(value, str) and value:
            kept = scrub(value)[:REQUEST_ID_CHARS]
            if not (kept.isascii() and kept.isprintable()) or " " in kept:  # the usual id needs no walk
                kept = "".join(ch for ch in kept if " " < ch <= "~")
            return kept or None
    return None


def _get(data: object, *path: str) -> object:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def openai_usage(usage: object) -> TokenCounts:
    """The ``TOKEN_FIELDS`` of OpenAI's ``usage``: ``prompt_tokens`` (cached included),
    ``completion_tokens`` (reasoning included), ``prompt_tokens_details.cached_tokens`` and
    ``.cache_write_tokens`` (OpenRouter, Azure), ``completion_tokens_details.reasoning_tokens``.
    Odd values are dropped, not guessed."""
    return {"prompt_tokens": count(_get(usage, "prompt_tokens")),
            "completion_tokens": count(_get(usage, "completion_tokens")),
            "cached_tokens": count(_get(usage, "prompt_tokens_details", "cached_tokens")),
            "cache_write_tokens": count(_get(usage, "prompt_tokens_details", "cache_write_tokens")),
            "reasoning_tokens": count(_get(usage, "completion_tokens_details", "reasoning_tokens"))}


def anthropic_usage(usage: object) -> TokenCounts:
    """The ``TOKEN_FIELDS`` of Anthropic's ``usage``: its ``input_tokens`` leaves the cache out,
    so ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` are added to it."""
    plain = count(_get(usage, "input_tokens"))
    read = count(_get(usage, "cache_read_input_tokens"))
    write = count(_get(usage, "cache_creation_input_tokens"))
    return {"prompt_tokens": None if plain is None else plain + (read or 0) + (write or 0),
            "completion_tokens": count(_get(usage, "output_tokens")), "cached_tokens": read,
            "cache_write_tokens": write,
            "reasoning_tokens": count(_get(usage, "output_tokens_details", "thinking_tokens"))}
