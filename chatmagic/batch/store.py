"""Where submitted batches are remembered, so a re-run re-attaches instead of paying twice.

A ``batches`` table in the answer cache's SQLite file (its own connection; the answer table
is untouched). Each row: the batch id, a hash of the server's URL, the model, when it was
submitted, its last seen status and counts, whether its results were collected, and the
request keys (the answer cache's keys) it holds, packed as 32-byte digests. Like the cache it
holds no prompt text, URL or API key.

A run looks up the keys it still needs among the batches of its server that are not yet
collected: those it waits for; only the rest are submitted. A row is written right after
the server accepts the batch, so a kernel killed while waiting loses nothing. For a provider
whose batches carry no label of ours (Anthropic's), an *intent* row (``submitting:<part>``) is
written just before the batch is sent and dropped once it is recorded: a run that finds one
left over looks for the batch that may have been created (see batch/run.py).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatmagic.core.cache import DB_NAME, default_dir

SCHEMA = ("CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, server TEXT, model TEXT, "
          "created REAL, status TEXT, total INTEGER, completed INTEGER, failed INTEGER, "
          "collected INTEGER, keys BLOB)")


INTENT = "submitting:"


def server_hash(url: str) -> str:
    """The stored stand-in for a server's URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass
class StoredBatch:
    id: str
    server: str
    model: str
    created: float
    status: str
    total: int
    completed: int
    failed: int
    collected: bool

    def age(self, now: float | None = None) -> str:
        seconds = max(0, int((now or time.time()) - self.created))
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"


class BatchStore:
    """The ``batches`` table; every call commits at once (rows are few and precious)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_dir() / DB_NAME
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # owner-only, as the cache
        self._conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(SCHEMA)

    def add(self, batch_id: str, url: str, model: str, keys: list[str], total: int) -> None:
        packed = b"".join(bytes.fromhex(k) for k in keys)
        self._conn.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, ?)",
                           (batch_id, server_hash(url), model, time.time(), "validating", total, packed))

    def intend(self, part: str, url: str, model: str, total: int) -> None:
        """About to submit the batch ``part`` (a hash of its keys) of ``total`` requests."""
        self._conn.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, 'submitting', ?, 0, 0, 0, ?)",
                           (INTENT + part, server_hash(url), model, time.time(), total, b""))

    def intent(self, part: str, url: str) -> float | None:
        """When the batch ``part`` was about to be submitted to this server, if it never was recorded."""
        row = self._conn.execute("SELECT created FROM batches WHERE id=? AND server=?",
                                 (INTENT + part, server_hash(url))).fetchone()
        return None if row is None else float(row[0])

    def forget(self, batch_id: str) -> None:
        self._conn.execute("DELETE FROM batches WHERE id=?", (batch_id,))

    def update(self, batch_id: str, status: str, counts: dict[str, Any] | None, *, collected: bool = False) -> None:
        counts = counts or {}
        self._conn.execute("UPDATE batches SET status=?, total=coalesce(?, total), completed=?, failed=?, "
                           "collected=max(collected, ?) WHERE id=?",
                           (status, counts.get("total") or None, counts.get("completed", 0),
                            counts.get("failed", 0), int(collected), batch_id))

    def open_batches(self, url: str) -> dict[str, list[str]]:
        """Batch id -> request keys, for this server's batches not yet collected (oldest first)."""
        rows = self._conn.execute("SELECT id, keys FROM batches WHERE server=? AND collected=0 "
                                  "AND id NOT LIKE 'submitting:%' ORDER BY created", (server_hash(url),))
        return {batch_id: [packed[i:i + 32].hex() for i in range(0, len(packed), 32)]
                for batch_id, packed in rows}

    def listing(self) -> list[StoredBatch]:
        return self._rows("WHERE id NOT LIKE 'submitting:%' ORDER BY created")

    def get(self, batch_id: str) -> StoredBatch | None:
        found = self._rows("WHERE id=?", (batch_id,))
        return found[0] if found else None

    def _rows(self, where: str, args: tuple[Any, ...] = ()) -> list[StoredBatch]:
        rows = self._conn.execute("SELECT id, server, model, created, status, total, completed, failed, "
                                  f"collected FROM batches {where}", args)
        return [StoredBatch(id=r[0], server=r[1], model=r[2], created=r[3], status=r[4], total=r[5],
                            completed=r[6], failed=r[7], collected=bool(r[8])) for r in rows]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
