"""A row's images and documents: from what the user gave to typed parts, one row at a time.

    media_of(value) -> (Media, ...)   a path, an http(s) or data: URL, bytes, a PIL image, or a
                                      list of them; nothing is read yet
    load(media, limits) -> Part       the bytes read once (a URL is kept as a URL), the type
                                      sniffed from them; MediaError says in one line why not
    peek(media) -> Peek               type, size and pixel size from the first bytes only
                                      (for the dry run, which reads no whole file)

A row's files are read when the row is about to be sent and dropped once its request is done,
so a run holds at most the rows in flight, never the whole folder. A value that cannot be sent
(a missing file, an unknown type, a file over the provider's limit) fails only its row.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

from chatmagic.providers.imagesize import JPEG, PDF, SNIFF_BYTES, dimensions, sniff
from chatmagic.providers.parts import DOCUMENT, IMAGE, MediaError, Part

#: Largest file of each kind by default, in bytes: OpenAI takes 50 MB per request and 32 MB of
#: PDFs; a dialect passes its own (Anthropic takes 5 MB per image).
LIMITS: Mapping[str, int] = {IMAGE: 20_000_000, DOCUMENT: 32_000_000}
#: Bytes read by ``peek``: enough for any image header (a JPEG's EXIF block can be 64 KB).
PEEK_BYTES = 1 << 17
_SHOWN = 80  # characters of a path or URL in a reason
_URL_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
              ".webp": "image/webp", ".pdf": PDF}
_WHAT = "a path, an http(s) URL, bytes or a PIL image"
_MISSING = ("NAType", "NaTType")  # pandas' missing values: no image


@dataclass(frozen=True, slots=True)
class Media:
    """One image or document of a row, as given; nothing is read until ``load``."""

    path: str | None = None
    url: str | None = None
    data: bytes | None = None
    image: object = None       # a PIL image, encoded when loaded
    bad: str | None = None     # why this value cannot be sent (raised by ``load``)
    detail: str | None = None  # OpenAI's image detail (auto, low, high), when the user gave one

    @property
    def shown(self) -> str:
        """The value as a reason names it."""
        if self.path is not None:
            return _cut(self.path)
        if self.url is not None:
            return _cut(self.url.split(",", 1)[0] if self.url.startswith("data:") else self.url)
        if self.data is not None:
            return f"<{len(self.data):,} bytes>"
        return "<PIL image>" if self.image is not None else "<value>"


@dataclass(frozen=True, slots=True)
class Peek:
    """What the dry run needs: kind, type, size in bytes (None for a URL) and pixels if known."""

    kind: str
    media_type: str | None
    size: int | None
    pixels: tuple[int, int] | None
    detail: str | None = None


def media_of(value: object) -> tuple[Media, ...]:
    """The images/documents of one row's value: one value, or a list or tuple of them. None, an
    empty string and a missing value (NaN) give none. Never raises: a value that cannot be sent
    becomes a Media whose ``load`` says why, so it fails its row only."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ in _MISSING:
        return ()
    if (type(value).__module__ or "").startswith("numpy") and getattr(value, "ndim", 0) == 1:
        value = value.tolist()  # type: ignore[attr-defined]  # a DataFrame cell holding an array of paths
    if isinstance(value, (list, tuple)):
        return tuple(m for v in value for m in (_one(v),) if m is not None)
    one = _one(value)
    return () if one is None else (one,)


