"""A structured answer's JSON, parsed with its nesting bounded.

Python's parser, the schema checks, ``repr`` and pandas all recurse once per level, so an
answer nested a few thousand deep (4 KB of ``[[[[...``) raised ``RecursionError`` and ended the
whole run. Here the depth is counted first, without recursion, and an answer deeper than
``MAX_DEPTH`` is refused as JSON that cannot be used: it fails its prompt, never the run.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

#: Deepest nesting of objects and lists read from an answer (serde_json's default limit); real
#: structured answers stay far below it, and every later step has room to recurse within it.
MAX_DEPTH = 128

_STRINGS = re.compile(r'"(?:[^"\\]+|\\.)*"')  # JSON strings, whose brackets do not nest
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class TooDeep(ValueError):
    """JSON nested deeper than ``MAX_DEPTH``."""


def depth(text: str) -> int:
    """How deep the objects and lists of the JSON ``text`` nest, exactly when that is over
    ``MAX_DEPTH``, else a bound at most ``MAX_DEPTH`` (all a check needs). Validity is not
    checked. Linear, no recursion."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # the common case, at C speed
        return text.count("[") + text.count("{")  # an upper bound, which is all a check needs
    brackets = re.findall(r"[\[\]{}]", _STRINGS.sub("", text))
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def loads(text: str) -> Any:
    """``json.loads(text)``, or TooDeep (a ValueError, as for JSON that does not parse)."""
    if depth(text) > MAX_DEPTH:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except RecursionError:  # a stack already deep when called: still this answer's fault only
        raise TooDeep(f"nested too deep to read ({MAX_DEPTH} levels at most)") from None
