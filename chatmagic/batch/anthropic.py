"""Anthropic's Message Batches behind the batch engine's interface (see batch/dialect.py).

    POST {base}/messages/batches   {"requests": [{custom_id, params}]}, streamed from the temporary
                                   file (one item a line there; commas on the wire): at most
                                   100,000 requests or 256 MB a batch
    GET  {base}/messages/batches/{id}          processing_status, request_counts
    POST {base}/messages/batches/{id}/cancel
    GET  results_url                           JSONL of {custom_id, result}, in any order

A MessageBatch is read into the engine's names: ``processing_status`` in_progress ->
"in_progress", canceling -> "cancelling", ended -> "cancelled" if any request was canceled,
else "expired" if any expired, else "completed"; ``request_counts`` {processing, succeeded,
errored, canceled, expired} -> {total, completed: succeeded, failed: the rest that ended}.
Every request has a result line: succeeded (a Message, read by the Messages dialect),
errored (``{"type": "error", "error": {type, message}}``), canceled or expired (recorded as
``batch_cancelled`` / ``batch_expired``, so a re-run submits them again).

``results_url`` is followed only on the server that was asked (the key goes with it); any
other is replaced by the documented path. A Message Batch has no metadata to label it with,
so the engine stores an intent before each POST: a run that finds one left over (a kernel
killed before the batch was recorded) takes the unrecorded batch of as many requests created
nearest the intent, read from ``GET {base}/messages/batches`` (``created_at`` as ``created``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from chatmagic.batch.format import line_maker, utf8
from chatmagic.errors import RequestError
from chatmagic.providers.answer import count
from chatmagic.providers.anthropic import message_answer
from chatmagic.providers.dialect import Answer

#: Status of each error type, for the "<status> <type>: <message>" of a failed request.
STATUSES = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
            "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
            "rate_limit_error": 429, "api_error": 500, "overloaded_error": 529}
_HEAD, _TAIL = b'{"requests":[', b"]}"
#: A batch id as it may go into a URL path and the store (``msgbatch_...``); any other is no id.
_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
CHUNK = 1 << 16


def request_item(custom_id: str, body: dict[str, Any]) -> bytes:
    """One request of a batch, as a line of the temporary file."""
    return utf8(json.dumps({"custom_id": custom_id, "params": body}, ensure_ascii=False)) + b"\n"


class AnthropicBatches:
    """Message Batches; ``client`` is the run's FilesClient (its base URL and headers)."""

    name = "anthropic"
    max_requests = 100_000
    max_bytes = 256_000_000 - len(_HEAD) - len(_TAIL)  # the whole POST body is limited
    labelled = False  # no metadata: found again by an intent (batch/run.py)

    def request_line(self, custom_id: str, body: dict[str, Any]) -> bytes:
        return request_item(custom_id, body)

    def line_maker(self, body_of: Callable[[str], dict[str, Any]]) -> Callable[[str, str], bytes]:
        return line_maker(body_of, request_item)

    async def create(self, client: Any, path: str, part: str) -> dict[str, Any]:
        size = os.path.getsize(path)
        headers = {"Content-Type": "application/json", "Content-Length": str(size - 1 + len(_HEAD) + len(_TAIL))}
        raw = await client.call("POST", _path(client, "/messages/batches"), data=_wire(path, size), headers=headers,
                               size=size)
        batch = _checked(raw, client)
        if not batch["id"]:  # nothing to poll, store or cancel: as if the server had refused it
            raise RequestError("the server accepted the batch but sent no usable id", status=200, code="bad_response")
        return batch

    async def recent(self, client: Any) -> list[dict[str, Any]]:
        found = (await client.call("GET", _path(client, "/messages/batches"), params={"limit": "100"})).get("data")
        return [_checked(b, client) for b in found[:100] if isinstance(b, dict)] if isinstance(found, list) else []

    async def retrieve(self, client: Any, batch_id: str) -> dict[str, Any]:
        return _checked(await client.call("GET", _path(client, f"/messages/batches/{batch_id}")), client)

    async def cancel(self, client: Any, batch_id: str) -> dict[str, Any]:
        return _checked(await client.call("POST", _path(client, f"/messages/batches/{batch_id}/cancel")), client)

    def result_lines(self, client: Any, batch: dict[str, Any]) -> AsyncIterator[bytes]:
        lines: AsyncIterator[bytes] = client.lines_at(results_path(client.base, batch))
        return lines

    def read_line(self, line: Any, batch_id: str) -> tuple[str, Answer | None, str | None]:
        return read_result(line, batch_id)


