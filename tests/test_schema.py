"""--schema's pure parts: the concise grammar, strictification, the instruction, checking answers,
typed columns; the practice server's conforming answers; the option through the Python API."""

import json
import sys
from enum import Enum
from typing import Literal

import pandas as pd
import pytest
from pydantic import BaseModel, Field, RootModel

import chatmagic
from chatmagic.core.schema import (
    Schema,
    SchemaMismatch,
    columns,
    load,
    lookup,
    parse,
    strict,
)
from chatmagic.errors import ConfigError
from chatmagic.practice.server import FakeOpenAI, conforming
from chatmagic.results import Result, Results

S, I, F, B = ({"type": t} for t in ("string", "integer", "number", "boolean"))  # noqa: E741 (I: integer)


@pytest.mark.parametrize("spec, properties", [
    ("name", {"name": S}),
    ("name, age int, bio: a short bio", {"name": S, "age": I, "bio": {**S, "description": "a short bio"}}),
    ("sentiment: positive|negative|mixed, confidence float, reason",
     {"sentiment": {**S, "enum": ["positive", "negative", "mixed"]}, "confidence": F, "reason": S}),
    ("mood: happy | sad  how they sound", {"mood": {**S, "enum": ["happy", "sad"], "description": "how they sound"}}),
    ("stars int: 1|2|3", {"stars": {**I, "enum": [1, 2, 3]}}),
    ("p float: 0.5|1", {"p": {**F, "enum": [0.5, 1.0]}}),
    ("""tone: "very good"|'so so'|bad""", {"tone": {**S, "enum": ["very good", "so so", "bad"]}}),
    ("ok bool, n str", {"ok": B, "n": S}),
    ("tags list, ns list[int]", {"tags": {"type": "array", "items": S}, "ns": {"type": "array", "items": I}}),
    ("colours list: red|green the ones seen",
     {"colours": {"type": "array", "items": {**S, "enum": ["red", "green"]}, "description": "the ones seen"}}),
    ("a\nb int: commas, kept\n\n", {"a": S, "b": {**I, "description": "commas, kept"}}),
    ("snake_case, kebab-name", {"snake_case": S, "kebab-name": S}),
])
def test_concise_grammar(spec, properties):
    assert parse(spec) == {"type": "object", "properties": properties}


@pytest.mark.parametrize("spec, message", [
    ("", "the spec is empty"),
    (" , ,", "the spec is empty"),
    ("age integer", "field 'age' has unknown type 'integer'; types: str, int"),
    ("xs list[dict]", "unknown type 'list[dict]'"),
    ("a b c", "'a b c' is not a field"),
    ("2x int", "is not a field"),
    ("score float: 0 to 1, one | two", "'one | two' is not a field"),  # enums go after a colon
    ("a, a int", "field 'a' is named twice"),
    ("n int: 1|two", "field 'n': 'two' is not a int value"),
    ("ok bool: true|false", "field 'ok': allowed values are for str, int and float"),
])
def test_malformed_specs_are_one_clear_line(spec, message):
    with pytest.raises(ConfigError) as e:
        load(spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_strict_requires_every_property_and_forbids_others_at_every_depth():
    loose = {"type": "object", "title": "T", "properties": {
        "a": {"type": "string", "default": "x"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"b": I}}},
        "either": {"anyOf": [{"$ref": "#/$defs/D"}, {"type": "null"}]},
        "enum_named_properties": {"type": "string", "enum": ["properties", "items"]}},
        "required": ["a"], "$defs": {"D": {"type": "object", "properties": {"c": B, "d": S}}}}
    out = strict(loose)
    assert out["required"] == ["a", "items", "either", "enum_named_properties"]
    assert out["additionalProperties"] is False and "default" not in out["properties"]["a"]
    inner = out["properties"]["items"]["items"]
    assert inner["required"] == ["b"] and inner["additionalProperties"] is False
    assert out["$defs"]["D"] == {"type": "object", "properties": {"c": B, "d": S},
                                 "required": ["c", "d"], "additionalProperties": False}
    assert out["properties"]["enum_named_properties"]["enum"] == ["properties", "items"]  # data, not schema
    assert loose["required"] == ["a"] and "default" in loose["properties"]["a"]  # the input is not changed


def test_request_parts_name_keys_types_and_allowed_values():
    s = load("sentiment: positive|negative, confidence float, n int, ok bool, tags list, why: because")
    fmt = s.response_format()
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "answer" and fmt["json_schema"]["schema"] is s.json_schema
    assert s.instruction() == (
        'Answer with only a JSON object with the keys "sentiment" (one of "positive", "negative"), '
        '"confidence" (a number such as 0.5), "n" (a whole number such as 3), "ok" (true or false), '
        '"tags" (a list, each a string), "why" (a string).')


