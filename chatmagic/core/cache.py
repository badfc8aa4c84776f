"""A persistent cache of finished answers, so a re-run sends only the prompts without one.

    cache = Cache.open()                      # None (after one CacheWarning) if unusable
    key = request_key(settings.url, body)     # body: the exact dict that is sent
    hits = cache.get_many(keys)               # key -> (text, finish_reason, prompt_tokens,
                                              #   completion_tokens, model, latency_s, attempts, extra)
    cache.put(key, text, finish_reason, prompt_tokens, completion_tokens, model, extra,
              latency_s=1.2, attempts=1)      # how the answer came: shown again with it
    cache.flush(); cache.close()

One SQLite file, ``<cache dir>/answers.sqlite3`` (see ``default_dir``), shared by every kernel
of the user: WAL journal plus a busy timeout let several processes read and write it at once.
Only successful answers are stored, keyed by a hash of the URL and the full request body; the
database holds neither prompts nor URLs nor API keys, only the hash and the answer.

Durability. ``put`` buffers rows and writes them in one transaction when 500 have gathered or
0.5 s have passed since the last write. When ``put`` is called on a running asyncio loop it
also arms a one-shot ``loop.call_later`` timer, so a buffered row is written within 0.5 s of
its arrival even if no other answer follows. A SIGKILL of the kernel therefore loses at most
the answers of the last 0.5 s (never more than 500 rows); everything written before survives
and the file stays intact (SQLite's WAL is crash-safe). Without a running loop (plain sync
code) rows wait for the next ``put``, ``flush()`` or ``close()`` -- also run at interpreter
exit. ``synchronous=NORMAL``: a commit reaches the OS, not the disk, so a *power loss* may
drop the last commits, though it cannot corrupt the file.

Failures never break a run. ``Cache.open`` returns None (with one ``CacheWarning``) when the
file cannot be opened or is not a database. If a write fails later (disk full, file gone,
locked beyond the busy timeout) the cache warns once, stops writing and keeps the answers of
this session in memory, where ``get_many`` still finds them; the file is still read. A failed
read (corruption found later) also stops reading. Either way nothing raises.

Every call blocks briefly (a write of 500 rows takes a few ms; ``busy_timeout`` bounds the
wait for another process's write lock), so calling it from the event loop is fine.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import operator
import os
import sqlite3
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

# a row's fields by name (core/cacherows.py), imported from here as before
from chatmagic.core.cacherows import ANSWER_FIELDS as ANSWER_FIELDS
from chatmagic.core.cacherows import EXTRA_FIELDS as EXTRA_FIELDS
from chatmagic.core.cacherows import HOW_FIELDS as HOW_FIELDS
from chatmagic.core.cacherows import fill as fill
from chatmagic.core.cacherows import row_of as row_of

DB_NAME = "answers.sqlite3"
#: Bump when the meaning of a key changes; old entries then simply stop matching.
KEY_VERSION = b"chatmagic-answers-v1\n"
#: Rows per ``IN (...)`` lookup (SQLite before 3.32 allows at most 999 parameters).
CHUNK = 500
#: 2: latency_s and attempts, so a row from the cache shows how its answer came (added to a
#: version 1 file on open; its older rows have None there). 3: extra, the ``EXTRA_FIELDS`` as JSON
#: (added to an older file on open; its rows have None there: their cost is priced again).
#: 4: the key stored as 16 bytes (``_stored``), not 64 hex characters: the key index is 40% the
#: size, so a random-key insert into a large file touches fewer pages (an older file's keys are
#: converted on open, once).
SCHEMA_VERSION = 4
COLUMNS = "key, text, finish_reason, prompt_tokens, completion_tokens, model, created, latency_s, attempts, extra"

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_sha256 = hashlib.sha256


class CacheWarning(UserWarning):
    """The answer cache could not be used; the run goes on without it (or without writing)."""


def default_dir() -> Path:
    """``$CHATMAGIC_CACHE_DIR``, else the user's cache folder + ``chatmagic`` (the same folder
    whose ``models/`` holds the local model): ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux,
    ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows."""
    chosen = os.environ.get("CHATMAGIC_CACHE_DIR")
    if chosen:
        return Path(chosen).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "chatmagic"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "chatmagic"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chatmagic"


def request_key(url: str, body: dict[str, Any]) -> str:
    """The cache key of one request: sha256 hex of the server and the full body as canonical JSON
    (sorted keys, so dict order does not matter). Pass the exact dict that is sent -- model,
    messages including the system message, every parameter. Headers (the API key) never enter.
    Note ``1`` and ``1.0`` are different JSON, hence different keys. ``url`` is the request's
    URL, or the server's name when it is known by what it is (``Memory.server_name``)."""
    data = _dumps([url, body]).encode("utf-8", "surrogatepass")
    return _sha256(KEY_VERSION + data).hexdigest()


