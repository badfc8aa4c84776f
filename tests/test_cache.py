"""Tests for the persistent answer cache (chatmagic.core.cache)."""
from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from functools import partial
from pathlib import Path

import pytest

from chatmagic.core.cache import (
    DB_NAME,
    SCHEMA_VERSION,
    Cache,
    CacheWarning,
    default_dir,
    describe,
    request_key,
    request_keys,
)
from chatmagic.providers.openai import DIALECT

URL = "https://api.openai.com/v1/chat/completions"
SECRET = "sk-test-DO-NOT-STORE-0123456789abcdef"


def body(user="What is 2+2?", system="Be terse.", model="gpt-4o-mini", **params):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return {"model": model, **params, "messages": messages}


def row(i):
    return (f"answer {i}", "stop", 10 + i, 20 + i, "gpt-4o-mini")


def raw(path) -> sqlite3.Connection:
    """A second, independent connection (what another kernel would see)."""
    return sqlite3.connect(path, timeout=10)


def count(path) -> int:
    conn = raw(path)
    try:
        return conn.execute("SELECT count(*) FROM answers").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cachedir"
    monkeypatch.setenv("CHATMAGIC_CACHE_DIR", str(d))
    return d


@pytest.fixture
def cache(cache_dir):
    c = Cache()
    yield c
    c.close()