class Mood(str, Enum):
    happy = "happy"
    sad = "sad"


class Place(BaseModel):
    city: str


class Review(BaseModel):
    mood: Mood
    label: Literal["a", "b"] = "a"
    n: int | None = None
    place: Place = Field(description="where")


def test_pydantic_model_schema_is_strict_and_answers_are_instances():
    s = load(Review)
    assert s.name == "Review" and s.model is Review
    assert s.json_schema["required"] == ["mood", "label", "n", "place"]
    assert s.json_schema["$defs"]["Place"]["additionalProperties"] is False
    assert '"mood" (one of "happy", "sad")' in s.instruction()
    assert '"n" (a whole number such as 3, or null)' in s.instruction()
    answer = s.validate('{"mood": "sad", "label": "b", "n": null, "place": {"city": "Oslo"}}')
    assert isinstance(answer, Review) and answer.mood is Mood.sad and answer.place.city == "Oslo"
    with pytest.raises(SchemaMismatch, match="mood: Input should be 'happy' or 'sad'"):
        s.validate('{"mood": "glad", "label": "a", "n": 1, "place": {"city": "x"}}')


@pytest.mark.parametrize("answer, message", [
    ('{"label": "maybe", "n": 1}', "label: 'maybe' is not one of ['yes', 'no']"),
    ('{"label": "yes"}', "'n' is a required property"),
    ('{"label": "yes", "n": 1.5}', "n: 1.5 is not of type 'integer'"),
    ('{"label": "yes", "n": 1, "extra": 0}', "Additional properties are not allowed"),
    ("yes", "not JSON: 'yes'"),
    ("[]", "is not of type 'object'"),
])
def test_answers_that_do_not_match_say_where(answer, message):
    s = load("label: yes|no, n int")
    assert s.validate('{"label": "no", "n": 3}') == {"label": "no", "n": 3}
    with pytest.raises(SchemaMismatch) as e:
        s.validate(answer)
    assert message in str(e.value)


def test_json_schema_dicts_and_bad_values():
    s = load({"title": "My answer!", "type": "object", "properties": {"x": I}})
    assert s.name == "My_answer" and s.json_schema["required"] == ["x"]
    assert load(s) is s
    for bad, message in [({"type": "array"}, "must be an object with properties"),
                         (RootModel[list[int]], "must be an object with properties"),
                         ({"type": "object", "properties": {"x": {"type": "integr"}}}, "not a valid JSON schema"),
                         (42, "got int"), (Place(city="x"), "got Place"), (str, "got type")]:
        with pytest.raises(ConfigError, match=message):
            load(bad)


def test_lookup_takes_a_notebook_variable_when_there_is_one():
    ns = {"Review": Review, "spec": "label: yes|no"}
    assert lookup("Review", ns) is Review and lookup(" spec ", ns) == "label: yes|no"
    assert lookup("label", ns) == "label" and lookup("a, b", ns) == "a, b" and lookup(None, ns) is None
    with pytest.raises(ConfigError, match="the notebook variable n is of type int, not a pydantic model class"):
        lookup("n", {"n": 5})


def test_typed_columns():
    s = load("sentiment: positive|negative|mixed, confidence float, n int, ok bool, tags list, why")
    answers = [{"sentiment": "mixed", "confidence": 0.5, "n": 2, "ok": True, "tags": ["a"], "why": "x"}, None]
    df = columns(s, answers, pd.Index(["r1", "r2"]))
    assert {c: str(t) for c, t in df.dtypes.items() if c != "why"} == {
        "sentiment": "category", "confidence": "float64", "n": "Int64", "ok": "boolean", "tags": "object"}
    assert list(df["sentiment"].cat.categories) == ["positive", "negative", "mixed"]
    assert df.loc["r1", "n"] == 2 and df.loc["r2", "n"] is pd.NA and pd.isna(df.loc["r2", "confidence"])
    typed = columns(load(Review), [Review(mood="sad", n=None, place=Place(city="x"))])
    assert list(typed["mood"].cat.categories) == ["happy", "sad"] and typed.loc[0, "mood"] == "sad"
    assert str(typed["n"].dtype) == "Int64" and typed.loc[0, "place"] == {"city": "x"}


@pytest.mark.parametrize("spec", ["label: yes|no|maybe, score float, n int, ok bool, tags list[int], why",
                                  Review])
def test_practice_server_answers_conform_and_depend_on_the_prompt(spec):
    s = load(spec)
    answers = [json.dumps(conforming(s.json_schema, f"prompt {i}")) for i in range(12)]
    for a in answers:
        s.validate(a)  # raises if it does not conform
    assert answers[0] == json.dumps(conforming(s.json_schema, "prompt 0"))
    assert len(set(answers)) > 1


