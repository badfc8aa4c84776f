"""The practice server's Files and Batches endpoints, with OpenAI's documented shapes.

    POST /v1/files                 multipart: purpose=batch, file=<JSONL>  -> FileObject
    GET  /v1/files/{id}            -> FileObject
    GET  /v1/files/{id}/content    -> the file's bytes
    POST /v1/batches               {input_file_id, endpoint, completion_window}  -> Batch
    GET  /v1/batches               -> {"object": "list", "data": [Batch, ...]}
    GET  /v1/batches/{id}          -> Batch
    POST /v1/batches/{id}/cancel   -> Batch (cancelling, then cancelled)

A batch runs in the background: validating -> in_progress -> finalizing -> completed, one
request every ``pace`` seconds (0: as fast as the loop allows), each answered as the chat
endpoint would (the same echo, the same ``[[fail:STATUS]]`` directives, which land in the
error file). ``invalid`` (a message) fails every batch at validation; ``expire_after`` (N)
expires a batch after N requests, the rest going to the error file as ``batch_expired``.
Registered by ``FakeOpenAI``; its constructor keywords ``batch_pace``, ``batch_invalid`` and
``batch_expire_after`` set these.
``gzip`` (an attribute) gzips every answer the client accepts gzip for, as many gateways do.
Input lines are read as strict UTF-8, as the real API reads them (a lone surrogate fails the
batch at validation).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from chatmagic.practice import hostile_data
from chatmagic.practice.shapes import openai_problem
from chatmagic.practice.wire import DIRECTIVE, text_of
from chatmagic.practice.wire import error_response as _error

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
CHUNK = 500  # requests answered between yields to the loop, so polls stay quick


class BatchAPI:
    """Files and batches of one practice server. ``stats`` counts ``files``, ``batches``
    and ``requests`` (lines submitted in batches); ``batches`` maps id -> Batch dict."""

    def __init__(self, server: Any, *, pace: float = 0.0, invalid: str | None = None,
                 expire_after: int | None = None):
        self.server = server  # the FakeOpenAI (server.py imports this module): answers each line as its chat endpoint
        self.pace, self.invalid, self.expire_after = pace, invalid, expire_after
        self.gzip = False  # every answer gzipped when the client accepts it (as many gateways do)
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    def reset(self, *, pace: float = 0.0, invalid: str | None = None, expire_after: int | None = None) -> None:
        """Forget every file and batch, zero the counts, and set the modes."""
        self.pace, self.invalid, self.expire_after = pace, invalid, expire_after
        self.gzip = False
        self.files.clear()
        self.contents.clear()
        self.batches.clear()
        self.stats.clear()

    def register(self, router: web.UrlDispatcher) -> None:
        for method, path, name in (("POST", "/v1/files", "_upload"), ("GET", "/v1/files/{id}", "_file"),
                                   ("GET", "/v1/files/{id}/content", "_content"),
                                   ("POST", "/v1/batches", "_create"), ("GET", "/v1/batches", "_list"),
                                   ("GET", "/v1/batches/{id}", "_get"),
                                   ("POST", "/v1/batches/{id}/cancel", "_cancel")):
            router.add_route(method, path, self._handler(name))

    def _handler(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            # looked up per request: a test may replace it
            answer: web.StreamResponse = await getattr(self, name)(request)
            if self.gzip and isinstance(answer, web.Response) and not answer.prepared:
                answer.enable_compression()  # by the request's Accept-Encoding
            return answer
        return handle

    # ---- files ---------------------------------------------------------------

    def _store(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-fake{len(self.files) + 1}"
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(data),
                               "created_at": int(time.time()), "filename": filename,
                               "purpose": purpose, "status": "processed", "expires_at": None,
                               "status_details": None}
        self.contents[file_id] = data
        return self.files[file_id]

    async def _upload(self, request: web.Request) -> web.Response:
        purpose, data, filename = None, None, "upload.jsonl"
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "purpose":
                    purpose = (await part.text()).strip()
                elif part.name == "file":
                    filename = part.filename or filename
                    data = bytes(await part.read())
        except (ValueError, AssertionError):
            return _error(400, "Expected a multipart/form-data body.", None)
        if data is None or purpose is None:
            return _error(400, "Both 'file' and 'purpose' are required.", None)
        if purpose != "batch":
            return _error(400, f"'{purpose}' is not one of the supported purposes here: 'batch'.", None)
        self.stats["files"] += 1
        return web.json_response(self._store(data, filename, purpose))

    async def _file(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["id"])
        return web.json_response(found) if found else _missing("file", request)

    async def _content(self, request: web.Request) -> web.Response:
        data = self.contents.get(request.match_info["id"])
        if data is None:
            return _missing("file", request)
        return web.Response(body=data, content_type="application/octet-stream")

    # ---- batches -------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "Request body must be JSON.", None)
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return _error(400, f"No such File object: {file_id}", None)
        if body.get("endpoint") != ENDPOINT:
            return _error(400, f"Invalid endpoint: {body.get('endpoint')!r}.", None)
        if body.get("completion_window") != "24h":
            return _error(400, "completion_window must be '24h'.", None)
        now = int(time.time())
        batch_id = f"batch_fake{len(self.batches) + 1}"
        batch = {"id": batch_id, "object": "batch", "endpoint": ENDPOINT, "errors": None,
                 "input_file_id": file_id, "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now,
                 "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None,
                 "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
                 "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}
        self.batches[batch_id] = batch
        self.stats["batches"] += 1
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")  # for [[keyfields]] only
        task = asyncio.ensure_future(self._process(batch, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(batch)

    async def _get(self, request: web.Request) -> web.Response:
        found = self.batches.get(request.match_info["id"])
        return web.json_response(found) if found else _missing("batch", request)

    async def _list(self, request: web.Request) -> web.Response:
        data = sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _missing("batch", request)
        if batch["status"] in TERMINAL:
            return _error(409, f"Cannot cancel a batch with status {batch['status']}.", None)
        batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
        return web.json_response(batch)

    # ---- processing ----------------------------------------------------------

    async def _process(self, batch: dict[str, Any], key: str = "") -> None:
        lines = self.contents[batch["input_file_id"]].splitlines()
        requests, errors = _validate(lines)
        if self.invalid:
            errors.insert(0, {"code": "invalid_request", "line": 1, "message": self.invalid, "param": None})
        if errors:
            batch.update(status="failed", failed_at=int(time.time()),
                         errors={"object": "list", "data": errors})
            return
        self.stats["requests"] += len(requests)
        counts = batch["request_counts"]
        counts["total"] = len(requests)
        if batch["status"] == "validating":  # not cancelled meanwhile
            batch.update(status="in_progress", in_progress_at=int(time.time()))
        out: list[bytes] = []
        err: list[bytes] = []
        started, done = time.monotonic(), 0
        stop = len(requests) if self.expire_after is None else min(len(requests), self.expire_after)
        while done < stop and batch["status"] == "in_progress":
            due = stop if not self.pace else int((time.monotonic() - started) / self.pace) + 1
            for line in requests[done:min(due, stop, done + CHUNK)]:
                ok, record = self._answer(line, key)
                (out if ok else err).append(record)
                counts["completed" if ok else "failed"] += 1
                done += 1
            await asyncio.sleep(0 if not self.pace else min(self.pace, 0.05))
        if done < len(requests) and batch["status"] == "in_progress":
            batch["status"] = "expired"
        self._finish(batch, requests[done:], out, err)

    def _answer(self, line: dict[str, Any], key: str = "") -> tuple[bool, bytes]:
        body = line["body"]
        messages = body.get("messages") or []
        prompt = next((text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        script = {m[1]: m[2].split(":") if m[2] else [] for m in DIRECTIVE.finditer(prompt)}
        request_id = f"req_fake{self.stats['answered']}"
        self.stats["answered"] += 1
        refused = openai_problem(messages)  # a line's parts are checked as in a chat request
        if refused is not None:
            response = {"status_code": 400, "request_id": request_id, "body": {"error": {
                "message": refused[0], "type": "invalid_request_error", "param": refused[1],
                "code": "invalid_value"}}}
            ok = False
        elif "fail" in script:
            status = int(script["fail"][0])
            response = {"status_code": status, "request_id": request_id, "body": {"error": {
                "message": f"Scripted failure {status}.", "type": "invalid_request_error",
                "param": None, "code": script["code"][0] if "code" in script else None}}}
            ok = False
        else:
            answer = self.server.completion(body, messages, prompt, script)
            if hostile_data.DIRECTIVES & set(script):  # the key echoed, deep JSON, a lone surrogate
                hostile_data.shape(answer, script, key, None)
                request_id = f"req_{answer['id']}"
            response = {"status_code": 200, "request_id": request_id, "body": answer}
            ok = True
        record = {"id": f"batch_req_{request_id}", "custom_id": line["custom_id"],
                  "response": response, "error": None}
        return ok, json.dumps(record).encode()

    def _finish(self, batch: dict[str, Any], left: list[Any], out: list[Any], err: list[Any]) -> None:
        """Write the output and error files; requests never run go to the error file."""
        now = int(time.time())
        status = {"in_progress": "completed", "cancelling": "cancelled"}.get(batch["status"], batch["status"])
        code = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(status)
        for line in left if code else ():
            message = ("This request could not be executed before the completion window expired."
                       if code == "batch_expired" else "This request was not executed: the batch was cancelled.")
            err.append(json.dumps({"id": None, "custom_id": line["custom_id"], "response": None,
                                   "error": {"code": code, "message": message}}).encode())
        batch.update(status="finalizing", finalizing_at=now)
        if out:
            batch["output_file_id"] = self._store(b"\n".join(out) + b"\n", "batch_output.jsonl",
                                                  "batch_output")["id"]
        if err:
            batch["error_file_id"] = self._store(b"\n".join(err) + b"\n", "batch_error.jsonl",
                                                 "batch_output")["id"]
        batch.update(status=status, **{f"{status}_at": now})

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _validate(lines: list[bytes]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The parsed requests, and the validation errors as in ``Batch.errors.data``."""
    requests, errors, seen = [], [], set()
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw.decode("utf-8"))  # strictly, as the real API: no lone surrogates
            problem = None
            if not isinstance(line, dict) or not isinstance(line.get("body"), dict):
                problem = "each line must be an object with a 'body'"
            elif line.get("method") != "POST" or line.get("url") != ENDPOINT:
                problem = f"the url must be {ENDPOINT} and the method POST"
            elif not isinstance(line.get("custom_id"), str) or line["custom_id"] in seen:
                problem = "custom_id must be a string, unique in the file"
        except UnicodeDecodeError:
            problem = "this line is not valid UTF-8"
        except ValueError:
            problem = "this line is not valid JSON"
        if problem:
            errors.append({"code": "invalid_request", "line": n, "message": problem, "param": None})
            continue
        seen.add(line["custom_id"])
        requests.append(line)
    if not requests and not errors:
        errors.append({"code": "empty_file", "line": None, "message": "The input file is empty.", "param": None})
    return requests, errors


def _missing(kind: str, request: web.Request) -> web.Response:
    return _error(404, f"No such {kind}: {request.match_info['id']}", None)
