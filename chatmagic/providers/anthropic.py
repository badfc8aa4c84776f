"""The Anthropic Messages dialect: ``POST {base}/messages``, spoken natively (see dialect.py).

Request: ``x-api-key`` (the profile's auth style) and ``anthropic-version: 2023-06-01``; a
base URL without ``/v1`` (as the Anthropic SDK's ``ANTHROPIC_BASE_URL`` is written) gets it
added. The body is ``{model, max_tokens, system, messages, ...}``:

- ``max_tokens`` is always sent (the API requires it): ``--max-tokens``, else
  ``DEFAULT_MAX_TOKENS`` (4096, what every Claude model accepts; only tokens used are billed);
- the system prompt (``--system``, plus the schema's instruction) is the top-level ``system``,
  never a message (the API refuses a ``system`` role);
- ``temperature`` as given; ``-p stop=...`` (OpenAI's name) is sent as ``stop_sequences`` (a
  list); every other ``-p`` field is sent as it is (``top_k``, ``metadata``, ...);
- ``--schema`` and ``--json`` force a tool: ``tools: [{name, description, input_schema}]`` and
  ``tool_choice: {"type": "tool", "name"}``; the answer's ``tool_use`` input, written as JSON,
  is the answer's text and is checked as in every run (``--json``: any object).

Answer: the text blocks joined (or the forced tool's input as JSON); ``stop_reason`` ->
finish reason (end_turn, stop_sequence, tool_use -> "stop"; max_tokens -> "length";
refusal -> "content_filter"; others as sent); ``usage``: prompt tokens are ``input_tokens``
plus ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` (all input, as OpenAI
counts it), completion tokens ``output_tokens``.

Errors, by ``error.type`` of ``{"type": "error", "error": {"type", "message"}}``:
``rate_limit_error`` (429) and ``overloaded_error`` (529) are SLOW (retried, the whole run
paces down; a 429 waits as ``retry-after`` says); ``api_error`` (500) is RETRY;
``authentication_error``, ``permission_error``, ``billing_error``, ``not_found_error`` (an
unknown model: every prompt would fail alike), a spent credit balance or spend limit, and an
``invalid_request_error`` about a field every request carries alike (``temperature: ...``,
``seed: Extra inputs are not permitted``) end the run (ABORT) with a reason; any other
``invalid_request_error`` (about ``messages``, or "prompt is too long") and ``request_too_large``
fail only that prompt (FAIL). A body of another shape (a proxy's) is read as OpenAI-compatible servers'.
Limit hints come from the ``anthropic-ratelimit-*`` headers (``providers/hints.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from chatmagic.providers import hints as _hints
from chatmagic.providers.answer import anthropic_usage
from chatmagic.providers.content import anthropic_content, check_request, text_of_turn
from chatmagic.providers.dialect import ABORT, FAIL, RETRY, SLOW, Action, Answer, Failure
from chatmagic.providers.parts import DOCUMENT, IMAGE

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
JSON_TOOL = "json_answer"  # the tool --json forces: any JSON object
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "stop", "max_tokens": "length",
                "refusal": "content_filter", "model_context_window_exceeded": "length"}
#: error.type -> (verdict, reason shown when the run ends)
ERROR_TYPES: dict[str, tuple[Action, str | None]] = {
    "rate_limit_error": (SLOW, None), "overloaded_error": (SLOW, None), "api_error": (RETRY, None),
    "authentication_error": (ABORT, "bad API key"),
    "permission_error": (ABORT, "this key may not use this model or resource"),
    "billing_error": (ABORT, "billing: no credit left"),
    "not_found_error": (ABORT, "not found (unknown model or wrong base URL)"),
    "invalid_request_error": (FAIL, None), "request_too_large": (FAIL, None),
}
#: Messages of a 400 or 429 that no retry fixes: the whole account is out of money or limit.
_SPENT = re.compile(r"credit balance is too low|reached your specified API usage limits|spend limit",
                    re.IGNORECASE)
_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
#: A validation message names the field first ("max_tokens: Field required", "messages.0.content: ...").
_FIELD = re.compile(r"([a-z_]{1,40})(?:\.[\w.]*)?: ")
#: Fields that differ per prompt: an error there is that prompt's alone.
_PER_PROMPT = frozenset({"messages"})


def api_base(base_url: str) -> str:
    """``base_url`` ending in ``/v1``: the Anthropic SDK's base URL has no ``/v1``, ours has."""
    base = str(base_url).rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


