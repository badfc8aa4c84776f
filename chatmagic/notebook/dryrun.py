"""The --dry-run report: what a run would send and cost. Pure functions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from chatmagic.core.media import peek
from chatmagic.core.prices import INSTALL_HINT, Prices, estimate_tokens, genai_installed, money
from chatmagic.core.rows import Row, parts_in, turns
from chatmagic.core.spend import cap_line
from chatmagic.providers.imagetokens import image_tokens
from chatmagic.providers.parts import DOCUMENT, MediaError

if TYPE_CHECKING:
    from chatmagic.core.schema import Schema

_SHOW_CHARS = 200   # characters of each prompt shown by dry_run_report
_SHOW_LINES = 6     # lines of each prompt shown by dry_run_report

#: Output tokens per answer the estimate assumes when max_tokens is not set (said in the report).
ASSUMED_OUTPUT = 256


def _preview(prompt: str, indent: str = "      ") -> str:
    """At most ~200 characters and 6 lines of ``prompt``, later lines indented."""
    text = prompt[:_SHOW_CHARS]
    lines = text.splitlines()
    cut = len(prompt) > _SHOW_CHARS or len(lines) > _SHOW_LINES
    text = "\n".join(lines[:_SHOW_LINES]).rstrip()
    return (text + " …" if cut else text).replace("\n", "\n" + indent)


def dry_run_report(prompts: Sequence[str], models: Sequence[str], *, system: str | None = None,
                   max_tokens: int | None = None, prices: Prices | Mapping[str, Any] | None = None, show: int = 3,
                   labels: Sequence[object] | None = None, schema: Schema | None = None,
                   media: tuple[str, int] | None = None, structured: Mapping[str, Any] | None = None,
                   max_cost: float | None = None) -> str:
    """What a run would send, as a few lines of text (nothing is sent or printed).

    Requests (prompts × models), the first ``show`` prompts (at most ~200 characters each, shown
    with ``labels`` if given, else their positions), estimated prompt tokens (see
    ``estimate_tokens``; the system prompt counts once per request), and the estimated cost per
    priced model and in total, with the run's ``prices`` (a ``Prices``, or the user's dict over
    the bundled price data): from input only up to input plus ``max_tokens`` per answer (or an
    assumed ``ASSUMED_OUTPUT`` tokens, said so, when ``max_tokens`` is None). With a
    ``schema`` (a chatmagic.core.schema.Schema), the ``response_format`` sent, counted once per request;
    ``structured`` replaces it with the body fields a dialect sends for it (Anthropic: ``tools``
    and ``tool_choice``).
    ``media`` is ``media_report``'s (line, tokens): the images' line, their tokens added to the input.
    ``max_cost``: how many requests the cap lets through at the high estimate.
    """
    models = list(models)
    n = len(prompts)
    requests = n * len(models)
    lines = [f"dry run, nothing sent: {n:,} prompt{'s' * (n != 1)} × {len(models)} "
             f"model{'s' * (len(models) != 1)} = {requests:,} request{'s' * (requests != 1)}"
             f" ({', '.join(models)})"]
    if system:
        lines.append(f"system: {_preview(system)}")
    if show > 0 and n:
        for i in range(min(show, n)):
            label = labels[i] if labels is not None else i
            lines.append(f"  [{label}] {_preview(prompts[i])}")
        if n > show:
            lines.append(f"  ... and {n - show:,} more")
    per_request = estimate_tokens(system) if system else 0
    if schema is not None and structured is None:
        structured = {"response_format": schema.response_format()}
    for field, value in (structured or {}).items():  # shown whole: what the server compiles or checks against
        sent = json.dumps(value, ensure_ascii=False)
        lines.append(f"{field}: {sent}")
        per_request += estimate_tokens(sent)
    if media is not None:
        lines.append(media[0])
    tokens_in = sum(estimate_tokens(p) for p in prompts) + n * per_request + (media[1] if media else 0)
    tokens_out = n * max_tokens if max_tokens else 0
    tokens = (f"tokens (estimate, ~4 characters each): ~{tokens_in:,} in per model, "
              f"~{tokens_in * len(models):,} in total")
    if max_tokens:
        tokens += f"; up to {tokens_out * len(models):,} out ({max_tokens:,} per answer)"
    else:
        tokens += "; output not counted (no max_tokens)"
    lines.append(tokens)
    priced = prices if isinstance(prices, Prices) else Prices(prices)
    lines.append(_cost_line(priced, models, n, tokens_in, max_tokens))
    if max_cost is not None:
        highs = [priced.bound(-(-tokens_in // max(n, 1)), max_tokens or ASSUMED_OUTPUT, m) for m in models]
        if all(h is not None for h in highs):  # an unpriced model: the run refuses the cap anyway
            lines.append(cap_line(max_cost, n * len(models), n * sum(h for h in highs if h is not None)))
    return "\n".join(lines)


def media_report(rows: Sequence[Row], dialect: str = "openai", model: str = "",
                 detail: str | None = None) -> tuple[str, int] | None:
    """The images and documents the rows would send, from their headers only: how many, their
    size, their tokens by the provider's rule (OpenAI's tiles, detail auto counting as high;
    Anthropic's area), and how many cannot be sent (with the first reason). None when the rows
    have none."""
    images = documents = size = tokens = 0
    bad: list[str] = []
    for row in rows:
        for m in parts_in(turns(row, None)):
            try:
                seen = peek(m)  # type: ignore[arg-type]
            except MediaError as e:
                bad.append(str(e))
                continue
            size += seen.size or 0
            if seen.kind == DOCUMENT:
                documents += 1
            else:
                images += 1
                tokens += image_tokens(dialect, seen.pixels, seen.detail or detail, model)
    if not images and not documents and not bad:
        return None
    rule = "Anthropic's area rule" if dialect == "anthropic" else f"OpenAI's rule for {model or 'gpt-4o'}"
    line = f"images: {images:,} (~{tokens:,} tokens by {rule}, in the estimate below)"
    if documents:
        line += f"; PDFs: {documents:,} (their tokens are not estimated)"
    line += f"; {size / 1e6:,.1f} MB of local files"
    if bad:
        line += f"; {len(bad):,} cannot be sent, their rows would fail: {bad[0]}"
    return line, tokens


def _cost_line(prices: Prices, models: list[str], n: int, tokens_in: int, max_tokens: int | None) -> str:
    """Priced per request of average size (tiers are per request), times the requests."""
    per_in, per_out = -(-tokens_in // max(n, 1)), max_tokens or ASSUMED_OUTPUT
    priced = [(m, prices.bound(per_in, 0, m), prices.bound(per_in, per_out, m)) for m in models]
    known = [(m, n * low, n * high) for m, low, high in priced if low is not None and high is not None]
    unpriced = [m for m, low, _ in priced if low is None]
    if not known:
        hint = "" if genai_installed() else f" ({INSTALL_HINT})"
        return f"cost: price unknown for {', '.join(models)}{hint}"
    parts = [f"{m} {money(low)}–{money(high)}" for m, low, high in known]
    total = f"{money(sum(k[1] for k in known))}–{money(sum(k[2] for k in known))}"
    note = "" if max_tokens else f" (output assumed at most {ASSUMED_OUTPUT} tokens per answer: no max_tokens)"
    missing = f"; price unknown for {', '.join(unpriced)}" if unpriced else ""
    return f"cost (estimate): {total}{note}" + (f" = {', '.join(parts)}" if len(models) > 1 else "") + missing
