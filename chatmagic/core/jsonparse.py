"""JSON in and out: a structured answer's, parsed with its nesting bounded; ours, written strict.

Python's parser, the schema checks, ``repr`` and pandas all recurse once per level, so an
answer nested a few thousand deep (4 KB of ``[[[[...``) raised ``RecursionError`` and ended the
whole run. Here the depth is counted first, without recursion, and an answer deeper than
``MAX_DEPTH`` is refused as JSON that cannot be used: it fails its prompt, never the run.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any

#: Deepest nesting of objects and lists read from an answer (serde_json's default limit); real
#: structured answers stay far below it, and every later step has room to recurse within it.
MAX_DEPTH = 128

#: Bytes that are not a bracket or a quote (deleted before counting), and brackets of one kind.
_NOT_MARKS = bytes(c for c in range(256) if c not in b'[]{}"')
_ONE_KIND = bytes.maketrans(b"[]{}", b"()()")


#: JSON as we write it (request bodies, cache rows): never NaN or Infinity, which no server or
#: strict reader takes. Built once: json.dumps with an option builds an encoder per call, ~2x dearer.
dumps = json.JSONEncoder(allow_nan=False).encode


class TooDeep(ValueError):
    """JSON nested deeper than ``MAX_DEPTH``."""


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """True if the objects and lists of the JSON ``text`` nest deeper than ``limit`` (JSON that
    is not balanced is left to the parser to refuse). No recursion, linear, mostly at C speed:
    escapes and strings are dropped (their brackets do not nest); a few passes remove the
    innermost ``()`` pairs, which ends any shallow answer; what is left is counted in one pass."""
    if text.count("[") + text.count("{") <= limit:  # the common case: too few brackets to nest deeper
        return False
    raw = text.encode("utf-8", "surrogatepass").replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = b"".join(raw.translate(None, _NOT_MARKS).split(b'"')[::2]).translate(_ONE_KIND)
    passes = 0
    while passes < min(_PASSES, limit):
        shorter = marks.replace(b"()", b"")  # each pass lowers every nesting by one
        if not shorter or len(shorter) == len(marks):
            return False  # within the limit; or unbalanced, which json.loads says
        marks, passes = shorter, passes + 1
    return max(accumulate(map(_STEP.__getitem__, marks)), default=0) + passes > limit


#: Passes of removing innermost pairs before counting (each copies what is left).
_PASSES = 8
_STEP = {ord("("): 1, ord(")"): -1}


def loads(text: str) -> Any:
    """``json.loads(text)``, or TooDeep (a ValueError, as for JSON that does not parse)."""
    if too_deep(text):
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except RecursionError:  # a stack already deep when called: still this answer's fault only
        raise TooDeep(f"nested too deep to read ({MAX_DEPTH} levels at most)") from None
