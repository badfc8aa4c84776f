"""``--over`` rows that are more than text: ``--images COL``, ``--messages COL`` and a
``--system`` template, rendered per row. Pure functions (no IPython, pandas never imported).

    cell_rows(cell, data, name=..., images=..., messages=..., system=...) -> (rows, labels)

COL names a DataFrame column (as a template field does), or ``item`` for the elements of a
list or Series. With ``--messages`` the cell may be empty (each row's list is sent as it is)
or a template, appended as the last user turn; its images go into that turn, after the text.
"""

from __future__ import annotations

from typing import Any

from chatmagic.core.media import media_of
from chatmagic.core.rows import Row, check_messages
from chatmagic.errors import ConfigError
from chatmagic.notebook.templates import ITEM, Template, is_frame, render_over


def column(data: Any, col: str, flag: str, name: str) -> list[Any]:
    """The values of ``col`` in ``data``, one per row, in row order."""
    if is_frame(data):
        matches = [i for i, label in enumerate(data.columns) if str(label) == col]
        if len(matches) != 1:
            shown = ", ".join(str(c) for c in list(data.columns)[:30])
            what = "is not a column" if not matches else f"names {len(matches)} columns"
            raise ConfigError(f"{flag} {col}: {what} of --over {name}; columns: {shown}")
        return list(data.iloc[:, matches[0]].tolist())
    if col != ITEM:
        raise ConfigError(f"{flag} {col}: --over {name} is not a DataFrame; use {flag} {ITEM} for its elements")
    return data.tolist() if hasattr(data, "tolist") else list(data)


def cell_rows(cell: str, data: Any, *, name: str, images: str | None = None, messages: str | None = None,
              system: str | None = None) -> tuple[list[Row], list[Any]]:
    """One Row per element of ``data``: the cell rendered as its text (None when the cell is
    empty and ``messages`` gives the turns), its own system prompt when ``system`` has fields,
    its messages and images from their columns."""
    texts: list[str | None]
    if cell.strip():
        rendered, labels = render_over(cell, data, name=name)
        texts = list(rendered)
    elif messages is not None or images is not None:
        # no template: a row is its messages, or only its images; render "" for the labels
        _, labels = render_over("{index}", data, name=name)
        texts = [None if messages is not None else ""] * len(labels)
    else:
        raise ConfigError(f"--over {name}: the cell is empty; write the prompt template below %%chatmany")
    n = len(labels)
    systems: list[str | None] = [None] * n
    if system is not None and _system_template(system).fields:
        systems = list(render_over(system, data, name=name)[0])
    turns = [()] * n if messages is None else [
        check_messages(_list(v, where), where) for i, v in enumerate(column(data, messages, "--messages", name))
        for where in (f"--messages {messages}, row {labels[i]!r}",)]
    media = [()] * n if images is None else [media_of(v) for v in column(data, images, "--images", name)]
    rows = [Row(texts[i], systems[i], tuple(turns[i]), tuple(media[i])) for i in range(n)]
    return rows, labels


def _list(value: Any, where: str) -> list[Any]:
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()  # a numpy array in an object column
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: {type(value).__name__}, not a list of {{'role', 'content'}} dicts")
    return list(value)



def _system_template(text: str) -> Template:
    try:
        return Template(text)
    except ConfigError as e:
        raise ConfigError(f"--system (a template with --over): {e}") from None
