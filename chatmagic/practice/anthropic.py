"""A practice server that speaks Anthropic's own Messages API, for lessons, tests and benchmarks.

    from chatmagic.practice.anthropic import FakeAnthropic
    server = FakeAnthropic(rpm=600, api_key="sk-ant-test").start()   # server.base_url
    python -m chatmagic.practice.anthropic --port 8001 --rpm 600 --overload-s 5

``POST /v1/messages`` checks what the real API checks (``x-api-key`` when ``api_key`` is set,
``anthropic-version``, ``model``, ``max_tokens``, ``messages`` of roles user and assistant
only: a ``system`` role is refused, the system prompt goes top-level) and answers
``{id, type: "message", role, model, content: [{type: "text", text}], stop_reason,
stop_sequence, usage: {input_tokens, output_tokens, cache_creation_input_tokens,
cache_read_input_tokens}}``, echoing the last user message. ``stop_sequences`` and
``max_tokens`` cut the echo (``stop_reason`` "stop_sequence" / "max_tokens"). A forced tool
(``tools`` + ``tool_choice {"type": "tool", "name"}``) is answered with one ``tool_use`` block
whose ``input`` conforms to the tool's ``input_schema`` (``[[badschema]]`` breaks it).

Errors come in Anthropic's shape, ``{"type": "error", "error": {"type", "message"},
"request_id"}``. Rate limits (``rpm``, ``itpm`` input and ``otpm`` output tokens a minute, as a
token bucket that starts full, Anthropic's documented semantics) announce
``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}``
(reset an RFC 3339 time) and answer 429 ``rate_limit_error`` with ``retry-after``.
``overload_s`` answers 529 ``overloaded_error`` to everything for that long after the first
request; ``overload_above=N`` answers 529 whenever more than N requests are in flight (a server
that recovers once the client slows down). Prompts script their own failures: ``[[fail:529]]``,
``[[fail:400:2]]`` (the first 2 attempts), ``[[sleep:0.5]]``, ``[[cacheread:N]]``; ``[[keyfields]]``
echoes the key into the Message's fields, ``[[deep:N]]`` nests the answer N deep (practice/hostile_data.py).
Message Batches live in practice/anthropic_batch.py, the buckets in practice/anthropic_limits.py.
Only binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import threading
import time
from collections import Counter
from typing import Any

from aiohttp import web

from chatmagic.practice import hostile_data
from chatmagic.practice.anthropic_batch import MessageBatches
from chatmagic.practice.anthropic_limits import rate_limit
from chatmagic.practice.anthropic_shapes import (
    check_request,
    error,
    forced_tool,
    script_of,
    text_of,
    tokens_of,
)
from chatmagic.practice.server import TokenBucket, conforming
from chatmagic.practice.shapes import anthropic_media
from chatmagic.practice.wire import DIRECTIVE, HOST, InThread


class Stats:
    """What the server saw: requests, statuses, peak concurrency, attempts per prompt, the key
    and version headers, and the last answered body without its messages (``params``)."""

    def __init__(self, in_flight: int = 0) -> None:
        self.requests = 0
        self.by_status: Counter[int] = Counter()
        self.in_flight = self.peak_in_flight = in_flight
        self.attempts: Counter[str] = Counter()
        self.keys: set[str] = set()
        self.versions: set[str] = set()
        self.params: dict[str, Any] | None = None
        self.answers: list[tuple[float, int]] = []  # (arrival, status) of every request


class FakeAnthropic(InThread):
    def __init__(self, *, latency: float = 0.0, rpm: float | None = None, itpm: float | None = None,
                 otpm: float | None = None, per_second: bool = False, overload_s: float = 0.0,
                 overload_above: int | None = None, api_key: str | None = None, model: str = "claude-fake",
                 unknown_models: set[str] | None = None, port: int = 0, batch_pace: float = 0.0,
                 batch_expire_after: int | None = None) -> None:
        self.latency, self.api_key, self.model, self.port = latency, api_key, model, port
        self.unknown_models = set(unknown_models or ())
        self.overload_s, self.overload_above = overload_s, overload_above
        # capacity = the minute's limit, starting full (Anthropic's bucket); per_second: one second deep
        self.buckets = {kind: TokenBucket(limit, None if per_second else limit)
                        for kind, limit in (("requests", rpm), ("input-tokens", itpm), ("output-tokens", otpm))
                        if limit}
        self.stats = Stats()
        self._overload_started: float | None = None
        self._ids = itertools.count(1)
        self.batches = MessageBatches(self, pace=batch_pace, expire_after=batch_expire_after)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def reset_stats(self) -> None:
        """Fresh stats and attempt counts ([[...:N]] scripts restart); a storm starts again."""
        self.stats = Stats(self.stats.in_flight)
        self._overload_started = None

    # ---- Messages ------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        st = self.stats
        st.requests += 1
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        arrived = time.monotonic()
        try:
            resp = await self._answer(request, st)
            st.by_status[resp.status] += 1
            st.answers.append((arrived, resp.status))
            return resp
        finally:
            self.stats.in_flight -= 1  # not `st`: reset_stats() carries in_flight over

    def check_headers(self, request: web.Request) -> web.Response | None:
        """401 for a missing or wrong key (when the server has one), 400 for no version."""
        key = request.headers.get("x-api-key")
        if key is not None:
            self.stats.keys.add(key)
        if self.api_key is not None and key != self.api_key:
            return error(401, "x-api-key header is required" if key is None else "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if version is None:
            return error(400, "anthropic-version: header is required")
        self.stats.versions.add(version)
        return None

    async def _answer(self, request: web.Request, st: Stats) -> web.StreamResponse:
        refused = self.check_headers(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            body = None
        problem = check_request(body)
        if problem is not None:
            return error(400, problem)
        prompt = next((text_of(m.get("content")) for m in reversed(body["messages"]) if m["role"] == "user"), "")
        st.attempts[prompt] += 1
        if body["model"] in self.unknown_models:
            return error(404, f"model: {body['model']}")
        overloaded = self._overloaded(st)
        if overloaded is not None:
            return overloaded
        limited, headers = self._rate_limit(body, prompt)
        if limited is not None:
            return limited
        script = script_of(prompt) if "[[" in prompt else {}
        failure = self._scripted(script, st.attempts[prompt], headers)
        if failure is not None:
            return failure
        delay = float(script["sleep"][0]) if "sleep" in script else self.latency
        if delay > 0:
            await asyncio.sleep(delay)
        answer = self.message(body, prompt, script)
        if "keyfields" in script:  # practice/hostile_data.py
            headers = {**headers, "request-id": hostile_data.echo_key(answer, request.headers.get("x-api-key", ""))}
        if "deep" in script:
            depth = int(script["deep"][0]) if script["deep"] and script["deep"][0] else 2000
            return web.Response(text=hostile_data.deep_body(answer, depth), content_type="application/json",
                                headers=headers)
        return web.json_response(answer, headers=headers)

    def _overloaded(self, st: Stats) -> web.Response | None:
        if self.overload_above is not None and st.in_flight > self.overload_above:
            return error(529, "Overloaded")
        if not self.overload_s:
            return None
        now = time.monotonic()
        if self._overload_started is None:
            self._overload_started = now
        return error(529, "Overloaded") if now - self._overload_started < self.overload_s else None

    def _rate_limit(self, body: dict[str, Any], prompt: str) -> tuple[web.Response | None, dict[str, str]]:
        """The buckets' verdict: (a 429 or None, the limit headers for the answer)."""
        return rate_limit(self.buckets, {"requests": 1, "input-tokens": self.input_tokens(body),
                                         "output-tokens": body["max_tokens"]})  # output estimated from max_tokens

    def _scripted(self, script: dict[str, list[str]], attempt: int, headers: dict[str, str]) -> web.Response | None:
        args = script.get("fail")
        if args is None or (len(args) > 1 and attempt > int(args[1])):
            return None
        status = int(args[0])
        extra = {**headers, "retry-after": "1"} if status == 429 else headers
        return error(status, f"Scripted failure {status}.", headers=extra)

    @staticmethod
    def input_tokens(body: dict[str, Any]) -> int:
        system = body.get("system")
        text = text_of(system) + "".join(text_of(m.get("content")) for m in body["messages"])
        return tokens_of(text)

    def message(self, body: dict[str, Any], prompt: str, script: dict[str, list[str]]) -> dict[str, Any]:
        """The Message a request is answered with (also inside a batch's results)."""
        text = DIRECTIVE.sub("", prompt).strip() if script else prompt.strip()
        system = text_of(body.get("system"))
        tool = forced_tool(body)
        stop_sequence = None
        if tool is not None:
            schema = tool.get("input_schema")
            schema = schema if isinstance(schema, dict) else {}
            bad = "badschema" in script
            content: list[dict[str, Any]] = [{"type": "tool_use", "id": f"toolu_fake{next(self._ids)}",
                                              "name": tool.get("name"),
                                              "input": {"not_in_schema": text} if bad else conforming(schema, text)}]
            stop_reason, out_tokens = "tool_use", 20
        else:
            answer = f"echo: [system={system}] {text}" if system else f"echo: {text}"
            last: dict[str, Any] = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), {})
            media = anthropic_media(last.get("content"))
            if len(body["messages"]) > 1:
                answer += f" [turns={len(body['messages'])}]"
            if media:
                answer += f" [media={len(media)}: {'; '.join(media)}]"
            stop_reason = "end_turn"
            for stop in body.get("stop_sequences") or ():
                if stop and stop in answer:
                    answer, stop_reason, stop_sequence = answer[:answer.index(stop)], "stop_sequence", stop
            if tokens_of(answer) > body["max_tokens"]:
                answer, stop_reason, stop_sequence = answer[:4 * body["max_tokens"]], "max_tokens", None
            content, out_tokens = [{"type": "text", "text": answer}], tokens_of(answer)
        self.stats.params = {k: v for k, v in body.items() if k != "messages"}
        cached = int(script["cacheread"][0]) if "cacheread" in script else 0
        return {"id": f"msg_fake{next(self._ids)}", "type": "message", "role": "assistant",
                "model": body["model"], "content": content, "stop_reason": stop_reason,
                "stop_sequence": stop_sequence,
                "usage": {"input_tokens": self.input_tokens(body), "output_tokens": out_tokens,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}}

    # ---- running -------------------------------------------------------------

    async def astart(self) -> FakeAnthropic:
        """Serve on the running loop."""
        app = web.Application(client_max_size=256 * 1024 * 1024)  # a Message Batch's limit
        app.router.add_post("/v1/messages", self._messages)
        self.batches.register(app.router)
        await self.serve(app)
        return self

    async def astop(self) -> None:
        await self.batches.aclose()
        await self.unserve()



def main() -> None:
    p = argparse.ArgumentParser(description="Practice Anthropic Messages server (127.0.0.1).")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--api-key", help="the only x-api-key accepted (default: any)")
    p.add_argument("--per-second", action="store_true", default=None, help="buckets one second deep")
    for name, kind in (("latency", float), ("rpm", float), ("itpm", float), ("otpm", float),
                       ("overload-s", float), ("overload-above", int), ("batch-pace", float),
                       ("batch-expire-after", int), ("model", str)):
        p.add_argument("--" + name, type=kind)
    options = {k: v for k, v in vars(p.parse_args()).items() if v is not None}
    server = FakeAnthropic(**options).start()
    try:
        print(f"FakeAnthropic serving at {server.base_url}  (Ctrl-C to stop)", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
