"""The result of each prompt, and of a run.

A failed prompt is a record with ``status="error"`` and a reason, never an exception, so a run
that partly fails still hands back every answer that came in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, overload

from chatmagic.core.columns import Table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from chatmagic.core.schema import Schema
    from chatmagic.core.timeline import Timeline
    from chatmagic.providers.dialect import Answer

#: What became of a prompt: answered; failed (``error`` says why); not sent or not finished (the run
#: stopped, was interrupted, or never got to it); or in a provider batch still running (``--batch``).
Status = Literal["ok", "error", "cancelled", "pending"]

#: Columns of ``Results.to_pandas()``, in order (``text`` is shown as ``response``).
COLUMNS = ("prompt", "response", "status", "error", "attempts", "latency_s",
           "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens",
           "cost", "finish_reason", "model", "refusal", "reasoning", "request_id")


@dataclass(slots=True, eq=False)
class Result:
    """One prompt's outcome (``status``: see ``Status``); ``text`` is None unless ok.

    A run's records are ``Row``s, a view of one row of the run's columns; they read, compare,
    print and pickle as a ``Result`` with the same fields."""

    index: int
    prompt: str
    text: str | None = None
    status: Status = "cancelled"
    error: str | None = None
    attempts: int = 0
    latency_s: float | None = None
    prompt_tokens: int | None = None      # every input token, cached ones included
    completion_tokens: int | None = None  # every output token, reasoning included
    cached_tokens: int | None = None      # input read from the provider's prompt cache (billed less)
    cache_write_tokens: int | None = None  # input written to it (Anthropic's cache_creation_input_tokens)
    reasoning_tokens: int | None = None   # output spent on reasoning (billed as output)
    cost: float | None = None  # dollars it cost when it was answered (also from the cache), None if unknown
    finish_reason: str | None = None
    model: str | None = None
    refusal: str | None = None    # the model's refusal, never mixed into text
    reasoning: str | None = None  # the reasoning text the server sent, never mixed into text
    request_id: str | None = None  # the provider's id of the request that answered, for a support ticket
    cached: bool = False  # the answer came from the cache; nothing was sent
    data: object = None   # with json=True: the parsed answer; with a schema: a dict or model instance

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def take(self, answer: Answer, cost: float | None, request_id: str | None = None) -> None:
        """Fill in an answer that came back, with what it cost (``data`` is set by the caller)."""
        for name in FROM_ANSWER:
            setattr(self, name, getattr(answer, name))
        self.status, self.cost = "ok", cost
        self.request_id = request_id if request_id is not None else answer.request_id

    @property
    def flagged(self) -> bool:
        """Answered, but cut short (``length``) or filtered (``content_filter``)."""
        return self.finish_reason in ("length", "content_filter")

    def __eq__(self, other: object) -> bool:
        """Equal fields, whether a record is a ``Row`` of a run or made by hand."""
        if not isinstance(other, Result):
            return NotImplemented
        return _values(self) == _values(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was


FIELDS = tuple(f.name for f in fields(Result))
#: The fields ``take`` copies from an answer as they are.
FROM_ANSWER = ("text", "model", "finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens",
               "cache_write_tokens", "reasoning_tokens", "refusal", "reasoning")


def _values(record: Result) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in FIELDS)


class Row(Result):
    """Row ``i`` of a run's ``Table``: reading or setting a field reads or sets the column, so
    a run of a million prompts holds columns, not a million objects. Made when asked for."""

    __slots__ = ("_table", "_i")

    def __init__(self, table: Table, i: int):  # not the dataclass one: the fields are the columns
        self._table, self._i = table, i

    def __repr__(self) -> str:
        return "Result(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in FIELDS) + ")"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (and copied) as the ``Result`` it reads as, detached from the run."""
        return Result, _values(self)

    def take(self, answer: Answer, cost: float | None, request_id: str | None = None) -> None:
        """``Result.take`` on the columns themselves: once per answer, so without a property each."""
        columns, i = self._table.columns, self._i
        for name in FROM_ANSWER:
            columns[name].set(i, getattr(answer, name))
        columns["status"].set(i, "ok")
        columns["cost"].set(i, cost)
        columns["request_id"].set(i, request_id if request_id is not None else answer.request_id)


