"""Prompts from data in a real kernel (ipykernel, the await path on its loop): templates over a
list, a Series and a DataFrame, --sep, --json, two models, a dry run, --schema."""

import json
import os

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def kernel(_server, tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CHATMAGIC_MODEL")}
    env["CHATMAGIC_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        cell(kc, "%load_ext chatmagic\nimport json\nimport pandas as pd")
        cell(kc, f"%config ChatMany.base_url = {_server.base_url!r}\n%config ChatMany.quiet = True")
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def cell(kc, code):
    """Run a cell; return (reply content, everything it printed)."""
    out = []

    def hook(msg):
        content = msg["content"]
        out.append(content.get("text", "") + "".join(content.get("traceback", [])))
    reply = kc.execute_interactive(code, timeout=60, output_hook=hook)
    return reply["content"], "".join(out)


def value(kc, expr):
    reply, printed = cell(kc, f"print(json.dumps({expr}, default=str))")
    assert reply["status"] == "ok", printed
    return json.loads(printed)


def test_templates_over_list_series_and_dataframe(kernel, server):
    cell(kernel, "xs = ['cat', 'dog']\n"
                 "s = pd.Series(['red', 'blue'], index=['x', 'y'])\n"
                 "people = pd.DataFrame({'name': ['ann', 'bob'], 'age': [3, 4]}, index=[10, 7])")
    reply, _ = cell(kernel, '%%chatmany --over xs -o a\n{index}: {item} {{"k": 1}}')
    assert reply["status"] == "ok"
    assert value(kernel, "a") == ['echo: 0: cat {"k": 1}', 'echo: 1: dog {"k": 1}']
    cell(kernel, "%%chatmany --over s --df -o b\n{index} is {item}")
    assert value(kernel, "list(b.index)") == ["x", "y"]
    assert value(kernel, "list(b.response)") == ["echo: x is red", "echo: y is blue"]
    cell(kernel, "%%chatmany --over people --df -o c\n{name} is {age} (row {index})")
    assert value(kernel, "list(c.index)") == [10, 7]
    assert value(kernel, "[list(c.columns[:2]), list(people.columns)]") == [["name", "age"], ["name", "age"]]
    assert value(kernel, "list(c.response)") == ["echo: ann is 3 (row 10)", "echo: bob is 4 (row 7)"]
    assert server.stats.requests == 6


def test_missing_column_names_the_columns_and_sends_nothing(kernel, server):
    cell(kernel, "people = pd.DataFrame({'name': ['ann'], 'age': [3]})")
    reply, printed = cell(kernel, "%%chatmany --over people\n{colour}")
    assert reply["status"] == "error" and reply["ename"] == "ConfigError"
    assert "template field {colour} is not a column; columns: name, age" in printed
    assert "Traceback" not in printed and server.stats.requests == 0


def test_sep_json_and_two_models(kernel, server):
    server.unknown_models = {"ghost"}
    cell(kernel, "%%chatmany --sep=--- -o d\nline one\nline two\n---\nsecond")
    assert value(kernel, "d") == ["echo: line one\nline two", "echo: second"]
    cell(kernel, "%%chatmany --json -o j\nok [[json]]\nbad [[badjson]]")
    assert value(kernel, "j") == [{"echo": "ok"}, None]
    reply, printed = cell(kernel, "%%chatmany -m real,ghost -o m\nq")
    assert reply["status"] == "error" and "model ghost stopped (404" in printed
    assert value(kernel, "m") == [{"real": "echo: q", "ghost": None}]


def test_dry_run_sends_nothing(kernel, server):
    reply, printed = cell(kernel, "%%chatmany --over xs --dry-run\nSay {item}")
    assert reply["status"] == "ok" and "2 prompts × 1 model = 2 requests" in printed and "Say cat" in printed
    assert server.stats.requests == 0


SPEC = "sentiment: positive|negative|mixed, stars int, confidence float"


def test_schema_inline_into_typed_columns_joined_onto_the_frame(kernel, server):
    cell(kernel, "reviews = pd.DataFrame({'review': ['Great.', 'Broke.', 'Fine.']}, index=['r1', 'r2', 'r3'])")
    reply, printed = cell(kernel, f"%%chatmany --over reviews --df -o t --schema '{SPEC}'\nClassify: {{review}}")
    assert reply["status"] == "ok" and "3/3 ok" in printed
    assert value(kernel, "{c: str(t[c].dtype) for c in ['sentiment', 'stars', 'confidence']}") == {
        "sentiment": "category", "stars": "Int64", "confidence": "float64"}
    assert value(kernel, "list(t.index)") == ["r1", "r2", "r3"]
    assert value(kernel, "list(t.columns[:2])") == ["review", "response"]
    assert value(kernel, "list(t.sentiment.cat.categories)") == ["positive", "negative", "mixed"]
    assert set(value(kernel, "list(t.sentiment)")) <= {"positive", "negative", "mixed"}
    assert value(kernel, "[json.loads(r) == {'sentiment': s, 'stars': n, 'confidence': c} for r, s, n, c in "
                         "zip(t.response, t.sentiment, t.stars, t.confidence)]") == [True] * 3
    reply, printed = cell(kernel, f"%%chatmany --over reviews --dry-run --schema '{SPEC}'\n{{review}}")
    assert '"required": ["sentiment", "stars", "confidence"], "additionalProperties": false' in printed
    assert '"sentiment" (one of "positive", "negative", "mixed")' in printed and server.stats.requests == 3


def test_schema_from_a_pydantic_model_variable(kernel, server):
    cell(kernel, "from typing import Literal\nfrom pydantic import BaseModel\n"
                 "class Label(BaseModel):\n    kind: Literal['bug', 'idea']\n    votes: int\n"
                 "%config ChatMany.schema = 'Label'")
    try:
        reply, printed = cell(kernel, "%%chatmany -o p\nfirst\nsecond")
        assert reply["status"] == "ok", printed
        assert value(kernel, "[type(x).__name__ for x in p]") == ["Label", "Label"]
        assert value(kernel, "[x.kind in ('bug', 'idea') and isinstance(x.votes, int) for x in p]") == [True, True]
        cell(kernel, "%%chatmany -o q --df\nfirst")
        assert value(kernel, "[str(q.kind.dtype), list(q.kind.cat.categories), str(q.votes.dtype)]") == [
            "category", ["bug", "idea"], "Int64"]
    finally:
        cell(kernel, "%config ChatMany.schema = None")
    assert server.stats.requests == 2  # the --df run came from the cache


def test_schema_mismatch_retried_once_then_failed_with_the_raw_text(kernel, server):
    reply, printed = cell(kernel, "%%chatmany --df -o b --schema 'label: yes|no'\n"
                                  "fine\nonce [[badschema:1]]\nalways [[badschema]]")
    assert reply["status"] == "ok" and "2/3 ok, 1 failed (1 200 schema_mismatch), 2 retries" in printed
    assert value(kernel, "list(b.status)") == ["ok", "ok", "error"]
    assert value(kernel, "b.response[2]") == '{"not_in_schema": "always"}'
    assert value(kernel, "b.error[2]").startswith("200 schema_mismatch: does not match the schema: ")
    assert value(kernel, "[bool(pd.isna(b.label[2])), int(b.attempts[2])]") == [True, 2]
    assert server.stats.attempts["always [[badschema]]"] == 2


def test_schema_with_two_models_gives_columns_per_model(kernel, server):
    reply, printed = cell(kernel, "%%chatmany -m m1,m2 --df -o mm --schema 'label: yes|no, n int'\none\ntwo")
    assert reply["status"] == "ok", printed
    assert value(kernel, "list(mm.columns)") == [
        "prompt", "response_m1", "status_m1", "error_m1", "label_m1", "n_m1",
        "response_m2", "status_m2", "error_m2", "label_m2", "n_m2"]
    assert value(kernel, "[str(mm.label_m1.dtype), str(mm.n_m2.dtype)]") == ["category", "Int64"]
    cell(kernel, "%%chatmany -m m1,m2 --df -o ms --schema 'status: yes|no'\none")
    assert value(kernel, "[list(ms.columns[1:5]), ms.status_m1[0], ms.status_json_m1[0] in ('yes', 'no')]") == [
        ["response_m1", "status_m1", "error_m1", "status_json_m1"], "ok", True]
    cell(kernel, "%%chatmany -m m1,m2 -o ml --schema 'label: yes|no, n int'\none")
    assert value(kernel, "[sorted(ml[0]), sorted(ml[0]['m1'])]") == [["m1", "m2"], ["label", "n"]]


def test_schema_bad_input_is_one_line_and_sends_nothing(kernel, server):
    cell(kernel, "not_a_schema = 42")
    for line, message in [("--schema 'age integer'", "unknown type 'integer'"),
                          ("--schema not_a_schema",
                           "the notebook variable not_a_schema is of type int, not a pydantic"),
                          ("--schema label --json", "--schema and --json together")]:
        reply, printed = cell(kernel, f"%%chatmany {line}\nq")
        assert reply["status"] == "error" and reply["ename"] == "ConfigError" and message in printed
        assert "Traceback" not in printed
    assert server.stats.requests == 0
