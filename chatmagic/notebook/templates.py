"""Prompts from a template over data, and joining the answers back. Pure functions.

``%%chatmany --over NAME`` treats the cell body as one template and renders it once per element
of ``NAME``; ``--sep ---`` (prompts.py) splits the cell into multi-line prompts instead of one per line.

Template syntax (checked with ``string.Formatter().parse``, never evaluated with ``str.format``):

    {name}        a field: a DataFrame column, or {item} / {index} for lists and Series.
                  The text between the braces is the name, taken literally, so columns such as
                  {product name}, {unit-price} or {price ($)} work; a column labelled 3 is {3}.
    {{  }}        a literal brace, e.g. {{"label": {item}}} renders as {"label": 1}.
    {x:>10}       rejected: format specs are not supported (this is also how a stray JSON brace
                  such as {"a": 1} shows up, so the error says to double literal braces).
    {x!r}         rejected: conversions are not supported.
    {}            rejected: a field needs a name.

``{a.b}`` and ``{a[0]}`` are not attribute access or indexing: they name a column literally
called "a.b" or "a[0]" and fail with the list of columns if there is none. Values are rendered
with ``str()``, as an f-string would, so a missing value shows as "nan" or "None".

pandas is never imported at module import time; pandas objects are recognised by their type's
module (``is_frame``); the answers are joined back onto the data in stored.py.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from chatmagic.errors import ConfigError

#: Field names for a list, tuple or Series: the element and its label.
ITEM, INDEX = "item", "index"

_BRACES_HINT = "write {{ and }} for literal braces"
_SHOW_COLUMNS = 30  # columns named in an error message at most
_NAME_LIKE = re.compile(r"[\w \-]+")


# ----------------------------------------------------------------------------------------------
# Templates


class Template:
    """A prompt template with ``{name}`` fields; see the module docstring for the syntax.

    ``text`` is the body without its leading and trailing blank lines (indentation and blank
    lines inside are kept); ``fields`` the names it uses, in order of first use, unique.
    """

    __slots__ = ("_pattern", "_slots", "fields", "text")

    def __init__(self, text: str):
        lines = text.splitlines()
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        self.text = "\n".join(lines).rstrip()
        if not self.text:
            raise ConfigError("the template is empty: write the prompt below %%chatmany, "
                              "with {item} or {column} where each value goes")
        try:
            parsed = list(string.Formatter().parse(self.text))
        except ValueError as e:
            raise ConfigError(f"bad template: {e}; {_BRACES_HINT}") from None
        fields: list[str] = []
        pieces: list[str] = []   # a %-pattern: literals with % doubled, %s for each field
        slots: list[int] = []    # which entry of ``fields`` fills each %s, in order
        for literal, name, spec, conversion in parsed:
            pieces.append(literal.replace("%", "%%"))
            if name is None:
                continue
            shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            if conversion:
                raise ConfigError(f"template field {shown}: conversions such as !r are not supported; "
                                  f"{_BRACES_HINT}")
            if spec:
                raise ConfigError(f"template field {shown}: format specs are not supported; "
                                  f"{_BRACES_HINT}")
            if not name.strip():
                raise ConfigError(f"template field {shown} has no name: write {{item}} or {{column}}; "
                                  f"{_BRACES_HINT}")
            if name not in fields:
                fields.append(name)
            pieces.append("%s")
            slots.append(fields.index(name))
        self.fields = fields
        self._pattern = "".join(pieces)
        self._slots = slots

    def render(self, values: Mapping[str, Any]) -> str:
        """One prompt: each field replaced by ``str(values[name])``. KeyError if one is missing."""
        return self._pattern % tuple(values[self.fields[i]] for i in self._slots)

    def render_columns(self, columns: Sequence[Sequence[Any]]) -> list[str]:
        """Many prompts: ``columns[i]`` holds the values of ``fields[i]``, one per prompt."""
        if not self.fields:
            n = len(columns[0]) if columns else 0
            return [self._pattern % ()] * n
        pattern = self._pattern  # "%s" calls str() on each value: the fastest way in pure Python
        return [pattern % row for row in zip(*[columns[i] for i in self._slots])]

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def render_over(template_text: str, data: Any, *, name: str | None = None) -> tuple[list[str], list[Any]]:
    """Render ``template_text`` once per element of ``data``: returns (prompts, index_labels).

    ``data`` and its fields:

        list, tuple, range, 1-D numpy array   {item} the element, {index} its position (0, 1, ...)
        pandas Series                         {item} the value, {index} its index label
        pandas DataFrame                      {column} for each column (matched by ``str(label)``),
                                              {index} the row's index label; a column named
                                              "index" wins over the label (reset_index() makes one)

    Labels are the positions for sequences and ``data.index.tolist()`` for pandas objects, in the
    same order as the prompts. Every field is checked before anything is rendered. ``name`` is the
    variable's name for error messages (``--over NAME``). Raises ConfigError for an empty template,
    unknown fields, a dict, str, set, generator or other unsupported data, and empty data.
    """
    what = f"--over {name}" if name else "the data"
    kind = _kind(data, what)
    template = Template(template_text)
    if kind == "frame":
        labels_of = _column_positions(data)
        missing = [f for f in template.fields if f not in labels_of and f != INDEX]
        if missing:
            raise ConfigError(_missing_column(missing[0], list(labels_of)))
        for f in template.fields:
            if len(labels_of.get(f, ())) > 1:
                raise ConfigError(f"template field {{{f}}} is ambiguous: {len(labels_of[f])} columns "
                                  f"of {what} are named {f!r}")
        if len(data) == 0:
            raise ConfigError(f"{what} is empty: no rows to render")
        labels = data.index.tolist()
        columns = [labels if f not in labels_of else data.iloc[:, labels_of[f][0]].tolist()
                   for f in template.fields]
    else:
        missing = [f for f in template.fields if f not in (ITEM, INDEX)]
        if missing:
            noun = "Series" if kind == "series" else "list"
            raise ConfigError(f"template field {{{missing[0]}}} does not exist for a {noun}: "
                              f"use {{{ITEM}}} and {{{INDEX}}}{_braces_hint(missing[0])}")
        if kind == "series":
            items, labels = data.tolist(), data.index.tolist()
        else:
            items = data.tolist() if kind == "array" else list(data)
            labels = list(range(len(items)))
        if not items:
            raise ConfigError(f"{what} is empty: nothing to render")
        columns = [items if f == ITEM else labels for f in template.fields]
    if not template.fields:  # the same prompt once per row: allowed (e.g. to sample it n times)
        columns = [labels]
    return template.render_columns(columns), labels


def is_frame(data: object) -> bool:
    """A pandas DataFrame, recognised without importing pandas (the one test for it)."""
    return (type(data).__module__ or "").startswith("pandas") and hasattr(data, "columns") and hasattr(data, "iloc")


def _kind(data: object, what: str) -> str:
    """The kind of ``data``: "frame", "series", "array" or "sequence"; ConfigError otherwise."""
    module = type(data).__module__ or ""
    if is_frame(data):
        return "frame"
    if module.startswith("pandas"):
        if hasattr(data, "index") and hasattr(data, "tolist") and getattr(data, "ndim", 1) == 1:
            return "series"
    elif module.startswith("numpy") and hasattr(data, "tolist") and hasattr(data, "ndim"):
        if data.ndim == 1:
            return "array"
        raise ConfigError(f"{what} must be one-dimensional, got a {data.ndim}-D array: "
                          "use a DataFrame for rows with several values")
    elif isinstance(data, (list, tuple, range)):
        return "sequence"
    got = type(data).__name__
    hint = ""
    if isinstance(data, Mapping):
        hint = ": use list(d.values()), or pd.Series(d) to keep the keys as {index}"
    elif isinstance(data, (set, frozenset)):
        hint = ": a set has no order; use sorted(s) or list(s)"
    elif isinstance(data, (str, bytes)):
        hint = ": for one prompt per line of a string, use s.splitlines()"
    elif hasattr(data, "__iter__"):
        hint = f": use list({'...' if not what.startswith('--over ') else what[7:]})"
    raise ConfigError(f"{what} must be a list, tuple, Series or DataFrame, got {got}{hint}")


def _column_positions(frame: Any) -> dict[str, list[int]]:
    """``str(label)`` of each column -> its positions (more than one if labels repeat)."""
    positions: dict[str, list[int]] = {}
    for i, label in enumerate(frame.columns):
        positions.setdefault(str(label), []).append(i)
    return positions


def _missing_column(field: str, columns: list[str]) -> str:
    shown = ", ".join(columns[:_SHOW_COLUMNS]) or "(none)"
    if len(columns) > _SHOW_COLUMNS:
        shown += f", ... ({len(columns) - _SHOW_COLUMNS} more)"
    hint = ""
    if field.strip() in columns:
        hint = f"; did you mean {{{field.strip()}}} (no spaces inside the braces)?"
    elif any(c in field for c in ".["):
        hint = "; attribute access and indexing are not supported, name a column"
    return (f"template field {{{field}}} is not a column; columns: {shown} "
            f"(and {{{INDEX}}} for the row label){hint}{_braces_hint(field)}")


def _braces_hint(field: str) -> str:
    """The literal-braces hint, for a field that does not look like a name (JSON, code)."""
    return "" if _NAME_LIKE.fullmatch(field) else f"; {_BRACES_HINT}"
