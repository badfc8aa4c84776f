"""What a row of the answer cache holds of an answer, by name: the one place a row's positions are
mapped to a record's (``Result``) and an answer's (``Answer``) fields (``core/cache.py`` stores the rows)."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from typing import Any

from chatmagic.core.jsonparse import dumps

#: What a row holds of an answer, in its columns' order: the names of a record's (``Result``) and an
#: answer's (``Completion``) fields. The one place a row's positions are mapped to names.
ANSWER_FIELDS = ("text", "finish_reason", "prompt_tokens", "completion_tokens", "model")
#: How the answer came, stored after the answer fields (None: not known, e.g. a version 1 row).
HOW_FIELDS = ("latency_s", "attempts")
#: The rest of a record's answer, in one JSON column (``extra``): its kind of each, checked when read.
EXTRA_FIELDS: dict[str, type] = {"cached_tokens": int, "cache_write_tokens": int, "reasoning_tokens": int,
                                 "refusal": str, "reasoning": str, "request_id": str, "cost": float}


def row_of(answer: object, *, cost: float | None = None, request_id: str | None = None) -> tuple[Any, ...]:
    """The row to store for ``answer`` (a record, or an answer: anything with the
    ``ANSWER_FIELDS`` as attributes): those, then the ``EXTRA_FIELDS`` it has as JSON (or None).
    ``cost`` and ``request_id``, when given, are what a record of this answer holds (read from
    the answer itself, a run's row is made without reading back the record's columns)."""
    # made for every answer of a run: the answer's own extra fields read in one call
    more = {n: v for n, v in zip(_OWN, _own_of(answer)) if v is not None}
    if request_id is None:
        request_id = getattr(answer, "request_id", None)
    if request_id is not None:  # before cost: the order of EXTRA_FIELDS, as a record's row has it
        more["request_id"] = request_id
    if cost is None:
        cost = getattr(answer, "cost", None)
    if cost is not None:
        more["cost"] = cost
    try:  # ASCII JSON: a lone surrogate in the reasoning is escaped, so the row is storable
        extra = dumps(more) if more else None
    except (TypeError, ValueError):
        extra = None
    return (*_answer_of(answer), extra)


def _getter(names: Sequence[str]) -> Callable[[object], tuple[Any, ...]]:
    """``names``' values of an object as a tuple (None for one it lacks), in one call when it has all."""
    whole = operator.attrgetter(*names)

    def get(obj: object) -> tuple[Any, ...]:
        try:
            return whole(obj)
        except AttributeError:
            return tuple(getattr(obj, n, None) for n in names)
    return get


_OWN = tuple(n for n in EXTRA_FIELDS if n not in ("request_id", "cost"))  # an answer's; the run adds those two
_answer_of = operator.attrgetter(*ANSWER_FIELDS)
_own_of = _getter(_OWN)


def fill(record: object, row: Sequence[Any]) -> None:
    """Set ``record``'s answer fields from a row of ``get_many``, and the ``HOW_FIELDS`` and
    ``EXTRA_FIELDS`` that a cached row knows (a value of another kind is left out)."""
    for name, value in zip(ANSWER_FIELDS, row):
        setattr(record, name, value)
    n = len(ANSWER_FIELDS)
    for name, value in zip(HOW_FIELDS, row[n:n + len(HOW_FIELDS)]):
        if value is not None:
            setattr(record, name, value)
    extra = row[n + len(HOW_FIELDS)] if len(row) > n + len(HOW_FIELDS) else None
    try:
        more = json.loads(extra) if isinstance(extra, str) else {}
    except ValueError:
        more = {}
    for name, kind in EXTRA_FIELDS.items():
        value = more.get(name) if isinstance(more, dict) else None
        if kind is float and type(value) is int:
            value = float(value)
        if type(value) is kind:
            setattr(record, name, value)
