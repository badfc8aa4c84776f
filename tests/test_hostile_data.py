"""Hostile answer *data* from the practice server on 127.0.0.1 (issue 21, rows 6, 7, 9-12, 15):
the key echoed into every field, structured answers nested thousands deep, schemas that loop or
point where nothing can be, field names that collide, lone surrogates."""

import pytest
from test_hostile import KEY, run, shows_key  # the same key, run and check as the first round's

import chatmagic
from chatmagic.core.cache import DB_NAME, default_dir


def cache_bytes() -> bytes:
    """Every byte of the answer cache's files (the database and its write-ahead log)."""
    return b"".join(p.read_bytes() for p in default_dir().glob(DB_NAME + "*"))


# --- row 6: the key echoed into model, finish_reason, the request id, the text -----------------

def test_the_key_echoed_into_every_answer_field_is_never_kept(server):
    prompts = ["tell [[keyfields]]", "fine"]
    first = run(server, prompts)
    echoed = first[0]
    assert echoed.status == "ok" and server.stats.requests == 2
    # the fields did carry the key, now scrubbed: the rest of each field is kept
    assert echoed.model.endswith("-" + "x" * 100 + "***") and echoed.finish_reason == "stop:***"
    assert echoed.text.endswith("(you sent ***)") and echoed.reasoning == "the key was ***"
    assert echoed.request_id.startswith("req_xxx")  # cut to 200 characters after scrubbing, not before
    shown = [echoed.model, echoed.finish_reason, echoed.text, echoed.reasoning, echoed.request_id,
             first.summary(), repr(first), first._repr_html_(), first.to_pandas().to_csv()]
    assert not any(shows_key(s) for s in shown)
    assert "answered by" in first.summary()  # the summary names the (scrubbed) model
    stored = cache_bytes()
    assert b"you sent ***" in stored and not shows_key(stored.decode("utf-8", "replace"))
    again = run(server, prompts)
    assert all(r.cached for r in again) and again.texts() == first.texts()
    assert not shows_key(repr(again)) and again[0].model == echoed.model


def test_the_key_echoed_into_an_anthropic_message_is_scrubbed_before_the_dialect_cuts_a_field():
    from chatmagic.practice.anthropic import FakeAnthropic
    with FakeAnthropic(api_key=KEY) as srv:
        results = chatmagic.chat_many(["tell [[keyfields]]", "fine"], provider="anthropic", model="claude-haiku-4-5",
                                      base_url=srv.base_url, api_key=KEY, progress=False)
    echoed = results[0]
    assert echoed.status == "ok" and echoed.text.endswith("(you sent ***)")
    assert echoed.model.endswith("-" + "x" * 100 + "***")  # its model is kept to 200 characters: scrubbed before that
    assert echoed.request_id.endswith("x***")
    assert not any(shows_key(s) for s in (repr(results), results.to_pandas().to_csv(), echoed.finish_reason,
                                          cache_bytes().decode("utf-8", "replace")))



def test_the_key_echoed_into_a_batch_result_line_is_never_kept(server, monkeypatch):
    from chatmagic.batch import run as batchmod
    monkeypatch.setattr(batchmod, "POLL_FIRST", 0.01)
    server.batch.reset()
    results = run(server, ["tell [[keyfields]]", "fine"], batch=True)
    echoed = results[0]
    assert echoed.status == "ok" and echoed.text.endswith("(you sent ***)")
    assert echoed.model.endswith("x" * 100 + "***") and echoed.finish_reason == "stop:***"
    assert echoed.request_id.startswith("req_xxx")  # the line's own request id, cut after it was scrubbed
    shown = [echoed.model, echoed.request_id, echoed.reasoning, repr(results), results.to_pandas().to_csv(),
             cache_bytes().decode("utf-8", "replace")]
    assert not any(shows_key(s) for s in shown)

# --- row 7, 10: structured answers nested thousands deep fail their prompt, never the run ------

GOOD = [f"good {i} [[json]]" for i in range(20)]


