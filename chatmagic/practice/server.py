"""A practice OpenAI-compatible chat-completions server, for lessons, tests and benchmarks.

    from chatmagic.practice.server import FakeOpenAI
    server = FakeOpenAI(latency=0.5, rpm=600, fail_rate=0.1).start()   # server.base_url
    python -m chatmagic.practice.server --port 8000 --latency 0.05 --rpm 1200

Not used by the engine (which never imports aiohttp.web); it is here so that a classroom
demo, like notebooks/teaching.ipynb, can show rate limits, failures and stalls offline.

It echoes the last user message back (with ``[turns=N]`` when there were earlier turns, and
``[media=N: 64x48 image/png 1,234 B; ...]`` for its images and files, whose parts it checks as
OpenAI does: practice/shapes.py) and can simulate latency, rate limits
(with OpenAI / Azure style headers), random failures and stalls.  Rate limits come in
the shapes real servers have, one keyword (or flag) each: ``limit_shape`` "per_second"
(default), "quantized" (enforced per second like "per_second", but announced as OpenAI does:
``remaining`` scaled to the minute, ``reset`` under a second), "bucket" or "window" (with
``window_s``); ``daily=N`` announces a per-day budget
while the rpm limit is enforced silently; ``headers`` "openai", "azure" (remaining only),
"retry-after" (429s say only that) or "none", or another provider's family ("anthropic",
"unsuffixed", "openrouter": practice/provider_shapes.py); ``storm_s`` answers 429 (``storm_status``: 503,
529, Groq's 498) to everything for that long (``math.inf``: forever); ``retry_after`` overrides
the wait every 429 asks for. ``error_shape`` answers errors as Gemini, OpenRouter, vLLM, Ollama
or llama.cpp do; ``auth="api-key"`` wants classic Azure's ``api-key`` header and ``?api-version=``
(also at ``/openai/deployments/NAME/chat/completions``).  ``queue_s`` holds every request as
DeepSeek does under load: the 200 at once, then a blank line every 0.1 s until the answer.  Individual
prompts can script their own behaviour with ``[[directive]]`` markers, e.g.
``"hello [[fail:500:2]]"`` fails twice, then answers.  Only binds 127.0.0.1.

A request with ``response_format`` ``json_schema`` gets an object that conforms to the schema,
its values derived from the prompt (``[[badschema]]``, or ``[[badschema:N]]`` for the first N
attempts, answers one that does not); ``schemas=False`` refuses such requests with a 400.

Every answer carries an ``x-request-id``; ``usage="openai"`` reports usage as OpenAI does for a
reasoning model with prompt caching (cached and reasoning tokens); ``[[refuse]]`` answers with a
refusal (content null, ``refusal`` set) and ``[[think]]`` adds ``reasoning_content``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from chatmagic.practice import hostile_data
from chatmagic.practice.batch import BatchAPI
from chatmagic.practice.provider_shapes import ERROR_SHAPES, HEADER_FAMILIES, family_headers, shaped_error, too_long
from chatmagic.practice.shapes import openai_media, openai_problem
from chatmagic.practice.wire import DIRECTIVE, HOST, InThread, error_response
from chatmagic.practice.wire import text_of as _text

DEFAULT_CODES = {400: "invalid_request_error", 401: "invalid_api_key", 404: "model_not_found",
                 429: "rate_limit_exceeded", 498: "capacity_exceeded", 500: "server_error",
                 503: "service_unavailable", 529: "overloaded_error"}


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String(), which OpenAI uses in x-ratelimit-reset-*."""
    ns = max(0, round(seconds * 1e9))  # integer maths: no float noise in the output
    if ns == 0:
        return "0s"
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return _decimal(ns, size) + unit
    hours, ns = divmod(ns, 3600 * 10**9)
    minutes, ns = divmod(ns, 60 * 10**9)
    prefix = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return prefix + _decimal(ns, 10**9) + "s"


def _decimal(value: int, size: int) -> str:
    whole, frac = divmod(value, size)
    digits = f"{frac:0{len(str(size)) - 1}d}".rstrip("0") if frac else ""
    return f"{whole}.{digits}" if digits else str(whole)


