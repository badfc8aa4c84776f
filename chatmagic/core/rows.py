"""Rows that are more than one line of text: a system prompt of their own, earlier turns, images.

    rows_of(prompts, images) -> (texts, rows)  what chat_many was given, checked (ConfigError),
                                               rows None when every row is plain text
    turns(row, system) -> [{role, content}]    the whole message list, --system first, the row's
                                               text (and its images) the last user turn
    loaded(turns, limits) -> the same, each image read (MediaError fails only that row)

The turns are neutral: text content stays a string, a list of content holds ``{"type": "text"}``
dicts and ``Media`` (then ``Part``) objects, which each provider's dialect writes in its own
shape (providers/content.py). A prompt given as a message list may use OpenAI's parts
(``{"type": "image_url", "image_url": {"url": ...}}``) or ``{"type": "image", "image": VALUE}``
with any value ``images=`` takes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from chatmagic.core.media import LIMITS, Media, load, media_of
from chatmagic.errors import ConfigError
from chatmagic.providers.parts import Part

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class Row:
    """One prompt that may be more than text. ``text`` is the last user turn (None: the message
    list is sent as it is); ``system`` replaces --system for this row; ``messages`` come before
    the text; ``media`` go after the text in the last user turn, in the order given."""

    text: str | None
    system: str | None = None
    messages: tuple[dict[str, Any], ...] = ()
    media: tuple[Media, ...] = ()

    @property
    def plain(self) -> bool:
        return self.system is None and not self.messages and not self.media and self.text is not None

    @property
    def shown(self) -> str:
        """The prompt as the results show it: the text, else the last user turn's text."""
        if self.text is not None:
            return self.text
        last = next((m for m in reversed(self.messages) if m["role"] == "user"), None)
        return "" if last is None else text_of(last["content"])


def text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text")  # type: ignore[attr-defined]


def rows_of(prompts: Sequence[object], images: Sequence[object] | None = None) -> tuple[list[str], list[Row] | None]:
    """The prompts' texts and, when any is more than text, their rows. A prompt is a string, a
    list of ``{"role", "content"}`` messages, or a Row; ``images`` has one entry per prompt.
    A list of strings is given back as it is (the engine's own copy: a million prompts are not
    copied twice, nor made a million Rows)."""
    if images is not None:
        if isinstance(images, (str, bytes)) or not hasattr(images, "__len__"):
            raise ConfigError("images must be a list with one entry per prompt (a path, URL, bytes, "
                              "PIL image or a list of them)")
        # by position: a Series (df["file"]) is indexed by its labels
        images = images.tolist() if hasattr(images, "tolist") else list(images)
        if len(images) != len(prompts):
            raise ConfigError(f"images has {len(images)} entries for {len(prompts)} prompts: give one per "
                              "prompt (None for none)")
    if images is None and all(type(p) is str for p in prompts):  # the common case: no Row per prompt
        return cast("list[str]", prompts if isinstance(prompts, list) else list(prompts)), None
    rows: list[Row] = []
    for i, p in enumerate(prompts):
        if isinstance(p, Row):
            row = p
        elif isinstance(p, str):
            row = Row(p)
        elif isinstance(p, (list, tuple)):
            row = Row(None, messages=check_messages(p, f"prompt {i}"))
        else:
            raise ConfigError(f"every prompt must be a string; prompt {i} is {type(p).__name__}: {p!r:.60} "
                              "(a conversation is a list of {'role', 'content'} dicts)")
        if images is not None:
            extra = media_of(images[i])
            row = Row(row.text, row.system, row.messages, row.media + extra) if extra else row
        rows.append(row)
    texts = [r.shown for r in rows]
    return texts, None if all(r.plain for r in rows) else rows