def test_a_json_answer_2000_deep_fails_its_prompt_and_the_20_good_answers_are_kept(server):
    results = run(server, [*GOOD[:10], "deep [[deep:2000]]", *GOOD[10:]], json=True)
    deep = results[10]
    assert len(deep.text) > 4000 and deep.status == "error" and deep.attempts == 2  # retried once, as any bad JSON
    assert deep.error.startswith("200 invalid_json: not valid JSON: nested deeper than 128 levels: '{\"deep\": [[[")
    good = [r for i, r in enumerate(results) if i != 10]
    assert [r.data for r in good] == [{"echo": p.removesuffix(" [[json]]")} for p in GOOD]
    assert results.summary().startswith("20/21 ok, 1 failed (1 200 invalid_json)") and "good 4" in repr(results)


def test_a_deep_answer_in_the_cache_is_a_miss_under_json_not_a_crash(server):
    prompts = [*GOOD, "deep [[deep:2000]]"]
    # the same request body as json=True sends, read as text: the deep answer is cached as it is
    first = run(server, prompts, params={"response_format": {"type": "json_object"}})
    assert first[20].status == "ok" and first[20].text.startswith('{"deep": [[[')
    again = run(server, prompts, json=True)
    assert all(r.cached and r.ok for r in again[:20]) and again[20].cached is False
    assert again[20].status == "error" and "nested deeper than 128 levels" in again[20].error
    third = run(server, prompts, json=True)  # still no crash, and still only that prompt is asked again
    assert third.texts()[:20] == first.texts()[:20] and server.stats.attempts[prompts[20]] == 5


SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}, "payload": {}}}  # payload: any value


@pytest.mark.parametrize("depth", [200, 2000, 5000])
def test_an_any_field_answered_thousands_deep_fails_its_prompt_with_schema_mismatch(server, depth):
    prompts = [f"fine {i}" for i in range(20)] + [f"deep [[deep:{depth}]]"]
    results = run(server, prompts, schema=SCHEMA)
    deep = results[20]
    assert deep.status == "error" and deep.error == ("200 schema_mismatch: does not match the schema: "
                                                     "nested deeper than 128 levels")
    assert [r.data["label"] for r in results[:20]] == [f"fine {i}" for i in range(20)]
    frame = results.to_pandas()
    assert frame["status"].tolist() == ["ok"] * 20 + ["error"] and frame["payload"].isna().tolist()[20]


def test_a_pydantic_model_with_an_any_field_answered_deep_fails_its_prompt(server):
    from typing import Any

    from pydantic import BaseModel

    class Answer(BaseModel):
        label: str
        payload: Any

    results = run(server, ["fine", "deep [[deep:5000]]"], schema=Answer)
    assert results[0].data.label == "fine"
    assert results[1].status == "error" and "nested deeper than 128 levels" in results[1].error


def test_an_answer_at_the_depth_limit_is_read():
    from chatmagic.core.jsonparse import MAX_DEPTH, TooDeep, loads
    from chatmagic.core.schema import load
    deep = '{"label": "x", "payload": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    assert load(SCHEMA).validate(deep)["label"] == "x"
    assert loads('["[[[[[[", "]]]]"]') == ["[[[[[[", "]]]]"]  # brackets in strings do not nest
    with pytest.raises(TooDeep):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


@pytest.mark.parametrize("inner, deep", [
    ('"' + "[" * 300 + '"', False),                 # brackets in a string
    (r'"\\", "' + "{" * 300 + '"', False),           # an escaped backslash ends its string
    (r'"\"' + "[" * 300 + '"', False),              # an escaped quote does not end it
    (r'"\"]]]]", ' + "[" * 200 + "]" * 200, True),  # closing brackets in a string hide nothing
    (", ".join(["[[[]]]"] * 500), False),            # many brackets, shallow
])
def test_the_depth_count_reads_strings_and_escapes_as_json_does(inner, deep):
    import json

    from chatmagic.core.jsonparse import MAX_DEPTH, too_deep
    text = "[" + inner + "]"
    depth = json.loads(text)  # the truth, from the parser itself (these stay within its stack)
    assert depth is not None and too_deep(text) is deep
    assert too_deep(text, limit=MAX_DEPTH) is deep


# --- rows 9, 11: $ref loops and pointers that cannot work are one line before anything is sent ---

def _with(field: dict, **defs) -> dict:
    return {"type": "object", "properties": {"x": field}, "$defs": defs}