class TokenBucket:
    """Per-minute limit refilled continuously, starting full.

    The default capacity, limit/60, enforces the per-minute limit per second (a continuous
    bucket rather than a fixed 1 s window handles non-integer limit/60); ``capacity=limit``
    is OpenAI's documented bucket. A request needing more than the capacity is admitted once
    the bucket is full and drives it negative, so the long-run rate still holds. ``limit`` is
    what the headers announce.
    """

    def __init__(self, per_minute: float, capacity: float | None = None, limit: float | None = None):
        self.limit = per_minute if limit is None else limit
        self.rate = per_minute / 60.0
        self.capacity = self.rate if capacity is None else capacity
        self.level = self.capacity
        self.stamp = time.monotonic()

    def wait_for(self, cost: float) -> float:
        """Seconds until `cost` could be taken (0 = now)."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return max(0.0, (min(cost, self.capacity) - self.level) / self.rate)

    def take(self, cost: float) -> None:
        self.level -= cost

    def reset_in(self) -> float:
        return (self.capacity - self.level) / self.rate


class FixedWindow:
    """``limit`` per window of ``window_s`` seconds, counted from the first request: remaining
    counts down, and all of it comes back when the window ends (reset = time to that end)."""

    def __init__(self, limit: float, window_s: float):
        self.limit, self.window_s = limit, window_s
        self.start: float | None = None
        self.used = 0.0

    def _roll(self) -> float:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        if now - self.start >= self.window_s:
            self.start += (now - self.start) // self.window_s * self.window_s
            self.used = 0.0
        return now

    @property
    def level(self) -> float:
        self._roll()
        return self.limit - self.used

    def wait_for(self, cost: float) -> float:
        now = self._roll()
        assert self.start is not None  # set by _roll
        return 0.0 if self.used + cost <= self.limit else self.start + self.window_s - now

    def take(self, cost: float) -> None:
        self.used += cost

    def reset_in(self) -> float:
        now = self._roll()
        assert self.start is not None  # set by _roll
        return self.start + self.window_s - now


class Stats:
    def __init__(self, in_flight: int = 0, record_times: bool = False):
        self.requests = 0
        self.by_status: Counter[int] = Counter()
        self.in_flight = in_flight  # carried over so a reset mid-request stays consistent
        self.peak_in_flight = in_flight
        self.attempts: Counter[str] = Counter()
        self.auth_headers: set[str] = set()
        self.api_versions: set[str] = set()  # ?api-version= values seen (auth="api-key")
        self.times: list[Any] | None = [] if record_times else None
        self.answers: list[Any] | None = [] if record_times else None  # (arrival time, status)
        self.params: dict[str, Any] | None = None  # the last answer's echo_params: its body but messages


class FakeOpenAI(InThread):
    def __init__(self, *, latency: float = 0.0, rpm: int | None = None, tpm: int | None = None,
                 headers: str = "openai", fail_rate: float = 0.0, stall_rate: float = 0.0,
                 stall_s: float = 30.0, seed: int = 0, model: str = "fake-model",
                 unknown_models: set[str] | None = None, record_times: bool = False, port: int = 0,
                 batch_pace: float = 0.0, batch_invalid: str | None = None,
                 batch_expire_after: int | None = None,
                 limit_shape: str = "per_second", window_s: float = 60.0, daily: int | None = None,
                 storm_s: float = 0.0, retry_after: float | None = None,
                 schemas: bool = True, answer_model: str | None = None, error_shape: str = "openai",
                 storm_status: int = 429, auth: str = "bearer", models: Iterable[str] | None = None,
                 usage: str = "basic", queue_s: float = 0.0):
        self.latency, self.headers = latency, headers
        # DeepSeek under load: each request held this long, the 200 sent at once and a blank line
        # every KEEPALIVE_EVERY s (its keep-alive) until the answer; ``[[queue:S]]`` for one prompt
        self.queue_s = queue_s
        # provider shapes (practice/provider_shapes.py); auth "api-key": Azure's classic header and ?api-version=
        self.error_shape, self.storm_status, self.auth = error_shape, storm_status, auth
        # rate-limit shapes (see _bucket); set before rpm/tpm, which build the buckets
        self.limit_shape, self.window_s, self.daily = limit_shape, window_s, daily
        self.storm_s, self.retry_after = storm_s, retry_after
        self.fail_rate, self.stall_rate, self.stall_s = fail_rate, stall_rate, stall_s
        self.seed, self.model = seed, model
        self.unknown_models = set(unknown_models or ())
        # the models that exist, when given: any other name is a 404 model_not_found, as real servers say
        self.models = None if models is None else list(dict.fromkeys(models))
        self.record_times, self.port = record_times, port
        self.schemas = schemas
        self.sleep = asyncio.sleep  # waits out latency and stalls; a test may record them instead
        self._rpm_bucket: TokenBucket | FixedWindow | None = None
        self._tpm_bucket: TokenBucket | FixedWindow | None = None
        # a server that answers with its own model whatever is asked for (llama.cpp does)
        self.answer_model = answer_model
        self.usage = usage  # "basic" or "openai" (with cached and reasoning tokens); see _usage
        self.rpm, self.tpm = rpm, tpm  # properties: (re)build the buckets
        self.rng = random.Random(seed)
        self.stats = Stats(record_times=record_times)
        self._ids = 0
        self.batch = BatchAPI(self, pace=batch_pace, invalid=batch_invalid, expire_after=batch_expire_after)

    # Setting rpm/tpm between tests starts a fresh, full bucket.
    rpm = property(lambda self: self._rpm, lambda self, v: self._set_limit("rpm", v))
    tpm = property(lambda self: self._tpm, lambda self, v: self._set_limit("tpm", v))

    def _set_limit(self, name: str, value: float | None) -> None:
        setattr(self, "_" + name, value)
        setattr(self, "_" + name + "_bucket", self._bucket(value) if value else None)
        if name == "rpm":  # the announced daily budget starts full along with the minute's
            self._daily_bucket = (TokenBucket(self.daily / 1440, self.daily, limit=self.daily)
                                  if self.daily else None)
        self._storm_started: float | None = None

    def _bucket(self, per_minute: float) -> TokenBucket | FixedWindow:
        """The limit per minute, enforced as ``limit_shape`` says: "per_second" (a bucket one
        second deep: OpenAI in practice), "bucket" (one minute deep, starting full: OpenAI's
        documented semantics) or "window" (fixed windows of ``window_s`` seconds). "quantized"
        enforces like "per_second"; only its headers differ (``_limit_headers``)."""
        if self.limit_shape == "bucket":
            return TokenBucket(per_minute, per_minute)
        if self.limit_shape == "window":
            return FixedWindow(per_minute * self.window_s / 60, self.window_s)
        if self.limit_shape not in ("per_second", "quantized"):
            raise ValueError(f"unknown limit_shape {self.limit_shape!r}")
        return TokenBucket(per_minute)

    def reset_stats(self) -> None:
        """Fresh stats and attempt counts (so [[...:N]] scripts restart), reseeded rng."""
        self.stats = Stats(self.stats.in_flight, self.record_times)
        self.rng = random.Random(self.seed)
        self._storm_started = None  # a storm starts again with the next request

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    # ---- request handling -------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        st = self.stats
        st.requests += 1
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        arrived = time.monotonic()
        if st.times is not None:
            st.times.append(arrived)
        auth = request.headers.get("Authorization")
        if auth is not None:
            st.auth_headers.add(auth)
        try:
            resp = self._refused(request) or await self._answer(request, st)
            st.by_status[resp.status] += 1
            if st.answers is not None:
                st.answers.append((arrived, resp.status))
            return resp
        finally:
            self.stats.in_flight -= 1  # not `st`: reset_stats() carries in_flight over

    def _refused(self, request: web.Request) -> web.Response | None:
        """With ``auth="api-key"`` (classic Azure): a 401 unless an ``api-key`` header and an
        ``api-version`` query came, as Azure answers."""
        if self.auth != "api-key":
            return None
        if not request.headers.get("api-key") or "Authorization" in request.headers:
            return self._err(401, "Access denied due to invalid subscription key or wrong API endpoint.", "401")
        if not request.query.get("api-version"):
            return self._err(404, "Resource not found", "404")
        self.stats.api_versions.add(request.query["api-version"])
        return None

    def _err(self, status: int, message: str, code: str | None, type_: str | None = None,
             headers: Mapping[str, str] | None = None,
             script: dict[str, Any] | None = None) -> web.Response:
        return shaped_error(self.error_shape, status, message, code, type_, headers, script)

    async def _answer(self, request: web.Request, st: Stats) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            messages = None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return self._err(400, "Request body must be JSON with a 'messages' list.", None)
        refused = openai_problem(messages)  # content parts checked as OpenAI does (shapes.py)
        if refused is not None:
            return error_response(400, refused[0], "invalid_value", param=refused[1])
        prompt = next((_text(m.get("content")) for m in reversed(messages)
                       if m.get("role") == "user"), "")
        # Every request counts as an attempt, also ones rejected below (404, 429).
        st.attempts[prompt] += 1
        model = body.get("model", self.model)
        if model in self.unknown_models or (self.models is not None and model not in self.models):
            return self._err(404, f"The model `{model}` does not exist or you do not have access "
                          "to it.", "model_not_found")
        if not self.schemas and _schema_of(body) is not None:
            return self._err(400, "Invalid parameter: 'response_format' of type 'json_schema' is not "
                          "supported with this model.", None)
        limited, headers = self._storm() or self._rate_limit(body, messages)
        if limited is not None:
            return limited
        script = self._directives(prompt) if "[[" in prompt else {}
        hostile = await self._hostile(request, script, body, messages, prompt) if script else None
        if hostile is not None:
            return hostile
        failure = await self._chaos(script, st.attempts[prompt], headers)
        if failure is not None:
            return failure
        queued = float(script["queue"][0]) if "queue" in script else self.queue_s
        delay = float(script["sleep"][0]) if "sleep" in script else self.latency
        if delay > 0 and not queued:
            await self.sleep(delay)
        answer = self.completion(body, messages, prompt, script)
        headers = {**headers, "x-request-id": f"req_{answer['id']}"}
        if queued:
            return await self._queued(request, queued, delay, answer, headers)
        return web.json_response(answer, headers=headers)

    async def _queued(self, request: web.Request, seconds: float, delay: float, answer: dict[str, Any],
                      headers: dict[str, str]) -> web.StreamResponse:
        """DeepSeek's way under load: the 200 at once, a blank line every KEEPALIVE_EVERY s while
        the request waits its turn (``seconds``), then ``delay`` of work and the answer."""
        resp = web.StreamResponse(status=200, headers={**headers, "Content-Type": "application/json"})
        await resp.prepare(request)
        for _ in range(max(1, round(seconds / KEEPALIVE_EVERY))):
            await resp.write(b"\n")
            await self.sleep(KEEPALIVE_EVERY)
        if delay > 0:
            await self.sleep(delay)
        await resp.write(json.dumps(answer).encode())
        await resp.write_eof()
        return resp

    @staticmethod
    def _directives(prompt: str) -> dict[str, Any]:
        return {m[1]: m[2].split(":") if m[2] else [] for m in DIRECTIVE.finditer(prompt)}

    async def _chaos(self, script: dict[str, Any], attempt: int, headers: dict[str, str]) -> web.Response | None:
        """Stalls and failures, random then scripted; returns an error response or None."""
        def active(args: list[str], n_index: int) -> bool:  # "[[x:...:N]]" applies to the first N attempts only
            return len(args) <= n_index or attempt <= int(args[n_index])
        if self.stall_rate and self.rng.random() < self.stall_rate:
            await self.sleep(self.stall_s)
        if "stall" in script and active(script["stall"], 1):
            await self.sleep(float(script["stall"][0]))
        if self.fail_rate and self.rng.random() < self.fail_rate:
            return self._err(500, "The server had an error processing your request.",
                          "server_error", headers=headers)
        if "toolong" in script:
            return too_long(headers)
        if "fail" in script and active(script["fail"], 1):
            return self._scripted_failure(int(script["fail"][0]), script, headers)
        if "bad200" in script and active(script["bad200"], 0):
            return web.json_response({"error": {"message": "upstream error", "code": 502}},
                                     headers=headers)
        return None

    def _scripted_failure(self, status: int, script: dict[str, Any], headers: dict[str, str]) -> web.Response:
        code = script["code"][0] if "code" in script else DEFAULT_CODES.get(status)
        if status == 429:
            if "code" not in script and self.headers == "azure":
                code = "429"
            wait = script.get("retry_after", ["1"])[0]
            if wait != "none":  # [[retry_after:none]] → a 429 without retry hints
                headers = {**headers, **_retry_headers(float(wait))}
        type_ = script["type"][0] if "type" in script else ("insufficient_quota" if code == "insufficient_quota"
                                                            else None)
        return self._err(status, f"Scripted failure {status}.", code, type_, headers, script)

    def _storm(self) -> tuple[web.Response, dict[str, str]] | None:
        """With ``storm_s``: a 429 (retry-after 1 s) for every request in the first ``storm_s``
        seconds after the first request (math.inf: 429 forever)."""
        if not self.storm_s:
            return None
        now = time.monotonic()
        if self._storm_started is None:
            self._storm_started = now
        if now - self._storm_started >= self.storm_s:
            return None
        headers: dict[str, str] = {} if self.headers == "none" else {"retry-after": "1"}
        status = self.storm_status
        return self._err(status, "The server is overloaded; please retry.", DEFAULT_CODES.get(status),
                         headers=headers), headers

    def _rate_limit(self, body: dict[str, Any], messages: list[Any]) -> tuple[web.Response | None, dict[str, str]]:
        """Check the rpm/tpm (and daily) buckets; returns (429 or None, headers for the reply).

        With ``daily``, the headers announce a per-day request budget while the rpm limit is
        enforced silently: its 429s say only retry-after (Groq's free tier does this)."""
        rb, tb, db = self._rpm_bucket, self._tpm_bucket, self._daily_bucket
        if rb is None and tb is None:
            return None, {}
        # max_tokens is reserved when given; else the answer's own length is charged (what its
        # usage will say), as a server that counts real usage does
        tokens = _prompt_tokens(messages) + int(
            body.get("max_tokens") or body.get("max_completion_tokens") or _echo_tokens(messages))
        waits = {"requests": max(rb.wait_for(1) if rb else 0.0, db.wait_for(1) if db else 0.0),
                 "tokens": tb.wait_for(tokens) if tb else 0.0}
        kind = max(waits, key=lambda k: waits[k])
        if waits[kind] == 0:
            for bucket, cost in ((rb, 1), (tb, tokens), (db, 1)):
                if bucket is not None:
                    bucket.take(cost)
        headers = self._limit_headers(db or rb, tb)
        if waits[kind] == 0:
            return None, headers
        if self.headers != "none":
            headers.update(_retry_headers(waits[kind] if self.retry_after is None else self.retry_after,
                                          ms=self.headers != "retry-after" and not db))
        bucket = rb if kind == "requests" else tb
        assert bucket is not None  # it asked for a wait
        limit = bucket.limit
        message = (f"Rate limit reached for {kind} per min (RPM/TPM): Limit {limit}. "
                   f"Please try again in {go_duration(waits[kind])}.")
        code = "429" if self.headers == "azure" else "rate_limit_exceeded"
        return self._err(429, message, code, kind, headers), headers

    def _limit_headers(self, rb: TokenBucket | FixedWindow | None,
                       tb: TokenBucket | FixedWindow | None) -> dict[str, Any]:
        headers: dict[str, str] = {}
        if self.headers in ("none", "retry-after"):  # 429s say retry-after, nothing more
            return headers
        for kind, bucket in (("requests", rb), ("tokens", tb)):
            if bucket is None:
                continue
            if self.headers in HEADER_FAMILIES:
                headers.update(family_headers(self.headers, kind, bucket.limit, bucket.level, bucket.reset_in()))
                continue
            # quantized: the per-second bucket's level quoted in the minute's units (a full
            # second is the whole limit), its reset the second's refill: what OpenAI sends
            scale = (bucket.limit / bucket.capacity if isinstance(bucket, TokenBucket)
                     and self.limit_shape == "quantized" and bucket is not self._daily_bucket else 1)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level * scale)))
            if self.headers == "openai":
                headers[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
                # whole milliseconds, rounded up so clients never come back early
                reset = math.ceil(bucket.reset_in() * 1000) / 1000
                headers[f"x-ratelimit-reset-{kind}"] = go_duration(reset)
        return headers

    def completion(self, body: dict[str, Any], messages: list[Any], prompt: str,
                   script: dict[str, Any]) -> dict[str, Any]:
        """The chat-completion body answering one request (also each line of a batch)."""
        text = DIRECTIVE.sub("", prompt).strip() if script else prompt.strip()
        system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
        schema = _schema_of(body)
        if "badjson" in script:
            content = "not json {"
        elif schema is not None:
            content = json.dumps(self._structured(schema, text, script, prompt))
        elif "json" in script:
            content = json.dumps({"echo": text})
        else:
            content = f"echo: [system={system}] {text}" if system else f"echo: {text}"
            content += _media_note(messages)
        self._ids += 1
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if "refuse" in script:  # OpenAI's shape of a refusal: no content, the refusal beside it
            message.update(content=None, refusal=f"I can't help with {text!r}.")
        if "think" in script:  # DeepSeek's, llama.cpp's: the reasoning beside the answer
            message["reasoning_content"] = f"thinking about {text!r}"
        self.stats.params = echo = {k: v for k, v in body.items() if k != "messages"}
        return {
            "id": f"chatcmpl-fake{self._ids}", "object": "chat.completion",
            "created": int(time.time()), "model": self.answer_model or body.get("model", self.model),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": script["finish"][0] if "finish" in script else "stop"}],
            "usage": self._usage(_prompt_tokens(messages), len(content) // 4 + 1),
            "echo_params": echo,
        }

    def _usage(self, prompt_tokens: int, visible: int) -> dict[str, Any]:
        """``usage`` as ``self.usage`` says: "basic" (prompt, completion, total) or "openai", as
        OpenAI sends it for a reasoning model with prompt caching: half the prompt (rounded down)
        read from the cache, and 3 reasoning tokens per visible one, counted in completion_tokens."""
        if self.usage == "basic":
            return {"prompt_tokens": prompt_tokens, "completion_tokens": visible,
                    "total_tokens": prompt_tokens + visible}
        if self.usage != "openai":
            raise ValueError(f"unknown usage shape {self.usage!r}")
        completion = 4 * visible
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
                "prompt_tokens_details": {"cached_tokens": prompt_tokens // 2, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 3 * visible, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}

    # ---- hostile and broken servers (directives, one per misbehaviour) -------

    async def _hostile(self, request: web.Request, script: dict[str, Any], body: dict[str, Any], messages: list[Any],
                       prompt: str) -> web.StreamResponse | None:
        """``[[endless]]`` a body that never ends, ``[[hugelength]]`` a Content-Length of 1 GB,
        ``[[gzipbomb]]`` a small gzip body that inflates past 100 MB, ``[[keyecho:STATUS]]`` a
        plain-text error echoing the Authorization header, ``[[badjsonkey]]`` a non-JSON answer
        echoing it, ``[[parts]]`` content as a list of parts, ``[[numcontent]]`` content a
        number, ``[[strusage]]`` token counts as strings, ``[[redirectloop]]`` a 307 to itself,
        ``[[err200:CODE]]`` a 200 carrying an error with that code; hostile answer data
        (``[[keyfields]]``, ``[[deep:N]]``, ``[[surrogate]]``) is made in practice/hostile_data.py."""
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if "endless" in script or "hugelength" in script:
            return await self._flood(request, endless="endless" in script)
        if "gzipbomb" in script:
            return web.Response(body=_gzip_bomb(), headers={"Content-Encoding": "gzip"},
                                content_type="application/json")
        if "keyecho" in script:
            text = "upstream proxy rejected the request; the credentials it saw were " + key + " (ok?)"
            return web.Response(status=int(script["keyecho"][0] or 500), text=text)
        if "redirectloop" in script:
            raise web.HTTPTemporaryRedirect(str(request.rel_url))
        if "err200" in script:
            code = script["err200"][0]
            return web.json_response({"error": {"message": "This model's maximum context length is "
                                                "8192 tokens.", "code": int(code) if code.isdigit() else code}})
        odd = {"badjsonkey", "parts", "numcontent", "strusage"} & set(script)
        if not odd and not hostile_data.DIRECTIVES & set(script):
            return None
        answer = self.completion(body, messages, prompt, script)
        hostile_data.shape(answer, script, key, _schema_of(body))  # practice/hostile_data.py
        message, usage = answer["choices"][0]["message"], answer["usage"]
        if "badjsonkey" in script:
            message["content"] = f"sure: {key} is what you sent"
        if "parts" in script:
            message["content"] = [{"type": "text", "text": message["content"]},
                                  {"type": "image_url", "image_url": {"url": "x"}},
                                  {"type": "text", "text": " (parts)"}]
        if "numcontent" in script:
            message["content"] = 42
        if "strusage" in script:
            answer["usage"] = {k: str(v) for k, v in usage.items()}
        return web.json_response(answer, headers={"x-request-id": f"req_{answer['id']}"})

    async def _flood(self, request: web.Request, endless: bool) -> web.StreamResponse:
        """Send 64 KB chunks until the client hangs up (or 60 s pass): chunked with no end,
        or under a Content-Length of 1 GB."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if not endless:
            resp.content_length = 10**9
        await resp.prepare(request)
        chunk = b" " * 65536
        await resp.write(b'{"choices": [{"message": {"content": "flood"}}]}')
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                await resp.write(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp

    # ---- structured answers (response_format json_schema) ---------------------

    def _structured(self, schema: dict[str, Any], text: str, script: dict[str, Any], prompt: str) -> object:
        """An answer to a json_schema request: conforming, unless [[badschema]] says otherwise."""
        bad = script.get("badschema")
        if bad is not None and (not bad or self.stats.attempts[prompt] <= int(bad[0])):
            return {"not_in_schema": text}
        return conforming(schema, text)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "fakeserver"}
            for name in (self.models if self.models is not None else [self.model])]})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # ---- running -------------------------------------------------------------

    async def astart(self) -> FakeOpenAI:
        """Serve on the running loop (same process/loop as a benchmark)."""
        app = web.Application(client_max_size=512 * 1024 * 1024)  # batch input files, as OpenAI
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)  # classic Azure
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        self.batch.register(app.router)
        await self.serve(app)
        return self

    async def astop(self) -> None:
        await self.batch.aclose()
        await self.unserve()



_bomb: list[bytes] = []  # built once: 100 MB of spaces take a moment to compress


def _gzip_bomb(size: int = 100 * 2**20) -> bytes:
    """A valid completion padded with ``size`` spaces, gzipped (about 100 KB); built once."""
    if not _bomb:
        import zlib
        z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        head = b'{"choices": [{"message": {"content": "bomb"}}]}'
        parts = [z.compress(head)] + [z.compress(b" " * 2**20) for _ in range(size // 2**20)]
        _bomb.append(b"".join(parts) + z.flush())
    return _bomb[0]


# ---- structured answers ------------------------------------------------------


def _schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        schema = (rf.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else {}
    return None


def conforming(schema: dict[str, Any], text: str, root: dict[str, Any] | None = None, path: str = "") -> object:
    """A value that matches ``schema``, the same for the same ``text``: enums pick one of their
    values, numbers and booleans come from a hash of the text and the field's path."""
    root = schema if root is None else root
    if not isinstance(schema, dict):  # true (or false): any value
        return text[:40]
    ref = schema.get("$ref", "")
    if ref.startswith("#/"):
        target = root
        for part in ref[2:].split("/"):  # a pointer may step into a list: #/$defs/u/anyOf/0
            target = target[int(part)] if isinstance(target, list) else target.get(part, {})
        return conforming(target, text, root, path)
    h = zlib.crc32(f"{path}|{text}".encode())
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][h % len(schema["enum"])]
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        chosen = next((o for o in options if not (isinstance(o, dict) and o.get("type") == "null")), options[0])
        return conforming(chosen, text, root, path)
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        return {k: conforming(v, text, root, f"{path}/{k}")
                for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        items = range(1 + h % 2) if path.count("/") < 8 else ()  # a recursive schema's tree ends
        return [conforming(schema.get("items", {}), text, root, f"{path}/{i}") for i in items]
    values = {"integer": h % 10, "number": (h % 100) / 100, "boolean": h % 2 == 0, "null": None}
    return values.get(str(kind), text[:40])


def _media_note(messages: list[Any]) -> str:
    """What the answer says about a request that is more than one line: the turns before the
    last (when there are any) and the last user turn's images and files."""
    turns = sum(m.get("role") != "system" for m in messages)
    last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    media = openai_media(last.get("content"))
    note = f" [turns={turns}]" if turns > 1 else ""
    return note + (f" [media={len(media)}: {'; '.join(media)}]" if media else "")


def _echo_tokens(messages: list[Any]) -> int:
    """The completion tokens of the plain echo answer to ``messages`` (``completion``'s)."""
    prompt = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    text = DIRECTIVE.sub("", prompt).strip()
    content = (f"echo: [system={system}] {text}" if system else f"echo: {text}") + _media_note(messages)
    return len(content) // 4 + 1


def _prompt_tokens(messages: list[Any]) -> int:
    return sum(len(_text(m.get("content"))) for m in messages) // 4 + 1


#: Seconds between the blank lines of a queued request (``queue_s``). DeepSeek documents no pace
#: for its own; short here, so a test of a held request takes a second, not minutes.
KEEPALIVE_EVERY = 0.1


def _retry_headers(seconds: float, ms: bool = True) -> dict[str, Any]:
    headers = {"retry-after": str(max(1, math.ceil(seconds)))}
    if ms:
        headers["retry-after-ms"] = str(max(1, math.ceil(seconds * 1000)))
    return headers


def main() -> None:
    p = argparse.ArgumentParser(description="Fake OpenAI chat-completions server (127.0.0.1).")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--headers", choices=["openai", "azure", "retry-after", "none", *HEADER_FAMILIES])
    p.add_argument("--error-shape", choices=list(ERROR_SHAPES))
    p.add_argument("--storm-status", type=int, choices=[429, 498, 503, 529])
    p.add_argument("--auth", choices=["bearer", "api-key"], help="api-key: classic Azure's header and ?api-version=")
    p.add_argument("--limit-shape", choices=["per_second", "quantized", "bucket", "window"])
    p.add_argument("--model")
    p.add_argument("--models", type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
                   help="the models that exist, a,b,c (default: any); others get a 404 model_not_found")
    p.add_argument("--usage", choices=["basic", "openai"], help="the usage shape of answers")
    p.add_argument("--no-schemas", dest="schemas", action="store_false", default=None,
                   help="refuse response_format json_schema with a 400")
    for name, kind in (("latency", float), ("rpm", int), ("tpm", int), ("fail-rate", float),
                       ("stall-rate", float), ("stall-s", float), ("seed", int),
                       ("batch-pace", float), ("batch-invalid", str), ("batch-expire-after", int),
                       ("window-s", float), ("daily", int), ("storm-s", float), ("retry-after", float),
                       ("queue-s", float)):
        p.add_argument("--" + name, type=kind)
    # Options left out keep FakeOpenAI's own defaults.
    options = {k: v for k, v in vars(p.parse_args()).items() if v is not None}
    server = FakeOpenAI(**options).start()
    try:  # print inside the try: Ctrl-C may land while print() is still returning
        print(f"FakeOpenAI serving at {server.base_url}  (Ctrl-C to stop)", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
