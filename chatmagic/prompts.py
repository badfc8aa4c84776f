"""Cell text to prompts. Pure functions."""

from __future__ import annotations

from .errors import ConfigError


def split_lines(text: str) -> list[str]:
    """One prompt per non-blank line, trimmed, in order. Braces are kept as they are."""
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ConfigError("the cell has no prompts: write one prompt per line below %%chatmany")
    return prompts
