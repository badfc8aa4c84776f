"""%%chatmany in terminal IPython (InteractiveShell): parsing, defaults, storage, errors."""

import pytest


def cell(ip, text):
    result = ip.run_cell(text)
    return result


def test_lines_become_prompts_in_order(ip, capsys):
    r = cell(ip, "%%chatmany -o answers -c 4\n  What is 1+1?  \n\n{\"json\": true}\nlast\n")
    assert r.success
    assert ip.user_ns["answers"] == ["echo: What is 1+1?", 'echo: {"json": true}', "echo: last"]
    out = capsys.readouterr().out
    assert "3/3 ok" in out and "-> answers" in out and out.count("\n") == 1


def test_default_variable_and_await_path(ip):
    assert ip.transform_cell("%%chatmany\nx\n").startswith("await ")
    assert cell(ip, "%%chatmany\nhello").success
    assert ip.user_ns["chatmany_results"] == ["echo: hello"]


def test_ordinary_cell_magic_path_when_autoawait_is_off(ip, server):
    ip.run_cell("%autoawait off")
    try:
        assert not ip.transform_cell("%%chatmany\nx\n").startswith("await ")
        assert cell(ip, "%%chatmany -o answers\none\ntwo").success
        assert ip.user_ns["answers"] == ["echo: one", "echo: two"]
    finally:
        ip.run_cell("%autoawait on")


def test_flags_reach_the_server(ip, server):
    cell(ip, "%%chatmany -o answers -m m2 --system 'be kind' --temperature 0.3 --max-tokens 9 "
             "-p seed=5 -p 'stop=[\"z\"]'\nhi")
    assert ip.user_ns["answers"] == ["echo: [system=be kind] hi"]
    assert server.stats.params == {"model": "m2", "temperature": 0.3, "max_tokens": 9, "seed": 5, "stop": ["z"]}


def test_config_defaults_and_flag_precedence(ip, server):
    server.latency = 0.05
    ip.run_cell("%config ChatMany.concurrency = 3")
    cell(ip, "%%chatmany\n" + "\n".join(f"p{i}" for i in range(12)))
    assert server.stats.peak_in_flight == 3
    server.reset_stats()
    cell(ip, "%%chatmany -c 5\n" + "\n".join(f"p{i}" for i in range(20)))
    assert server.stats.peak_in_flight == 5


def test_df_has_the_documented_columns(ip):
    cell(ip, "%%chatmany --df -o df\na\nb [[fail:400]]")
    df = ip.user_ns["df"]
    assert list(df.columns) == ["prompt", "response", "status", "error", "attempts", "latency_s",
                                "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
                                "reasoning_tokens", "cost", "finish_reason", "model", "refusal", "reasoning",
                                "request_id"]
    assert list(df["status"]) == ["ok", "error"] and df.loc[0, "response"] == "echo: a"
    assert df.loc[1, "error"].startswith("400")


def test_run_abort_stores_finished_answers_and_shows_one_line(ip, capsys):
    r = cell(ip, "%%chatmany -o answers -c 1\nfirst\nbad [[fail:401]]\nnever")
    assert not r.success and type(r.error_in_exec).__name__ == "RunAborted"
    assert ip.user_ns["answers"] == ["echo: first", None, None]
    captured = capsys.readouterr()
    assert "RunAborted: 401" in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("text, message", [
    ("%%chatmany\n\n   \n", "the cell has no prompts"),
    ("%%chatmany -c 0\nx", "concurrency must be at least 1"),
    ("%%chatmany -t -1\nx", "timeout must be positive"),
    ("%%chatmany -r -1\nx", "retries must be at least 0"),
    ("%%chatmany -o 2bad\nx", "is not a valid Python variable name"),
    ("%%chatmany -o class\nx", "is not a valid Python variable name"),
    ("%%chatmany -p seed\nx", "expected KEY=JSON"),
    ("%%chatmany --base-url ftp://x\nx", "base URL must start with http"),
    ("%%chatmany --bogus 1\nx", "unrecognized arguments: --bogus; %%chatmany? lists the flags"),
    ("%%chatmany --concurency 4\nx", "unrecognized arguments: --concurency; did you mean --concurrency?"),
    ("%%chatmany --max_tokens=5\nx", "unrecognized arguments: --max_tokens; did you mean --max-tokens?"),
    ("%%chatmany -m a -z\nx", "unrecognized arguments: -z"),
    ("%%chatmany hello\nx", "unexpected argument 'hello' (prompts go on the lines below"),
    ("%%chatmany -c many\nx", "invalid int value"),
])
def test_bad_input_is_one_line_and_sends_nothing(ip, server, capsys, text, message):
    r = cell(ip, text)
    assert not r.success
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert message in shown and "Traceback" not in shown
    assert server.stats.requests == 0


