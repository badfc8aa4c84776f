"""Anthropic's wire shapes for the practice servers: errors, times, request checks.

Shared by the Messages server (practice/anthropic.py) and its Message Batches
(practice/anthropic_batch.py), which import this and nothing of each other's.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from chatmagic.practice.shapes import anthropic_problem
from chatmagic.practice.wire import DIRECTIVE

VERSION = "2023-06-01"
#: Error type of each status, as Anthropic's errors page lists them.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
ROLES = ("user", "assistant")
#: The top-level fields the Messages API takes; any other is refused.
FIELDS = frozenset({"model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k", "stop_sequences",
                    "stream", "metadata", "tools", "tool_choice", "thinking", "service_tier", "container",
                    "mcp_servers", "context_management"})


def rfc3339(seconds_from_now: float) -> str:
    """A UTC time ``seconds_from_now`` away, as Anthropic writes its resets."""
    when = datetime.now(timezone.utc) + timedelta(seconds=max(0.0, seconds_from_now))
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(status: int, message: str, type_: str | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    """An error answer in Anthropic's shape."""
    body = {"type": "error", "error": {"type": type_ or ERROR_TYPES.get(status, "api_error"),
                                       "message": message}, "request_id": f"req_fake{uuid.uuid4().hex[:20]}"}
    return web.json_response(body, status=status, headers=headers)



def text_of(content: Any) -> str:
    """A message's text: a string, or the text blocks of a list joined."""
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return content if isinstance(content, str) else ""


def script_of(prompt: str) -> dict[str, list[str]]:
    return {m[1]: m[2].split(":") if m[2] else [] for m in DIRECTIVE.finditer(prompt)}


def check_request(body: Any) -> str | None:
    """Why the real API would refuse this Messages body (400 invalid_request_error), or None."""
    if not isinstance(body, dict):
        return "The request body is not valid JSON."
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Input should be a valid integer greater than or equal to 1"
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role == "system":
            return (f'messages.{i}.role: Unexpected role "system". The Messages API accepts a top-level '
                    '`system` parameter, not "system" as an input message role.')
        if role not in ROLES:
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
    blocks = anthropic_problem(messages)  # image and document blocks (practice/shapes.py)
    if blocks is not None:
        return blocks
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return "system: Input should be a valid string or a list of text blocks"
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
        return "stop_sequences: Input should be a valid list of strings"
    extra = sorted(set(body) - FIELDS)
    if extra:  # OpenAI's stop, response_format, seed, ...
        return f"{extra[0]}: Extra inputs are not permitted"
    return None


def forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool a request forces (``tool_choice`` {"type": "tool", "name"}, or "any" with one
    tool), or None."""
    tools = body.get("tools")
    choice = body.get("tool_choice") or {}
    if not isinstance(tools, list) or not isinstance(choice, dict):
        return None
    if choice.get("type") == "tool":
        return next((t for t in tools if isinstance(t, dict) and t.get("name") == choice.get("name")), None)
    if choice.get("type") == "any" and len(tools) == 1 and isinstance(tools[0], dict):
        return tools[0]
    return None


def tokens_of(text: str) -> int:
    return len(text) // 4 + 1
