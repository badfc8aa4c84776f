"""Prompts from data (--over, --sep), JSON answers, several models, dry runs."""

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell


@pytest.fixture
def ip(server, capsys):
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext chatmagic")
    shell.run_cell(f"%config ChatMany.base_url = {server.base_url!r}")
    shell.run_cell("%config ChatMany.quiet = True")
    capsys.readouterr()
    yield shell
    shell.run_cell("%config ChatMany.base_url = None")
    shell.run_cell("%config ChatMany.quiet = False")
    shell.run_cell("%config ChatMany.prices = None")
    shell.run_cell("%unload_ext chatmagic")


def test_over_a_list_with_item_index_and_escaped_braces(ip):
    ip.user_ns["things"] = ["cat", "dog"]
    assert ip.run_cell('%%chatmany --over things -o a\nItem {index}: {item} as {{"x": 1}}').success
    assert ip.user_ns["a"] == ['echo: Item 0: cat as {"x": 1}', 'echo: Item 1: dog as {"x": 1}']


def test_without_over_braces_are_literal(ip):
    ip.run_cell('%%chatmany -o a\n{"json": {item}}')
    assert ip.user_ns["a"] == ['echo: {"json": {item}}']


def test_over_a_series_keeps_its_labels_in_the_frame(ip):
    ip.user_ns["s"] = pd.Series(["red", "blue"], index=["x", "y"])
    ip.run_cell("%%chatmany --over s --df -o df\n{index} is {item}")
    df = ip.user_ns["df"]
    assert list(df.index) == ["x", "y"] and list(df["response"]) == ["echo: x is red", "echo: y is blue"]


def test_over_a_dataframe_joins_answers_onto_a_copy(ip):
    frame = pd.DataFrame({"name": ["ann", "bob"], "age": [3, 4]}, index=[10, 7])
    ip.user_ns["people"] = frame
    ip.run_cell("%%chatmany --over people --df -o df\n{name} is {age}\n(row {index})")
    df = ip.user_ns["df"]
    assert list(df.index) == [10, 7] and list(df["name"]) == ["ann", "bob"]
    assert list(df["response"]) == ["echo: ann is 3\n(row 10)", "echo: bob is 4\n(row 7)"]
    assert list(frame.columns) == ["name", "age"]  # the input is not modified


@pytest.mark.parametrize("setup, cell, message", [
    ({"people": pd.DataFrame({"name": ["a"]})}, "%%chatmany --over people\n{colour}",
     "template field {colour} is not a column; columns: name"),
    ({}, "%%chatmany --over nothing\n{item}", "--over nothing: no variable of that name"),
    ({"n": 5}, "%%chatmany --over n\n{item}", "must be a list, tuple, Series or DataFrame"),
    ({"xs": [1]}, "%%chatmany --over xs\n", "the cell is empty"),
    ({}, "%%chatmany -m a,,b\nx", "a model name is empty"),
])
def test_bad_data_input_is_one_line_and_sends_nothing(ip, server, capsys, setup, cell, message):
    ip.user_ns.update(setup)
    r = ip.run_cell(cell)
    shown = "".join(capsys.readouterr())
    assert not r.success and message in shown and "Traceback" not in shown
    assert server.stats.requests == 0


def test_sep_multiline_prompts(ip):
    ip.run_cell("%%chatmany --sep=--- -o a\nfirst line\nsecond line\n---\nanother\n---\n")
    assert ip.user_ns["a"] == ["echo: first line\nsecond line", "echo: another"]


def test_json_answers_parsed_invalid_json_is_a_failure_retried_once(ip, server):
    ip.run_cell("%%chatmany --json -o a\none [[json]]\ntwo [[badjson]]")
    assert ip.user_ns["a"] == [{"echo": "one"}, None]
    assert server.stats.attempts["two [[badjson]]"] == 2
    ip.run_cell("%%chatmany --json --df -o df --no-cache\none [[json]]\ntwo [[badjson]]")
    df = ip.user_ns["df"]
    assert df.loc[0, "echo"] == "one" and df.loc[1, "status"] == "error"
    assert df.loc[1, "error"].startswith("200 invalid_json") and df.loc[1, "response"] == "not json {"


def test_two_models_side_by_side_one_failing(ip, server, capsys):
    server.unknown_models = {"ghost"}
    r = ip.run_cell("%%chatmany -m real,ghost --df -o df\na\nb")
    assert not r.success
    shown = "".join(capsys.readouterr())
    assert "model ghost stopped (404 model_not_found" in shown and "Traceback" not in shown
    df = ip.user_ns["df"]
    assert list(df["response_real"]) == ["echo: a", "echo: b"]
    assert list(df["response_ghost"]) == [None, None] and set(df["status_ghost"]) <= {"error", "cancelled"}
    ip.run_cell("%%chatmany -m m1,m2 -o a\nq")
    assert ip.user_ns["a"] == [{"m1": "echo: q", "m2": "echo: q"}]


def test_dry_run_sends_nothing_and_estimates_cost(ip, server, capsys):
    ip.user_ns["xs"] = ["a", "b", "c"]
    ip.run_cell('%config ChatMany.prices = {"m1": [1.0, 2.0]}')
    capsys.readouterr()
    r = ip.run_cell("%%chatmany --over xs --dry-run -m m1,m2 --max-tokens 10 -o never\nSay {item}")
    out = capsys.readouterr().out
    assert r.success and server.stats.requests == 0 and "never" not in ip.user_ns
    assert "3 prompts × 2 models = 6 requests" in out and "Say a" in out and "price unknown for m2" in out


def test_summary_reports_cost_when_prices_are_set(ip, capsys):
    ip.run_cell('%config ChatMany.prices = {"gpt-4o-mini": [1000000, 0]}')
    capsys.readouterr()
    ip.run_cell("%%chatmany -o a\nhello")
    assert "$" in capsys.readouterr().out


def test_json_with_a_server_that_refuses_response_format_fails_with_its_message(ip, server):
    ip.run_cell("%%chatmany --json --df -o df\nq [[fail:400]]")
    df = ip.user_ns["df"]
    assert df.loc[0, "status"] == "error" and df.loc[0, "error"].startswith("400 invalid_request_error: ")
    assert server.stats.requests == 1  # a 400 is not retried
