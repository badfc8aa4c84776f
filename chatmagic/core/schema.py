"""Structured answers: a schema from a concise spec, a JSON-schema dict or a pydantic model;
what the request carries for it; and the check of each answer.

Concise spec (after simonw/llm's ``--schema 'name, age int, bio: a short bio'``), one field per
comma, or per line when the spec has several lines::

    NAME [TYPE] [: [VALUES] [DESCRIPTION]]

    TYPE         str (the default), int, float, bool, list (of str), list[int], list[float], ...
    VALUES       an enum: allowed values joined by |, e.g. positive|negative|mixed, or 1|2|3 for an
                 int; a value with spaces in quotes: "very good"|bad. For a list, the allowed items.
    DESCRIPTION  free text, sent to the model in the schema.

    sentiment: positive|negative|mixed, confidence float, reason: one short sentence

Every schema is made strict-compatible (each object lists all its properties as required and
allows no others), as OpenAI's structured outputs demand, and each answer is checked against it:
with pydantic for a pydantic model, with ``jsonschema`` otherwise (both imported when needed).
"""

from __future__ import annotations

import json
import re
from typing import Any

from chatmagic.core import schemarefs
from chatmagic.core.jsonparse import MAX_DEPTH, TooDeep, loads, too_deep
from chatmagic.errors import ConfigError

#: Concise type names and their JSON-schema types.
TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
#: Keywords whose value is one subschema, a list of them, or a name -> subschema map.
_ONE = ("items", "not", "contains", "additionalProperties")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAP = ("properties", "$defs", "definitions", "patternProperties")

_NAME = re.compile(r"[A-Za-z_][\w-]*$")
_VALUE = r"""(?:"[^"]*"|'[^']*'|[^\s|"']+)"""
_ENUM = re.compile(rf"\s*({_VALUE}(?:\s*\|\s*{_VALUE})+)(?:\s+|$)")
_LIST = re.compile(r"list(?:\[(\w+)\])?$")


class SchemaMismatch(ValueError):
    """An answer that is not JSON, or does not match the schema; the message says where. It is
    not cut short: the engine scrubs the key from it first."""


class Schema:
    """A schema ready to send and to check answers against.

    ``json_schema`` is the strict-compatible schema sent; ``model`` the pydantic class, if one
    was given (answers are then instances of it); ``name`` the schema's name in the request.
    """

    def __init__(self, json_schema: dict[str, Any], *, name: str = "answer", model: Any = None):
        self.json_schema, self.name, self.model = json_schema, name, model
        schemarefs.check(json_schema)  # a $ref loop or pointer to nothing: one line, now
        # built now, so a missing jsonschema or a broken schema fails before anything is sent
        self._validator = None if model is not None else _validator(json_schema)

    def response_format(self) -> dict[str, Any]:
        return {"type": "json_schema",
                "json_schema": {"name": self.name, "schema": self.json_schema, "strict": True}}

    def instruction(self) -> str:
        """A short plain-English instruction; small models and servers that only enforce a
        grammar need it (with a grammar alone a tiny model padded numbers until cut off)."""
        fields = [f'"{k}" ({_kind_text(self.field(k))}{", or null" * _nullable(p)})'
                  for k, p in self.json_schema.get("properties", {}).items()]
        return "Answer with only a JSON object with the keys " + ", ".join(fields) + "."

    def field(self, key: str) -> dict[str, Any]:
        """Top-level property ``key``, with a $ref followed and an optional's null left out."""
        return _plain(self.json_schema["properties"][key], self.json_schema)

    def validate(self, text: str) -> Any:  # a dict, or an instance of the model
        """The answer as a dict (or a model instance), or SchemaMismatch. Its nesting is
        bounded (``core/jsonparse.py``): a hostile answer fails its prompt, never the run."""
        try:
            if self.model is not None:
                if too_deep(text):  # pydantic parses it itself
                    raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
                return self._validate_model(text)
            data = loads(text)
            error = _best_error(self._validator, data)
        except SchemaMismatch:
            raise
        except TooDeep as e:
            raise SchemaMismatch(str(e)) from None
        except ValueError:
            raise SchemaMismatch(f"not JSON: {text!r}") from None
        except RecursionError:  # within the bound, but called on a stack already deep
            raise SchemaMismatch(f"too deeply nested to check ({MAX_DEPTH} levels at most)") from None
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            raise SchemaMismatch(f"{where + ': ' if where else ''}{error.message}")
        return data

    def _validate_model(self, text: str) -> Any:
        from pydantic import ValidationError
        try:
            return self.model.model_validate_json(text)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise SchemaMismatch(f"{where + ': ' if where else ''}{first['msg']}") from None

    def __repr__(self) -> str:
        keys = ", ".join(self.json_schema.get("properties", {}))
        return f"<Schema {self.name}: {keys}>"


