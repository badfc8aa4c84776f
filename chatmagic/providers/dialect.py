"""The provider seam: what a wire dialect owns, so the run, the cache and the batch file agree.

A *dialect* is one API shape (OpenAI chat completions: ``providers/openai.py``; Anthropic
Messages: ``providers/anthropic.py``). A *profile* (``providers/profiles.py``) is one provider:
a dialect plus a default base URL, the key's environment variable and an auth style. Adding a
provider that speaks an existing dialect is one row there; a new dialect is one module here plus
its name in ``profiles.DIALECTS``.

The contract, for a dialect object ``d`` (see ``Dialect``):

- ``d.url(settings)``: the URL one prompt is POSTed to (``settings.base_url`` plus the path and
  any query the profile needs, e.g. Azure's ``?api-version=``). It is also the cache key's URL and
  the throttle's name for the server, so two providers never share cached answers or paces.
- ``d.headers(settings)``: headers the dialect itself requires (e.g. ``anthropic-version``);
  the auth header comes from the profile (``profiles.auth_headers``) and the user's
  ``--header`` values are added by the transport, which hides and scrubs them all.
- ``d.head(settings)``: every body field that is the same for all prompts of a run (model,
  system prompt, temperature, max_tokens, response format, ``params``), as plain JSON.
  ``d.body(head, prompt)``: the full request body for one prompt. It is the ONE builder: the
  engine sends it, ``core/cache.py`` hashes it, ``batch/format.py`` writes it, so a cache hit
  means exactly "this body was answered". ``body`` must put ``prompt`` in exactly one place and
  otherwise only copy ``head`` (the cache and the batch file use that to encode the common
  part once for 100,000 prompts).
- ``d.rich_body(head, messages)``: the body of a row given as whole turns (system first; content
  lists of text dicts and loaded ``Part``s, ``providers/content.py`` writes them in each shape);
  MediaError when its files pass ``d.request_limits`` (bytes, count) together. ``d.file_limits``:
  the largest file per kind the provider takes (checked before a file is read).
- ``d.answer(data)``: a parsed 200 body as an ``Answer`` (text, finish reason, usage, model),
  every field coerced to its type or dropped; None if it is no answer (an error in a 200 body).
- ``d.failure(status, data, raw, hints)``: an error answer read as a ``Failure``: its message,
  code, and a verdict, the ``action`` (RETRY, SLOW, FAIL or ABORT) with a reason; None leaves
  the verdict to the status (``core/retry.py``). ``data`` is the parsed JSON (any type: servers
  send lists, strings, numbers), ``raw`` the bytes, ``hints`` what the headers said.
- ``d.hints(headers)``: the rate-limit hints of an answer's headers (``providers/hints.py``),
  read on every answer, so it must be cheap when there are none.

Verdicts: RETRY (transient: back off and try again), SLOW (the server is at capacity: a 429,
an overload 503/529/498; retried, and the throttle slows every prompt down as for a 429 without
headers), FAIL (this prompt only: the next prompt may succeed), ABORT (no prompt can succeed:
bad key, no credit, a daily quota spent; the run ends with ``reason``).

Everything the server sent is hostile: a dialect never raises on odd data, never trusts a size
or a type, and keeps messages short (the transport scrubs the key and header values and cuts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from chatmagic.errors import Action as Action  # the verdicts named below
from chatmagic.providers.hints import Hints

if TYPE_CHECKING:
    from collections.abc import Mapping

RETRY: Final = "retry"  # the values of errors.Action (see the module docstring)
SLOW: Final = "slow"
FAIL: Final = "fail"
ABORT: Final = "abort"
ACTIONS: tuple[Action, ...] = (RETRY, SLOW, FAIL, ABORT)


@dataclass(frozen=True, slots=True)
class Answer:
    """The fields of one answer that are kept (in the results; the first five in the cache too).
    None where the server did not say; ``text`` never holds the refusal or the reasoning.

    Token counts mean the same for every dialect, so they are priced alike: ``prompt_tokens``
    counts every input token, cached and cache-written ones included (Anthropic's
    ``input_tokens`` leaves them out: its dialect adds them); ``completion_tokens`` every output
    token, reasoning included (``providers/answer.py`` reads both usage shapes)."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    cached_tokens: int | None = None       # input read from the provider's prompt cache (billed less)
    cache_write_tokens: int | None = None  # input written to it (Anthropic bills these higher)
    reasoning_tokens: int | None = None    # output spent on reasoning, part of completion_tokens
    refusal: str | None = None    # the model's refusal message (OpenAI's message.refusal)
    reasoning: str | None = None  # reasoning text (reasoning_content / reasoning), if the server sent it
    request_id: str | None = None  # a batch result line's id of its request (interactive: from the headers)


@dataclass(frozen=True, slots=True)
class Failure:
    """One error answer as its dialect reads it.

    ``action`` is a verdict (RETRY, SLOW, FAIL, ABORT) or None (decided by the status);
    ``reason`` says why in a few words when the dialect knows better than the status (e.g.
    "the daily quota is spent"); ``retry_after`` is a wait found in the body (Gemini's
    ``RetryInfo``), used when the headers name none."""

    message: str
    code: str | None = None
    action: Action | None = None
    reason: str | None = None
    retry_after: float | None = None


class Dialect(Protocol):
    """One wire format (see the module docstring for the contract). ``settings`` is a
    ``chatmagic.settings.Settings`` (typed Any: providers sit below the settings layer)."""

    name: str
    file_limits: Mapping[str, int]
    request_limits: tuple[int, int]

    def url(self, settings: Any) -> str: ...

    def headers(self, settings: Any) -> dict[str, str]: ...

    def head(self, settings: Any) -> dict[str, Any]: ...

    def body(self, head: Mapping[str, Any], prompt: str) -> dict[str, Any]: ...

    def rich_body(self, head: Mapping[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]: ...

    def answer(self, data: Any) -> Answer | None: ...

    def failure(self, status: int, data: Any, raw: bytes, hints: Hints) -> Failure: ...

    def hints(self, headers: Any) -> Hints: ...