def caught(fn):
    """Call fn() recording warnings; returns (result, [CacheWarning messages])."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in seen if issubclass(w.category, CacheWarning)]


# --- keys -------------------------------------------------------------------------------


def test_key_is_stable_and_order_independent():
    k = request_key(URL, body(temperature=0.2, seed=1))
    assert k == request_key(URL, body(temperature=0.2, seed=1))
    assert len(k) == 64 and int(k, 16) >= 0
    reordered = {"messages": body()["messages"], "seed": 1, "temperature": 0.2, "model": "gpt-4o-mini"}
    assert request_key(URL, reordered) == k
    # a fresh interpreter (different hash seed) computes the same key
    code = ("from chatmagic.core.cache import request_key; "
            f"print(request_key({URL!r}, {body(temperature=0.2, seed=1)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == k


def test_key_changes_with_every_input():
    base = request_key(URL, body(temperature=0.2))
    variants = [
        request_key("http://127.0.0.1:8080/v1/chat/completions", body(temperature=0.2)),
        request_key(URL, body(temperature=0.2, model="gpt-4o")),
        request_key(URL, body(temperature=0.2, system="Be verbose.")),
        request_key(URL, body(temperature=0.2, system=None)),
        request_key(URL, body(temperature=0.2, user="What is 2+3?")),
        request_key(URL, body(temperature=0.2, user="What is 2+2? ")),
        request_key(URL, body(temperature=0.3)),
        request_key(URL, body()),
        request_key(URL, body(temperature=0.2, max_tokens=5)),
        request_key(URL, body(temperature=0.2, seed=42)),
        request_key(URL, body(temperature=0.2, response_format={"type": "json_object"})),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_key_handles_unicode_and_lone_surrogates():
    assert request_key(URL, body(user="héllo ✓ 日本")) != request_key(URL, body(user="hello"))
    assert len(request_key(URL, body(user="broken \ud800 text"))) == 64


# --- location, permissions, secrets ------------------------------------------------------


def test_default_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATMAGIC_CACHE_DIR", str(tmp_path / "x"))
    assert default_dir() == tmp_path / "x"
    monkeypatch.delenv("CHATMAGIC_CACHE_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_dir() == tmp_path / "xdg" / "chatmagic"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert default_dir() == Path.home() / ".cache" / "chatmagic"


def test_creates_db_in_default_dir_owner_only(cache_dir):
    with Cache() as c:
        assert c.path == cache_dir / DB_NAME
        c.put("k", *row(1))
        c.flush()
        assert c.path.is_file()
        if sys.platform != "win32":
            assert cache_dir.stat().st_mode & 0o777 == 0o700
            for p in cache_dir.iterdir():  # answers.sqlite3, -wal, -shm
                assert p.stat().st_mode & 0o777 == 0o600, p


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_existing_loose_file_is_tightened(tmp_path):
    path = tmp_path / DB_NAME
    path.touch()
    path.chmod(0o644)
    with Cache(path):
        assert path.stat().st_mode & 0o777 == 0o600


def test_no_api_key_or_prompt_in_the_file(cache_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # present in the environment, as in real use
    prompts = [f"secret-prompt-{i}" for i in range(5)]
    keys = [request_key(URL, body(user=p)) for p in prompts]
    with Cache() as c:
        for i, k in enumerate(keys):
            c.put(k, *row(i))
        c.flush()
        files = [c.path, Path(f"{c.path}-wal")]
        data = b"".join(p.read_bytes() for p in files if p.exists())
        assert b"answer 3" in data  # the answers are there (sanity check of the scan)
        assert SECRET.encode() not in data
        assert not any(p.encode() in data for p in prompts)  # only hashes of the requests
    assert SECRET not in repr(c) and not any(k in repr(c) for k in keys)


# --- put / get ----------------------------------------------------------------------------


def test_how_an_answer_came_is_stored_with_it_and_a_version_1_file_gains_the_columns(tmp_path):
    path = tmp_path / "answers.sqlite3"
    old = sqlite3.connect(path)  # a file written by chatmagic before latency and attempts were kept
    old.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, text TEXT, finish_reason TEXT, "
                "prompt_tokens INTEGER, completion_tokens INTEGER, model TEXT, created REAL)")
    old.execute("INSERT INTO answers VALUES ('old', 'hi', 'stop', 1, 2, 'm', 0)")
    old.execute("PRAGMA user_version=1")
    old.commit()
    old.close()
    with Cache(path) as c:
        c.put("new", "yo", "stop", 3, 4, "m", latency_s=1.25, attempts=3)
        c.flush()
        assert c.get_many(["old", "new"]) == {"old": ("hi", "stop", 1, 2, "m", None, None, None),
                                               "new": ("yo", "stop", 3, 4, "m", 1.25, 3, None)}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    conn.close()


def test_a_version_3_file_with_hex_keys_is_read_and_its_keys_stored_as_16_bytes(tmp_path):
    path = tmp_path / "answers.sqlite3"
    keys = [request_key(URL, body(f"question {i}")) for i in range(3)]
    old = sqlite3.connect(path)  # as chatmagic wrote it before: the key as 64 hex characters
    old.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, text TEXT, finish_reason TEXT, prompt_tokens INTEGER, "
                "completion_tokens INTEGER, model TEXT, created REAL, latency_s REAL, attempts INTEGER, extra TEXT)")
    old.executemany("INSERT INTO answers VALUES (?, ?, 'stop', 1, 2, 'm', 0, 0.5, 1, NULL)",
                    [(k, f"answer {i}") for i, k in enumerate(keys)])
    old.execute("PRAGMA user_version=3")
    old.commit()
    old.close()
    with Cache(path) as c:
        assert {k: v[0] for k, v in c.get_many([*keys, request_key(URL, body("new"))]).items()} == {
            k: f"answer {i}" for i, k in enumerate(keys)}
        c.put(keys[0], "replaced", "stop", 1, 2, "m")  # the converted row is the one replaced
    conn = sqlite3.connect(path)
    stored = conn.execute("SELECT key, text FROM answers ORDER BY text").fetchall()
    conn.close()
    assert sorted(stored) == sorted([(bytes.fromhex(keys[1])[:16], "answer 1"),
                                     (bytes.fromhex(keys[2])[:16], "answer 2"),
                                     (bytes.fromhex(keys[0])[:16], "replaced")])
    with Cache(path) as again:  # opened again: nothing converted twice
        assert again.get_many(keys)[keys[0]][0] == "replaced" and again.entries() == 3


def test_roundtrip_and_replace(cache):
    k1, k2 = request_key(URL, body(user="a")), request_key(URL, body(user="b"))
    cache.put(k1, "four", "stop", 12, 1, "gpt-4o-mini-2024-07-18")
    assert cache.get_many([k1, k2]) == {k1: ("four", "stop", 12, 1, "gpt-4o-mini-2024-07-18", None, None, None)}
    cache.flush()
    assert cache.get_many([k1, k2]) == {k1: ("four", "stop", 12, 1, "gpt-4o-mini-2024-07-18", None, None, None)}
    cache.put(k1, "4", "length", None, None, None)
    cache.flush()
    assert cache.get_many([k1]) == {k1: ("4", "length", None, None, None, None, None, None)}
    assert cache.get_many([]) == {}
    assert cache.entries() == 1


def test_buffered_until_flush_then_visible_to_another_connection(cache):
    cache.batch_seconds = 3600
    for i in range(10):
        cache.put(f"k{i}", *row(i))
    assert count(cache.path) == 0  # still buffered
    assert len(cache.get_many([f"k{i}" for i in range(10)])) == 10  # but found by get_many
    assert "10 pending" in repr(cache)
    cache.flush()
    assert count(cache.path) == 10


def test_flush_by_count(cache):
    cache.batch_seconds = 3600
    for i in range(cache.batch_rows - 1):
        cache.put(f"k{i}", *row(i))
    assert count(cache.path) == 0
    cache.put("last", *row(0))
    assert count(cache.path) == cache.batch_rows


def test_flush_by_time_on_put(cache):
    now = [0.0]  # a fake clock: a loaded machine cannot stretch the interval
    cache.clock, cache.batch_seconds = lambda: now[0], 0.05
    cache.put("first", *row(0))
    cache.flush()  # a write at fake time 0: the interval starts here, not when the fixture opened the cache
    cache.put("a", *row(1))  # within batch_seconds of that write: buffered
    assert count(cache.path) == 1
    now[0] += 0.1
    cache.put("b", *row(2))  # the interval has passed: both written
    assert count(cache.path) == 3


def test_loop_timer_flushes_without_another_put(cache):
    cache.batch_seconds = 0.5  # long next to the two lines below, even on a loaded machine

    async def main():
        cache.put("first", *row(0))
        cache.flush()  # a write: the interval starts now, not when the fixture opened the cache
        cache.put("a", *row(1))
        assert count(cache.path) == 1
        for _ in range(100):  # no further put, no flush(): the loop timer writes it (poll, 5 s at most)
            await asyncio.sleep(0.05)
            if count(cache.path) == 2:
                break
        return count(cache.path)

    assert asyncio.run(main()) == 2


def test_written_on_close_and_context_manager(cache_dir):
    with Cache() as c:
        c.batch_seconds = 3600
        c.put("k", *row(1))
        assert count(c.path) == 0
    assert c.closed and count(c.path) == 1
    c.close()  # idempotent
    with Cache() as again:
        assert again.get_many(["k"]) == {"k": (*row(1), None, None, None)}


def test_get_many_100k(cache):
    n = 100_000
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    cache.batch_rows = n + 1  # one transaction to fill it quickly
    cache.batch_seconds = 3600
    for i, k in enumerate(keys):
        cache.put(k, f"answer {i} " + "lorem ipsum " * 20, "stop", i, 1, "m")
    cache.flush()
    misses = [hashlib.sha256(f"miss{i}".encode()).hexdigest() for i in range(1000)]
    probe = keys[::-1] + misses
    t = time.perf_counter()
    found = cache.get_many(probe)
    elapsed = time.perf_counter() - t
    print(f"\nget_many: {len(probe):,} keys in {elapsed:.3f} s ({len(found):,} found)")
    assert len(found) == n
    assert found[keys[12345]] == ("answer 12345 " + "lorem ipsum " * 20, "stop", 12345, 1, "m", None, None, None)
    assert not set(misses) & set(found)


def test_many_puts_in_batches_all_land(cache):
    cache.batch_seconds = 3600
    n = 5000
    for i in range(n):
        cache.put(hashlib.sha256(str(i).encode()).hexdigest(), "an answer of some length " * 10, "stop", 1, 2, "m")
    cache.flush()
    assert count(cache.path) == n


# --- processes ------------------------------------------------------------------------------


def child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_loses_only_the_unflushed_rows(tmp_path):
    path = tmp_path / DB_NAME
    proc = child("""
        import os, signal, sys
        from chatmagic.core.cache import Cache
        c = Cache(sys.argv[1])
        c.batch_rows, c.batch_seconds = 100, 3600  # flush by count only: 2 x 100 written, 50 buffered
        for i in range(250):
            c.put(f"k{i}", f"answer {i}", "stop", 1, 2, "m")
        os.kill(os.getpid(), signal.SIGKILL)
        """, str(path))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, err
    conn = raw(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM answers").fetchone()[0] >= 200
    finally:
        conn.close()
    with Cache(path) as c:
        found = c.get_many([f"k{i}" for i in range(250)])
        assert all(f"k{i}" in found for i in range(200))
        assert found["k199"] == ("answer 199", "stop", 1, 2, "m", None, None, None)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_on_a_loop_loses_nothing_older_than_batch_seconds(tmp_path):
    """On a running loop the timer writes the buffer even when no further answer arrives."""
    path = tmp_path / DB_NAME
    proc = child("""
        import asyncio, os, signal, sqlite3, sys
        from chatmagic.core.cache import Cache
        async def main():
            c = Cache(sys.argv[1])
            c.batch_seconds = 0.2
            for i in range(250):  # answers trickle in, then the run waits on a slow one
                c.put(f"k{i}", f"answer {i}", "stop", 1, 2, "m")
                if i % 50 == 0:
                    await asyncio.sleep(0.01)
            other = sqlite3.connect(sys.argv[1])  # no put, no flush: the loop's timer writes them
            while other.execute("SELECT count(*) FROM answers").fetchone()[0] < 250:
                await asyncio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(main())
        """, str(path))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, err
    assert count(path) == 250


def test_processes_opening_a_new_cache_at_once_all_open_it(tmp_path):
    # switching a new file to WAL answered "database is locked" at once, without the busy
    # timeout, to one of two processes about 1 time in 10: each round is a new file
    code = """
        import sys, warnings
        warnings.simplefilter("error")  # a CacheWarning fails the child
        from chatmagic.core.cache import Cache
        c = Cache(sys.argv[1])
        assert c.disabled is None, c.disabled
        print("ok")
        """
    for round_ in range(30):
        folder = tmp_path / f"{round_}"
        folder.mkdir()
        procs = [child(code, str(folder / DB_NAME)) for _ in range(2)]
        results = [p.communicate(timeout=60) for p in procs]
        assert [out for out, _ in results] == ["ok\n"] * 2, [err for _, err in results]


def test_two_processes_write_at_once(tmp_path):
    path = tmp_path / DB_NAME
    go = tmp_path / "go"
    code = """
        import sys, time, warnings
        from pathlib import Path
        warnings.simplefilter("error")  # a CacheWarning fails the child
        from chatmagic.core.cache import Cache
        path, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
        c = Cache(path)
        c.batch_rows = 5
        Path(go.parent / f"ready-{name}").touch()
        while not go.exists():
            time.sleep(0.005)
        for i in range(2000):
            c.put(f"{name}-{i}", f"answer {i}", "stop", i, 1, "m")
            if i % 100 == 0:
                c.get_many([f"{name}-{j}" for j in range(i)])  # reads interleaved with writes
        c.close()
        assert c.disabled is None, c.disabled
        print("ok")
        """
    procs = [child(code, str(path), name, str(go)) for name in ("a", "b")]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in ("a", "b")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [(p.kill(), p.communicate()) for p in procs]  # kill: a live child would block communicate()
        time.sleep(0.01)
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == "ok", err
    assert count(path) == 4000
    with Cache(path) as c:
        assert len(c.get_many([f"{n}-{i}" for n in "ab" for i in range(2000)])) == 4000


# --- failures ---------------------------------------------------------------------------------


def test_corrupt_file_disables_with_one_warning(cache_dir):
    cache_dir.mkdir()
    (cache_dir / DB_NAME).write_bytes(os.urandom(64) + b"this is not sqlite" * 500)
    c, messages = caught(Cache.open)
    assert c is None
    assert len(messages) == 1
    assert messages[0].startswith("chatmagic cache disabled: ") and str(cache_dir / DB_NAME) in messages[0]
    assert "not a database" in messages[0] and "\n" not in messages[0]
    assert describe(c) == "cache disabled"


def test_foreign_table_disables(tmp_path):
    path = tmp_path / DB_NAME
    conn = raw(path)
    conn.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, something_else TEXT)")
    conn.commit()
    conn.close()
    c, messages = caught(lambda: Cache.open(path))
    assert c is None and len(messages) == 1


def test_db_path_is_a_directory(cache_dir):
    (cache_dir / DB_NAME).mkdir(parents=True)
    c, messages = caught(Cache.open)
    assert c is None and len(messages) == 1 and str(cache_dir / DB_NAME) in messages[0]


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root (or Windows) ignores directory permissions; see the test above")
def test_unwritable_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        c, messages = caught(lambda: Cache.open(locked / DB_NAME))
        assert c is None and len(messages) == 1
    finally:
        locked.chmod(0o700)


def test_write_failure_warns_once_and_the_run_goes_on(tmp_path, monkeypatch):
    path = tmp_path / DB_NAME
    monkeypatch.setattr(Cache, "busy_timeout", 0.1)
    c = Cache(path)
    c.put("before", *row(0))
    c.flush()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock for too long
    try:
        def run():
            for i in range(250):  # several flushes by count, each would fail
                c.put(f"k{i}", *row(i))
            c.flush()
        _, messages = caught(run)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert len(messages) == 1 and "locked" in messages[0]
    assert c.disabled and "locked" in c.disabled
    # the file is still read; the answers that could not be written are kept in memory
    unknown = (None, None, None)  # no latency, attempts or extra given to put
    assert c.get_many(["before", "k0", "k249", "nope"]) == {"before": (*row(0), *unknown), "k0": (*row(0), *unknown),
                                                            "k249": (*row(249), *unknown)}
    assert c.entries() == 1 + 250
    assert "disabled" in repr(c) and c.disabled in describe(c)
    c.close()
    assert count(path) == 1


def test_deleted_file_does_not_break(tmp_path):
    path = tmp_path / DB_NAME
    c = Cache(path)
    c.put("a", *row(1))
    c.flush()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    def run():
        c.put("b", *row(2))
        c.flush()
        return c.get_many(["a", "b"])
    found, messages = caught(run)
    assert len(messages) <= 1 and "b" in found  # SQLite may or may not notice; never raises
    c.close()


# --- upkeep -----------------------------------------------------------------------------------


def test_entries_size_describe_clear(cache):
    assert cache.entries() == 0
    assert describe(cache) == f"0 entries, {cache.size_bytes() / 1e6:.1f} MB, at {cache.path}"
    for i in range(3000):
        cache.put(f"k{i}", "x" * 1000, "stop", 1, 1, "m")
    assert cache.entries() == 3000
    size = cache.size_bytes()
    assert size > 3000 * 1000
    assert describe(cache) == f"3,000 entries, {size / 1e6:.1f} MB, at {cache.path}"
    assert repr(cache) == f"<Cache {cache.path}: 3,000 entries>"
    cache.put("pending", *row(1))
    cache.clear()
    assert cache.entries() == 0 and cache.get_many(["k1", "pending"]) == {}
    assert count(cache.path) == 0
    assert cache.size_bytes() < size / 10  # VACUUM gave the space back
    cache.close()
    assert repr(cache) == f"<Cache {cache.path} (closed)>"


def test_corruption_found_later_warns_once_and_the_run_goes_on(tmp_path):
    path = tmp_path / DB_NAME
    with Cache(path) as c:
        for i in range(2000):
            c.put(f"k{i}", "x" * 500, "stop", 1, 1, "m")
    data = bytearray(path.read_bytes())
    data[8192:] = os.urandom(len(data) - 8192)  # keep the header and schema page only
    path.write_bytes(bytes(data))
    c = Cache(path)  # opening reads only the schema
    try:
        def run():
            found = c.get_many([f"k{i}" for i in range(2000)])
            c.put("new", *row(1))
            c.flush()
            c.entries()
            return found, c.get_many(["new"])
        (before, after), messages = caught(run)
        assert before == {} and after == {"new": (*row(1), None, None, None)}
        assert len(messages) == 1 and "malformed" in messages[0]
        assert "reading" in describe(c)
    finally:
        c.close()


def test_dropped_without_close_still_writes(tmp_path):
    path = tmp_path / DB_NAME
    c = Cache(path)
    c.batch_seconds = 3600
    c.put("k", *row(1))
    del c
    assert count(path) == 1


def test_module_imports_are_light():
    """The module alone (outside the package) pulls in neither IPython, pandas nor asyncio."""
    import chatmagic.core.cache as module
    code = textwrap.dedent(f"""
        import importlib.util, sys, time
        t = time.perf_counter()
        spec = importlib.util.spec_from_file_location("cache_alone", {module.__file__!r})
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        print(round((time.perf_counter() - t) * 1000, 1))
        print(sorted(m for m in ("IPython", "pandas", "asyncio", "aiohttp") if m in sys.modules))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ms, loaded = out.stdout.split("\n", 1)
    print(f"\nimporting chatmagic/core/cache.py alone: {ms} ms")
    assert loaded.strip() == "[]"


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_request_keys_equal_request_key_of_each_body(system):
    head = {"model": "m", "temperature": 0.5, "seed": 3,
            "messages": [{"role": "system", "content": system}] if system else []}
    prompts = ["a", "What is 2+2?", 'quotes " and \\ and \n', "héllo ✓ 日本", "broken \ud800 text", ""]
    expected = [request_key(URL, {**head, "messages": [*head["messages"], {"role": "user", "content": p}]})
                for p in prompts]
    assert request_keys(URL, partial(DIALECT.body, head), prompts) == expected


