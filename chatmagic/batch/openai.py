"""OpenAI's Files and Batches behind the batch engine's interface (see batch/dialect.py).

    POST {base}/files (multipart, purpose=batch) -> POST {base}/batches {input_file_id, endpoint,
    completion_window: 24h, metadata: {created_by, chatmagic_part}}; GET {base}/batches/{id};
    POST .../cancel; results in the output and error files (GET /files/{id}/content).

At most 50,000 requests or 200 MB a file. Served by OpenAI, Azure OpenAI, Groq and others.
A batch carries ``chatmagic_part`` (a hash of its requests) in its metadata, so one created
just before a crash, before it could be recorded, is found among the server's last 100.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatmagic.batch.format import ENDPOINT, line_error, line_maker, request_line
from chatmagic.errors import RequestError
from chatmagic.providers.answer import count, request_id
from chatmagic.providers.dialect import Answer
from chatmagic.providers.openai import completion_of

#: A batch or file id as it may go into a URL path and the store; any other is no id.
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
STATUSES = ("validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
            "cancelled")


class OpenAIBatches:
    name = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024
    labelled = True  # metadata.chatmagic_part

    def request_line(self, custom_id: str, body: dict[str, Any]) -> bytes:
        return request_line(custom_id, body)

    def line_maker(self, body_of: Callable[[str], dict[str, Any]]) -> Callable[[str, str], bytes]:
        return line_maker(body_of, request_line)

    async def create(self, client: Any, path: str, part: str) -> dict[str, Any]:
        uploaded = await client.upload(path, f"chatmagic-{part[:12]}.jsonl")
        file_id = uploaded.get("id")
        if not isinstance(file_id, str) or not _ID.fullmatch(file_id):
            raise RequestError("the server stored the file but sent no usable id", status=200,
                               code="bad_response", retryable=False)
        return _named(await client.call("POST", "/batches", json={
            "input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h",
            "metadata": {"created_by": "chatmagic", "chatmagic_part": part}}), client)

    async def recent(self, client: Any) -> list[dict[str, Any]]:
        found = (await client.call("GET", "/batches", params={"limit": "100"})).get("data")
        return [b for b in (_listed(b, client) for b in found) if b] if isinstance(found, list) else []

    async def retrieve(self, client: Any, batch_id: str) -> dict[str, Any]:
        return _named(await client.call("GET", f"/batches/{batch_id}"), client)

    async def cancel(self, client: Any, batch_id: str) -> dict[str, Any]:
        return _named(await client.call("POST", f"/batches/{batch_id}/cancel"), client)

    async def result_lines(self, client: Any, batch: dict[str, Any]) -> AsyncIterator[bytes]:
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                async for raw in client.lines(file_id):
                    yield raw

    def read_line(self, line: Any, batch_id: str) -> tuple[str, Answer | None, str | None]:
        """(custom_id, the answer or None, why none) of one output or error line, whatever its shape."""
        if not isinstance(line, dict):
            raise ValueError("a result line that is not an object")  # matched to no prompt
        custom_id = line.get("custom_id")
        custom_id = custom_id if isinstance(custom_id, str) else ""
        response = line.get("response")
        if response is not None and not isinstance(response, dict):
            return custom_id, None, f"bad_response: the result's response is a {type(response).__name__}"
        response = response or {}
        body = response.get("body")
        if body is not None and not isinstance(body, dict):
            return custom_id, None, f"bad_response: the result's body is a {type(body).__name__}"
        body = body or {}
        done = completion_of(body) if response.get("status_code") == 200 else None
        if done is not None:  # the line's request_id, for a support ticket as an interactive answer's header
            return custom_id, dataclasses.replace(done, request_id=request_id(response)), None
        if response.get("status_code") == 200 and not body.get("error"):
            return custom_id, None, "bad_response: the result holds no completion"
        return custom_id, None, line_error(line, response, body)


DIALECT = OpenAIBatches()


def _named(batch: Any, client: Any) -> dict[str, Any]:
    """A Batch object, with its ``chatmagic_part`` label (if any) as ``part``; an id or status
    that is not one (or echoes the key: it would be stored and shown) is a bad answer."""
    batch = batch if isinstance(batch, dict) else {}
    batch_id, status = batch.get("id"), batch.get("status")
    if not isinstance(batch_id, str) or not _ID.fullmatch(batch_id) or client.scrub(batch_id) != batch_id:
        raise RequestError("the server sent a batch without a usable id", status=200, code="bad_response",
                           retryable=False)
    if not isinstance(status, str) or not status:
        raise RequestError(f"the server sent batch {batch_id} without a status", status=200,
                           code="bad_response", retryable=False)
    if status not in STATUSES:  # a status of a newer API: shown as sent (scrubbed), waited on
        status = client.scrub(status)[:30]
    meta = batch.get("metadata")
    part = meta.get("chatmagic_part") if isinstance(meta, dict) else None
    counts = batch.get("request_counts")
    counts = counts if isinstance(counts, dict) else {}  # numbers only: they go to the store and the bar
    counts = {k: count(counts.get(k)) or 0 for k in ("total", "completed", "failed")}
    return {**batch, "status": status, "request_counts": counts, **({"part": part} if isinstance(part, str) else {})}


def _listed(batch: Any, client: Any) -> dict[str, Any] | None:
    """A listed batch, or None if it is not a usable one (it cannot be ours)."""
    try:
        return _named(batch, client)
    except RequestError:
        return None
