"""The Batch API's file formats, as pure functions: request lines in, result lines out.

    request_line(custom_id, body) -> one JSONL line: {custom_id, method, url, body}
    write_parts(lines, path, ...) -> the lines streamed into ``path``, one file per batch
    line_error(line, ...)         -> "<status> <code>: <message>", as interactive runs record
    unfinished(batch)             -> why a request of a finished batch has no result line
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

ENDPOINT = "/v1/chat/completions"
ID_HEX = 40  # hex digits of the request key in a custom_id (160 bits: no collisions)


def request_line(custom_id: str, body: dict[str, Any]) -> bytes:
    return utf8(json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body},
                           ensure_ascii=False)) + b"\n"


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8(text: str) -> bytes:
    """``text`` (JSON) as UTF-8, a lone surrogate (no UTF-8 exists for one: a Batch API refuses
    the file) written as its escape ``\\ud800``, as ``json.dumps`` does for the interactive path."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


def line_maker(body_of: Callable[[str], dict[str, Any]],
               request: Callable[[str, dict[str, Any]], bytes] = request_line) -> Callable[[str, str], bytes]:
    """A fast ``request(custom_id, body_of(prompt))`` (``body_of``: the dialect's one builder;
    ``request``: the batch dialect's line, OpenAI's by default): the JSON around the custom_id
    and the prompt is encoded once, so each line costs two small string encodings (100,000
    lines in a fraction of a second). The same bytes as ``request``."""
    marks = ("\x00chatmagic-id\x00", "\x00chatmagic-prompt\x00")
    whole = request(marks[0], body_of(marks[1]))
    pieces = whole.split(_dumps(marks[0]))
    if len(pieces) != 2 or pieces[1].count(_dumps(marks[1])) != 1:  # a marker in the settings
        return lambda custom_id, prompt: request(custom_id, body_of(prompt))
    before, (middle, after) = pieces[0], pieces[1].split(_dumps(marks[1]))

    def line(custom_id: str, prompt: str) -> bytes:
        return b"".join((before, _dumps(custom_id), middle, _dumps(prompt), after))
    return line


def _dumps(text: str) -> bytes:
    return utf8(json.dumps(text, ensure_ascii=False))


def write_parts(lines: Iterable[tuple[str, bytes]], path: str, max_requests: int,
                max_bytes: int) -> Iterator[list[str]]:
    """Stream ``(key, line)`` pairs into ``path`` until a file would pass ``max_requests``
    lines or ``max_bytes``; yield the keys of each file written (the next one then
    overwrites it), so only one file's worth is ever on disk and none in memory."""
    part: list[str] = []
    size = 0
    out = open(path, "wb")
    try:
        for key, line in lines:
            if part and (len(part) >= max_requests or size + len(line) > max_bytes):
                out.close()
                yield part
                out, part, size = open(path, "wb"), [], 0
            out.write(line)
            part.append(key)
            size += len(line)
    finally:
        out.close()
    yield part


def line_error(line: dict[str, Any], response: dict[str, Any], body: dict[str, Any]) -> str:
    """A per-request failure as in interactive runs: "<status> <code>: <message>"."""
    error = line.get("error") or body.get("error") or {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    where = " ".join(str(p) for p in (response.get("status_code"), error.get("code") or error.get("type")) if p)
    return f"{where or 'batch_error'}: {error.get('message') or 'no answer'}"


def unfinished(batch: dict[str, Any]) -> str:
    """Why a request of a finished batch has no line in its output or error file."""
    status = batch["status"]
    if status == "failed":
        errors = batch.get("errors")
        errors = errors.get("data") if isinstance(errors, dict) else None
        errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
        shown = "; ".join(f"line {e['line']}: {e.get('message')}" if e.get("line") else str(e.get("message"))
                          for e in errors[:3])[:1000] or "no reason given"
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return f"batch_failed: {shown}{more}"
    if status == "not_found":
        return f"batch_not_found: the server does not know batch {batch['id']}; run again to submit"
    return f"batch_{status}: not run (batch {batch['id']} {status})"
