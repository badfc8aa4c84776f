"""What one run may take from this machine: the bytes of one answer and the open files.

A server decides how much it sends; we decide how much we keep. Bodies are read in chunks and
inflated here (not by aiohttp), so a ``Content-Length`` of 1 GB, an endless body or a gzip bomb
stops at the cap with no more than one chunk past it in memory.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatmagic.errors import ChatmagicWarning

#: What we ask servers for; other encodings are refused as unreadable, not inflated blind.
ACCEPT_ENCODING = "gzip, deflate"
CHUNK = 64 * 1024
#: Open files kept free for the rest of the process (the cache, the kernel's sockets, imports).
RESERVED_FILES = 32

_clamped: set[tuple[int, int]] = set()


class TooLarge(Exception):
    """The answer is over the cap; ``size`` says how far we got (or what was announced)."""

    def __init__(self, size: int, announced: bool = False):
        super().__init__(size)
        self.size, self.announced = size, announced


async def read_capped(resp: Any, cap: int, alive: Callable[[], None] | None = None) -> bytes:
    """The whole body of ``resp``, inflated, at most ``cap`` bytes, else ``TooLarge``.
    ``alive`` is called for each chunk of blank lines that comes before anything else (a
    server's keep-alive while the request waits: DeepSeek's under load).

    Raises ``zlib.error`` (as ValueError) for a body that does not inflate."""
    length = resp.content_length
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if length is not None and length > cap and encoding in ("", "identity"):
        raise TooLarge(length, announced=True)
    if length is not None and encoding in ("", "identity"):
        # announced and within the cap: one read, as aiohttp's parser stops at the length
        # (the chunk loop below cost ~10% of a request's client CPU at 5,000 in flight)
        return bytes(await resp.read())
    inflater = _inflater(encoding)
    parts, size = [], 0
    async for chunk in resp.content.iter_chunked(CHUNK):
        if inflater is not None:
            # max_length: never inflate more than one byte past the cap, whatever the ratio
            chunk = inflater.decompress(chunk, cap - size + 1)
        size += len(chunk)
        if size > cap:
            raise TooLarge(size)
        if alive is not None and chunk:
            if chunk.isspace():
                alive()
            else:
                alive = None  # the answer has begun
        parts.append(chunk)
    if inflater is not None:
        tail = inflater.flush()
        size += len(tail)
        if size > cap:
            raise TooLarge(size)
        parts.append(tail)
    return b"".join(parts)


async def inflated(resp: Any) -> AsyncIterator[bytes]:
    """The body of ``resp``, inflated by its Content-Encoding, at most CHUNK bytes at a time
    (a gzip bomb never inflates more than that at once)."""
    inflater = _inflater(resp.headers.get("Content-Encoding", "").strip().lower())
    async for chunk in resp.content.iter_chunked(CHUNK):
        if inflater is None:
            yield chunk
            continue
        while chunk:
            out = inflater.decompress(chunk, CHUNK)
            chunk = inflater.unconsumed_tail
            if out:
                yield out
    if inflater is not None and (tail := inflater.flush()):
        yield tail


def _inflater(encoding: str) -> Any:  # a zlib decompressor (or brotli's), None for identity
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header, detected
    raise ValueError(f"unsupported Content-Encoding {encoding!r} (asked for {ACCEPT_ENCODING})")


def connection_cap(concurrency: int) -> int:
    """``concurrency``, lowered so that the open connections fit under this process's open-file
    limit (RLIMIT_NOFILE's soft limit, e.g. 256 on macOS) with room for the rest. Says so once."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # Windows: no such limit on sockets
        return concurrency
    if soft == resource.RLIM_INFINITY:
        return concurrency
    cap = max(1, soft - _files_open() - RESERVED_FILES)
    if concurrency <= cap:
        return concurrency
    if (concurrency, soft) not in _clamped:
        _clamped.add((concurrency, soft))
        warnings.warn(f"chatmagic: concurrency {concurrency} lowered to {cap} to stay within this "
                      f"process's open-file limit ({soft}, `ulimit -n`); raise that limit for more",
                      ChatmagicWarning, stacklevel=3)
    return cap


def _files_open() -> int:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return 0