DIALECT = AnthropicBatches()


def _path(client: Any, rest: str) -> str:
    """``rest`` under the client's base, with the ``/v1`` an SDK-style base URL lacks."""
    return rest if str(client.base).rstrip("/").endswith("/v1") else "/v1" + rest


async def _wire(path: str, size: int) -> AsyncIterator[bytes]:
    """The file's lines as ``{"requests":[a,b,...]}``: each newline becomes a comma, the last
    one is dropped (same length: the Content-Length is known before sending)."""
    yield _HEAD
    sent = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sent += len(chunk)
            yield chunk.replace(b"\n", b",")[:-1] if sent == size else chunk.replace(b"\n", b",")
    yield _TAIL


def _checked(raw: Any, client: Any) -> dict[str, Any]:
    """``read_batch``, with an id that echoes the key (it would be stored and shown) as no id."""
    batch = read_batch(raw)
    if client.scrub(batch["id"]) != batch["id"]:
        batch["id"] = ""
    return batch


def read_batch(raw: Any) -> dict[str, Any]:
    """A MessageBatch in the engine's names (the raw fields kept beside them)."""
    raw = raw if isinstance(raw, dict) else {}
    counts = raw.get("request_counts")
    counts = counts if isinstance(counts, dict) else {}
    n = {k: count(counts.get(k)) or 0 for k in ("processing", "succeeded", "errored", "canceled", "expired")}
    state = raw.get("processing_status")
    if state == "ended":
        status = "cancelled" if n["canceled"] else "expired" if n["expired"] else "completed"
    else:
        status = {"in_progress": "in_progress", "canceling": "cancelling"}.get(str(state), "in_progress")
    batch_id = raw.get("id")
    return {**raw, "id": batch_id if isinstance(batch_id, str) and _ID.fullmatch(batch_id) else "", "status": status,
            "created": _epoch(raw.get("created_at")),
            "request_counts": {"total": sum(n.values()), "completed": n["succeeded"],
                               "failed": n["errored"] + n["canceled"] + n["expired"]}}


def _epoch(text: Any) -> float | None:
    """An RFC 3339 time as seconds since the epoch; None if it is not one."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def results_path(base: str, batch: dict[str, Any]) -> str:
    """Where a batch's results are read, relative to ``base``: its ``results_url`` when that is
    on the same server under the same base, else the documented path."""
    url = batch.get("results_url")
    own = str(base).rstrip("/")
    if isinstance(url, str) and url.startswith(own + "/") and urlsplit(url).netloc == urlsplit(own).netloc:
        return url[len(own):]
    prefix = "" if own.endswith("/v1") else "/v1"
    return f"{prefix}/messages/batches/{batch['id']}/results"


def read_result(line: Any, batch_id: str) -> tuple[str, Answer | None, str | None]:
    """(custom_id, the answer or None, why there is none) of one result line."""
    if not isinstance(line, dict):
        raise ValueError("a result line that is not an object")  # matched to no prompt
    custom_id = line.get("custom_id")
    custom_id = custom_id if isinstance(custom_id, str) else ""
    result = line.get("result")
    result = result if isinstance(result, dict) else {}
    kind = result.get("type")
    if kind == "succeeded":
        answer = message_answer(result.get("message"))
        return custom_id, answer, None if answer is not None else "bad_response: the result holds no message"
    if kind == "errored":
        outer = result.get("error")
        inner = outer.get("error") if isinstance(outer, dict) else None
        err = inner if isinstance(inner, dict) else outer if isinstance(outer, dict) else {}
        name = str(err.get("type") or "api_error")[:60]
        status = STATUSES.get(name)
        return custom_id, None, f"{f'{status} ' if status else ''}{name}: {err.get('message') or 'no answer'!s}"
    if kind in ("canceled", "expired"):
        code, word = ("batch_cancelled", "cancelled") if kind == "canceled" else ("batch_expired", "expired")
        return custom_id, None, f"{code}: not run (batch {batch_id} {word})"
    return custom_id, None, f"bad_response: unknown result type {str(kind)[:40]!r}"