class AnthropicMessages:
    """``POST {base}/messages`` (see the module docstring and dialect.py for the contract)."""

    name = "anthropic"
    #: the largest file per kind, in bytes, as Anthropic documents it: 5 MB of base64 an image
    #: (3.75 MB of file), 32 MB of PDF; per request 32 MB (the whole request) and 100 images
    file_limits: Mapping[str, int] = {IMAGE: 5 * 1024 * 1024 * 3 // 4, DOCUMENT: 32_000_000}
    request_limits: tuple[int, int] = (32_000_000, 100)

    def url(self, settings: Any) -> str:
        return api_base(settings.base_url) + "/messages"

    def headers(self, settings: Any) -> dict[str, str]:
        return {"anthropic-version": VERSION}

    def head(self, settings: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": settings.model,
                                "max_tokens": settings.max_tokens or DEFAULT_MAX_TOKENS}
        system = settings.system_prompt
        if system:
            body["system"] = system
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if settings.schema is not None:
            name = _TOOL_NAME.sub("_", settings.schema.name)[:64] or "answer"
            body.update(_forced_tool(name, "Give the answer.", settings.schema.json_schema))
        elif settings.json:
            body.update(_forced_tool(JSON_TOOL, "Give the answer as a JSON object.", {"type": "object"}))
        body.update(params(settings.params))
        body["messages"] = []
        return body

    def body(self, head: Mapping[str, Any], prompt: str) -> dict[str, Any]:
        return {**head, "messages": [*head["messages"], {"role": "user", "content": prompt}]}

    def rich_body(self, head: Mapping[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        # the system turns are joined into the top-level system prompt: the API has no system role
        check_request(messages, *self.request_limits)
        system = "\n\n".join(text_of_turn(m["content"]) for m in messages if m["role"] == "system")
        body = {k: v for k, v in head.items() if k != "system"}
        body["messages"] = [{"role": m["role"], "content": anthropic_content(m["content"])}
                            for m in messages if m["role"] != "system"]
        if system:
            body["system"] = system
        return body

    def answer(self, data: Any) -> Answer | None:
        return message_answer(data)

    def failure(self, status: int, data: Any, raw: bytes, hints: _hints.Hints) -> Failure:
        return read_failure(status, data, raw, hints)

    def hints(self, headers: Any) -> _hints.Hints:
        return _hints.parse(headers)


DIALECT = AnthropicMessages()


def params(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``-p`` fields in Anthropic's names: ``stop`` (a string or a list) -> ``stop_sequences``."""
    out = dict(extra)
    if "stop" in out:
        stop = out.pop("stop")
        out.setdefault("stop_sequences", [stop] if isinstance(stop, str) else stop)
    return out


def _forced_tool(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"tools": [{"name": name, "description": description, "input_schema": schema}],
            "tool_choice": {"type": "tool", "name": name}}


def message_answer(data: Any) -> Answer | None:
    """A Message as an ``Answer``; None if ``data`` is no Message (no ``content`` list)."""
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, list):
        return None
    blocks = [b for b in content if isinstance(b, dict)]
    tool = next((b for b in blocks if b.get("type") == "tool_use" and "input" in b), None)
    if tool is not None:  # the forced tool's input is the answer
        try:
            text = json.dumps(tool["input"], ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return None
    else:
        text = "".join(b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str))
    reason = data.get("stop_reason")
    reason = STOP_REASONS.get(reason, reason[:40]) if isinstance(reason, str) else None
    model = data.get("model")
    return Answer(text, reason, model=model[:200] if isinstance(model, str) else None,
                  **anthropic_usage(data.get("usage")))


def read_failure(status: int, data: Any, raw: bytes, hints: _hints.Hints) -> Failure:
    """An error answer as a ``Failure``, by its ``error.type``."""
    err = data.get("error") if isinstance(data, dict) else None
    kind = err.get("type") if isinstance(err, dict) else None
    if not isinstance(kind, str) or not kind:
        from chatmagic.providers.shapes import read_failure as other  # a proxy's or a gateway's shape
        return other(status, data, raw, hints)
    assert isinstance(err, dict)
    message = str(err.get("message") or kind)
    details = err.get("details")
    spend = isinstance(details, dict) and details.get("error_code") == "enforced_spend_limit_reached"
    if spend or (kind in ("invalid_request_error", "rate_limit_error", "billing_error") and _SPENT.search(message)):
        return Failure(message, kind[:60], ABORT, "no credit left, or the spend limit is reached")
    field = _FIELD.match(message)
    if kind == "invalid_request_error" and field and field[1] not in _PER_PROMPT:
        # "temperature: ...", "seed: Extra inputs are not permitted": every request carries it alike
        return Failure(message, kind[:60], ABORT, f"the request's {field[1]!r} is refused (every prompt would be)")
    action, reason = ERROR_TYPES.get(kind, (None, None))
    if action == SLOW and hints.should_retry is False:
        action = FAIL
    return Failure(message, kind[:60], action, reason)
