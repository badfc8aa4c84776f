"""An image's input tokens by each provider's documented rule, for the dry run's estimate. Pure.

OpenAI (by model; the rule of the longest matching name prefix, dated names included):
    tiles      fit 2048x2048, then the short side to 768 (never up); ``base + tile`` per 512 px
               tile; detail "low" is ``base`` alone. gpt-4o, gpt-4.1, gpt-4.5 and unknown names:
               85 + 170; gpt-4o-mini 2,833 + 5,667 (priced as gpt-4o); o1, o3: 75 + 150.
    patches    gpt-4.1-mini, gpt-4.1-nano, o4-mini: 32 px patches, at most 1,536 (a larger image
               is scaled down to fit), times 1.62, 2.46 or 1.72.
Anthropic: width x height / 750, after scaling down to a long edge of 1,568 px and ~1,600 tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

_TILES = {"": (85, 170), "gpt-4o-mini": (2833, 5667), "o1": (75, 150), "o3": (75, 150)}
_PATCHES = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "o4-mini": 1.72}
PATCH_CAP = 1536


def image_tokens(dialect: str, pixels: tuple[int, int] | None, detail: str | None = None,
                 model: str = "") -> int:
    """One image's input tokens for ``model`` of ``dialect``."""
    if dialect == "anthropic":
        return anthropic_image_tokens(pixels)
    return openai_image_tokens(pixels, detail or "auto", model)


def openai_image_tokens(pixels: tuple[int, int] | None, detail: str = "auto", model: str = "") -> int:
    """OpenAI's rule for ``model`` (see the module docstring). Unknown pixels count as a
    1024x1024 image; detail "auto" counts as "high"."""
    w, h = map(float, pixels or (1024, 1024))
    multiplier = _PATCHES.get(_prefix(model, _PATCHES))
    if multiplier is not None:
        return math.ceil(_patches(w, h) * multiplier)
    base, tile = _TILES[_prefix(model, _TILES)]
    if detail == "low":
        return base
    scale = min(1.0, 2048 / max(w, h))
    w, h = w * scale, h * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def anthropic_image_tokens(pixels: tuple[int, int] | None) -> int:
    """Anthropic's rule: width x height / 750, after an image whose long edge is over 1568 px or
    that would pass ~1,600 tokens is scaled down to fit both. Unknown pixels count as 1,600."""
    if pixels is None:
        return 1600
    w, h = pixels
    scale = min(1.0, 1568 / max(w, h), math.sqrt(1600 * 750 / (w * h)))
    return max(1, math.ceil(w * scale * h * scale / 750))


def _patches(w: float, h: float) -> int:
    """32 px patches covering the image, scaled down (whole patches across) to fit the cap."""
    n = math.ceil(w / 32) * math.ceil(h / 32)
    if n <= PATCH_CAP:
        return n
    shrink = math.sqrt(PATCH_CAP * 32 * 32 / (w * h))
    w, h = w * shrink, h * shrink
    fit = math.floor(w / 32) / (w / 32)
    return min(PATCH_CAP, math.ceil(w * fit / 32) * math.ceil(h * fit / 32))


def _prefix(model: str, table: Mapping[str, object]) -> str:
    """The longest key of ``table`` that ``model`` starts with ("" if none)."""
    found = [k for k in table if k and model.startswith(k)]
    return max(found, key=len) if found else ""
