"""The only module that speaks HTTP: one request in, one completion (or a RequestError) out.

aiohttp errors and error answers are mapped here to ``RequestError``, so nothing else needs to
know aiohttp. The API key lives only in the session's headers and is scrubbed from messages.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import aiohttp

from . import hints
from .errors import RequestError


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None
    hints: hints.Hints  # what the server said about rate limits, for the throttle


class Client:
    """One aiohttp session for a run; its pool holds as many connections as the concurrency."""

    def __init__(self, settings):
        self.url = settings.url
        self._key = settings.api_key
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Client":
        s = self._settings
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        # aiohttp's default pool silently caps concurrency at 100; trust_env costs a lookup per request
        connector = aiohttp.TCPConnector(limit=s.concurrency, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=headers, trust_env=False,
            timeout=aiohttp.ClientTimeout(total=s.timeout, sock_connect=s.connect_timeout))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    async def complete(self, body: bytes) -> Completion:
        """POST one chat completion (``body`` is the JSON request, already encoded)."""
        try:
            async with self._session.post(self.url, data=body) as resp:
                raw = await resp.read()
                status, said = resp.status, hints.parse(resp.headers)
        except asyncio.TimeoutError:
            raise RequestError(f"no answer within {self._settings.timeout:g}s", code="timeout") from None
        except aiohttp.ClientError as e:
            raise RequestError(self._scrub(f"{type(e).__name__}: {e}"), code="connection") from None
        data = _json(raw)
        if status != 200:
            raise self._error(status, data, raw, said)
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Completion(choice["message"].get("content") or "", choice.get("finish_reason"),
                              usage.get("prompt_tokens"), usage.get("completion_tokens"),
                              data.get("model"), said)
        except (KeyError, IndexError, TypeError, AttributeError):
            # some gateways send errors in a 200 body
            raise self._error(200, data, raw, said) from None

    def _error(self, status: int, data, raw: bytes, said: hints.Hints) -> RequestError:
        err = data.get("error", data) if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or err)
            code = err.get("code") or err.get("type")
        else:
            message, code = raw[:200].decode("utf-8", "replace") or "empty answer", None
        if status == 200:
            message, code = f"not a completion: {message}", code or "bad_response"
        return RequestError(self._scrub(message), status=status, code=None if code is None else str(code),
                            retry_after=said.retry_after, hints=said,
                            retryable=said.should_retry)  # x-should-retry, as openai-python

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def __repr__(self) -> str:
        return f"<Client {self.url}>"


class FilesClient(Client):
    """The Files and Batches endpoints of the same server, for ``--batch``: JSON in, JSON out
    (or the lines of a file), errors as ``RequestError``. Uploads and downloads may be large,
    so only connecting and each read are timed, not the whole transfer."""

    async def __aenter__(self) -> "FilesClient":
        s = self._settings
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self.base = s.base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers=headers, trust_env=False, connector=aiohttp.TCPConnector(limit=8),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=s.timeout, sock_connect=s.connect_timeout))
        return self

    async def upload(self, path, filename: str) -> dict:
        """``POST /files`` (multipart, ``purpose=batch``), streaming the file from disk."""
        with open(path, "rb") as f:
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", f, filename=filename, content_type="application/jsonl")
            return await self.call("POST", "/files", data=form)

    async def call(self, method: str, path: str, **kw) -> dict:
        """One JSON request (``json=`` or ``data=``) to ``base_url + path``; the answer's JSON."""
        try:
            async with self._session.request(method, self.base + path, **kw) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        except (asyncio.TimeoutError, aiohttp.ClientError) as e:
            raise self._failed(e) from None
        data = _json(raw)
        if status != 200 or not isinstance(data, dict):
            raise self._error(status, data, raw, hints.parse(headers))
        return data

    def _failed(self, e: BaseException) -> RequestError:
        if isinstance(e, asyncio.TimeoutError):
            return RequestError(f"no answer within {self._settings.timeout:g}s", code="timeout")
        return RequestError(self._scrub(f"{type(e).__name__}: {e}"), code="connection")

    async def lines(self, file_id: str):
        """The lines of a file's content (``GET /files/{id}/content``), as bytes, streamed."""
        try:
            async with self._session.get(f"{self.base}/files/{file_id}/content") as resp:
                if resp.status != 200:
                    raw = await resp.read()
                    raise self._error(resp.status, _json(raw), raw, hints.parse(resp.headers))
                rest = b""
                async for chunk in resp.content.iter_chunked(1 << 16):
                    *complete, rest = (rest + chunk).split(b"\n")
                    for line in complete:
                        yield line
                if rest.strip():
                    yield rest
        except (asyncio.TimeoutError, aiohttp.ClientError) as e:
            raise self._failed(e) from None


def _json(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return None
