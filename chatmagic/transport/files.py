"""The Files and Batches endpoints of a server, for ``--batch``: the same edge as chat requests.

Everything is read as ``Client.complete`` reads (``transport/limits.py``): one decompression,
ours (aiohttp's is off: inflating twice failed every gzip answer), the size cap on every body
including error bodies, the key scrubbed from every message. Each call has a deadline on the
whole call, not only per read (a server trickling a byte a second never ends a per-read
timeout); uploads and downloads may be large, so theirs grows with the bytes moved, at no less
than ``MIN_RATE``. Every failure leaves as a ``RequestError``: no aiohttp or parser exception,
whose frames hold the request headers, reaches the user.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from chatmagic.errors import RequestError
from chatmagic.transport.client import Client, request_headers
from chatmagic.transport.limits import ACCEPT_ENCODING, TooLarge, inflated, read_capped

#: Bytes a second an upload or a download must average past its first ``timeout`` seconds.
MIN_RATE = 16_000


class FilesClient(Client):
    """JSON in, JSON out (or the lines of a file), errors as ``RequestError``."""

    async def __aenter__(self) -> FilesClient:
        s = self._settings
        self.base = s.base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers={"Accept-Encoding": ACCEPT_ENCODING, **request_headers(s)}, trust_env=False,
            connector=aiohttp.TCPConnector(limit=8), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=s.timeout, sock_connect=s.connect_timeout))
        return self

    def _deadline(self, size: int = 0) -> aiohttp.ClientTimeout:
        """The whole call's limit: ``timeout``, plus the time ``size`` bytes take at MIN_RATE."""
        s = self._settings
        return aiohttp.ClientTimeout(total=s.timeout + size / MIN_RATE, sock_read=s.timeout,
                                     sock_connect=s.connect_timeout)

    async def upload(self, path: str | os.PathLike[str], filename: str) -> dict[str, Any]:
        """``POST /files`` (multipart, ``purpose=batch``), streaming the file from disk."""
        with open(path, "rb") as f:
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", f, filename=filename, content_type="application/jsonl")
            return await self.call("POST", "/files", data=form, size=os.path.getsize(path))

    async def call(self, method: str, path: str, *, size: int = 0, **kw: Any) -> dict[str, Any]:
        """One JSON request (``json=`` or ``data=``, of ``size`` bytes) to ``base_url + path``;
        the answer's JSON object."""
        try:
            async with self._session.request(method, self.base + path, proxy=self._proxy,
                                             timeout=self._deadline(size), **kw) as resp:
                raw = await read_capped(resp, self._cap)
                status, headers = resp.status, resp.headers
        except Exception as e:  # as in Client._post: no aiohttp frame escapes
            raise self._failed(e) from None
        data = _json(raw)
        if status != 200 or not isinstance(data, dict):
            raise self._error(status, data, raw, self._dialect.hints(headers))
        return data

    def _failed(self, e: BaseException) -> RequestError:
        if isinstance(e, asyncio.TimeoutError):
            return RequestError(f"no answer within {self._settings.timeout:g}s", code="timeout")
        if isinstance(e, TooLarge):
            size = f"{e.size / 1e6:,.0f} MB announced" if e.announced else "more than that"
            return RequestError(f"answer over the {self._cap / 1e6:g} MB limit ({size}; max_response_mb)",
                                code="too_large", retryable=False)
        if isinstance(e, aiohttp.ClientError):
            return self._client_error(e)
        return RequestError(self.scrub(f"{type(e).__name__}: {e}"), code="client_error", retryable=False)

    def lines(self, file_id: str) -> AsyncIterator[bytes]:
        """The lines of a file's content (``GET /files/{id}/content``), as bytes, streamed."""
        return self.lines_at(f"/files/{file_id}/content")

    async def lines_at(self, path: str) -> AsyncIterator[bytes]:
        """The lines of the answer to ``GET base_url + path``, as bytes, streamed (each line
        capped as one answer is; an error body capped and timed as any answer)."""
        try:
            async with self._session.get(self.base + path, proxy=self._proxy) as resp:
                if resp.status != 200:
                    raw = await asyncio.wait_for(read_capped(resp, self._cap), self._settings.timeout)
                    raise self._error(resp.status, _json(raw), raw, self._dialect.hints(resp.headers))
                rest = b""
                async for chunk in self._timed(inflated(resp)):
                    *complete, rest = (rest + chunk).split(b"\n")
                    for line in complete:
                        yield self.scrub_raw(line)  # a result line is an answer: scrubbed before parsing
                    if len(rest) > self._cap:  # one result line is one answer: the same cap
                        raise TooLarge(len(rest))
                if rest.strip():
                    yield self.scrub_raw(rest)
        except RequestError:
            raise
        except Exception as e:
            raise self._failed(e) from None

    async def _timed(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks``, each awaited no later than the download's deadline (``timeout`` plus the
        bytes so far at MIN_RATE): a trickling server ends at that deadline, a fast one never."""
        started, moved = time.monotonic(), 0
        while True:
            left = started + self._settings.timeout + moved / MIN_RATE - time.monotonic()
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), max(left, 0.001))
            except StopAsyncIteration:
                return
            moved += len(chunk)
            yield chunk


def _json(raw: bytes) -> Any:
    """A Files/Batches answer's JSON, or None when it is not JSON (the caller says what it expected)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None
