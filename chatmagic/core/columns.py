"""A run's records stored column-wise: a few bytes a prompt instead of an object per prompt.

A million ``Result`` objects cost ~200 MB and make every full garbage collection walk a
million objects; as columns they cost ~40 bytes a prompt and nothing for the collector. Each
column holds its common values in a typed ``array`` and anything else (a value set by hand
that does not fit: a negative count, a string where a number goes) in a small ``odd`` dict, so
every record reads back exactly what was written. A column nobody has written costs nothing.
``results.Row`` is the record a user sees of one row.

Answers repeat a handful of short strings (``model``, ``finish_reason``): a ``Vocab`` column
keeps each distinct value once. ``request_id`` is one short ASCII string per answer: a ``Blob``
keeps its bytes back to back.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

_INT_MAX = 2**31 - 1


class Column:
    """Values of any kind, one a row: a list, made when the first value other than ``default`` is set."""

    __slots__ = ("n", "default", "items")

    def __init__(self, n: int, default: Any = None):
        self.n, self.default = n, default
        self.items: list[Any] | None = None

    def get(self, i: int) -> Any:
        return self.default if self.items is None else self.items[i]

    def set(self, i: int, value: Any) -> None:
        if self.items is None:
            if value is self.default:
                return
            self.items = [self.default] * self.n
        self.items[i] = value

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items) if self.items is not None else iter([self.default] * self.n)


class Ints(Column):
    """Whole numbers 0 .. 2**31-2 (token counts, attempts) or None, stored as the value plus one
    (0 is None): 1 byte a row, widened to 2 and then 4 only when a larger value is set."""

    __slots__ = ("codes", "odd")

    def __init__(self, n: int, default: int | None = None):
        super().__init__(n, default)
        self.codes: array[int] | None = None
        self.odd: dict[int, Any] = {}

    def get(self, i: int) -> Any:
        if self.odd and i in self.odd:
            return self.odd[i]
        if self.codes is None:
            return self.default
        code = self.codes[i]
        return code - 1 if code else None

    def set(self, i: int, value: Any) -> None:
        if self.odd:
            self.odd.pop(i, None)
        if value is None:
            code = 0
        elif type(value) is int and 0 <= value < _INT_MAX:
            code = value + 1
        else:
            self.odd[i] = value
            return
        codes = self.codes
        if codes is None:
            if value == self.default and type(value) is type(self.default):
                return
            fill = 0 if self.default is None else self.default + 1
            codes = array("B", bytes(self.n)) if fill == 0 else array(_fitting(fill), [fill]) * self.n
        while code > _TOP[codes.typecode]:  # once per width: a copy of the column, early in a run
            codes = array(_WIDER[codes.typecode], codes)
        self.codes = codes
        codes[i] = code

    def __iter__(self) -> Iterator[Any]:
        if self.codes is None and not self.odd:
            return iter([self.default] * self.n)
        return (self.get(i) for i in range(self.n))


_TOP = {"B": 255, "H": 65535, "i": _INT_MAX}  # the largest code of each width
_WIDER = {"B": "H", "H": "i"}


def _fitting(code: int) -> str:
    """The narrowest typecode holding ``code``."""
    return next(t for t in ("B", "H", "i") if code <= _TOP[t])


class Floats(Column):
    """Floats (latency, cost) or None, 8 bytes a row (None is stored as NaN; a NaN set by hand, or
    an int, is kept as it is among the odd values)."""

    __slots__ = ("values", "odd")

    def __init__(self, n: int):
        super().__init__(n, None)
        self.values: array[float] | None = None
        self.odd: dict[int, Any] = {}

    def get(self, i: int) -> Any:
        if self.odd and i in self.odd:
            return self.odd[i]
        if self.values is None:
            return None
        v = self.values[i]
        return None if v != v else v

    def set(self, i: int, value: Any) -> None:
        if self.odd:
            self.odd.pop(i, None)
        if value is None:
            if self.values is not None:
                self.values[i] = math.nan
            return
        if type(value) is not float or value != value:
            self.odd[i] = value
            return
        if self.values is None:
            self.values = array("d", [math.nan]) * self.n
        self.values[i] = value

    def __iter__(self) -> Iterator[Any]:
        if self.values is None and not self.odd:
            return iter([None] * self.n)
        return (self.get(i) for i in range(self.n))


class Vocab(Column):
    """Few distinct values, each kept once (status, model, finish_reason): 1 byte a row, 2 once
    there are more than 255 of them; an unhashable value goes among the odd ones."""

    __slots__ = ("codes", "words", "code_of", "odd")

    def __init__(self, n: int, default: Any = None):
        super().__init__(n, default)
        self.words: list[Any] = [default]
        self.code_of: dict[tuple[type, Any], int] = {(type(default), default): 0}
        self.codes: array[int] | None = None
        self.odd: dict[int, Any] = {}

    def get(self, i: int) -> Any:
        if self.odd and i in self.odd:
            return self.odd[i]
        return self.default if self.codes is None else self.words[self.codes[i]]

    def set(self, i: int, value: Any) -> None:
        if self.odd:
            self.odd.pop(i, None)
        try:
            key = (type(value), value)  # the type too: 1 and True (and 1.0) are equal, not the same
            code = self.code_of.get(key)
        except TypeError:  # unhashable (a list set by hand)
            self.odd[i] = value
            return
        if code is None:
            if len(self.words) > 65535:  # more distinct values than codes: kept as they are
                self.odd[i] = value
                return
            code = self.code_of[key] = len(self.words)
            self.words.append(value)
        if self.codes is None:
            if code == 0:
                return
            self.codes = array("B", bytes(self.n))
        if code > 255 and self.codes.typecode == "B":
            self.codes = array("H", self.codes)
        self.codes[i] = code

    def __iter__(self) -> Iterator[Any]:
        if self.odd:
            return (self.get(i) for i in range(self.n))
        if self.codes is None:
            return iter([self.default] * self.n)
        words = self.words
        return (words[c] for c in self.codes)


class Blob(Column):
    """Short ASCII strings (request ids) back to back in one buffer: their length plus 6 bytes a
    row, not ~90. The first value's part up to its last ``_`` or ``-`` (a provider's ``req_``) is
    kept once, and a value starting with it stores only the rest. A value set again is appended
    anew (the old bytes stay: rare); anything else (non-ASCII, long, not a str) goes among the
    odd values."""

    __slots__ = ("data", "starts", "lengths", "odd", "prefix")

    def __init__(self, n: int):
        super().__init__(n, None)
        self.data = bytearray()
        self.starts: array[int] | None = None
        self.lengths: array[int] | None = None  # 0: None; else length + 1, with _SHARED if prefixed
        self.odd: dict[int, Any] = {}
        self.prefix: str | None = None

    def get(self, i: int) -> Any:
        if self.odd and i in self.odd:
            return self.odd[i]
        if self.starts is None or self.lengths is None or not self.lengths[i]:
            return None
        start, code = self.starts[i], self.lengths[i]
        rest = self.data[start:start + (code & ~_SHARED) - 1].decode("ascii")
        return self.prefix + rest if code & _SHARED and self.prefix else rest

    def set(self, i: int, value: Any) -> None:
        if self.odd:
            self.odd.pop(i, None)
        if value is None:
            if self.lengths is not None:
                self.lengths[i] = 0
            return
        if type(value) is not str or not value.isascii() or len(value) >= _SHARED - 1 or len(self.data) >= _INT_MAX:
            self.odd[i] = value
            return
        if self.starts is None or self.lengths is None:
            self.starts, self.lengths = array("I", bytes(4 * self.n)), array("H", bytes(2 * self.n))
        if self.prefix is None and value:
            self.prefix = value[:max(value.rfind("_"), value.rfind("-")) + 1]
        shared = 0
        if self.prefix and value.startswith(self.prefix):
            value, shared = value[len(self.prefix):], _SHARED
        self.starts[i] = len(self.data)
        self.lengths[i] = (len(value) + 1) | shared  # 0 is None, 1 the empty string
        self.data += value.encode("ascii")

    def __iter__(self) -> Iterator[Any]:
        return (self.get(i) for i in range(self.n))


_SHARED = 0x8000  # a Blob length's flag: the value starts with the column's prefix


#: The columns of a record, by field name of ``results.Result`` (index and prompt are the table's own).
KINDS: dict[str, tuple[type[Column], Any]] = {
    "text": (Column, None), "status": (Vocab, "cancelled"), "error": (Column, None), "attempts": (Ints, 0),
    "latency_s": (Floats, None), "prompt_tokens": (Ints, None), "completion_tokens": (Ints, None),
    "cached_tokens": (Ints, None), "cache_write_tokens": (Ints, None), "reasoning_tokens": (Ints, None),
    "cost": (Floats, None), "finish_reason": (Vocab, None), "model": (Vocab, None), "refusal": (Column, None),
    "reasoning": (Column, None), "request_id": (Blob, None), "cached": (Vocab, False), "data": (Column, None)}


class Table:
    """Every record of a run: ``prompts`` (the user's strings, held once) and one column per field."""

    __slots__ = ("prompts", "columns")

    def __init__(self, prompts: list[str]):
        self.prompts = prompts
        n = len(prompts)
        self.columns: dict[str, Column] = {
            name: kind(n) if kind in (Floats, Blob) else kind(n, default)
            for name, (kind, default) in KINDS.items()}

    def __len__(self) -> int:
        return len(self.prompts)

    def values(self, name: str) -> Iterable[Any]:
        """Every row's value of field ``name``, in order."""
        if name == "prompt":
            return self.prompts
        if name == "index":
            return range(len(self.prompts))
        return self.columns[name]

    @property
    def nbytes(self) -> int:
        """Bytes the columns hold (not the prompts, nor the values the lists point to)."""
        import sys
        total = 0
        for c in self.columns.values():
            for part in ("items", "codes", "values", "data", "starts", "lengths"):
                held = getattr(c, part, None)
                total += sys.getsizeof(held) if held is not None else 0
        return total