def load(spec: object) -> Schema:
    """A Schema from a concise spec (str), a JSON-schema dict, a pydantic model class or a Schema."""
    if isinstance(spec, Schema):
        return spec
    try:
        return _load(spec)
    except RecursionError:  # strict() recurses per level; a dict that holds itself never ends
        raise ConfigError("schema: nested too deep (or a dict that holds itself)") from None


def _load(spec: object) -> Schema:
    if isinstance(spec, str):
        return Schema(strict(parse(spec)))
    if isinstance(spec, dict):
        return Schema(strict(_object(spec)), name=_name(spec.get("title")))
    if isinstance(spec, type) and hasattr(spec, "model_json_schema") and hasattr(spec, "model_validate_json"):
        return Schema(strict(_object(spec.model_json_schema())), name=_name(spec.__name__), model=spec)
    raise ConfigError(f"schema must be a concise spec, a JSON-schema dict or a pydantic model "
                      f"class, got {type(spec).__name__}")


def _object(schema: dict[str, Any]) -> dict[str, Any]:
    """Structured outputs answer with an object: a schema for anything else is refused here."""
    if schema.get("type", "object") != "object" or not isinstance(schema.get("properties"), dict):
        raise ConfigError("schema: the answer must be an object with properties, e.g. "
                          '{"type": "object", "properties": {"label": {"type": "string"}}}')
    return schema


def lookup(spec: object, user_ns: dict[str, Any]) -> object:
    """``--schema NAME``: the notebook variable NAME when there is one, else the spec itself."""
    name = spec.strip() if isinstance(spec, str) else ""
    if not name.isidentifier() or name not in user_ns:
        return spec
    value = user_ns[name]
    if not isinstance(value, (str, dict, type)):
        kind = type(value).__name__
        raise ConfigError(f"--schema {name}: the notebook variable {name} is of type {kind}, not a "
                          "pydantic model class, a JSON-schema dict or a spec string")
    return value


def parse(spec: str) -> dict[str, Any]:
    """A JSON schema from the concise spec (see the module docstring)."""
    parts = spec.splitlines() if "\n" in spec.strip() else spec.split(",")
    fields = [p.strip() for p in parts if p.strip()]
    if not fields:
        raise ConfigError("schema: the spec is empty; e.g. --schema 'label: yes|no, score float'")
    properties = {}
    for text in fields:
        name, prop = _field(text)
        if name in properties:
            raise ConfigError(f"schema: field {name!r} is named twice")
        properties[name] = prop
    return {"type": "object", "properties": properties}


def _field(text: str) -> tuple[str, dict[str, Any]]:
    head, colon, rest = text.partition(":")
    words = head.split()
    if not words or len(words) > 2 or not _NAME.match(words[0]):
        raise ConfigError(f"schema: {text!r} is not a field: write NAME [TYPE] [: description], "
                          "e.g. 'age int' or 'mood: happy|sad'")
    name, kind = words[0], words[1] if len(words) > 1 else "str"
    listed = _LIST.match(kind)
    item = (listed.group(1) or "str") if listed else kind
    if item not in TYPES:
        raise ConfigError(f"schema: field {name!r} has unknown type {kind!r}; types: str, int, "
                          "float, bool, list, list[int] (of str, int, float or bool)")
    prop: dict[str, Any] = {"type": TYPES[item]}
    enum = _ENUM.match(rest) if colon else None
    if enum:
        prop["enum"] = [_value(v, item, name) for v in re.split(r"\s*\|\s*", enum.group(1).strip())]
        rest = rest[enum.end():]
    if listed:
        prop = {"type": "array", "items": prop}
    if rest.strip():
        prop["description"] = rest.strip()
    return name, prop