@pytest.mark.parametrize("schema, message", [
    (_with({"$ref": "#/$defs/a"}, a={"$ref": "#/$defs/b"}, b={"$ref": "#/$defs/a"}),
     r"\$ref loop #/\$defs/(a|b) -> #/\$defs/(a|b) -> #/\$defs/(a|b): a reference must reach"),
    (_with({"$ref": "#/$defs/a"}, a={"$ref": "#/$defs/a"}), r"\$ref loop #/\$defs/a -> #/\$defs/a"),
    ({"type": "object", "properties": {"x": {"type": "string"}}, "allOf": [{"$ref": "#"}]},
     r"\$ref loop # -> #/allOf/0 -> #"),
    (_with({"$ref": "#/$defs/gone"}), r"\$ref '#/\$defs/gone' points to nothing in the schema"),
    (_with({"$ref": "#/$defs/u/anyOf/7"}, u={"anyOf": [{"type": "string"}]}), "points to nothing"),
    (_with({"$ref": "#/$defs/u/anyOf"}, u={"anyOf": [{"type": "string"}]}), "points to a list, not a schema"),
    (_with({"$ref": "https://example.com/u.json"}), r"\$ref 'https://example.com/u.json' is not supported"),
    (_with({"$ref": "#anchor"}), "only a pointer into the schema itself"),
])
def test_a_schema_whose_ref_cannot_work_is_one_line_and_nothing_is_sent(server, schema, message):
    with pytest.raises(chatmagic.ConfigError, match=message) as caught:
        run(server, ["a", "b"], schema=schema)
    assert "\n" not in str(caught.value) and server.stats.requests == 0


def test_a_schema_that_holds_itself_is_one_line():
    looped = {"type": "object", "properties": {}}
    looped["properties"]["self"] = looped
    with pytest.raises(chatmagic.ConfigError, match="nested too deep"):
        chatmagic.chat_many(["a"], schema=looped, base_url="http://127.0.0.1:9/v1", api_key="k", progress=False)


def test_a_ref_into_a_list_is_followed(server):
    schema = _with({"$ref": "#/$defs/u/anyOf/1"}, u={"anyOf": [{"type": "string"}, {"type": "integer"}]})
    results = run(server, ["a", "b"], schema=schema)
    assert all(isinstance(r.data["x"], int) for r in results)
    assert str(results.to_pandas()["x"].dtype) == "Int64"  # the typed column follows the pointer too


