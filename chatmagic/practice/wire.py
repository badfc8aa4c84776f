"""What the practice servers share: the ``[[directive]]`` markers in prompts, message content as
text, and OpenAI's error body. Its own module so that server.py and batch.py need not import
each other."""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiohttp import web

#: ``[[name]]`` or ``[[name:args]]`` in a prompt scripts the practice server's answer to it.
DIRECTIVE = re.compile(r"\[\[(\w+)(?::([^\]]*))?\]\]")


def text_of(content: object) -> str:
    """Message content as text; accepts plain strings and lists of content parts."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def error_response(status: int, message: str, code: str | None, type_: str | None = None,
                   headers: Mapping[str, str] | None = None, param: str | None = None) -> web.Response:
    """An error answer in OpenAI's shape: ``{"error": {message, type, param, code}}``."""
    type_ = type_ or ("server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)