def test_schema_with_json_is_one_line(server):
    with pytest.raises(ConfigError, match="--schema and --json together"):
        chatmagic.chat_many(["q"], base_url=server.base_url, schema="a", json=True)
    assert server.stats.requests == 0


def test_python_api_schema_values_and_request(server):
    rs = chatmagic.chat_many(["one", "two [[badschema:1]]", "three [[badschema]]"], base_url=server.base_url,
                             schema="label: yes|no, n int", system="Be brief.", progress=False)
    assert [r.status for r in rs] == ["ok", "ok", "error"]
    assert isinstance(rs[0].data, dict) and rs[0].data["label"] in ("yes", "no") and rs.values()[2] is None
    assert rs[2].error.startswith("200 schema_mismatch: does not match the schema: ")
    assert rs[2].text == '{"not_in_schema": "three"}' and rs[2].attempts == 2 and rs.retries == 2
    assert "1 failed (1 200 schema_mismatch)" in rs.summary()
    cut = chatmagic.chat_many(["x [[badjson]] [[finish:length]]"], base_url=server.base_url, schema="a",
                              progress=False, retries=0)
    assert cut[0].error == ("200 schema_mismatch: does not match the schema: not JSON: 'not json {' "
                            "(cut off at max_tokens)")
    assert isinstance(rs.schema, Schema) and str(rs.to_pandas()["n"].dtype) == "Int64"


class Recording(FakeOpenAI):
    """The practice server, keeping each request body."""

    def completion(self, body, *args):
        self.bodies.append(body)
        return super().completion(body, *args)


def test_the_request_carries_the_strict_schema_and_the_instruction_after_the_system_prompt():
    with Recording() as srv:
        srv.bodies = []
        chatmagic.chat_many(["q"], base_url=srv.base_url, schema="label: yes|no", system="Be brief.",
                            progress=False, cache=False)
    body, = srv.bodies
    assert body["response_format"] == load("label: yes|no").response_format()
    assert body["messages"] == [
        {"role": "system", "content": 'Be brief.\n\nAnswer with only a JSON object with the keys "label" '
                                      '(one of "yes", "no").'},
        {"role": "user", "content": "q"}]


def test_a_server_that_refuses_schemas_fails_the_prompt_with_its_message(server):
    server.schemas = False
    rs = chatmagic.chat_many(["q", "r"], base_url=server.base_url, schema="label: yes|no", progress=False)
    refused = ("400 invalid_request_error: Invalid parameter: 'response_format' of type 'json_schema' "
               "is not supported with this model.")
    assert [r.error for r in rs] == [refused] * 2
    assert "the server does not support schemas" in rs.summary() and server.stats.requests == 2
    server.schemas = True
    plain = chatmagic.chat_many(["q [[fail:400]]"], base_url=server.base_url, schema="a", progress=False)
    assert "does not support schemas" not in plain.summary()  # a 400 about something else


@pytest.mark.parametrize("error, refused", [
    (("400 invalid_request_error: Invalid parameter: 'response_format' of type 'json_schema' is not "
      "supported with this model."), True),
    ('400 None: response_format type must be one of "text" or "json_object"', True),
    (("400 invalid_request_error: Invalid schema for response_format 'answer': 'format' is not "
      "permitted"), False),
    ("400 context_length_exceeded: too long", False),
    ("500 server_error: json_schema not supported", False),
])
def test_which_failures_mean_the_server_does_not_support_schemas(error, refused):
    rs = Results([Result(0, "q", status="error", error=error)])
    rs.schema = load("a")
    assert ("the server does not support schemas" in rs.summary()) is refused


def test_a_mismatch_never_shows_the_key(server):
    key = "sk-test-" + "k" * 40
    rs = chatmagic.chat_many(["x [[badjsonkey]]"], base_url=server.base_url, api_key=key, schema="a",
                             progress=False)
    assert rs[0].error.startswith("200 schema_mismatch: does not match the schema: not JSON: 'sure: ***")
    assert key not in rs[0].error and key[:20] not in rs[0].error


def test_practice_server_command_line_can_refuse_schemas(server_process):
    rs = chatmagic.chat_many(["q"], base_url=server_process("--no-schemas"), schema="a", progress=False)
    assert rs[0].error.startswith("400 invalid_request_error: Invalid parameter: 'response_format'")


def test_without_jsonschema_a_spec_is_one_line_and_a_pydantic_model_still_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs jsonschema: pip install 'chatmagic\[schema\]'"):
        load("label: yes|no")
    assert load(Review).validate('{"mood": "sad", "label": "a", "n": 1, "place": {"city": "x"}}').n == 1