def test_a_server_named_in_the_memory_keeps_its_answers_on_another_url(server):
    """The local model is keyed by what it is, not its port: a second server given the same name
    in the run's Memory answers from the cache; one without the name is asked again."""
    import chatmagic
    from chatmagic.core.memory import Memory
    from chatmagic.practice.server import FakeOpenAI
    prompts = ["n1", "n2"]
    first = chatmagic.chat_many(prompts, base_url=server.base_url, progress=False,
                                memory=Memory(names={f"{server.base_url}/chat/completions": "the-model"}))
    assert [r.cached for r in first] == [False, False]
    with FakeOpenAI() as other:
        named = Memory(names={f"{other.base_url}/chat/completions": "the-model"})
        again = chatmagic.chat_many(prompts, base_url=other.base_url, progress=False, memory=named)
        assert [r.cached for r in again] == [True, True] and again.texts() == first.texts()
        unnamed = chatmagic.chat_many(prompts, base_url=other.base_url, progress=False)
        assert [r.cached for r in unnamed] == [False, False] and other.stats.requests == 2


def test_answers_cached_only_past_the_first_lookup_chunk_are_taken_and_the_rest_sent(server, monkeypatch):
    """The indices to send are kept only from the first cached answer on (a run with none holds
    no index per prompt): the prompts of earlier chunks must be sent all the same."""
    import chatmagic
    import chatmagic.core.engine
    monkeypatch.setattr(chatmagic.core.engine, "LOOKUP_CHUNK", 2)
    prompts = [f"c{i}" for i in range(7)]
    chatmagic.chat_many(prompts[3:5], base_url=server.base_url, progress=False)
    server.reset_stats()
    results = chatmagic.chat_many(prompts, base_url=server.base_url, progress=False)
    assert [r.cached for r in results] == [False, False, False, True, True, False, False]
    assert results.texts() == [f"echo: {p}" for p in prompts] and server.stats.requests == 5
