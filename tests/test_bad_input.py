"""Bad input is one line (ConfigError) and nothing is sent, through the API and the magic."""

import math

import pytest

import chatmagic
from chatmagic import ConfigError
from chatmagic.core.cache import CacheWarning


def refused(server, prompts=("hi",), **options) -> str:
    with pytest.raises(ConfigError) as caught:
        chatmagic.chat_many(list(prompts), base_url=server.base_url, progress=False, **options)
    assert server.stats.requests == 0
    return str(caught.value)


@pytest.mark.parametrize("prompts", [["a", None], [None], ["a", 3, "b"]])
def test_a_prompt_that_is_not_a_string(server, prompts):
    assert "every prompt must be a string; prompt" in refused(server, prompts)


@pytest.mark.parametrize("name, value", [("temperature", math.nan), ("temperature", math.inf),
                                         ("timeout", math.inf), ("connect_timeout", math.inf),
                                         ("max_retry_wait", math.nan), ("rpm", math.inf)])
def test_non_finite_numbers(server, name, value):
    assert refused(server, **{name: value}) == f"{name} must be a finite number, got {value!r}"


@pytest.mark.parametrize("params, why", [({"seed": math.nan}, "must be plain JSON"),
                                         ({"stop": [math.inf]}, "must be plain JSON"),
                                         ({"x": object()}, "must be plain JSON"),
                                         ({"x": {1, 2}}, "must be plain JSON"),
                                         ({"model": "x"}, "set the model with -m"),
                                         ({"messages": []}, "prompts come from the cell")])
def test_params_that_cannot_be_sent(server, params, why):
    assert why in refused(server, params=params)


@pytest.mark.parametrize("name, value", [("system", 123), ("system", ["a"]), ("api_key_env", 5)])
def test_strings_that_are_not(server, name, value):
    assert f"{name} must be a string" in refused(server, **{name: value})


@pytest.mark.parametrize("flags, message", [
    ("--temperature nan", "temperature must be a finite number"),
    ("--temperature inf", "temperature must be a finite number"),
    ("-p seed=NaN", "param 'seed' must be plain JSON"),
    ("-t inf", "timeout must be a finite number"),
    ("-p 'model=\"x\"'", "param 'model' cannot be set"),
    ("-m a,b -p 'model=\"x\"'", "param 'model' cannot be set"),
    ("-p 'messages=[]'", "param 'messages' cannot be set"),
    ("--proxy ftp://p:1", "proxy: expected a proxy like http://host:port"),
])
def test_magic_flags_one_line_nothing_sent(ip, server, capsys, flags, message):
    result = ip.run_cell(f"%%chatmany {flags}\nhello\n")
    out = capsys.readouterr().out
    assert isinstance(result.error_in_exec, ConfigError) and message in out
    assert len(out.strip().splitlines()) == 1 and server.stats.requests == 0


def test_clear_removes_a_corrupt_cache_file_after_saying_so(ip, capsys, tmp_path):
    path = tmp_path / "cache" / "answers.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"this is not a database " * 100)
    ip.run_cell("%chatmany_cache clear")
    out = capsys.readouterr().out
    assert f"{path} was not a usable cache (file is not a database); removed it" in out
    assert "0 entries" in out
    ip.run_cell("%%chatmany -o answers\nhi\n")
    assert ip.user_ns["answers"] == ["echo: hi"]
    capsys.readouterr()
    ip.run_cell("%chatmany_cache")
    assert capsys.readouterr().out.startswith("1 entries")


def test_a_locked_or_unreadable_cache_is_never_removed(ip, capsys, tmp_path):
    path = tmp_path / "cache" / "answers.sqlite3"
    path.mkdir(parents=True)  # a folder where the file should be: not ours to delete
    with pytest.warns(CacheWarning, match="Is a directory"):
        ip.run_cell("%chatmany_cache clear")
    assert path.is_dir() and "removed" not in capsys.readouterr().out
