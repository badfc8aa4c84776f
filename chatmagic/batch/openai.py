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
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatmagic.batch.format import ENDPOINT, line_error, line_maker, request_line
from chatmagic.providers.answer import request_id
from chatmagic.providers.dialect import Answer
from chatmagic.providers.openai import completion_of


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
        return _named(await client.call("POST", "/batches", json={
            "input_file_id": uploaded["id"], "endpoint": ENDPOINT, "completion_window": "24h",
            "metadata": {"created_by": "chatmagic", "chatmagic_part": part}}))

    async def recent(self, client: Any) -> list[dict[str, Any]]:
        found = (await client.call("GET", "/batches", params={"limit": "100"})).get("data")
        return [_named(b) for b in found if isinstance(b, dict)] if isinstance(found, list) else []

    async def retrieve(self, client: Any, batch_id: str) -> dict[str, Any]:
        return _named(await client.call("GET", f"/batches/{batch_id}"))

    async def cancel(self, client: Any, batch_id: str) -> dict[str, Any]:
        return _named(await client.call("POST", f"/batches/{batch_id}/cancel"))

    async def result_lines(self, client: Any, batch: dict[str, Any]) -> AsyncIterator[bytes]:
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                async for raw in client.lines(file_id):
                    yield raw

    def read_line(self, line: Any, batch_id: str) -> tuple[str, Answer | None, str | None]:
        if not isinstance(line, dict):
            return "", None, None
        response = line.get("response") or {}
        body = response.get("body") or {} if isinstance(response, dict) else {}
        done = completion_of(body) if isinstance(response, dict) and response.get("status_code") == 200 else None
        custom_id = str(line.get("custom_id", ""))
        if done is not None:  # the line's request_id, for a support ticket as an interactive answer's header
            return custom_id, dataclasses.replace(done, request_id=request_id(response)), None
        return custom_id, None, line_error(line, response if isinstance(response, dict) else {},
                                           body if isinstance(body, dict) else {})


DIALECT = OpenAIBatches()


def _named(batch: Any) -> dict[str, Any]:
    """A Batch object, with its ``chatmagic_part`` label (if any) as ``part``."""
    batch = batch if isinstance(batch, dict) else {}
    meta = batch.get("metadata")
    part = meta.get("chatmagic_part") if isinstance(meta, dict) else None
    return {**batch, "part": part} if part else batch