def _row_field(name: str) -> property:
    def get(self: Row) -> Any:
        return self._table.columns[name].get(self._i)

    def put(self: Row, value: Any) -> None:
        self._table.columns[name].set(self._i, value)
    return property(get, put)


def _prompt_get(self: Row) -> str:
    return self._table.prompts[self._i]


def _prompt_put(self: Row, value: str) -> None:
    self._table.prompts[self._i] = value


def _index_get(self: Row) -> int:
    return self._i


def _index_put(self: Row, value: int) -> None:
    raise AttributeError("a run's record keeps its index (its place in the run)")


for _name in FIELDS:
    if _name not in ("index", "prompt"):
        setattr(Row, _name, _row_field(_name))
Row.prompt = property(_prompt_get, _prompt_put)  # type: ignore[assignment]
Row.index = property(_index_get, _index_put)  # type: ignore[assignment]


class Results(Sequence[Result]):
    """The records of a run in prompt order, with a summary and conversions.

    Every attribute is set here: by the constructor, and while the run goes by ``retried``,
    ``finished`` and ``pending_in`` (the run's modules call those; they assign nothing)."""

    def __init__(self, records: list[Result] | Table, *, elapsed_s: float = 0.0, retries: int = 0,
                 model: str | None = None, schema: Schema | None = None, timeline: Timeline | None = None,
                 batch: bool = False):
        self._records = records  # a run's Table (records made when read), or records made by hand
        self.elapsed_s = elapsed_s
        self.retries = retries  # attempts beyond the first, over all prompts
        self.batch = batch      # sent through the Batch API (priced as such)
        self.batch_ids: list[str] = []  # batches still running, holding the pending records
        self.timeline = timeline  # the run's attempts
        self.notes: list[str] = []  # what the run had to tell (a wait longer than allowed)
        self.schema = schema  # the run's schema, if it had one
        self.model = model  # the model asked for; records hold the one that answered

    def retried(self) -> None:
        """One more attempt beyond a prompt's first."""
        self.retries += 1

    def finished(self, elapsed_s: float, notes: Iterable[str] = ()) -> None:
        """The run is over (done, stopped or interrupted) after ``elapsed_s``, with ``notes`` to tell."""
        self.elapsed_s = elapsed_s
        self.notes.extend(notes)

    def noted(self, line: str) -> None:
        """One more line for the summary to say (a batch stopped at the cost cap)."""
        self.notes.append(line)

    def pending_in(self, batch_ids: list[str]) -> None:
        """The provider batches still running that hold this run's pending records."""
        self.batch_ids = list(batch_ids)

    @overload
    def __getitem__(self, i: int) -> Result: ...

    @overload
    def __getitem__(self, i: slice) -> list[Result]: ...

    def __getitem__(self, i: int | slice) -> Result | list[Result]:
        records = self._records
        if not isinstance(records, Table):
            return records[i]
        if isinstance(i, slice):
            return [Row(records, j) for j in range(*i.indices(len(records)))]
        i = i.__index__()
        if i < 0:
            i += len(records)
        if not 0 <= i < len(records):
            raise IndexError("Results index out of range")
        return Row(records, i)

    def __iter__(self) -> Iterator[Result]:
        records = self._records
        if not isinstance(records, Table):
            return iter(records)
        return (Row(records, i) for i in range(len(records)))

    def __len__(self) -> int:
        return len(self._records)

    def column(self, name: str) -> Iterable[Any]:
        """Every record's field ``name``, in prompt order (read from the columns of a run)."""
        records = self._records
        if isinstance(records, Table):
            return records.values(name)
        return (getattr(r, name) for r in records)

    def texts(self) -> list[str | None]:
        """The answers in prompt order, None where a prompt did not succeed."""
        return [t if s == "ok" else None for s, t in zip(self.column("status"), self.column("text"))]

    def values(self) -> list[Any]:
        """With json=True or a schema: the parsed answers in prompt order (dicts, or instances of
        the schema's pydantic model), None where a prompt failed."""
        return [d if s == "ok" else None for s, d in zip(self.column("status"), self.column("data"))]

    def to_pandas(self) -> Any:  # a pandas DataFrame (pandas is optional, so typed Any)
        """One row per prompt; columns as in ``COLUMNS``. Needs pandas."""
        try:
            import pandas as pd  # imported here so `import chatmagic` stays fast
        except ImportError:
            from chatmagic.errors import ConfigError
            raise ConfigError("a DataFrame needs pandas: pip install 'chatmagic[pandas]'") from None
        names = [n for n in FIELDS if n not in ("cached", "data")]
        df = pd.DataFrame({n: list(self.column(n)) for n in names}, columns=names).rename(columns={"text": "response"})
        df = df.set_index("index").rename_axis(None)[list(COLUMNS)]
        # One missing-value convention in every table, whatever else is in a column: pandas's own
        # for text (NaN with pandas 3's str columns), NaN for numbers; a column with no value at
        # all (no error anywhere, nothing timed) would otherwise be an object column of None.
        text = pd.Series(["", None]).dtype
        for name in ("response", "error", "finish_reason", "model"):
            df[name] = df[name].astype(text)
        for name in ("latency_s", "prompt_tokens", "completion_tokens"):
            if df[name].isna().all():
                df[name] = df[name].astype("float64")
        if self.schema is not None:  # one typed column per field of the schema
            from chatmagic.core.schema import columns
            df = add_columns(df, columns(self.schema, self.values(), df.index))
        return df

    def plot(self, title: str | None = None) -> Figure:
        """A matplotlib ``Figure`` of the run: requests in flight (with the cap, 429s, retries
        and timeouts marked), latency of answers (p50/p95), answers over time (with the rate
        limit when one was known). Needs matplotlib: ``pip install 'chatmagic[plot]'``."""
        from chatmagic.core.plotting import figure
        if self.timeline is None:
            from chatmagic.errors import ConfigError
            raise ConfigError("these results were not made by a run: no timeline to plot")
        return figure([self.timeline], title)

    def counts(self) -> Counter[str]:
        """Outcomes by status, with failures by reason: {"ok": 8, "error: 400 ...": 1, ...}."""
        c: Counter[str] = Counter()
        for status, error in zip(self.column("status"), self.column("error")):
            c[status if status != "error" else f"error: {_reason(error)}"] += 1
        return c

    @property
    def cost(self) -> float | None:
        """Dollars this run spent: the sum of its answers' ``cost`` (an answer from the cache
        cost nothing); None when the price of one of them is unknown."""
        total = 0.0
        for status, cached, cost in zip(self.column("status"), self.column("cached"), self.column("cost")):
            if status == "ok" and not cached:
                if type(cost) is not float and type(cost) is not int:
                    return None
                total += cost
        return total

    def summary(self) -> str:
        """One line: ok, failed (by reason), cancelled, retried, tokens, cost (or "price
        unknown"), elapsed, and what the run had to say (a cost cap, a long wait)."""
        statuses = Counter(self.column("status"))
        ok = statuses["ok"]
        failed = Counter(_reason(e) for s, e in zip(self.column("status"), self.column("error")) if s == "error")
        cancelled = statuses["cancelled"]
        flagged = Counter(f for s, f in zip(self.column("status"), self.column("finish_reason"))
                          if s == "ok" and f in ("length", "content_filter"))
        tokens_in = sum(_count(t) or 0 for t in self.column("prompt_tokens"))
        tokens_out = sum(_count(t) or 0 for t in self.column("completion_tokens"))
        parts = [f"{ok}/{len(self)} ok"]
        cached = sum(self.column("cached"))
        if cached:
            parts[0] += f" ({cached} from cache)"
        if failed:
            parts.append(f"{sum(failed.values())} failed ("
                         + ", ".join(f"{n} {why}" for why, n in failed.most_common()) + ")")
        if cancelled:
            parts.append(f"{cancelled} cancelled")
        pending = statuses["pending"]
        if pending:
            ids = ", ".join(self.batch_ids)
            parts.append(f"{pending} pending in batch {ids} (run again to collect, or "
                         f"%chatmany_batches cancel {self.batch_ids[0] if self.batch_ids else 'ID'})")
        if flagged:
            parts.append(", ".join(f"{n} cut by {why}" for why, n in flagged.items()))
        if self.schema is not None and any(_refused_schema(s, e) for s, e in
                                           zip(self.column("status"), self.column("error"))):
            parts.append("the server does not support schemas (response_format json_schema)")
        other = self._other_models()
        if other:
            parts.append(f"answered by {', '.join(other)}, not {self.model}")
        parts.append(f"{self.retries} retries")
        parts.append(f"tokens {tokens_in:,} in / {tokens_out:,} out")
        spent = self.cost
        from chatmagic.core.prices import money, unknown_note
        if spent is None or any(s == "ok" and cached and cost is None for s, cached, cost in
                                zip(self.column("status"), self.column("cached"), self.column("cost"))):
            # a cached answer of no known price: as its first run said, not "$0.0000"
            parts.append(unknown_note())
        else:
            parts.append(money(spent) + (" (batch price)" if self.batch else ""))
        parts.append(f"{self.elapsed_s:.1f}s")
        return ", ".join(parts + self.notes)

    def _other_models(self) -> list[str]:
        """Models that answered in place of the one asked for (a server that ignores the name).
        A dated version of the name asked for (gpt-4o-mini-2024-07-18) is the same model."""
        if not self.model:
            return []
        import re
        same = re.compile(re.escape(self.model) + r"(-[\d-]+)?")
        answered = {m for s, m in zip(self.column("status"), self.column("model"))
                    if s == "ok" and isinstance(m, str) and m}
        return sorted(m for m in answered if not same.fullmatch(m))

    def __repr__(self) -> str:
        """The summary line, then the first rows (prompt, status, answer or reason)."""
        from chatmagic.core.view import text_table
        return text_table(self)

    def _repr_html_(self) -> str:
        """What a notebook shows: the summary, then the first rows as a table (escaped)."""
        from chatmagic.core.view import html_table
        return html_table(self)


