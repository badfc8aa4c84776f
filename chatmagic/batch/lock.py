"""Submitting a batch is one process at a time per cache folder, and its files live there.

Two processes running the same ``--batch`` cell at once on one cache would both find no batch
stored and both pay. So submitting holds a lock file beside the cache (``batch.lock``, an OS
lock the kernel drops with the process, so a killed run never leaves it held): the second
process waits (saying so, with the holder's pid), then reads the store again and attaches to the first one's batch.

The temporary JSONL files (the prompts, up to 256 MB each) are written in the cache folder's
``batch-files/`` (owner-only, as the cache), not the system temp folder; one left by a run
killed while submitting is removed by the next one, under the lock (so never a live one's).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from chatmagic.core.cache import default_dir
from chatmagic.errors import ChatmagicWarning

LOCK_NAME = "batch.lock"
FILES_DIR = "batch-files"
PREFIX, SUFFIX = "chatmagic-batch-", ".jsonl"

#: Seconds between tries while another process holds the lock.
LOCK_POLL = 0.05


def _try_lock(fd: int) -> bool:
    """Take the lock on ``fd`` without waiting; False if another process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@asynccontextmanager
async def submitting(folder: Path | None = None) -> AsyncIterator[Path | None]:
    """Hold the cache folder's submit lock (waiting for another process's submission to end);
    yields the folder for this submission's temporary files, leftovers removed, or None if the
    cache folder cannot be used (then no lock is held and files go to the system temp folder)."""
    folder = folder or default_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield None
        return
    try:
        if not _try_lock(fd) and (holder := _holder(fd)) != os.getpid():
            # a wait the user did not ask for: said out loud, with whom it waits for (not when the
            # holder is this process: another model's run of the same -m a,b cell)
            named = f" (pid {holder})" if holder else ""
            warnings.warn(f"chatmagic: another process{named} is submitting a batch from {folder}; "
                          "waiting until it has (interrupt to stop waiting)", ChatmagicWarning, stacklevel=3)
        while not _try_lock(fd):
            await asyncio.sleep(LOCK_POLL)  # the other process is uploading: it ends, or dies
        _claim(fd)
        yield _emptied(folder / FILES_DIR)
    finally:
        os.close(fd)  # releases the lock


def _claim(fd: int) -> None:
    """Write this process's id in the lock file, for a waiting process to name."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except (OSError, AttributeError):  # pwrite: not on Windows; the id is only for the message
        pass


def _holder(fd: int) -> int | None:
    """The id of the process holding the lock, as it wrote itself there, else None."""
    try:
        pid = os.pread(fd, 20, 0).decode("ascii").strip()
    except (OSError, AttributeError, UnicodeDecodeError):
        return None
    return int(pid) if pid.isdigit() else None


def _emptied(files: Path) -> Path | None:
    """``files``, made if missing, without the leftovers of a killed run; None if unusable."""
    try:
        files.mkdir(mode=0o700, exist_ok=True)
        for left in files.glob(f"{PREFIX}*{SUFFIX}"):  # no live run has one: we hold the lock
            left.unlink(missing_ok=True)
    except OSError:
        return None
    return files


def scratch_file(folder: Path | None) -> str:
    """A new empty temporary JSONL file in ``folder`` (else the system temp folder); its path."""
    fd, path = tempfile.mkstemp(prefix=PREFIX, suffix=SUFFIX, dir=folder)
    os.close(fd)
    return path
