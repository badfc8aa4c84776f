"""The practice servers' checks of message content, as the real APIs make them, and what an
answer can say about the images and documents it was sent.

    openai_problem(messages)      -> (message, param) of the 400 OpenAI would send, or None
    anthropic_problem(messages)   -> the message of Anthropic's 400, or None
    openai_media(content) / anthropic_media(content) -> ["64x48 image/png 1,234 B", "url", ...]

The checks follow the providers' documents: OpenAI's parts are text, image_url (an http(s) or
base64 data: URL of PNG, JPEG, GIF or WebP, ``detail`` auto/low/high, user turns only) and file
(a PDF as a data: URL, or a file_id); Anthropic's blocks are text, image (base64 of those four
types, or a url source) and document (a base64 PDF, or a url source).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from chatmagic.providers.imagesize import PDF, dimensions, sniff

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def _decoded(data: object) -> bytes | None:
    if not isinstance(data, str):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _data_url(url: str) -> tuple[str, bytes | None]:
    head, _, payload = url.partition(",")
    media_type = head.removeprefix("data:").removesuffix(";base64")
    return media_type, _decoded(payload) if head.endswith(";base64") else None


def describe(data: bytes) -> str:
    """"WxH type N B" for an image, "type N B" for a PDF."""
    kind = sniff(data[:16]) or "unknown"
    pixels = dimensions(data, kind)
    shown = f"{pixels[0]}x{pixels[1]} " if pixels else ""
    return f"{shown}{kind} {len(data):,} B"


def openai_problem(messages: list[Any]) -> tuple[str, str] | None:
    """The first content part OpenAI's chat completions would refuse."""
    for i, m in enumerate(messages):
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            param = f"messages[{i}].content[{j}]"
            problem = _openai_part(part, m.get("role"), param)
            if problem is not None:
                return problem
    return None


def _openai_part(part: object, role: object, param: str) -> tuple[str, str] | None:
    if not isinstance(part, dict) or part.get("type") not in ("text", "image_url", "file"):
        return (f"Invalid value: '{part.get('type') if isinstance(part, dict) else part}'. Supported values "
                "are: 'text', 'image_url', 'input_audio', 'refusal', and 'file'.", f"{param}.type")
    kind = part["type"]
    if kind == "text":
        return None if isinstance(part.get("text"), str) else (
            f"Missing required parameter: '{param}.text'.", f"{param}.text")
    if role != "user":
        return f"Invalid '{param}': {kind} parts are only allowed for messages with role 'user'.", param
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(image, dict) or not isinstance(url, str):
            return f"Missing required parameter: '{param}.image_url.url'.", f"{param}.image_url.url"
        if image.get("detail", "auto") not in ("auto", "low", "high"):
            return f"Invalid value for '{param}.image_url.detail'.", f"{param}.image_url.detail"
        if url.startswith(("http://", "https://")):
            return None
        media_type, data = _data_url(url) if url.startswith("data:") else ("", None)
        if data is None or media_type not in IMAGE_TYPES or sniff(data[:16]) not in IMAGE_TYPES:
            return ("You uploaded an unsupported image. Please make sure your image has of one the following "
                    "formats: ['png', 'jpeg', 'gif', 'webp'].", f"{param}.image_url.url")
        return None
    file = part.get("file")
    if not isinstance(file, dict) or not (file.get("file_data") or file.get("file_id")):
        return f"Missing required parameter: '{param}.file.file_data'.", f"{param}.file"
    if file.get("file_data"):
        media_type, data = _data_url(str(file["file_data"]))
        if data is None or sniff(data[:16]) != PDF:
            return f"Invalid file data: '{param}.file.file_data' is not a base64 PDF data: URL.", f"{param}.file"
    return None


def openai_media(content: object) -> list[str]:
    """What the images and files of one OpenAI message are: "WxH type N B", or "url"."""
    shown: list[str] = []
    for part in content if isinstance(content, list) else []:
        if part.get("type") == "image_url":
            url = part["image_url"]["url"]
            data = _data_url(url)[1] if url.startswith("data:") else None
            shown.append(describe(data) if data is not None else "url")
        elif part.get("type") == "file":
            data = _data_url(str(part["file"].get("file_data") or ""))[1]
            shown.append(describe(data) if data is not None else "file_id")
    return shown


def anthropic_problem(messages: list[Any]) -> str | None:
    """The first content block Anthropic's Messages API would refuse."""
    for i, m in enumerate(messages):
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            at = f"messages.{i}.content.{j}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                if not isinstance(block.get("text"), str):
                    return f"{at}.text: Field required"
                continue
            if kind not in ("image", "document"):
                return f"{at}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
            problem = _anthropic_source(block.get("source"), kind, f"{at}.source")
            if problem is not None:
                return problem
    return None


def _anthropic_source(source: object, kind: str, at: str) -> str | None:
    if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
        return f"{at}: Field required" if not isinstance(source, dict) else f"{at}.type: must be base64 or url"
    if source["type"] == "url":
        url = source.get("url")
        return None if isinstance(url, str) and url.startswith(("http://", "https://")) else f"{at}.url: Field required"
    allowed = IMAGE_TYPES if kind == "image" else (PDF,)
    if source.get("media_type") not in allowed:
        return f"{at}.media_type: Input should be {' or '.join(repr(a) for a in allowed)}"
    data = _decoded(source.get("data"))
    if data is None:
        return f"{at}.data: invalid base64 data"
    if sniff(data[:16]) != source["media_type"]:
        return f"{at}: The image was specified using the {source['media_type']} media type, but the image " \
               "does not appear to be that type" if kind == "image" else f"{at}: the document is not a PDF"
    return None


def anthropic_media(content: object) -> list[str]:
    shown: list[str] = []
    for block in content if isinstance(content, list) else []:
        if block.get("type") in ("image", "document"):
            data = _decoded(block["source"].get("data")) if block["source"]["type"] == "base64" else None
            shown.append(describe(data) if data is not None else "url")
    return shown