def test_a_recursive_schema_that_steps_into_the_answer_is_fine(server):
    node = {"type": "object", "properties": {"name": {"type": "string"},
                                             "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}
    schema = {"type": "object", "properties": {"tree": {"$ref": "#/$defs/node"}}, "$defs": {"node": node}}
    results = run(server, ["t"], schema=schema)
    assert results[0].status == "ok" and "name" in results[0].data["tree"]


# --- row 15: an answer with a lone surrogate is cached and read back equal ---------------------

def test_an_answer_with_a_lone_surrogate_is_cached_and_read_back_equal(server):
    prompts = ["odd [[surrogate]]", "plain", "ünïcode ✓"]
    first = run(server, prompts)
    assert first[0].text.startswith("lone \ud800 surrogate: echo: odd") and server.stats.requests == 3
    again = run(server, prompts)  # a new run opens the file afresh: the rows come from disk
    assert all(r.cached for r in again) and again.texts() == first.texts()
    assert server.stats.requests == 3  # not sent again
    import sqlite3
    with sqlite3.connect(default_dir() / DB_NAME) as db:  # real text stays TEXT; only the odd one is a BLOB
        kinds = sorted(k for (k,) in db.execute("SELECT typeof(text) FROM answers"))
    assert kinds == ["blob", "text", "text"]


# --- row 12: column names from a schema never repeat, nor take the record's own ------------------

def test_schema_fields_named_like_the_records_columns_get_unique_names(server, ip):
    spec = "status, status_json, error int, response_json"
    frame = run(server, ["a", "b [[badschema]]"], schema=spec).to_pandas()
    assert frame.columns.is_unique
    assert frame.columns[-4:].tolist() == ["status_json2", "status_json", "error_json", "response_json"]
    assert frame["status"].tolist() == ["ok", "error"] and frame.loc[0, "status_json2"] == "a"
    ip.run_cell(f"%%chatmany --df -o one --schema '{spec}'\na\nb")
    ip.run_cell(f"%%chatmany --df -o two -m m1,m2 --schema '{spec}'\na\nb")
    one, two = ip.user_ns["one"], ip.user_ns["two"]
    assert one.columns.is_unique and one.columns.tolist() == frame.columns.tolist()
    assert two.columns.is_unique and {"status_m1", "status_json2_m1", "status_json_m1", "error_json_m2"} <= set(two)
    assert two["status_json2_m1"].tolist() == ["a", "b"] and two["status_m1"].tolist() == ["ok", "ok"]


# --- in a real kernel: a hostile answer fails its prompt, the cell and the next one run ----------

@pytest.mark.kernel
def test_in_a_kernel_deep_answers_bad_refs_and_surrogates_fail_only_their_prompt_or_cell(server):
    import nbformat
    from nbclient import NotebookClient
    good = "\n".join(GOOD)
    loop = {"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/a"}}}
    cells = ["%load_ext chatmagic\n%config ChatMany.quiet = True",
             f"%%chatmany --json -o vals --base-url {server.base_url}\n{good}\ndeep [[deep:2000]]",
             "print(sum(v is not None for v in vals), vals[20], vals[0])",
             f"loop = {loop!r}",
             f"%%chatmany --schema loop -o never --base-url {server.base_url}\na",
             f"%%chatmany -o odd --base-url {server.base_url}\nodd [[surrogate]]",
             "print(repr(odd[0][:8]), 'never' in dir())",
             f"import chatmagic\nchatmagic.chat_many(['odd [[surrogate]]', 'plain'], base_url={server.base_url!r})"]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True).execute()
    out = ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in nb.cells]
    assert out[2].strip() == "20 None {'echo': 'good 0'}"  # the run ended, its 20 good answers kept
    error = next(o for o in nb.cells[4].outputs if o.output_type == "error")
    assert len(error.traceback) == 1 and error.traceback[0].startswith("ConfigError: schema: $ref loop #/$defs/a")
    assert out[6].strip() == "'lone \\ud800 s' False"
    shown = next(o for o in nb.cells[7].outputs if o.output_type == "execute_result")["data"]
    assert "lone \ufffd surrogate" in shown["text/html"] and "2/2 ok (1 from cache)" in shown["text/plain"]
    assert server.stats.attempts["a"] == 0


@pytest.mark.parametrize("depth", [500, 5000])  # the answer's check refuses it; its body is too deep to parse
def test_an_anthropic_tool_answer_nested_deep_fails_its_prompt_and_the_run_goes_on(depth):
    from chatmagic.practice.anthropic import FakeAnthropic
    prompts = [f"fine {i}" for i in range(20)] + [f"deep [[deep:{depth}]]"]
    with FakeAnthropic(api_key=KEY) as srv:
        results = chatmagic.chat_many(prompts, provider="anthropic", model="claude-haiku-4-5", schema=SCHEMA,
                                      base_url=srv.base_url, api_key=KEY, progress=False)
    assert [r.data["label"] for r in results[:20]] == [f"fine {i}" for i in range(20)]
    deep = results[20]
    assert deep.status == "error" and deep.data is None
    if depth < 1000:  # parsed, then refused by the answer's check, retried once as any mismatch
        assert deep.error.endswith("schema_mismatch: does not match the schema: nested deeper than 128 levels")
        assert deep.attempts == 2
    else:  # the body itself cannot be parsed: the same every time, so it fails at once
        assert deep.error == "200 too_deep: not a completion: the answer is nested too deep to read"
        assert deep.attempts == 1


def test_boolean_subschemas_are_read_as_any_value(server):
    schema = {"type": "object", "properties": {"a": {"anyOf": [True, {"type": "null"}]},
                                               "b": {"type": "array", "items": True}}}
    results = run(server, ["x"], schema=schema)
    assert results[0].status == "ok" and set(results[0].data) == {"a", "b"}
    assert chatmagic.core.schema.load(schema).instruction().endswith(
        '"a" (any JSON value, or null), "b" (a list, each any JSON value).')
