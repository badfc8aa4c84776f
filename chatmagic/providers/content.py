"""Images and documents in each provider's own shape, their size limits and token rules.

The engine's turns (core/rows.py) hold ``{"type": "text"}`` dicts and loaded ``Part`` objects;
a dialect writes them here, after the text, in the order given:

    OpenAI chat     {"type": "image_url", "image_url": {"url": <data: URL, or the URL itself>}}
                    {"type": "file", "file": {"filename", "file_data": <data: URL>}}  (PDF; no URLs)
    Anthropic       {"type": "image" | "document", "source": {"type": "base64", "media_type", "data"}}
                    {"type": "image" | "document", "source": {"type": "url", "url"}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatmagic.providers.parts import DOCUMENT, IMAGE, MediaError, Part

#: Largest file per kind, in bytes, as each provider documents it: OpenAI 20 MB an image
#: (50 MB a request) and 32 MB of PDF; Anthropic 5 MB of base64 an image, 32 MB a request.
OPENAI_LIMITS: Mapping[str, int] = {IMAGE: 20_000_000, DOCUMENT: 32_000_000}
ANTHROPIC_LIMITS: Mapping[str, int] = {IMAGE: 5 * 1024 * 1024 * 3 // 4, DOCUMENT: 32_000_000}
#: Per request: (bytes of images and documents together, how many): OpenAI 50 MB and 500 images;
#: Anthropic 32 MB (the whole request) and 100 images.
REQUEST_LIMITS: Mapping[str, tuple[int, int]] = {"openai": (50_000_000, 500), "anthropic": (32_000_000, 100)}


def openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turns with loaded parts, as chat-completions messages."""
    return [m if isinstance(m["content"], str) else {**m, "content": [openai_part(p) for p in m["content"]]}
            for m in messages]


def openai_part(p: dict[str, Any] | Part) -> dict[str, Any]:
    if not isinstance(p, Part):
        return p
    if p.kind == IMAGE:
        image = {"url": p.url if p.url is not None else p.data_url()}
        return {"type": "image_url", "image_url": image if p.detail is None else {**image, "detail": p.detail}}
    if p.url is not None:
        raise MediaError(f"{p.url[:80]}: OpenAI's chat API takes a PDF as data, not as a URL; "
                         "download it and give the path")
    return {"type": "file", "file": {"filename": p.name, "file_data": p.data_url()}}


def anthropic_content(content: str | list[Any]) -> str | list[dict[str, Any]]:
    """One turn's content as Messages API content blocks."""
    if isinstance(content, str):
        return content
    return [anthropic_block(p) for p in content]


def anthropic_block(p: dict[str, Any] | Part) -> dict[str, Any]:
    if not isinstance(p, Part):
        return p
    if p.url is not None:
        return {"type": p.kind, "source": {"type": "url", "url": p.url}}
    return {"type": p.kind, "source": {"type": "base64", "media_type": p.media_type, "data": p.b64()}}


# ---- a rich row's whole body, per dialect ----------------------------------------------------


def row_body(dialect: str, head: Mapping[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The request body of a row given as whole turns (system first; content lists of text
    dicts and loaded Parts): ``head``'s fields with the turns in ``dialect``'s shape. Anthropic
    takes the system prompt as a top-level field, so system turns are joined into it. MediaError
    when the row's files together pass what one request may carry."""
    _check_request(dialect, messages)
    if dialect == "anthropic":
        system = "\n\n".join(_text(m["content"]) for m in messages if m["role"] == "system")
        body = {k: v for k, v in head.items() if k != "system"}
        body["messages"] = [{"role": m["role"], "content": anthropic_content(m["content"])}
                            for m in messages if m["role"] != "system"]
        if system:
            body["system"] = system
        return body
    if dialect != "openai":
        raise MediaError(f"rows with images or conversations are not written for the {dialect} dialect yet")
    return {**head, "messages": openai_messages(messages)}


def _check_request(dialect: str, messages: list[dict[str, Any]]) -> None:
    parts = [p for m in messages if isinstance(m["content"], list) for p in m["content"] if isinstance(p, Part)]
    most, count = REQUEST_LIMITS.get(dialect, REQUEST_LIMITS["openai"])
    if len(parts) > count:
        raise MediaError(f"{len(parts):,} images and documents in one request, over the {count} it may carry")
    total = sum(len(p.data) for p in parts if p.data is not None)
    if total > most:
        raise MediaError(f"the row's files are {total / 1e6:,.1f} MB together, over the {most / 1e6:g} MB "
                         "one request may carry")


def limits_of(dialect: str) -> Mapping[str, int]:
    """The largest file per kind ``dialect``'s provider takes."""
    return ANTHROPIC_LIMITS if dialect == "anthropic" else OPENAI_LIMITS


def _text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text")