def test_a_dry_run_needs_no_key_and_the_missing_key_names_the_local_model(ip, server, capsys):
    remote = "--base-url https://api.example.com/v1"  # nothing is sent to it: no key, or a dry run
    assert cell(ip, f"%%chatmany --dry-run {remote}\nhello").success
    assert "dry run, nothing sent: 1 prompt × 1 model = 1 request" in capsys.readouterr().out
    r = cell(ip, f"%%chatmany {remote}\nhello")
    assert not r.success and "%chatmany_local" in str(r.error_in_exec)
    assert str(r.error_in_exec).startswith("no API key: set $OPENAI_API_KEY")
    assert server.stats.requests == 0


def test_help_starts_with_the_usage_not_rst(ip):
    shown = ip.object_inspect_mime("%%chatmany")["text/plain"]
    body = shown.split("Docstring:", 1)[1].split("\n", 1)[1]
    assert body.startswith("%%chatmany [-o NAME] [-m NAME]") and "::" not in body
    assert "\n           [--system TEXT]" in body  # continuation lines aligned under the first flag


def test_one_cache_connection_per_cell_for_several_models(ip, server, monkeypatch):
    from chatmagic.core.cache import Cache
    opened = []
    real_init = Cache.__init__

    def counting_init(self, *args, **kwargs):
        opened.append(1)
        real_init(self, *args, **kwargs)
    monkeypatch.setattr(Cache, "__init__", counting_init)
    assert cell(ip, "%%chatmany -o answers -m m1,m2,m3\nhi\nthere").success
    assert len(opened) == 1 and server.stats.requests == 6
    assert cell(ip, "%%chatmany -o answers -m m1,m2,m3\nhi\nthere").success
    assert len(opened) == 2 and server.stats.requests == 6  # the second run: every answer from the cache


def test_a_model_the_server_ignored_is_said_once_in_the_summary(ip, capsys):
    from chatmagic.practice.server import FakeOpenAI
    with FakeOpenAI(answer_model="gemma3-270m") as other:  # answers as itself, like llama.cpp
        assert cell(ip, f"%%chatmany -o answers -m no-such-model --base-url {other.base_url}\na\nb").success
        assert cell(ip, f"%%chatmany -o answers -m gemma3-270m --base-url {other.base_url}\nc").success
    first, second = capsys.readouterr().out.strip().splitlines()
    assert first.count("gemma3-270m") == 1 and "2/2 ok, answered by gemma3-270m, not no-such-model, " in first
    assert "answered by" not in second


def test_a_dated_version_of_the_model_asked_for_is_the_same_model():
    from chatmagic.results import Result, Results
    results = Results([Result(0, "p", status="ok", model="gpt-4o-mini-2024-07-18")])
    results.model = "gpt-4o-mini"
    assert "answered by" not in results.summary()
    results.model = "gpt-4o"  # a prefix, but gpt-4o-mini is another model
    assert "answered by gpt-4o-mini-2024-07-18, not gpt-4o" in results.summary()