def _value(raw: str, kind: str, name: str) -> str | int | float:
    raw = raw[1:-1] if raw[:1] in "\"'" and raw[-1:] == raw[:1] and len(raw) > 1 else raw
    try:
        convert: type[str] | type[int] | type[float] = {"str": str, "int": int, "float": float}[kind]
        return convert(raw)
    except KeyError:
        raise ConfigError(f"schema: field {name!r}: allowed values are for str, int and float") from None
    except ValueError:
        raise ConfigError(f"schema: field {name!r}: {raw!r} is not a {kind} value") from None


def strict(node: Any) -> Any:
    """A copy of a JSON schema in which every object requires all its properties and allows no
    others, at every depth. ``default`` is dropped: with every property required it cannot apply."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "default":
            continue
        if key in _MAP and isinstance(value, dict):
            out[key] = {k: strict(v) for k, v in value.items()}
        elif key in _ONE or key in _MANY:
            out[key] = strict(value)
        else:
            out[key] = value
    if isinstance(out.get("properties"), dict):
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    return out


def _plain(node: Any, root: dict[str, Any]) -> dict[str, Any]:
    for _ in range(schemarefs.MAX_NESTING):  # refs were checked for loops (schemarefs.check)
        ref = node.get("$ref") if isinstance(node, dict) else None
        if isinstance(ref, str):
            node = schemarefs.resolve(root, ref)
            continue
        options = [o for o in node.get("anyOf", ()) if isinstance(o, dict) and o.get("type") != "null"] \
            if isinstance(node, dict) else []
        if len(options) != 1:
            break
        node = options[0]
    return node if isinstance(node, dict) else {}


def _nullable(prop: dict[str, Any]) -> bool:
    return any(isinstance(o, dict) and o.get("type") == "null" for o in prop.get("anyOf", ()))


def _kind_text(prop: Any) -> str:  # a subschema: a dict, or true/false
    if not isinstance(prop, dict):
        return "any JSON value"
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v) for v in prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        return "a list, each " + _kind_text(prop.get("items", {}))
    # an example value: a tiny model given a grammar alone pads numbers until it is cut off
    return {"string": "a string", "integer": "a whole number such as 3", "number": "a number such as 0.5",
            "boolean": "true or false", "object": "an object"}.get(str(kind), "any JSON value")


def _name(text: object) -> str:
    """A name OpenAI accepts: letters, digits, _ and -, at most 64."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", str(text or "")).strip("_")[:64]
    return name or "answer"


def _validator(schema: dict[str, Any]) -> Any:
    try:
        import jsonschema
    except ImportError:
        raise ConfigError("checking answers against a schema needs jsonschema: "
                          "pip install 'chatmagic[schema]'") from None
    kind = jsonschema.validators.validator_for(schema)
    try:
        kind.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        raise ConfigError(f"schema: not a valid JSON schema: {e.message[:120]}") from None
    return kind(schema)


def _best_error(validator: Any, data: object) -> Any:
    import jsonschema
    return jsonschema.exceptions.best_match(validator.iter_errors(data))


def columns(schema: Schema, values: list[Any], index: Any = None) -> Any:  # a pandas DataFrame
    """A DataFrame with one typed column per top-level field of ``schema``, one row per answer
    (None for a failed prompt): int -> Int64, float -> float64, bool -> boolean, an enum ->
    categorical with the declared categories, anything else -> object."""
    import pandas as pd
    rows = [_as_dict(v, schema) for v in values]
    frame = {}
    for key in schema.json_schema.get("properties", {}):
        column = [row.get(key) for row in rows]
        prop = schema.field(key)
        if "enum" in prop and prop.get("type") != "array":
            frame[key] = pd.Categorical(column, categories=prop["enum"])
        else:
            dtype = DTYPES.get(str(prop.get("type")), object)
            frame[key] = pd.array(column, dtype=dtype) if dtype is not object else column
    return pd.DataFrame(frame, index=index)


#: pandas dtypes of JSON-schema types; nullable, so a failed prompt is <NA>, not a float NaN.
DTYPES = {"integer": "Int64", "number": "float64", "boolean": "boolean"}


def _as_dict(value: object, schema: Schema) -> dict[str, Any]:
    if value is None:
        return {}
    if schema.model is not None and isinstance(value, schema.model):
        return dict(value.model_dump(mode="json", by_alias=True))
    return value if isinstance(value, dict) else {}
