"""The practice server's error bodies and limit headers in each provider's shape (one flag each).

    error_shape  "openai" (default)   {"error": {message, type, param, code}}
                 "gemini"             [{"error": {code, message, status, details}}], no headers: a
                                      429 carries google.rpc.RetryInfo (the retry-after as "Ns"); a prompt
                                      with [[daily]] a QuotaFailure whose quotaId is per day
                 "openrouter"         {"error": {code (a number), message, metadata}}: a 403 of a
                                      prompt with [[flagged]] is moderation (metadata.reasons,
                                      flagged_input), any other 403 is about the key
                 "vllm"               {"object": "error", message, type, code}
                 "ollama"             {"error": "<text>"}
                 "llamacpp"           OpenAI's shape; [[toolong]] is its 500 exceed_context_size_error
    headers      "anthropic"          anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset},
                                      reset an RFC 3339 time
                 "unsuffixed"         x-ratelimit-{limit,remaining,reset} of the requests (Together:
                                      reset in seconds)
                 "openrouter"         the same, reset a Unix time in milliseconds
                 "mistral"            x-ratelimit-{limit,remaining}-{req,tokens}-minute, no reset
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from chatmagic.practice.wire import error_response

ERROR_SHAPES = ("openai", "gemini", "openrouter", "vllm", "ollama", "llamacpp")
HEADER_FAMILIES = ("anthropic", "unsuffixed", "openrouter", "mistral")
GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
DAILY_QUOTA = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
MINUTE_QUOTA = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"


def shaped_error(shape: str, status: int, message: str, code: str | None, type_: str | None = None,
                 headers: Mapping[str, str] | None = None,
                 script: Mapping[str, list[str]] | None = None) -> web.Response:
    """An error answer in ``shape`` (see the module docstring)."""
    script = script or {}
    if shape == "gemini":  # no limit headers: the wait is only in the body
        said = {k: v for k, v in (headers or {}).items() if not k.lower().startswith(("retry-after", "x-ratelimit"))}
        return web.json_response([{"error": _gemini(status, message, headers or {}, script)}],
                                 status=status, headers=said)
    if shape == "openrouter":
        error: dict[str, Any] = {"code": status, "message": message}
        if status == 403 and "flagged" in script:
            error["message"] = "Input flagged by moderation"
            error["metadata"] = {"reasons": ["harassment"], "flagged_input": "...",
                                 "provider_name": "practice", "model_slug": "fake-model"}
        return web.json_response({"error": error}, status=status, headers=headers)
    if shape == "vllm":
        return web.json_response({"object": "error", "message": message, "type": type_ or "BadRequestError",
                                  "param": None, "code": status}, status=status, headers=headers)
    if shape == "ollama":
        return web.json_response({"error": message}, status=status, headers=headers)
    return error_response(status, message, code, type_, headers)


def too_long(headers: Mapping[str, str] | None = None) -> web.Response:
    """llama.cpp's answer to a prompt over its context, as some builds send it: a 500."""
    body = {"error": {"code": 500, "message": "the request exceeds the available context size, try "
                      "increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 9000, "n_ctx": 4096}}
    return web.json_response(body, status=500, headers=headers)


def _gemini(status: int, message: str, headers: Mapping[str, str], script: Mapping[str, list[str]]) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if status == 429:
        quota = DAILY_QUOTA if "daily" in script else MINUTE_QUOTA
        details.append({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_requests",
                                        "quotaId": quota}]})
        wait = headers.get("retry-after")
        if wait is not None:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait}s"})
    return {"code": status, "message": message, "status": GEMINI_STATUS.get(status, "UNKNOWN"),
            "details": details}


def family_headers(family: str, kind: str, limit: float, remaining: float, reset_in: float,
                   now: float | None = None) -> dict[str, str]:
    """One budget's headers in ``family`` (``kind``: "requests" or "tokens")."""
    now = time.time() if now is None else now
    left = str(max(0, math.floor(remaining)))
    if family == "anthropic":
        reset = datetime.fromtimestamp(now + math.ceil(reset_in), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {f"anthropic-ratelimit-{kind}-limit": str(int(limit)),
                f"anthropic-ratelimit-{kind}-remaining": left, f"anthropic-ratelimit-{kind}-reset": reset}
    if family == "mistral":  # per minute, no reset
        name = "req" if kind == "requests" else "tokens"
        return {f"x-ratelimit-limit-{name}-minute": str(int(limit)), f"x-ratelimit-remaining-{name}-minute": left}
    if kind != "requests":  # the unsuffixed family counts requests only
        return {}
    reset_text = str(math.ceil((now + reset_in) * 1000)) if family == "openrouter" else f"{reset_in:.3f}"
    return {"x-ratelimit-limit": str(int(limit)), "x-ratelimit-remaining": left, "x-ratelimit-reset": reset_text}