def request_keys(url: str, body_of: Callable[[str], dict[str, Any]], prompts: Iterable[str]) -> list[str]:
    """``request_key`` of each body ``body_of(prompt)`` (the dialect's one builder, which puts
    the prompt in one place), computed fast: see ``key_maker``."""
    key = key_maker(url, body_of)
    return [key(p) for p in prompts]


def key_maker(url: str, body_of: Callable[[str], dict[str, Any]]) -> Callable[[str], str]:
    """A function giving ``request_key(url, body_of(prompt))`` of a prompt, fast (a run makes
    each key when needed instead of holding a million): the canonical JSON around the prompt
    is hashed once and the hash state copied per prompt."""
    marker = "\x00chatmagic-prompt\x00"
    whole = _dumps([url, body_of(marker)])
    if whole.count(_dumps(marker)) != 1:  # the marker in the settings too: key each body whole
        return lambda prompt: request_key(url, body_of(prompt))
    before, after = whole.split(_dumps(marker))
    start = _sha256(KEY_VERSION + before.encode("utf-8", "surrogatepass"))
    tail = after.encode("utf-8", "surrogatepass")

    def key(prompt: str) -> str:
        h = start.copy()
        h.update(_dumps(prompt).encode("utf-8", "surrogatepass"))
        h.update(tail)
        return h.hexdigest()
    return key


