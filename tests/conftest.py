import asyncio
import sqlite3
import subprocess
import sys
import time

import pytest

from chatmagic.batch import run as batchmod
from chatmagic.core.cache import DB_NAME
from chatmagic.practice.anthropic import FakeAnthropic
from chatmagic.practice.server import FakeOpenAI
from chatmagic.providers.profiles import PROFILES


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the user's keys, base URL, model or cache. (Paces learnt live in the Memory
    passed to a run, so no test sees another's.)"""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CHATMAGIC_MODEL", "CHATMAGIC_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    for p in PROFILES.values():  # nor any provider's
        monkeypatch.delenv(p.key_env, raising=False)
        monkeypatch.delenv(p.base_env, raising=False)
    monkeypatch.setenv("CHATMAGIC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def _server():
    with FakeOpenAI() as srv:
        yield srv


@pytest.fixture
def server(_server):
    """A real OpenAI-compatible server on 127.0.0.1, reset for each test."""
    for name, value in dict(latency=0.0, limit_shape="per_second", window_s=60.0, daily=None,
                            storm_s=0.0, retry_after=None, rpm=None, tpm=None, headers="openai",
                            fail_rate=0.0, stall_rate=0.0, stall_s=30.0, unknown_models=set(),
                            schemas=True, error_shape="openai", storm_status=429, auth="bearer", usage="basic",
                            queue_s=0.0).items():
        setattr(_server, name, value)
    _server.sleep = asyncio.sleep
    _server.reset_stats()
    return _server


@pytest.fixture(scope="session")
def _anthropic():
    with FakeAnthropic() as srv:
        yield srv


@pytest.fixture
def anthropic(_anthropic):
    """``anthropic(key)``: the practice Anthropic server on 127.0.0.1, wanting ``key``, reset for
    the test: no limits, no overload, no latency, every model known, no batches, counts at zero."""
    def reset(key: str | None) -> FakeAnthropic:
        srv = _anthropic
        srv.api_key = key
        srv.buckets.clear()
        srv.overload_s, srv.overload_above, srv.latency = 0.0, None, 0.0
        srv.unknown_models = set()
        srv.batches.reset()
        srv.reset_stats()
        return srv
    return reset


@pytest.fixture
def server_process():
    """``server_process(*flags)``: the practice server in a process of its own (its command line,
    ``python -m chatmagic.practice.server``), stopped after the test; returns its base URL. For
    timing that the in-process server would skew: it shares the test's GIL, so a pause of the
    test process (a garbage collection late in the suite) holds it too, and requests written
    before the pause reach its limiter late, as no remote server would see them."""
    procs: list[subprocess.Popen] = []

    def start(*flags: str) -> str:
        proc = subprocess.Popen([sys.executable, "-m", "chatmagic.practice.server", "--port", "0", *flags],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        return proc.stdout.readline().split()[3]  # "FakeOpenAI serving at URL ..."
    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def bserver(server, monkeypatch):
    """The practice server with its batch modes off and counts at zero; polls 10 ms apart."""
    server.batch.reset()
    monkeypatch.setattr(batchmod, "POLL_FIRST", 0.01)
    return server


@pytest.fixture
def cancelled_run(server):
    """Run prompts on a fresh loop, cancel the run once ``until(run)`` is true (polled; by default
    once the server has every prompt's request), return its results."""
    def cancel(prompts, until=None):
        import asyncio

        from chatmagic.core.engine import Run
        from chatmagic.settings import resolve
        ready = until or (lambda run: server.stats.requests >= len(prompts))

        async def main():
            run = Run(prompts, resolve({"base_url": server.base_url, "progress": False}))
            task = asyncio.ensure_future(run.run())
            deadline = time.monotonic() + 30
            while not ready(run):
                assert not task.done() and time.monotonic() < deadline, "the run ended before it was cancelled"
                await asyncio.sleep(0.01)
            task.cancel()
            outcome = (await asyncio.gather(task, return_exceptions=True))[0]
            assert isinstance(outcome, asyncio.CancelledError)
            return run.results
        return asyncio.run(main())
    return cancel


@pytest.fixture
def ip(server):
    """Terminal IPython with chatmagic loaded, pointed at the practice server, quiet."""
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext chatmagic")
    shell.run_cell(f"%config ChatMany.base_url = {server.base_url!r}")
    shell.run_cell("%config ChatMany.quiet = True")
    yield shell
    shell.run_cell("%unload_ext chatmagic")
    for name in ("base_url", "quiet", "model", "concurrency", "out", "params"):
        shell.run_cell(f"%config ChatMany.{name} = None")  # None: not set, the built-in default
    for name in ("answers", "chatmany_results", "df"):
        shell.user_ns.pop(name, None)


@pytest.fixture
def wait_until():
    """``wait_until(condition, what)``: poll until ``condition()`` is true, instead of sleeping a
    fixed time before a signal; fails saying ``what`` after ``timeout`` s (a loaded machine is slow,
    never this slow)."""
    def wait(condition, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:g} s for {what}")
            time.sleep(0.02)
    return wait


def _rows(path, table: str, where: str = "") -> int:
    """Rows of ``table`` (``where`` them) in the SQLite file at ``path``, read-only as another
    process would (never a write lock nor the WAL's checkpoint a writable close may run); 0 until it exists."""
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return 0
    try:
        return conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not made yet
        return 0
    finally:
        conn.close()


@pytest.fixture
def cached_answers(tmp_path):
    """``cached_answers()``: how many answers this test's answer cache holds, read as another process
    would (a run's answers are there once it has taken them in: what a test can poll for)."""
    return lambda: _rows(tmp_path / "cache" / DB_NAME, "answers")


@pytest.fixture
def stored_batches(tmp_path):
    """``stored_batches()``: how many submitted batches this test's batch store remembers (a batch is
    stored as soon as it is submitted, so a re-run re-attaches; an intent to submit is not one)."""
    return lambda: _rows(tmp_path / "cache" / DB_NAME, "batches", "WHERE id NOT LIKE 'submitting:%'")
