"""A row's image or document once it is loaded: what a dialect writes into a body. Pure.

core/media.py makes these (it reads the files); providers/content.py writes them in each
provider's shape. Here, below both, so that a dialect never imports the run's layer.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

IMAGE, DOCUMENT = "image", "document"


class MediaError(Exception):
    """Why one row's image or document cannot be sent: one line, shown as the row's error."""


@dataclass(frozen=True, slots=True)
class Part:
    """A loaded image or document: local bytes (``data``) or a URL sent as it is."""

    kind: str                  # IMAGE or DOCUMENT
    media_type: str | None     # sniffed from the bytes; from a URL's extension, or None
    data: bytes | None = None
    url: str | None = None
    name: str = "file"         # a file name for the providers that want one (PDFs)
    detail: str | None = None  # OpenAI's image detail (auto, low, high), if given

    def b64(self) -> str:
        assert self.data is not None
        return base64.b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{self.b64()}"
