"""``$ref`` in a user's JSON schema: local pointers resolved (into lists too, such as
``#/$defs/u/anyOf/0``), and what cannot work refused in one line before anything is sent.

Refused: a pointer to nothing, one outside the schema (a URL, another file, an ``$anchor``), and
a loop of references that comes back to where it started without stepping into a part of the
answer (``a -> b -> a``, or a schema whose ``allOf`` refers to itself): checking any answer
against it recursed until the stack ran out. A reference that steps into a part first (a tree:
a node whose ``children`` are items of ``#/$defs/node``) is fine: the answer's own depth ends it,
and that is bounded (``core/jsonparse.py``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from chatmagic.errors import ConfigError

#: Keywords whose subschemas apply to the same value as their schema: a loop through them never ends.
_SAME_ONE = ("not", "if", "then", "else")
_SAME_MANY = ("allOf", "anyOf", "oneOf")
#: Keywords whose subschemas apply to a part of the value (or hold definitions).
_PART_ONE = ("items", "contains", "additionalProperties", "additionalItems", "propertyNames",
             "unevaluatedItems", "unevaluatedProperties")
_PART_MANY = ("prefixItems", "items")  # items as a list: older drafts
_PART_MAP = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")
#: Deeper than this, a schema is refused (a dict that holds itself would never end).
MAX_NESTING = 200

Path = tuple[str, ...]


def resolve(root: dict[str, Any], ref: str) -> Any:
    """The subschema (a dict or a bool) that ``ref`` points to in ``root``, or ConfigError."""
    return _target(root, ref)[1]


def check(root: dict[str, Any]) -> None:
    """ConfigError for a ``$ref`` that cannot work (see the module docstring). Iterative: a
    schema nested deeper than ``MAX_NESTING`` is refused, never a RecursionError."""
    same: dict[Path, list[Path]] = {}  # each subschema -> those applied to the same value
    todo: list[tuple[Path, Any]] = [((), root)]
    while todo:
        path, node = todo.pop()
        if path in same or not isinstance(node, dict):
            continue
        if len(path) > MAX_NESTING:
            raise ConfigError(f"schema: nested deeper than {MAX_NESTING} levels (or a dict that holds itself)")
        edges = same[path] = []
        ref = node.get("$ref")
        if isinstance(ref, str):
            edges.append(_target(root, ref)[0])
            todo.append(_target(root, ref))
        for key, value in node.items():
            if key in _SAME_ONE:
                edges.append((*path, key))
            if key in _SAME_MANY and isinstance(value, list):
                edges.extend((*path, key, str(i)) for i in range(len(value)))
            todo.extend(_children(path, key, value))
    loop = _loop(same)
    if loop:
        raise ConfigError(f"schema: $ref loop {' -> '.join(pointer(p) for p in loop)}: a reference must "
                          "reach a type or a part of the answer before it comes back")


def pointer(path: Path) -> str:
    """``path`` as a JSON pointer in a ``$ref``: ``#/$defs/a``."""
    return "#" + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def _target(root: dict[str, Any], ref: str) -> tuple[Path, Any]:
    if ref != "#" and not ref.startswith("#/"):
        raise ConfigError(f"schema: $ref {ref!r} is not supported: only a pointer into the schema itself, "
                          "such as '#/$defs/name'")
    node: Any = root
    path: Path = ()
    for raw in ref[2:].split("/") if ref != "#" else ():
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ConfigError(f"schema: $ref {ref!r} points to nothing in the schema")
        path += (part,)
    if not isinstance(node, (dict, bool)):
        raise ConfigError(f"schema: $ref {ref!r} points to a {type(node).__name__}, not a schema")
    return path, node


def _children(path: Path, key: str, value: Any) -> list[tuple[Path, Any]]:
    """The subschemas under ``key`` of the schema at ``path``."""
    if (key in _SAME_ONE or key in _PART_ONE) and isinstance(value, dict):
        return [((*path, key), value)]
    if (key in _SAME_MANY or key in _PART_MANY) and isinstance(value, list):
        return [((*path, key, str(i)), v) for i, v in enumerate(value)]
    if key in _PART_MAP and isinstance(value, dict):
        return [((*path, key, k), v) for k, v in value.items()]
    return []


def _loop(graph: dict[Path, list[Path]]) -> list[Path] | None:
    """A cycle in ``graph`` (its nodes in order, the first repeated at the end), or None."""
    state: dict[Path, int] = {}  # 1: on the current trail, 2: done
    for start in graph:
        if start in state:
            continue
        trail, stack = [start], [iter(graph[start])]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[trail.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*trail[trail.index(nxt):], nxt]
            elif nxt not in state:
                state[nxt] = 1
                trail.append(nxt)
                stack.append(iter(graph.get(nxt, ())))
    return None
