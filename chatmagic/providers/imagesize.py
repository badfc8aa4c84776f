"""What a file is, from its first bytes, and an image's size in pixels from its header.

Pure functions over bytes; nothing is decoded (no PIL needed). The media type is sniffed
rather than taken from a file name or a server, so a ``.png`` that is a JPEG is sent as one.
"""

from __future__ import annotations

import struct

PNG, JPEG, GIF, WEBP, PDF = "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"
#: Bytes enough to sniff any type below.
SNIFF_BYTES = 16


def sniff(head: bytes) -> str | None:
    """The media type of data starting with ``head``, or None if it is none of ours."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"%PDF-"):
        return PDF
    return None


def dimensions(data: bytes, media_type: str) -> tuple[int, int] | None:
    """(width, height) from an image's header, or None if the header cannot be read."""
    try:
        if media_type == PNG and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if media_type == GIF:
            return struct.unpack("<HH", data[6:10])
        if media_type == WEBP:
            return _webp(data)
        if media_type == JPEG:
            return _jpeg(data)
    except struct.error:  # cut short
        return None
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # 24-bit sizes minus one
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":  # 14-bit sizes minus one, packed
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


# start-of-frame markers (baseline, progressive, ...): not DHT (C4), JPG (C8) or DAC (CC)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> tuple[int, int] | None:
    """Walk the segments to the first start-of-frame, which holds height then width."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None
