"""The practice Anthropic server's Message Batches, in the shapes of Anthropic's API reference.

    POST /v1/messages/batches              {"requests": [{custom_id, params}]}  -> MessageBatch
    GET  /v1/messages/batches              ?limit=N  -> {data, has_more, first_id, last_id}
    GET  /v1/messages/batches/{id}         -> MessageBatch
    POST /v1/messages/batches/{id}/cancel  -> MessageBatch (canceling, then ended)
    GET  /v1/messages/batches/{id}/results -> JSONL, one {custom_id, result} a line, not in order

A MessageBatch: ``{id, type: "message_batch", processing_status: in_progress | canceling |
ended, request_counts: {processing, succeeded, errored, canceled, expired}, created_at,
expires_at, ended_at, cancel_initiated_at, archived_at, results_url}`` (times RFC 3339;
``results_url`` set once ended). The request list is checked at once (custom_ids of
``[a-zA-Z0-9_-]{1,64}``, unique; at most 100,000 requests); each request's ``params`` are
checked while the batch runs, a bad one ending ``errored`` with invalid_request_error, as the
real API does. A result is ``{"type": "succeeded", "message"}``, ``{"type": "errored", "error":
{"type": "error", "error": {type, message}}}``, ``{"type": "canceled"}`` or ``{"type":
"expired"}``. Requests run one every ``pace`` seconds; ``expire_after=N`` expires the rest of
a batch after N; ``[[fail:STATUS]]`` in a prompt makes its request errored.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from chatmagic.practice.anthropic_shapes import ERROR_TYPES, check_request, error, rfc3339, script_of, text_of

MAX_REQUESTS = 100_000
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
CHUNK = 500  # requests answered between yields to the loop, so polls stay quick


class Server(Protocol):
    """What the batches need of the Messages server."""

    @property
    def base_url(self) -> str: ...

    def check_headers(self, request: web.Request) -> web.Response | None: ...
    def message(self, body: dict[str, Any], prompt: str, script: dict[str, list[str]]) -> dict[str, Any]: ...


class MessageBatches:
    """The batches of one practice server. ``stats`` counts ``batches`` created and
    ``requests`` submitted in them; ``batches`` maps id -> MessageBatch dict, ``submitted`` id -> its requests."""

    def __init__(self, server: Server, *, pace: float = 0.0, expire_after: int | None = None) -> None:
        self.server, self.pace, self.expire_after = server, pace, expire_after
        self.batches: dict[str, dict[str, Any]] = {}
        self.results: dict[str, list[bytes]] = {}
        self.submitted: dict[str, list[dict[str, Any]]] = {}  # batch id -> its requests, as sent
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    def reset(self, *, pace: float = 0.0, expire_after: int | None = None) -> None:
        """Forget every batch, zero the counts, and set the modes."""
        self.pace, self.expire_after = pace, expire_after
        self.batches.clear()
        self.results.clear()
        self.submitted.clear()
        self.stats.clear()

    def register(self, router: web.UrlDispatcher) -> None:
        for method, path, name in (("POST", "/v1/messages/batches", "_create"),
                                   ("GET", "/v1/messages/batches", "_list"),
                                   ("GET", "/v1/messages/batches/{id}", "_get"),
                                   ("POST", "/v1/messages/batches/{id}/cancel", "_cancel"),
                                   ("GET", "/v1/messages/batches/{id}/results", "_results")):
            router.add_route(method, path, self._handler(name))

    def _handler(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            refused = self.server.check_headers(request)
            if refused is not None:
                return refused
            # looked up per request: a test may replace it
            answer: web.StreamResponse = await getattr(self, name)(request)
            return answer
        return handle

    # ---- the endpoints ----------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return error(400, "The request body is not valid JSON.")
        requests = body.get("requests") if isinstance(body, dict) else None
        problem = _check_requests(requests)
        if problem is not None:
            return error(400, problem)
        assert isinstance(requests, list)  # checked above
        batch_id = f"msgbatch_fake{len(self.batches) + 1:04d}"
        batch = {"id": batch_id, "type": "message_batch", "processing_status": "in_progress",
                 "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0,
                                    "canceled": 0, "expired": 0},
                 "created_at": rfc3339(0), "expires_at": rfc3339(86400), "ended_at": None,
                 "cancel_initiated_at": None, "archived_at": None, "results_url": None}
        self.batches[batch_id], self.submitted[batch_id] = batch, requests
        self.stats["batches"] += 1
        self.stats["requests"] += len(requests)
        task = asyncio.ensure_future(self._process(batch, requests))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(batch)

    async def _list(self, request: web.Request) -> web.Response:
        try:
            limit = min(1000, max(1, int(request.query.get("limit", "20"))))
        except ValueError:
            return error(400, "limit: Input should be a valid integer")
        newest = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        data = newest[:limit]
        return web.json_response({"data": data, "has_more": len(newest) > limit,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    async def _get(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        return web.json_response(batch) if batch else _missing(request)

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _missing(request)
        if batch["processing_status"] == "in_progress":
            batch.update(processing_status="canceling", cancel_initiated_at=rfc3339(0))
        return web.json_response(batch)

    async def _results(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["id"]
        batch = self.batches.get(batch_id)
        if batch is None:
            return _missing(request)
        if batch["processing_status"] != "ended":
            return error(400, f"Message Batch {batch_id} has not ended yet; its results are not available.")
        lines = self.results.get(batch_id, [])
        return web.Response(body=b"".join(line + b"\n" for line in lines), content_type="application/binary")

    # ---- processing ---------------------------------------------------------------

    async def _process(self, batch: dict[str, Any], requests: list[dict[str, Any]]) -> None:
        counts, out = batch["request_counts"], self.results.setdefault(batch["id"], [])
        started, done = time.monotonic(), 0
        stop = len(requests) if self.expire_after is None else min(len(requests), self.expire_after)
        while done < stop and batch["processing_status"] == "in_progress":
            due = stop if not self.pace else int((time.monotonic() - started) / self.pace) + 1
            for item in requests[done:min(due, stop, done + CHUNK)]:
                kind, result = self._answer(item["params"])
                out.append(_line(item["custom_id"], result))
                counts["processing"] -= 1
                counts[kind] += 1
                done += 1
            await asyncio.sleep(0 if not self.pace else min(self.pace, 0.05))
        left = "canceled" if batch["processing_status"] == "canceling" else "expired"
        for item in requests[done:]:
            out.append(_line(item["custom_id"], {"type": left}))
            counts["processing"] -= 1
            counts[left] += 1
        out.reverse()  # results are not in request order: clients must match custom_ids
        batch.update(processing_status="ended", ended_at=rfc3339(0),
                     results_url=f"{self.server.base_url}/messages/batches/{batch['id']}/results")

    def _answer(self, params: Any) -> tuple[str, dict[str, Any]]:
        problem = check_request(params)
        if problem is not None:
            return "errored", _errored(400, problem)
        prompt = next((text_of(m.get("content")) for m in reversed(params["messages"]) if m["role"] == "user"), "")
        script = script_of(prompt) if "[[" in prompt else {}
        if "fail" in script:
            status = int(script["fail"][0])
            return "errored", _errored(status, f"Scripted failure {status}.")
        self.stats["answered"] += 1
        return "succeeded", {"type": "succeeded", "message": self.server.message(params, prompt, script)}

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _check_requests(requests: Any) -> str | None:
    """Why the list of a batch is refused at once (400), or None."""
    if not isinstance(requests, list) or not requests:
        return "requests: a non-empty list of {custom_id, params} is required"
    if len(requests) > MAX_REQUESTS:
        return f"requests: at most {MAX_REQUESTS:,} requests in a Message Batch, got {len(requests):,}"
    seen: set[str] = set()
    for i, item in enumerate(requests):
        if not isinstance(item, dict) or not isinstance(item.get("params"), dict):
            return f"requests.{i}: an object with custom_id and params is required"
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
            return f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if custom_id in seen:
            return f"requests.{i}.custom_id: custom_id {custom_id!r} is not unique in this batch"
        seen.add(custom_id)
    return None


def _errored(status: int, message: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "error": {
        "type": ERROR_TYPES.get(status, "api_error"), "message": message}}}


def _line(custom_id: str, result: dict[str, Any]) -> bytes:
    return json.dumps({"custom_id": custom_id, "result": result}).encode()


def _missing(request: web.Request) -> web.Response:
    return error(404, f"Message Batch {request.match_info['id']} not found.")
