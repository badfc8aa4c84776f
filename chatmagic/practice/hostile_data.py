"""Answers whose *data* is hostile, for the practice server's ``[[directive]]`` markers (the
transport-level ones, such as ``[[gzipbomb]]``, are in ``practice/server.py``):

- ``[[keyfields]]``: the key the request carried echoed into the answer's text, ``model``,
  ``finish_reason``, reasoning and its id (so into the ``x-request-id`` header too), each time
  past the 200 characters a client may keep of a field, as a gateway that reflects its input
  might; in an Anthropic Message (``echo_key``) into the text, ``model``, ``stop_reason`` and
  the ``request-id`` header;
- ``[[deep:N]]``: the answer a JSON object whose first field (the schema's first property, or
  ``deep``) is a list nested N deep (2N bytes: 2,000 deep is 4 KB);
- ``[[surrogate]]``: the text holds a lone surrogate, sent as the valid JSON escape ``\\ud800``;
- in an Anthropic Message, ``[[deep:N]]`` nests a forced tool's ``input`` (``deep_body``): its
  whole body is that deep, written as text (``json.dumps`` itself cannot go so deep).
"""

from __future__ import annotations

import json
from typing import Any

#: The directives handled here.
DIRECTIVES = frozenset({"keyfields", "deep", "surrogate"})
#: Put before an echoed key, so a realistic key straddles the 200th character of its field.
PAD = "x" * 100


def shape(answer: dict[str, Any], script: dict[str, Any], key: str, schema: dict[str, Any] | None) -> None:
    """Make ``answer`` (a chat-completion body) as hostile as ``script`` asks, in place."""
    choice = answer["choices"][0]
    message = choice["message"]
    if "deep" in script:
        depth = int(script["deep"][0]) if script["deep"] and script["deep"][0] else 2000
        field = next(iter((schema or {}).get("properties", {})), "deep")
        message["content"] = "{" + json.dumps(field) + ": " + "[" * depth + "]" * depth + "}"
    if "surrogate" in script:
        message["content"] = "lone \ud800 surrogate: " + str(message.get("content"))
    if "keyfields" in script:
        message["content"] = f"{message.get('content')} (you sent {key})"
        message["reasoning_content"] = f"the key was {key}"
        answer["model"] = f"{answer['model']}-{PAD}{key}"
        choice["finish_reason"] = f"stop:{key}"
        answer["id"] = PAD + key  # the request id


def echo_key(message: dict[str, Any], key: str) -> str:
    """Echo ``key`` into an Anthropic Message's text, ``model`` and ``stop_reason``, in place;
    the ``request-id`` header to send with it."""
    for block in message["content"]:
        if block.get("type") == "text":
            block["text"] += f" (you sent {key})"
    message["model"] = f"{message['model']}-{PAD}{key}"
    message["stop_reason"] = f"end_turn:{key}"
    return f"req_{PAD}{key}"


def deep_body(message: dict[str, Any], depth: int) -> str:
    """The JSON text of an Anthropic ``message`` whose forced tool's input (or text) is a list
    nested ``depth`` deep under its first field."""
    marker = "\x00deep\x00"
    block = message["content"][0]
    if block.get("type") == "tool_use":
        block["input"] = {next(iter(block["input"]), "deep"): marker}
    else:
        block["text"] = marker
    return json.dumps(message).replace(json.dumps(marker), "[" * depth + "]" * depth)
