"""How a ``Results`` looks when a notebook or a terminal shows it: the summary line, then the first
rows as a small table (prompt, status, answer or reason), as pandas shows the head of a frame.

Only the first ``HEAD`` rows are drawn (read by index); above them the line of
``Results.summary()``, or for a large run its counts from one pass over the statuses. Everything a
server sent is escaped in the HTML and cut short in both, so an answer cannot break the page.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterator
from operator import attrgetter
from typing import Protocol


class Result(Protocol):
    """What is shown of a record (``chatmagic.results.Result``; not imported: results imports this)."""

    @property
    def index(self) -> int: ...
    @property
    def prompt(self) -> str: ...
    @property
    def text(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def cached(self) -> bool: ...


class Results(Protocol):
    """What is read of a run's records (``chatmagic.results.Results``): length, index, iteration."""

    @property
    def elapsed_s(self) -> float: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: int, /) -> Result: ...
    def __iter__(self) -> Iterator[Result]: ...
    def summary(self) -> str: ...

HEAD = 10          # rows shown
SUMMARY_UPTO = 10_000  # above this many records the header counts statuses only, in one pass
CELL = 80          # characters of a prompt or an answer in the HTML table
TEXT_CELL = 40     # ... and in the text table
#: The colour of each status, as the progress bar has them.
COLOURS = {"ok": "#2e7d32", "error": "#c62828", "cancelled": "#757575", "pending": "#ef6c00"}


def reason(record: Result) -> str:
    """Why a record is as it is, in a few words: the error, the cut, the cache."""
    if record.status == "error":
        return str(record.error or "unknown error")
    if record.status == "cancelled":
        return "not sent or not finished"
    if record.status == "pending":
        return "in a batch still running"
    if record.finish_reason in ("length", "content_filter"):
        return f"cut by {record.finish_reason}"
    return "from cache" if record.cached else ""


def _short(value: object, width: int) -> str:
    text = " ".join(str(value).split()) if value is not None else ""  # one line: newlines and tabs go
    text = text if len(text) <= width else text[: width - 1] + "…"
    # a lone surrogate (JSON's \ud800 escape) is no UTF-8: a notebook could not send the table
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def counts_line(results: Results) -> str:
    """The line above the rows: ``results.summary()``, or for a large run the statuses (and
    the reasons of failures) counted in one pass, since the full summary reads every field."""
    if len(results) <= SUMMARY_UPTO:
        return results.summary()
    statuses = Counter(map(attrgetter("status"), results))
    parts = [f"{len(results):,} prompts: {statuses.pop('ok', 0):,} ok"]
    if statuses.get("error"):
        why = Counter(str(r.error or "unknown").split(":", 1)[0] for r in results if r.status == "error")
        parts.append(f"{statuses.pop('error'):,} failed (" + ", ".join(f"{n:,} {w}" for w, n in why.most_common(3))
                     + (", ..." if len(why) > 3 else "") + ")")
    parts += [f"{n:,} {status}" for status, n in statuses.most_common()]
    return ", ".join([*parts, f"{results.elapsed_s:.1f}s"])


def _answer(record: Result) -> object:
    return record.text if record.status == "ok" else None


def _head(results: Results, n: int) -> list[Result]:
    return [results[i] for i in range(min(n, len(results)))]


def html_table(results: Results, head: int = HEAD) -> str:
    """The ``_repr_html_`` of ``results``: the summary, the first ``head`` rows, how many more."""
    esc = html.escape
    cell = 'style="text-align:left;vertical-align:top"'
    rows = []
    for r in _head(results, head):
        colour = COLOURS.get(r.status, "inherit")
        rows.append(
            f"<tr><td {cell}>{r.index}</td><td {cell}>{esc(_short(r.prompt, CELL))}</td>"
            f'<td {cell}><span style="color:{colour};font-weight:bold">{esc(str(r.status))}</span></td>'
            f"<td {cell}>{esc(_short(_answer(r), CELL))}</td><td {cell}>{esc(_short(reason(r), CELL))}</td></tr>")
    more = len(results) - len(rows)
    header = "".join(f"<th {cell}>{name}</th>" for name in ("", "prompt", "status", "answer", "reason"))
    tail = (f"<p>… {more:,} more (<code>results[i]</code>, or <code>results.to_pandas()</code> for "
            f"all)</p>") if more > 0 else ""
    return (f'<div class="chatmagic-results"><p><code>Results</code>: {esc(counts_line(results))}</p>'
            f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>{tail}</div>")


def text_table(results: Results, head: int = 5) -> str:
    """The ``repr`` of ``results``: the summary line, then the first ``head`` rows, aligned."""
    rows = [[str(r.index), _short(r.prompt, TEXT_CELL), str(r.status),
             _short(_answer(r) if r.status == "ok" else reason(r), TEXT_CELL)] for r in _head(results, head)]
    lines = [f"<Results {counts_line(results)}>"]
    if rows:
        table = [["", "prompt", "status", "answer or reason"], *rows]
        widths = [max(len(row[i]) for row in table) for i in range(3)]
        lines += ["  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]).rstrip() for row in table]
    more = len(results) - len(rows)
    if more > 0:
        lines.append(f"… {more:,} more")
    return "\n".join(lines)
