"""The OpenAI chat-completions dialect, spoken by OpenAI and every OpenAI-compatible server.

Answers: gateways differ (``content`` may be a list of parts or a number, token counts may be
strings), so each field is coerced to its type or dropped and nothing odd reaches the results
or the cache. Errors: the shapes of every profile that speaks this dialect are read by one
reader (``providers/shapes.py``), whatever the profile, since a gateway may pass any of them on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatmagic.providers import hints as _hints
from chatmagic.providers.answer import openai_usage, text_field
from chatmagic.providers.content import check_request, openai_messages
from chatmagic.providers.dialect import Answer, Failure
from chatmagic.providers.parts import DOCUMENT, IMAGE
from chatmagic.providers.shapes import read_failure


class OpenAIChat:
    """``POST {base_url}/chat/completions`` with ``messages`` (see dialect.py for the contract)."""

    name = "openai"
    #: the largest file per kind, in bytes, as OpenAI documents it: 20 MB an image, 32 MB of PDF;
    #: per request 50 MB of files together and 500 images
    file_limits: Mapping[str, int] = {IMAGE: 20_000_000, DOCUMENT: 32_000_000}
    request_limits: tuple[int, int] = (50_000_000, 500)

    def url(self, settings: Any) -> str:
        url = str(settings.base_url).rstrip("/") + "/chat/completions"
        version = settings.api_version
        return f"{url}?api-version={version}" if version else url

    def headers(self, settings: Any) -> dict[str, str]:
        return {}

    def head(self, settings: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": settings.model}
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if settings.max_tokens is not None:
            body["max_tokens"] = settings.max_tokens
        if settings.json:
            body["response_format"] = {"type": "json_object"}
        if settings.schema is not None:
            body["response_format"] = settings.schema.response_format()
        body.update(settings.params)
        system = settings.system_prompt
        body["messages"] = [{"role": "system", "content": system}] if system else []
        return body

    def body(self, head: Mapping[str, Any], prompt: str) -> dict[str, Any]:
        return {**head, "messages": [*head["messages"], {"role": "user", "content": prompt}]}

    def rich_body(self, head: Mapping[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        check_request(messages, *self.request_limits)
        return {**head, "messages": openai_messages(messages)}

    def answer(self, data: Any) -> Answer | None:
        return completion_of(data)

    def failure(self, status: int, data: Any, raw: bytes, hints: _hints.Hints) -> Failure:
        return read_failure(status, data, raw, hints)

    def hints(self, headers: Any) -> _hints.Hints:
        return _hints.parse(headers)


DIALECT = OpenAIChat()


def completion_of(data: Any) -> Answer | None:
    """The answer in ``data``, or None if ``data`` is not a completion (an error in a 200 body,
    or no message at all). A refusal (``content`` null, ``refusal`` set) is an answer with empty
    text; the reasoning (``reasoning_content``, DeepSeek and llama.cpp; ``reasoning``, vLLM and
    OpenRouter) is kept apart from the text."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        text = text_of(message.get("content"))
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if text is None:
        return None
    reasoning = text_field(message.get("reasoning_content")) or text_field(message.get("reasoning"))
    return Answer(text, _name(choice.get("finish_reason")), model=_name(data.get("model")),
                  refusal=text_field(message.get("refusal")), reasoning=reasoning, **openai_usage(data.get("usage")))


def text_of(content: Any) -> str | None:
    """The answer's text: a string as it is, None as "", the text parts of a list joined, a
    number as its digits; None for anything else (not a completion)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    if isinstance(content, (int, float)) and not isinstance(content, bool):
        return str(content)
    return None


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) else None