def _one(value: object) -> Media | None:
    if isinstance(value, (list, tuple)):
        return Media(bad="a list inside a list of images")
    if isinstance(value, str):
        if not value.strip():
            return None
        if value.startswith(("http://", "https://")):
            return Media(url=value)
        if value.startswith("data:"):
            return Media(url=value)
        return Media(path=os.path.expanduser(value.removeprefix("file://")))
    if isinstance(value, os.PathLike):
        return Media(path=os.fspath(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Media(data=bytes(value))
    if (type(value).__module__ or "").startswith("PIL.") and hasattr(value, "save"):
        return Media(image=value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return Media(bad=f"an image must be {_WHAT}, got {type(value).__name__}")


def load(media: Media, limits: Mapping[str, int] = LIMITS) -> Part:
    """The part to send: local data read and checked, or the URL. MediaError if it cannot be."""
    part = _load(media, limits)
    return part if media.detail is None else dataclasses.replace(part, detail=media.detail)


def _load(media: Media, limits: Mapping[str, int]) -> Part:
    if media.bad:
        raise MediaError(media.bad)
    if media.url is not None and not media.url.startswith("data:"):
        return _url_part(media.url)
    if media.path is not None:
        data = _read(media.path, max(limits.values()))
        name = os.path.basename(media.path) or "file"
    elif media.url is not None:
        data, name = _data_url(media.url), "file"
    elif media.data is not None:
        data, name = media.data, "file"
    else:
        data, name = _encode_pil(media.image), "image.png"
    media_type = sniff(data[:SNIFF_BYTES])
    if media_type is None:
        raise MediaError(f"{media.shown}: not a PNG, JPEG, GIF or WebP image, nor a PDF")
    kind = DOCUMENT if media_type == PDF else IMAGE
    if len(data) > limits[kind]:
        raise MediaError(f"{media.shown}: {len(data) / 1e6:,.1f} MB, over the {limits[kind] / 1e6:g} MB "
                         f"the provider takes for {'a document' if kind == DOCUMENT else 'an image'}")
    return Part(kind, media_type, data=data, name=name)


def peek(media: Media) -> Peek:
    """Kind, type, size and pixel size, from the first ``PEEK_BYTES``. MediaError as ``load``."""
    if media.url is not None and not media.url.startswith("data:"):
        part = _url_part(media.url)
        return Peek(part.kind, part.media_type, None, None, media.detail)
    if media.path is None:
        part = load(media, {IMAGE: math.inf, DOCUMENT: math.inf})  # type: ignore[dict-item]
        data, size = part.data or b"", len(part.data or b"")
    else:
        try:
            with open(media.path, "rb") as f:
                size, data = os.fstat(f.fileno()).st_size, f.read(4096)
                if sniff(data[:SNIFF_BYTES]) == JPEG and dimensions(data, JPEG) is None:
                    data += f.read(PEEK_BYTES - len(data))  # past a large EXIF block
        except OSError as e:
            raise MediaError(f"{media.shown}: cannot read ({e.strerror or e})") from None
    media_type = sniff(data[:SNIFF_BYTES])
    if media_type is None:
        raise MediaError(f"{media.shown}: not a PNG, JPEG, GIF or WebP image, nor a PDF")
    kind = DOCUMENT if media_type == PDF else IMAGE
    return Peek(kind, media_type, size, None if kind == DOCUMENT else dimensions(data, media_type), media.detail)


def _read(path: str, cap: int) -> bytes:
    shown = _cut(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > cap:  # refused before it is read
                raise MediaError(f"{shown}: {size / 1e6:,.1f} MB, over the {cap / 1e6:g} MB the provider takes")
            return f.read(cap + 1)
    except OSError as e:
        raise MediaError(f"{shown}: cannot read ({e.strerror or e})") from None


def _url_part(url: str) -> Part:
    suffix = os.path.splitext(urlsplit(url).path)[1].lower()
    media_type = _URL_TYPES.get(suffix)
    return Part(DOCUMENT if media_type == PDF else IMAGE, media_type, url=url,
                name=os.path.basename(urlsplit(url).path) or "file")


def _data_url(url: str) -> bytes:
    head, comma, payload = url.partition(",")
    if not comma:
        raise MediaError(f"{_cut(head)}: a data: URL without data")
    try:
        if head.endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        return unquote_to_bytes(payload)
    except ValueError:
        raise MediaError(f"{_cut(head)}: the data: URL is not valid base64") from None


def _encode_pil(image: object) -> bytes:
    """A PIL image as PNG bytes (its own format if it has one we can send)."""
    fmt = getattr(image, "format", None)
    fmt = fmt if fmt in ("PNG", "JPEG", "GIF", "WEBP") else "PNG"
    out = io.BytesIO()
    try:
        image.save(out, format=fmt)  # type: ignore[attr-defined]
    except (OSError, ValueError) as e:
        raise MediaError(f"<PIL image>: cannot be saved as {fmt} ({e})") from None
    return out.getvalue()


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN - 1] + "…"
