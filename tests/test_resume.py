"""The answer cache in use: re-runs send only what is missing, also after an interrupt or a
killed kernel. (The store itself is tested in test_cache.py.)"""

import os

import pytest
from IPython.core.interactiveshell import InteractiveShell
from jupyter_client.manager import start_new_kernel

import chatmagic


def run(server, prompts, **options):
    return chatmagic.chat_many(prompts, **{"base_url": server.base_url, "progress": False, **options})


def test_rerun_sends_nothing_and_says_so(server):
    first = run(server, ["a", "b", "c"], system="s", temperature=0.1)
    assert server.stats.requests == 3
    again = run(server, ["a", "b", "c"], system="s", temperature=0.1)
    assert server.stats.requests == 3
    assert again.texts() == first.texts() and all(r.cached for r in again)
    for cached, answered in zip(again, first):  # a cached row says how its answer came
        assert (cached.attempts, cached.latency_s) == (answered.attempts, answered.latency_s) == (1, answered.latency_s)
        assert answered.latency_s is not None and answered.latency_s > 0
        assert (cached.prompt_tokens, cached.completion_tokens) == (answered.prompt_tokens, answered.completion_tokens)
    assert "3/3 ok (3 from cache)" in again.summary()


@pytest.mark.parametrize("change", [
    {"model": "other"}, {"system": "t"}, {"temperature": 0.2}, {"max_tokens": 5}, {"params": {"seed": 1}},
])
def test_anything_that_changes_the_answer_sends_again(server, change):
    base = {"system": "s", "temperature": 0.1}
    run(server, ["a", "b"], **base)
    run(server, ["a", "b"], **{**base, **change})
    assert server.stats.requests == 4


def test_base_url_is_part_of_the_key(server):
    run(server, ["a"])
    run(server, ["a"], base_url=server.base_url.replace("127.0.0.1", "localhost"))
    assert server.stats.requests == 2


def test_only_successes_are_cached(server):
    run(server, ["good", "bad [[fail:400]]"])
    run(server, ["good", "bad [[fail:400]]"])
    assert server.stats.attempts == {"good": 1, "bad [[fail:400]]": 2}


def test_refresh_and_no_cache(server):
    run(server, ["a"])
    run(server, ["a"], refresh=True)
    run(server, ["a"], cache=False)
    assert server.stats.requests == 3
    run(server, ["a"])  # the refreshed answer is cached
    assert server.stats.requests == 3
    run(server, ["b"], cache=False)
    run(server, ["b"])  # --no-cache wrote nothing
    assert server.stats.requests == 5


def test_cache_file_is_private_and_holds_no_key(server, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-stored-42")
    run(server, ["a", "b"])
    path = tmp_path / "cache" / "answers.sqlite3"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    for f in path.parent.iterdir():
        assert b"sk-never-stored-42" not in f.read_bytes()
        assert b"Bearer" not in f.read_bytes()


def test_corrupt_cache_warns_once_and_the_run_goes_on(server, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "answers.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.warns(chatmagic.core.cache.CacheWarning) as warned:
        results = run(server, ["a", "b"])
    assert results.texts() == ["echo: a", "echo: b"] and len(warned) == 1


def test_interrupted_run_keeps_answers_in_cache_and_rerun_completes(server, cancelled_run):
    interrupted = cancelled_run(["fast", "slow [[stall:5:1]]"])
    assert [r.status for r in interrupted] == ["ok", "cancelled"]
    results = run(server, ["fast", "slow [[stall:5:1]]"])
    assert results.texts() == ["echo: fast", "echo: slow"]
    assert server.stats.attempts == {"fast": 1, "slow [[stall:5:1]]": 2}


def test_cache_line_magic(server, capsys):
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext chatmagic")
    run(server, ["a", "b"])
    ip.run_cell("%chatmany_cache")
    assert "2 entries" in capsys.readouterr().out
    ip.run_cell("%chatmany_cache clear")
    assert "0 entries" in capsys.readouterr().out
    r = ip.run_cell("%chatmany_cache wipe")
    assert not r.success and "expected no argument or 'clear'" in "".join(capsys.readouterr())
    ip.run_cell("%unload_ext chatmagic")


@pytest.mark.kernel
def test_killed_kernel_then_rerun_sends_only_what_had_not_come_back(server, wait_until, cached_answers):
    prompts = [f"fast {i}" for i in range(8)] + [f"slow {i} [[stall:30:1]]" for i in range(4)]
    cell = f"%%chatmany -q -o answers -c 12 --base-url {server.base_url}\n" + "\n".join(prompts)
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("%load_ext chatmagic", timeout=30)
        kc.execute(cell)
        wait_until(lambda: cached_answers() == 8, "the eight fast answers in the cache file")
        os.kill(km.provisioner.process.pid, 9)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    before = server.stats.requests
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("%load_ext chatmagic", timeout=30)
        reply = kc.execute_interactive(cell, timeout=30)
        assert reply["content"]["status"] == "ok"
        assert server.stats.requests - before == 4  # only the slow ones
        out = []
        kc.execute_interactive(f"print(answers == [p.split(' [[')[0].join(['echo: ', '']) for p in {prompts!r}])",
                               timeout=10, output_hook=lambda m: out.append(m["content"].get("text", "")))
        assert "".join(out).strip() == "True"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_table_of_cached_rows_has_the_latency_and_one_missing_value_convention(server):
    pytest.importorskip("pandas")
    first = run(server, ["x1", "x2 [[fail:400]]"], retries=0).to_pandas()
    again = run(server, ["x1"]).to_pandas()
    assert again["latency_s"].iloc[0] == first["latency_s"].iloc[0] > 0 and again["attempts"].iloc[0] == 1
    for table in (first, again):  # an error column with and without errors: missing is NaN in both
        missing = [v for column in ("error", "response") for v in table[column] if not isinstance(v, str)]
        assert missing and all(v != v for v in missing), missing  # NaN, never None
    assert first["latency_s"].dtype == "float64" and again["error"].isna().all()
