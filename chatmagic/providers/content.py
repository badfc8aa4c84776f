"""Images and documents in each provider's own shape (a dialect's ``rich_body`` uses these).

The engine's turns (core/rows.py) hold ``{"type": "text"}`` dicts and loaded ``Part`` objects;
a dialect writes them with these helpers, after the text, in the order given:

    OpenAI chat     {"type": "image_url", "image_url": {"url": <data: URL, or the URL itself>}}
                    {"type": "file", "file": {"filename", "file_data": <data: URL>}}  (PDF; no URLs)
    Anthropic       {"type": "image" | "document", "source": {"type": "base64", "media_type", "data"}}
                    {"type": "image" | "document", "source": {"type": "url", "url"}}
"""

from __future__ import annotations

from typing import Any

from chatmagic.providers.parts import IMAGE, MediaError, Part


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


# ---- what one request may carry ------------------------------------------------------------


def check_request(messages: list[dict[str, Any]], most: int, count: int) -> None:
    """MediaError when the row's files together pass what one request may carry: ``most`` bytes
    of images and documents, ``count`` of them (each dialect says its provider's limits)."""
    parts = [p for m in messages if isinstance(m["content"], list) for p in m["content"] if isinstance(p, Part)]
    if len(parts) > count:
        raise MediaError(f"{len(parts):,} images and documents in one request, over the {count} it may carry")
    total = sum(len(p.data) for p in parts if p.data is not None)
    if total > most:
        raise MediaError(f"the row's files are {total / 1e6:,.1f} MB together, over the {most / 1e6:g} MB "
                         "one request may carry")


def text_of_turn(content: str | list[Any]) -> str:
    """A turn's text parts joined (Anthropic's top-level system prompt takes text only)."""
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text")
