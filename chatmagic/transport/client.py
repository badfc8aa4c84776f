"""The only module that speaks HTTP: one request in, one completion (or a RequestError) out.

aiohttp errors and error answers are mapped here to ``RequestError``; no other exception leaves
``complete``, so no traceback ever shows aiohttp's frames (whose locals hold the request
headers). The API key lives only in the session's headers, as a string whose repr hides it,
and is scrubbed from every message built from server text before that text is cut.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import sys
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from chatmagic.errors import ChatmagicWarning, RequestError
from chatmagic.providers import hints as hints
from chatmagic.providers.answer import request_id
from chatmagic.providers.dialect import Answer
from chatmagic.providers.profiles import auth_headers, profile
from chatmagic.transport.limits import ACCEPT_ENCODING, TooLarge, read_capped
from chatmagic.transport.proxies import is_loopback, proxy_for

if sys.version_info >= (3, 11):
    from asyncio import timeout as _deadline

    def _move(limit: Any, when: float) -> None:
        limit.reschedule(when)
else:  # aiohttp brings it on 3.10; its Timeout moves with update()
    from async_timeout import timeout as _deadline

    def _move(limit: Any, when: float) -> None:
        limit.update(when)

#: Server text kept in an error message, after the key is scrubbed.
MESSAGE_CHARS = 300
#: While this process has no free file descriptor, wait this long before trying again.
FILES_WAIT = 0.05
#: A server that holds a request and sends blank lines until its answer (DeepSeek under load:
#: the request is queued, not yet answered) keeps it alive: each blank line gives the attempt
#: its timeout again, up to this many seconds past it (DeepSeek closes such a request itself
#: after 10 minutes). Cut sooner, the request would lose its place in the queue, or be cut
#: once it was worked on (and so paid for) and be sent, and paid for, again.
QUEUE_MAX = 600.0

#: Answer's fields, read once (dataclasses.fields per answer was most of scrub_answer's cost).
_ANSWER_FIELDS = tuple(f.name for f in dataclasses.fields(Answer))
_warned_clear: set[str] = set()  # hosts warned about a key sent in clear, said once per process


@dataclass(slots=True)
class Completion:
    answer: Answer
    hints: hints.Hints  # what the server said about rate limits, for the throttle
    request_id: str | None = None  # the provider's id of this request (x-request-id, ...)

    @property
    def text(self) -> str:
        return self.answer.text

    @property
    def finish_reason(self) -> str | None:
        return self.answer.finish_reason

    @property
    def model(self) -> str | None:
        return self.answer.model


class _Hidden(str):
    """A secret header value (the key, a ``--header`` value): sent as it is, shown as ``'***'``
    (``'Bearer ***'``) in any repr (a verbose traceback prints the header dicts of aiohttp's frames)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'Bearer ***'" if self.startswith("Bearer ") else "'***'"


def request_headers(settings: Any) -> dict[str, str]:  # settings: a Settings (transport sits below it)
    """Every header a request carries beyond the content ones: the dialect's, the key in the
    profile's auth style, the user's ``headers``; the secret ones hidden from reprs."""
    key = settings.api_key
    secret = {**auth_headers(profile(settings.provider), key), **(settings.headers or {})}
    return {**settings.dialect.headers(settings), **{k: _Hidden(v) for k, v in secret.items()}}


class _NoFiles(Exception):
    """This process is out of file descriptors: a local condition, not the server's fault."""


class Client:
    """One aiohttp session for a run; its pool holds ``limit`` connections."""

    def __init__(self, settings: Any, limit: int | None = None):  # a Settings, typed Any: see request_headers
        self.url = settings.url
        self._key = settings.api_key
        self._dialect = settings.dialect
        # scrubbed from every message like the key: a gateway may echo a header back (a value of
        # three characters or fewer would blank out ordinary text, and is no secret)
        self._secrets = [v for v in (settings.api_key, *(settings.headers or {}).values()) if v and len(v) >= 4]
        self._raw_secrets = [v.encode("utf-8", "replace") for v in self._secrets]
        self._settings = settings
        self._limit = limit or settings.concurrency
        self._cap = int(settings.max_response_mb * 1_000_000)
        # a completion's time is bounded by _post's deadline (which blank lines may move), not aiohttp's
        self._untimed = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout)
        self.held, self.held_longest = 0, 0.0  # requests a server's blank lines kept past the timeout
        self._proxy = proxy_for(self.url, settings.proxy)  # the environment, read once per run
        self._session: aiohttp.ClientSession  # opened by __aenter__
        if self._key:
            _warn_if_clear(self.url)

    async def __aenter__(self) -> Client:
        s = self._settings
        headers = {"Content-Type": "application/json", "Accept-Encoding": ACCEPT_ENCODING,
                   **request_headers(s)}
        # aiohttp's default pool silently caps concurrency at 100; trust_env costs a lookup per request
        connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=headers, trust_env=False, auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=s.timeout, sock_connect=s.connect_timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def complete(self, body: bytes) -> Completion:
        """POST one chat completion (``body`` is the JSON request, already encoded)."""
        waited = 0.0
        while True:
            try:
                status, said, raw, rid = await self._post(body)
                break
            except _NoFiles:
                # other requests will free descriptors; waiting costs no attempt and no retry
                if waited >= self._settings.timeout:
                    raise RequestError("this process has no free file descriptor (open-file limit, "
                                       "`ulimit -n`); lower the concurrency", code="open_files",
                                       retryable=False) from None
                await asyncio.sleep(FILES_WAIT)
                waited += FILES_WAIT
        raw = self.scrub_raw(raw)
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        except RecursionError:  # a hostile answer the same every time: it fails its prompt at once
            if status == 200:
                raise RequestError("not a completion: the answer is nested too deep to read", status=200,
                                   code="too_deep", retryable=False) from None
            data = None
        if status != 200:
            raise self._error(status, data, raw, said)
        done = self._dialect.answer(data)
        if done is None:  # some gateways send errors in a 200 body
            raise self._error(200, data, raw, said)
        return Completion(self.scrub_answer(done), said, rid)

    async def _post(self, body: bytes) -> tuple[int, hints.Hints, bytes, str | None]:
        """(status, hints, body, request id) of one POST; every failure becomes a RequestError."""
        timeout = self._settings.timeout
        loop = asyncio.get_running_loop()
        started = loop.time()
        end = started + timeout

        def alive() -> None:  # a blank line before the answer: the server holds the request
            nonlocal end
            later = min(loop.time() + timeout, started + timeout + QUEUE_MAX)
            if later > end:
                end = later
                _move(limit, end)
        try:
            async with (_deadline(timeout) as limit,
                        self._session.post(self.url, data=body, proxy=self._proxy, timeout=self._untimed) as resp):
                out = (resp.status, self._dialect.hints(resp.headers),
                       await read_capped(resp, self._cap, alive), request_id(resp.headers, self.scrub))
            self._held(loop.time() - started, end > started + timeout)
            return out
        except TooLarge as e:
            size = f"{e.size / 1e6:,.0f} MB announced" if e.announced else "more than that"
            raise RequestError(f"answer over the {self._cap / 1e6:g} MB limit ({size}; max_response_mb)",
                               code="too_large", retryable=False) from None
        except asyncio.TimeoutError:
            took = loop.time() - started
            if self._held(took, end > started + timeout):
                raise RequestError(f"no answer within {timeout:g}s after the server's last blank line "
                                   f"(it held the request {hints.say(took)})", code="timeout") from None
            raise RequestError(f"no answer within {timeout:g}s", code="timeout") from None
        except aiohttp.ClientError as e:
            if _out_of_files(e):
                raise _NoFiles from None
            raise self._client_error(e) from None
        except Exception as e:  # no aiohttp frame (and its headers) may escape
            raise RequestError(self.scrub(f"{type(e).__name__}: {e}"), code="client_error",
                               retryable=False) from None

    def _held(self, took: float, moved: bool) -> bool:
        """Count a request that a server's blank lines kept past the timeout (True if this one was)."""
        if not moved or took <= self._settings.timeout:
            return False
        self.held += 1
        self.held_longest = max(self.held_longest, took)
        return True

    def note(self) -> str | None:
        """What the run should say of the waits servers' blank lines made past the timeout."""
        if not self.held:
            return None
        n = f"{self.held} request{'s' if self.held > 1 else ''}"
        return (f"the server held {n} with blank lines (queued) past the {self._settings.timeout:g}s timeout, "
                f"the longest {hints.say(self.held_longest)} (waited at most {hints.say(QUEUE_MAX)} more)")

    def _client_error(self, e: aiohttp.ClientError) -> RequestError:
        """Certificate errors and redirect loops fail at once: no retry can fix them."""
        message = self.scrub(f"{type(e).__name__}: {e}")
        if isinstance(e, aiohttp.ClientConnectorCertificateError):
            return RequestError(message, code="certificate", retryable=False)
        if isinstance(e, aiohttp.ClientSSLError):
            return RequestError(message, code="tls", retryable=False)
        if isinstance(e, aiohttp.TooManyRedirects):
            return RequestError(message, code="redirects", retryable=False)
        return RequestError(message, code="connection")

    def _error(self, status: int, data: Any, raw: bytes, said: hints.Hints) -> RequestError:
        """The dialect reads the error; its verdict and any wait named in the body travel with it."""
        f = self._dialect.failure(status, data, raw, said)
        message, code, action = f.message, f.code, f.action
        if f.reason:
            message = f"{f.reason}: {message}"
        if status == 200:
            message, code = f"not a completion: {message}", code or "bad_response"
            status = _embedded_status(code) or 200  # e.g. a 200 carrying a 400 (context length)
        if said.retry_after is None and f.retry_after is not None:  # e.g. Gemini's RetryInfo
            said = dataclasses.replace(said, retry_after=f.retry_after)
        return RequestError(self.scrub(message)[:MESSAGE_CHARS], status=status,
                            code=None if code is None else self.scrub(str(code))[:80], retry_after=said.retry_after,
                            hints=said, retryable=said.should_retry, action=action)  # x-should-retry, as openai-python

    def scrub(self, text: str) -> str:
        """``text`` without the key and header values. Scrub first, cut after: a cut key is no longer found."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def scrub_raw(self, raw: bytes) -> bytes:
        """An answer's bytes without the key and header values, before they are parsed: a dialect
        may cut a field (Anthropic's model, a request id), and a key cut in two is no longer found."""
        for secret in self._raw_secrets:
            raw = raw.replace(secret, b"***")
        return raw

    def scrub_answer(self, answer: Answer) -> Answer:
        """``answer`` with every string the server sent scrubbed (text, model, finish reason,
        refusal, reasoning): a gateway that echoes the key into a field would otherwise put it
        in the records, their reprs, the DataFrame and the cache file."""
        if not self._secrets:
            return answer
        changed: dict[str, Any] = {name: self.scrub(v) for name in _ANSWER_FIELDS
                   if isinstance(v := getattr(answer, name), str) and any(s in v for s in self._secrets)}
        return dataclasses.replace(answer, **changed) if changed else answer

    def __repr__(self) -> str:
        return f"<Client {self.url}>"


def _warn_if_clear(url: str) -> None:
    """Once per host: the key is about to travel unencrypted beyond this machine."""
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback(url) and parts.netloc not in _warned_clear:
        _warned_clear.add(parts.netloc)
        warnings.warn(f"chatmagic: the API key is sent unencrypted to {parts.netloc} (http://); "
                      "use https:// unless this network is trusted", ChatmagicWarning, stacklevel=4)


def _embedded_status(code: Any) -> int | None:  # whatever the server sent
    """An HTTP status given as the code of an error inside a 200 answer."""
    try:
        status = int(code)
    except (TypeError, ValueError):
        return 400 if code == "context_length_exceeded" else None
    return status if 400 <= status <= 599 else None


def _out_of_files(e: aiohttp.ClientError) -> bool:
    os_error = getattr(e, "os_error", None)
    return isinstance(os_error, OSError) and os_error.errno in (errno.EMFILE, errno.ENFILE)


def scrub(text: str, key: str | None) -> str:
    """``text`` with ``key`` replaced by ***. Scrub first, cut after: a cut key is no longer found."""
    return text.replace(key, "***") if key else text
