"""Cell text to prompts. Pure functions."""

from __future__ import annotations

from chatmagic.errors import ConfigError


def split_lines(text: str) -> list[str]:
    """One prompt per non-blank line, trimmed, in order. Braces are kept as they are."""
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ConfigError("the cell has no prompts: write one prompt per line below %%chatmany")
    return prompts


def split_sep(text: str, sep: str) -> list[str]:
    """Prompts separated by lines equal to ``sep`` (both compared stripped), each prompt stripped.

    Blank lines inside a prompt are kept; empty prompts (from leading, trailing or repeated
    separators) are dropped. A blank ``sep`` makes blank lines the separators (one prompt per
    paragraph). Raises ConfigError if there is no prompt.
    """
    marker = sep.strip()
    prompts: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip() == marker:
            prompts.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    prompts.append("\n".join(current).strip())
    prompts = [p for p in prompts if p]
    if not prompts:
        shown = f"lines of {marker!r}" if marker else "blank lines"
        raise ConfigError(f"the cell has no prompts: write prompts separated by {shown} below %%chatmany")
    return prompts
