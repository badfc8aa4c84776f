"""A chat-completion answer as the fields we keep, whatever shape the server gave them.

Gateways differ: ``content`` may be a list of parts or a number, token counts may be strings.
Each field is coerced to its type or dropped, so nothing odd reaches the results or the cache.
"""

from __future__ import annotations


def completion_of(data) -> tuple[str, str | None, int | None, int | None, str | None] | None:
    """(text, finish_reason, prompt_tokens, completion_tokens, model), or None if ``data``
    is not a completion (an error in a 200 body, or no message at all)."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        text = text_of(message.get("content"))
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if text is None:
        return None
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return (text, _name(choice.get("finish_reason")), count(usage.get("prompt_tokens")),
            count(usage.get("completion_tokens")), _name(data.get("model")))


def text_of(content) -> str | None:
    """The answer's text: a string as it is, None as "", the text parts of a list joined, a
    number as its digits; None for anything else (not a completion)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    if isinstance(content, (int, float)) and not isinstance(content, bool):
        return str(content)
    return None


def count(value) -> int | None:
    """A token count: an int, or a string or float holding a whole number; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if number.is_integer() and number >= 0 else None


def _name(value) -> str | None:
    return value if isinstance(value, str) else None
