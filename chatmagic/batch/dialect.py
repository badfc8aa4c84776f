"""What the batch engine (batch/run.py) needs of a provider's Batch API: one object per API.

    OpenAI's Files + Batches (also Azure, Groq, ...)   batch/openai.py      DIALECT
    Anthropic's Message Batches                          batch/anthropic.py   DIALECT

The engine is generic: it writes the requests of one batch to a temporary file (at most
``max_requests`` lines and ``max_bytes``), records every batch the server accepts before it
waits, polls, and matches result lines to prompts by custom_id. A batch dialect owns the wire:

- ``request_line(custom_id, body)``: one line of that file; ``line_maker(body_of)``: a fast
  ``(custom_id, prompt) -> bytes`` making the same bytes, the request body coming from the
  Messages/chat dialect's one builder ``body_of(prompt)``;
- ``create(client, path, part)``: submit the file as one batch (``part`` a hash of its keys,
  for dialects that can label a batch: ``labelled``); ``recent(client)``: the server's recent
  batches, to find one created but never recorded (by its ``part`` label, else by ``created``,
  an epoch time, and its total); ``retrieve``
  and ``cancel`` by id. Each returns the batch in the engine's names: ``id``, ``status``
  (validating, in_progress, finalizing, cancelling; terminal: completed, failed, expired,
  cancelled), ``request_counts`` {total, completed, failed}, and ``part`` when it has one;
- ``result_lines(client, batch)``: the raw result lines of a finished batch;
  ``read_line(line, batch_id)``: one parsed line as (custom_id, Answer or None, why none),
  ``ValueError`` for a line that names no request (not an object): whatever the server sent,
  no other exception (the engine fails the requests left without a line, saying why).

``client`` is the run's ``FilesClient`` (the same capped, timed, scrubbed edge as every request).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from chatmagic.providers.dialect import Answer
    from chatmagic.settings import Settings

TERMINAL = ("completed", "failed", "expired", "cancelled", "not_found")  # the last is the engine's own


class BatchDialect(Protocol):
    name: str
    max_requests: int
    max_bytes: int
    labelled: bool  # its batches carry the ``part`` label (else found again by an intent)

    def request_line(self, custom_id: str, body: dict[str, Any]) -> bytes: ...

    def line_maker(self, body_of: Callable[[str], dict[str, Any]]) -> Callable[[str, str], bytes]: ...

    async def create(self, client: Any, path: str, part: str) -> dict[str, Any]: ...

    async def recent(self, client: Any) -> list[dict[str, Any]]: ...

    async def retrieve(self, client: Any, batch_id: str) -> dict[str, Any]: ...

    async def cancel(self, client: Any, batch_id: str) -> dict[str, Any]: ...

    def result_lines(self, client: Any, batch: dict[str, Any]) -> AsyncIterator[bytes]: ...

    def read_line(self, line: Any, batch_id: str) -> tuple[str, Answer | None, str | None]: ...


def batch_dialect(settings: Settings) -> BatchDialect:
    """The Batch API of the settings' dialect (Anthropic's, else OpenAI's)."""
    if getattr(settings.dialect, "name", "openai") == "anthropic":
        from chatmagic.batch.anthropic import DIALECT as anthropic
        return anthropic
    from chatmagic.batch.openai import DIALECT as openai
    return openai