def check_messages(messages: Sequence[object], where: str) -> tuple[dict[str, Any], ...]:
    """A message list as neutral turns, or one ConfigError naming the prompt and the message."""
    if not messages:
        raise ConfigError(f"{where}: the message list is empty")
    out = []
    for j, m in enumerate(messages):
        at = f"{where}, message {j}"
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ConfigError(f"{at}: a message is a dict with 'role' and 'content', got {m!r:.60}")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise ConfigError(f"{at}: role {role!r:.30} is not one of {', '.join(ROLES)}")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, (list, tuple)):
            out.append({"role": role, "content": [_part(p, at) for p in content]})
        else:
            raise ConfigError(f"{at}: content must be a string or a list of parts, got {type(content).__name__}")
    return tuple(out)


def _part(p: object, at: str) -> dict[str, Any] | Media:
    kind = p.get("type") if isinstance(p, Mapping) else None
    if isinstance(p, Mapping) and kind == "text" and isinstance(p.get("text"), str):
        return {"type": "text", "text": p["text"]}
    if isinstance(p, Mapping) and kind == "image_url":
        url = p.get("image_url")
        url = url.get("url") if isinstance(url, Mapping) else url
        if not isinstance(url, str) or not url:
            raise ConfigError(f"{at}: an image_url part needs image_url.url")
        detail = p["image_url"].get("detail") if isinstance(p["image_url"], Mapping) else None
        if detail not in (None, "auto", "low", "high"):
            raise ConfigError(f"{at}: image_url.detail is auto, low or high, not {detail!r:.20}")
        if not url.startswith(("http://", "https://", "data:")):
            return Media(bad=f"image_url {url[:60]!r} is not an http(s) or data: URL")
        return Media(url=url, detail=detail)
    if isinstance(p, Mapping) and kind in ("image", "document") and kind in p:
        found = media_of(p[kind])
        if len(found) != 1:
            raise ConfigError(f"{at}: a {kind} part holds one {kind}")
        return found[0]
    raise ConfigError(f"{at}: a content part is {{'type': 'text', 'text': ...}}, "
                      f"{{'type': 'image_url', 'image_url': {{'url': ...}}}} or {{'type': 'image', "
                      f"'image': VALUE}}; got {p!r:.60}")


def turns(row: Row, system: str | None) -> list[dict[str, Any]]:
    """The message list sent for ``row``: the system prompt first (the row's own, else
    ``system``), then its messages, then its text with its media as the last user turn. Media
    without text go into the last user turn of the messages (or a new one)."""
    out: list[dict[str, Any]] = []
    own = row.system if row.system is not None else system
    if own:
        out.append({"role": "system", "content": own})
    out.extend(row.messages)
    if row.text is not None:
        content: str | list[Any] = row.text
        if row.media:
            content = ([{"type": "text", "text": row.text}] if row.text else []) + list(row.media)
        out.append({"role": "user", "content": content})
    elif row.media:
        last = next((i for i in range(len(out) - 1, -1, -1) if out[i]["role"] == "user"), None)
        if last is None or last != len(out) - 1:
            out.append({"role": "user", "content": list(row.media)})
        else:
            before = out[last]["content"]
            before = [{"type": "text", "text": before}] if isinstance(before, str) else list(before)
            out[last] = {"role": "user", "content": before + list(row.media)}
    return out


def loaded(messages: list[dict[str, Any]], limits: Mapping[str, int] = LIMITS,
           detail: str | None = None) -> list[dict[str, Any]]:
    """``messages`` with every Media read into a Part (MediaError if one cannot be); ``detail``
    for each image that has none of its own."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list) and any(isinstance(p, Media) for p in content):
            content = [_with_detail(load(p, limits), detail) if isinstance(p, Media) else p for p in content]
        out.append({**m, "content": content})
    return out


def _with_detail(part: Part, detail: str | None) -> Part:
    if detail is None or part.detail is not None or part.kind != "image":
        return part
    return dataclasses.replace(part, detail=detail)


def parts_in(messages: list[dict[str, Any]]) -> list[Media | Part]:
    """Every image or document in ``messages``, in order."""
    return [p for m in messages if isinstance(m["content"], list)
            for p in m["content"] if isinstance(p, (Media, Part))]
