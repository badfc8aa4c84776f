"""Prompts from data in a real kernel (ipykernel, the await path on its loop): templates over a
list, a Series and a DataFrame, --sep, --json, two models, a dry run."""

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