def add_columns(frame: Any, extra: Any, suffix: str = "") -> Any:
    """``frame`` with the columns of ``extra`` (same index) added, each named with ``suffix``
    appended; a name ``frame`` already has gets ``_json`` before the suffix, or ``_json2``,
    ``_json3``, ... if that is taken too, by ``frame`` or by another of ``extra``'s columns (schema
    fields ``status`` and ``status_json``: ``status_json2`` and ``status_json``). Names never repeat."""
    taken = {*frame.columns, *(f"{c}{suffix}" for c in extra.columns)}
    names = []
    for column in extra.columns:
        name, n = f"{column}{suffix}", 1
        while name in frame.columns or (n > 1 and name in taken):
            name, n = f"{column}_json{n if n > 1 else ''}{suffix}", n + 1
        taken.add(name)
        names.append(name)
    return frame.join(extra.set_axis(names, axis=1))


def _refused_schema(status: object, error: object) -> bool:
    """A 400 saying that response_format json_schema is not supported (OpenAI's older models,
    older llama.cpp: 'must be one of "text" or "json_object"'); not a 400 about the schema
    itself, whose own message says what to change."""
    error = str(error or "").lower()
    return (status == "error" and error.startswith("400")
            and ("response_format" in error or "json_schema" in error)
            and any(w in error for w in ("not supported", "unsupported", "not support", "must be one of")))


def _reason(error: str | None) -> str:
    """The short reason of an error string: its part before the first colon."""
    return str(error or "unknown").split(":", 1)[0]


def _count(tokens: object) -> int | None:
    """A token count as summed: records may be built or edited by hand, so anything that is
    not a whole number counts as unknown; the summary never raises."""
    return tokens if type(tokens) is int else None