class Cache:
    """Finished answers in SQLite, shared by processes. See the module docstring.

    Attributes:
        path: the database file.
        batch_rows: buffered rows that trigger a write (500: fewer, larger transactions cost
            less CPU per answer; the 0.5 s timer bounds what a crash can lose).
        batch_seconds: a buffered row is written at most this long after the last write (0.5).
        busy_timeout: seconds to wait for another process's write lock (5.0).
        disabled: None, or why the database is no longer written (a write failed; or a read,
            which also stops reading it). Answers put since then are kept in memory, for this
            session only, where ``get_many`` finds them.
        closed: True after ``close()``.
    """

    batch_rows = 500
    batch_seconds = 0.5
    clock = staticmethod(time.monotonic)  # of batch_seconds; a test may pass a fake one
    busy_timeout = 5.0

    def __init__(self, path: str | os.PathLike[str] | None = None):
        """Open or create the database; raises ``sqlite3.Error`` or ``OSError`` if unusable
        (``Cache.open`` turns that into a warning and None)."""
        self.path = Path(path).expanduser() if path is not None else default_dir() / DB_NAME
        self.disabled: str | None = None
        self._readable = True
        self.closed = False
        self._pending: dict[str, tuple[Any, ...]] = {}   # key -> row without key, not yet written
        self._memory: dict[str, tuple[Any, ...]] = {}    # rows that could not be written
        self._lock = threading.RLock()
        self._last_write = self.clock()
        self._timer = None
        self._timer_loop = None
        self._conn: sqlite3.Connection | None = self._connect()
        ref = weakref.ref(self)
        self._atexit = lambda: None if (c := ref()) is None else c.close()
        atexit.register(self._atexit)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> Cache | None:
        """A ``Cache``, or None after one ``CacheWarning`` saying why it cannot be used."""
        try:
            return cls(path)
        except (sqlite3.Error, OSError) as e:
            where = Path(path).expanduser() if path is not None else default_dir() / DB_NAME
            hint = "; `%chatmany_cache clear` removes it" if _unusable(e) else ""
            warnings.warn(f"chatmagic cache disabled: {where}: {_reason(e)}{hint}", CacheWarning, stacklevel=2)
            return None

    @classmethod
    def open_or_remove(cls, path: str | os.PathLike[str] | None = None) -> tuple[Cache | None, str | None]:
        """For ``%chatmany_cache clear``: the cache; or, if its file is no usable database
        (corrupt, not SQLite, a newer schema), a fresh one after removing that file, with a line
        saying so. A locked or unreadable file is never removed."""
        where = Path(path).expanduser() if path is not None else default_dir() / DB_NAME
        try:
            return cls(path), None
        except (sqlite3.Error, OSError) as e:
            if not (_unusable(e) and where.is_file()):
                return cls.open(path), None
            for p in (where, where.with_name(where.name + "-wal"), where.with_name(where.name + "-shm")):
                p.unlink(missing_ok=True)
            return cls.open(path), f"{where} was not a usable cache ({_reason(e)}); removed it"

    def _connect(self) -> sqlite3.Connection:
        folder = self.path.parent
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # create the file owner-only before SQLite does; -wal and -shm inherit its mode
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if sys.platform != "win32" and os.fstat(fd).st_mode & 0o077:
                try:
                    os.fchmod(fd, 0o600)
                except OSError:
                    pass  # someone else's file in a shared folder: use it as it is
        finally:
            os.close(fd)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            self._wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            # the schema is made or upgraded under the write lock, so two processes opening one file
            # at once cannot both add a column
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"written by a newer chatmagic (schema {version})")
            conn.execute("CREATE TABLE IF NOT EXISTS answers (key BLOB PRIMARY KEY, text TEXT, "
                         "finish_reason TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, "
                         "model TEXT, created REAL, latency_s REAL, attempts INTEGER, extra TEXT)")
            if version < SCHEMA_VERSION:
                have = {row[1] for row in conn.execute("PRAGMA table_info(answers)")}
                for column, kind in (("latency_s", "REAL"), ("attempts", "INTEGER"), ("extra", "TEXT")):
                    if column not in have:  # an older file: its rows keep None there
                        conn.execute(f"ALTER TABLE answers ADD COLUMN {column} {kind}")
                # its hex keys as 16 bytes, in place (a TEXT column keeps a BLOB as it is)
                conn.create_function("chatmagic_key", 1, _stored, deterministic=True)
                conn.execute("UPDATE answers SET key = chatmagic_key(key) WHERE typeof(key) = 'text'")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
            conn.execute(f"SELECT {COLUMNS} FROM answers LIMIT 0").fetchall()  # the expected table
        except BaseException:
            conn.close()
            raise
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL. SQLite answers "database is locked" at once, without its busy handler,
        when another process is switching the same new file, so wait here up to busy_timeout."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    # --- reading ----------------------------------------------------------------------

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[Any, ...]]:
        """key -> (text, finish_reason, prompt_tokens, completion_tokens, model, latency_s,
        attempts, extra) for the keys that have an answer (buffered and in-memory rows included). Never raises for a
        database failure: it warns once and answers from memory."""
        keys = list(keys)
        found: dict[str, tuple[Any, ...]] = {}
        with self._lock:
            if self._conn is not None and self._readable:
                try:
                    self._select(keys, found)
                except sqlite3.Error as e:
                    self._disable(f"reading {self.path} failed ({_reason(e)})", readable=False)
            for extra in (self._memory, self._pending):
                if extra:
                    for k in keys:
                        row = extra.get(k)
                        if row is not None:
                            found[k] = row[:8]
        return found

    def _select(self, keys: list[str], found: dict[str, Any]) -> None:
        """Two passes, each in sorted order so both B-trees are walked forwards: keys -> rowids
        on the key index alone, then the rows by rowid (stored in the order they were
        answered). About 2x faster than fetching rows by key in prompt order."""
        conn = self._conn
        assert conn is not None  # only called while open
        named = {_stored(k): k for k in keys}
        ids: dict[int, str] = {}
        conn.execute("BEGIN")  # one snapshot, one lock for all chunks
        try:
            for sql, chunk in _chunks("SELECT rowid, key FROM answers WHERE key IN", sorted(named)):
                ids.update((rowid, named[key]) for rowid, key in conn.execute(sql, chunk))
            for sql, chunk in _chunks("SELECT rowid, text, finish_reason, prompt_tokens, completion_tokens, "
                                      "model, latency_s, attempts, extra FROM answers WHERE rowid IN", sorted(ids)):
                for row in conn.execute(sql, chunk):
                    found[ids[row[0]]] = tuple(_text_of(v) for v in row[1:])
        finally:
            conn.execute("COMMIT")

    # --- writing ----------------------------------------------------------------------

    def put(self, key: str, text: str, finish_reason: str | None, prompt_tokens: int | None,
            completion_tokens: int | None, model: str | None, extra: str | None = None, *,
            latency_s: float | None = None, attempts: int | None = None) -> None:
        """Store one successful answer (replacing any earlier one), buffered; see the module
        docstring for when it reaches the file. Never raises for a database failure. A row SQLite
        cannot store (a list for text, a token count over 64 bits) is kept in memory only, so one
        odd answer never fails the batch it would have been written with; a lone surrogate is
        stored (as the bytes it encodes to) and read back equal. ``extra``: the
        ``EXTRA_FIELDS`` as JSON (``row_of`` makes it)."""
        row = (text, finish_reason, prompt_tokens, completion_tokens, model, latency_s, attempts, extra, time.time())
        with self._lock:
            if not _storable(row):
                self._memory[key] = row
                return
            self._pending[key] = row
            if len(self._pending) >= self.batch_rows or self.clock() - self._last_write >= self.batch_seconds:
                self.flush()
            else:
                self._arm_timer()

    def _arm_timer(self) -> None:
        """On a running asyncio loop, make sure a flush happens ``batch_seconds`` after the
        last write even if no further answer arrives. asyncio is not imported for this: if it
        is not imported yet, no loop can be running."""
        aio = sys.modules.get("asyncio")
        if aio is None:
            return
        try:
            loop = aio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None and self._timer_loop is loop:
            return
        delay = max(0.0, self.batch_seconds - (self.clock() - self._last_write))
        self._timer, self._timer_loop = loop.call_later(delay, self._on_timer), loop

    def _on_timer(self) -> None:
        self._timer = self._timer_loop = None
        self.flush()

    def flush(self) -> None:
        """Write the buffered rows now, in one transaction."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._timer_loop = None
            if not self._pending:
                return
            rows, self._pending = self._pending, {}
            if self._conn is None or self.disabled is not None:
                self._memory.update(rows)
                return
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")  # take the write lock now, waiting busy_timeout
                try:
                    conn.executemany("INSERT OR REPLACE INTO answers (key, text, finish_reason, prompt_tokens, "
                                     "completion_tokens, model, latency_s, attempts, extra, created) "
                                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                     # in key order: the key index's pages are then walked forwards, not
                                     # at random (a million-row file: ~25% less CPU a row)
                                     sorted(map(_bound, rows.items()), key=_first))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                self._memory.update(rows)
                self._disable(f"writing {self.path} failed ({_reason(e)}); answers are kept "
                              "in memory for this session only")
            finally:
                self._last_write = self.clock()

    def _disable(self, reason: str, *, readable: bool = True) -> None:
        """Stop writing (and reading, unless ``readable``); warn the first time only."""
        self._readable = self._readable and readable
        if self.disabled is None:
            self.disabled = reason
            warnings.warn(f"chatmagic cache: {reason}", CacheWarning, stacklevel=3)

    def close(self) -> None:
        """Flush and close. Idempotent; later puts are kept in memory only."""
        with self._lock:
            if self.closed:
                return
            try:
                self.flush()
            finally:
                self.closed = True
                conn, self._conn = self._conn, None
                atexit.unregister(self._atexit)
                if conn is not None:
                    try:
                        conn.close()
                    except sqlite3.Error:
                        pass

    def __del__(self) -> None:
        # a cache dropped without close() still writes its buffer (atexit covers shutdown)
        if getattr(self, "closed", True) is False and getattr(self, "_conn", None) is not None:
            try:
                self.close()
            except Exception:
                pass

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- looking after it -------------------------------------------------------------

    def entries(self) -> int:
        """Answers in the file (after writing the buffer), plus any kept in memory."""
        self.flush()
        return self._count()

    def _count(self) -> int:
        with self._lock:
            n = len(self._memory)
            if self._conn is not None and self._readable:
                try:
                    n += self._conn.execute("SELECT count(*) FROM answers").fetchone()[0]
                except sqlite3.Error as e:
                    self._disable(f"reading {self.path} failed ({_reason(e)})", readable=False)
            return n

    def size_bytes(self) -> int:
        """Bytes on disk: the database file plus its write-ahead log."""
        total = 0
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += p.stat().st_size
            except OSError:
                pass
        return total

    def clear(self) -> None:
        """Delete every answer (and the buffer) and give the space back (VACUUM)."""
        with self._lock:
            self._pending.clear()
            self._memory.clear()
            if self._conn is None or self.disabled is not None:
                return
            try:
                self._conn.execute("DELETE FROM answers")
                self._conn.execute("VACUUM")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                self._disable(f"clearing {self.path} failed ({_reason(e)})")

    def __repr__(self) -> str:
        if self.closed:
            return f"<Cache {self.path} (closed)>"
        pending = f", {len(self._pending)} pending" if self._pending else ""
        state = f", disabled: {self.disabled}" if self.disabled else ""
        return f"<Cache {self.path}: {self._count():,} entries{pending}{state}>"


def describe(cache: Cache | None) -> str:
    """One line for ``%chatmany_cache``: "N entries, X.Y MB, at /path" or "cache disabled"."""
    if cache is None:
        return "cache disabled"
    if cache.closed:
        return f"cache closed, at {cache.path}"
    line = f"{cache.entries():,} entries, {cache.size_bytes() / 1e6:.1f} MB, at {cache.path}"
    return f"{line} ({cache.disabled})" if cache.disabled else line


def _storable(row: tuple[Any, ...]) -> bool:
    """True if SQLite can store ``row`` (text, finish_reason, tokens, tokens, model, latency_s,
    attempts, extra, created)."""
    text, finish_reason, prompt_tokens, completion_tokens, model, latency_s, attempts, extra, _ = row
    # checked for every answer: one expression, no generator (a lone surrogate is stored: _sqlite_value)
    return (isinstance(text, str)
            and (latency_s is None or (type(latency_s) is float and math.isfinite(latency_s)))
            and (attempts is None or (type(attempts) is int and 0 <= attempts < 2**31))
            and (finish_reason is None or isinstance(finish_reason, str))
            and (model is None or isinstance(model, str)) and (extra is None or isinstance(extra, str))
            and (prompt_tokens is None or (type(prompt_tokens) is int and -2**63 <= prompt_tokens < 2**63))
            and (completion_tokens is None
                 or (type(completion_tokens) is int and -2**63 <= completion_tokens < 2**63)))


def _stored(key: str) -> bytes:
    """A request key (64 hex characters) as the file stores it: its first 16 bytes. 128 bits
    of sha256 still make a collision unthinkable (about 2**64 answers before one is likely).
    Any other string (an older file's own keys, a test's) as the first 16 bytes of its sha256."""
    if len(key) == 64:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raw = b""
        if len(raw) == 32:
            return raw[:16]
    return _sha256(key.encode("utf-8", "surrogatepass")).digest()[:16]


_first = operator.itemgetter(0)


def _unusable(e: BaseException) -> bool:
    """The file is no database we can use (not a lock, a permission or a missing folder)."""
    return isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError)


def _sqlite_value(value: Any) -> Any:
    """``value`` as SQLite can bind it: a string that is not valid UTF-8 (a lone surrogate, which
    JSON's ``\\ud800`` escape gives) as a BLOB of its bytes, kept as they are (surrogatepass); a
    real text is never a BLOB, so ``_text_of`` knows which to turn back."""
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass")
    return value


def _bound(item: tuple[str, tuple[Any, ...]]) -> tuple[Any, ...]:
    """A buffered (key, row) as the INSERT binds it: the key as stored, a text column that is not
    valid UTF-8 as its bytes (``_sqlite_value``; only the text columns can be, and ASCII never is)."""
    key, (text, finish_reason, prompt_tokens, completion_tokens, model, latency_s, attempts, extra, created) = item
    if not (text.isascii() and (finish_reason is None or finish_reason.isascii())
            and (model is None or model.isascii()) and (extra is None or extra.isascii())):
        text, finish_reason, model, extra = map(_sqlite_value, (text, finish_reason, model, extra))
    return (_stored(key), text, finish_reason, prompt_tokens, completion_tokens, model, latency_s, attempts, extra,
            created)


def _text_of(value: Any) -> Any:
    """A value read from the file: a BLOB (``_sqlite_value``'s) back to the string it was."""
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def _chunks(select: str, values: list[Any]) -> Iterator[tuple[str, list[Any]]]:
    """(sql, values) for ``select (?, ?, ...)`` over ``values`` in chunks of ``CHUNK``."""
    full = f"{select} ({','.join('?' * CHUNK)})"
    for i in range(0, len(values), CHUNK):
        chunk = values[i:i + CHUNK]
        yield (full if len(chunk) == CHUNK else f"{select} ({','.join('?' * len(chunk))})"), chunk


def _reason(e: BaseException) -> str:
    """An exception as a one-line reason."""
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror
    return text
