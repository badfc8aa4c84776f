"""Runs many prompts concurrently: the concurrency cap, retries, pacing, order and progress.

Each prompt is a task, created only when one of ``2 * concurrency`` places is free, so a run
of 100,000 prompts holds a bounded number of tasks. Each *attempt* holds one of
``concurrency`` slots, so a prompt waiting out a backoff leaves its slot to another. A task is
made only while few wait for a slot (``queued_max``): the places beyond are for prompts waiting out
a backoff, and tasks queued for a slot cost the garbage collector (at 5,000 in flight, 2,500
more queued than needed cost ~8% of a run's CPU).
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from chatmagic.core.budgets import TokenEstimate
from chatmagic.core.cache import Cache, fill, key_maker, request_key, row_of
from chatmagic.core.columns import Table
from chatmagic.core.jsonparse import TooDeep, dumps, loads
from chatmagic.core.memory import Memory
from chatmagic.core.prices import Prices
from chatmagic.core.progress import make_progress
from chatmagic.core.ratelimit import PROBE_WAIT, PROBE_WAIT_LOCAL, Throttle
from chatmagic.core.retry import ABORT, RETRY, classify, policy, slows
from chatmagic.core.rows import Row, loaded, parts_in, rows_of, turns
from chatmagic.core.slots import Slots
from chatmagic.core.spend import REASON, Capped, Hold, Purse, Spend, check_priced, mark_unsent
from chatmagic.core.timeline import CANCELLED, ERROR, OK, Timeline, known_limit, outcome_of, throttle_wait
from chatmagic.errors import ConfigError, RequestError, RunAborted
from chatmagic.providers.imagetokens import openai_image_tokens
from chatmagic.providers.parts import MediaError
from chatmagic.results import Result, Results
from chatmagic.transport.client import Client, Completion, scrub
from chatmagic.transport.limits import connection_cap

if TYPE_CHECKING:
    from chatmagic.core.timeline import Sleep
    from chatmagic.settings import Settings
from chatmagic.transport.proxies import is_loopback


def queued_max(concurrency: int) -> int:
    """The most tasks made ahead to wait for a slot: enough that a freed slot is taken in the
    same turn of the loop, few enough that the collector does not walk thousands of waiting tasks."""
    return max(64, concurrency // 16)


#: Request keys looked up in the answer cache at a time (as strings only while looked up).
LOOKUP_CHUNK = 20_000
#: Output tokens counted per request for token pacing, without max_tokens, until an answer shows them.
DEFAULT_OUTPUT_TOKENS = 256

log = logging.getLogger("chatmagic")


class _NotSent(Exception):
    """The run stopped before this attempt was sent."""


class _SlowDown(Exception):
    """The server asked us to slow down (a 429 or an overload the throttle has taken in): pacing, not a fault,
    so the prompt is sent again without using up a retry."""

    def __init__(self, error: RequestError):
        super().__init__(str(error))
        self.error = error


class Run:
    """One run of prompts with resolved ``settings``; ``results`` fills in as answers arrive.

    Collaborators can be passed in: ``client`` makes the HTTP client (``Client(settings,
    limit=...)``), ``cache`` is an open answer cache to share (the caller closes it; without one
    the run opens and closes its own when ``settings.cache``), ``sleep`` waits between retries,
    ``memory`` is what runs remember about servers (learnt paces, cache names; default: a fresh one),
    ``purse`` the ``--max-cost`` money shared with other runs (default: this run's own).
    """

    def __init__(self, prompts: Iterable[str | list[dict[str, Any]]], settings: Settings, *,
                 images: Sequence[Any] | None = None, progress: object = None, sleep: Sleep | None = None,
                 desc: str = "chatmany",
                 memory: Memory | None = None, client: Callable[..., Client] = Client,
                 cache: Cache | None = None, purse: Purse | None = None):
        if len(settings.models) > 1:  # -m a,b is the magic's: one run per model (settings.for_model)
            raise ConfigError(f"model {settings.model!r}: a run sends to one model; call once per model, "
                              "or use %%chatmany -m a,b")
        self.settings = settings
        self.memory = Memory() if memory is None else memory
        self._make_client = client
        self._shared_cache = cache
        self._cache: Cache | None = None        # the answer cache while the run is on
        self._ahead = 0  # tasks made that have not run yet (see run)
        self._keys: list[str] | None = None     # every prompt's request key, made only by request_keys()
        self._rich_keys: dict[int, str] = {}    # a rich row's key (covering its images), made when it is sent
        self._key_of: Callable[[str], str] | None = None  # a prompt's key, made when it is needed
        self._slots: Slots | None = None  # one per request in flight, made by run()
        self._client: Client | None = None      # open while the run sends
        texts, self._rows = rows_of(check_prompts(prompts), images)  # rows: None when all are text
        self.timeline = Timeline(settings.concurrency, label=settings.model)
        self.results = Results(Table(texts), model=settings.model,
                               schema=settings.schema, timeline=self.timeline, batch=settings.batch)
        self.abort: RequestError | None = None
        self._sleep = self.timeline.sleeper(sleep or asyncio.sleep)
        self._policy = policy(settings.retries, settings.max_retry_wait, self._sleep)
        self._throttle = Throttle(settings.rpm, settings.tpm, url=settings.url, paces=self.memory.paces,
                                  estimate=TokenEstimate(settings.max_tokens, DEFAULT_OUTPUT_TOKENS),
                                  max_wait=settings.max_retry_wait, probe_wait=(
                                      PROBE_WAIT_LOCAL if is_loopback(settings.base_url) else PROBE_WAIT))
        self._throttle.sleep = self.timeline.sleeper(self._throttle.sleep, throttle_wait(self._throttle))
        self._progress = make_progress(settings.progress if progress is None else progress, desc)
        self.dialect = settings.dialect
        self._head = self.dialect.head(settings)  # the body's fields shared by every prompt
        self.prices = Prices.of(settings)
        check_priced(settings, self.prices)  # --max-cost without a price: before anything is sent
        self.spend = Spend.of(self, purse)  # purse: the cap shared by the runs of a -m a,b cell
        _dumps(self._head)  # bad input fails here, before anything is sent
        # a request's text estimate; the throttle's TokenEstimate adds what the answers' usage showed
        self._fixed_tokens = len(settings.system_prompt or "") // 4

    async def run(self) -> Results:
        """Send every prompt; raise ``RunAborted`` (with the results) if the run had to stop."""
        if self.settings.batch:  # batch/ drives a batch run; core does not import it
            raise ValueError("a --batch run is sent by chatmagic.batch.run.send(run)")
        c = connection_cap(self.settings.concurrency)
        self._slots, places = Slots(c), Slots(2 * c)  # not asyncio's: its release scans its waiters
        tasks: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            places.release()

        self._ahead = 0  # a run cut short earlier (its tasks cancelled before they ran) counted some
        started = self.timeline.t0 = time.perf_counter()
        todo = self.from_cache()
        self._progress.start(len(self.results), len(self.results) - len(todo))
        outcome = "interrupted"
        try:
            async with self._make_client(self.settings, limit=c) as self._client:
                try:
                    queued = queued_max(c)
                    for record in todo:
                        await places.acquire()
                        while self._ahead + self._slots.queued >= queued:
                            if self._ahead:  # made, not yet run: this turn they queue (or take a slot)
                                await asyncio.sleep(0)
                            else:
                                await self._slots.shorter_than(queued)
                        if self.abort or (self.spend is not None and self.spend.stopped):
                            break
                        self._ahead += 1
                        task = asyncio.create_task(self._one(record))
                        tasks.add(task)
                        task.add_done_callback(finished)
                    while tasks:
                        await asyncio.gather(*tasks)
                except BaseException:
                    # interrupted: stop every task before the session closes; a task still
                    # waiting for a slot would otherwise send on a closed session
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
            outcome = "stopped" if self.abort else "done"
        finally:
            if self.spend is not None and self.spend.stopped and outcome == "done":
                mark_unsent(self.results)
            notes = [self.spend.note(self.results) if self.spend is not None else None,
                     self._client.note() if self._client is not None else None]
            self.results.finished(time.perf_counter() - started, [*self._throttle.notes, *filter(None, notes)])
            self.timeline.rate, self.timeline.burst = known_limit(self._throttle)
            self._progress.close(outcome)
            self.close_cache()  # writes what is buffered, also after an interrupt
        if self.abort:
            for record in self.results:
                if record.status == "cancelled" and record.error is None:
                    record.error = f"not sent: the run stopped ({self.abort})"
            raise RunAborted(self.abort, self.results)
        return self.results

    def close_cache(self) -> None:
        """Close the cache this run opened (a shared one is its owner's to close)."""
        if self._cache is not None and self._cache is not self._shared_cache:
            self._cache.close()

    def flush_cache(self) -> None:
        """Write the answers kept so far (the cache writes in groups) before saying they are kept."""
        if self._cache is not None:
            self._cache.flush()

    def body(self, prompt: str) -> dict[str, Any]:
        """The one request body of ``prompt``: what is sent, cached and written to a batch file."""
        body: dict[str, Any] = self.dialect.body(self._head, prompt)
        return body

    @property
    def rows(self) -> list[Row] | None:
        """Every prompt as a Row, when one of them is more than text; else None."""
        return self._rows

    def rich(self, index: int) -> Row | None:
        """The row at ``index`` when it is more than one line of text (its own system prompt,
        earlier turns or images), else None."""
        row = self._rows[index] if self._rows is not None else None
        return None if row is None or row.plain else row

    def rich_body(self, row: Row) -> dict[str, Any]:
        """The request body of a rich row, its images read now (MediaError: this row cannot be
        sent). Built when the row is sent, so only the rows in flight hold their files."""
        system = self.settings.system_prompt
        if row.system is not None:  # the row's own system prompt, with the schema's instruction
            schema = self.settings.schema
            system = "\n\n".join(p for p in (row.system, schema.instruction() if schema else None) if p)
        messages = loaded(turns(row, system), self.dialect.file_limits, self.settings.image_detail)
        return self.dialect.rich_body(self._head, messages)

    # ---- what a batch run (batch/run.py) uses of a run -------------------------

    @property
    def head(self) -> dict[str, Any]:
        """The part of every request body that is the same for all prompts (model, parameters,
        the system message); ``body`` adds a prompt to it."""
        return self._head

    def request_keys(self) -> list[str]:
        """Every prompt's request key, made once (the answer cache and a batch file use the same;
        a rich row's is replaced by ``rich_ready`` when its images are read). A run without
        --batch never holds them all: each is made when it is looked up or stored (``key``)."""
        if self._keys is None:
            keys = [self._maker()(p) for p in self.results.column("prompt")]
            for i, key in self._rich_keys.items():
                keys[i] = key
            self._keys = keys
        return self._keys

    def _maker(self) -> Callable[[str], str]:
        if self._key_of is None:
            self._key_of = key_maker(self.memory.server_name(self.settings.url), self.body)
        return self._key_of

    def key(self, index: int) -> str:
        """The request key of the prompt at ``index``."""
        if self._keys is not None:
            return self._keys[index]
        rich = self._rich_keys.get(index)
        return rich if rich is not None else self._maker()(self.results[index].prompt)

    def from_cache(self) -> Sequence[Result]:
        """Open the answer cache (with ``settings.cache``), fill in the cached answers, and return
        the records still to send (read from the results as they are reached)."""
        if self.settings.cache:
            self._cache = self._shared_cache or Cache.open()
        if self._cache is None:
            return self.results
        n, prompts = len(self.results), iter(self.results.column("prompt"))
        # the indices to send, kept only from the first answer found on: a run with no answer
        # cached sends them all and holds no index per prompt (8 MB at a million)
        todo: array[int] | None = None
        keys, key_of = self._keys, self._maker()
        for first in range(0, n, LOOKUP_CHUNK):  # a million keys are never held at once
            chunk = range(first, min(n, first + LOOKUP_CHUNK))
            # a rich row's key covers its images' bytes: it is made (and looked up) when it is sent
            plain = {i: key_of(p) if keys is None else keys[i]
                     for i, p in zip(chunk, prompts) if self.rich(i) is None}
            found = {} if self.settings.refresh else self._cache.get_many(plain.values())
            if not found:
                if todo is not None:
                    todo.extend(chunk)
                continue
            if todo is None:
                todo = array("I" if n < 2**32 else "q", range(first))
            for i in chunk:
                row = found.get(plain[i]) if i in plain else None
                if row is None or not self._take_cached(self.results[i], row):
                    todo.append(i)
        return self.results if todo is None else _Picked(self.results, todo)

    def keep(self, key: str, row: tuple[Any, ...], *, latency_s: float | None = None,
             attempts: int | None = None) -> None:
        """Put one answer (a row: ``cache.row_of``) into this run's answer cache, if it has one,
        with how it came (shown again when a later run takes it from the cache)."""
        if self._cache is not None:
            self._cache.put(key, *row, latency_s=latency_s, attempts=attempts)

    def _take_cached(self, record: Result, row: tuple[Any, ...] | None) -> bool:
        """Fill ``record`` from a cached ``row``; False if there is none or it no longer decodes."""
        if row is None:
            return False
        try:
            record.data = self.decode(record, row[0])
        except (RequestError, TypeError):  # stored by a run without --json, or the
            record.text = None              # pydantic model's checks changed: ask again
            return False
        fill(record, row)
        record.status, record.cached = "ok", True  # nothing paid this time: results.cost leaves it out
        if record.cost is None:  # a row stored without its cost (an older file, a batch line): priced now
            record.cost = self.prices.cost(record, self.settings.model)
        return True

    def rich_ready(self, record: Result, keys: list[str] | None = None) -> dict[str, Any] | None:
        """A rich row's body, its key put in ``keys`` (the run's own by default), or None when
        it is done already: answered from the cache, or failed before sending (a missing file,
        an unknown type, a file over the limit)."""
        row = self.rich(record.index)
        assert row is not None
        try:
            body = self.rich_body(row)
        except MediaError as e:
            record.status, record.error = "error", f"not sent: {e}"
            self._progress.advance(False)
            return None
        if keys is not None or self._keys is not None or self._cache is not None:
            # the key covers everything sent, the images' bytes too (hashed only when a key is used)
            key = request_key(self.memory.server_name(self.settings.url), body)
            for held in (keys, self._keys):
                if held is not None:
                    held[record.index] = key
            self._rich_keys[record.index] = key
            if (self._cache is not None and not self.settings.refresh
                    and self._take_cached(record, self._cache.get_many([key]).get(key))):
                self._progress.advance(True)
                return None
        return body

    def text_tokens(self, record: Result) -> int:
        """The estimate of a record's input tokens from its text (and images), before usage shows more."""
        row = self.rich(record.index)
        images = sum(openai_image_tokens(None) for _ in parts_in(turns(row, None))) if row is not None else 0
        return len(record.prompt) // 4 + self._fixed_tokens + images

    async def _one(self, record: Result) -> None:
        self._ahead -= 1  # running: from here to its slot (or the slots' queue) without a wait
        row = self.rich(record.index)
        cost = self.text_tokens(record)
        if row is None:
            body = _dumps(self.body(record.prompt)).encode()
        else:
            ready = self.rich_ready(record)
            if ready is None:
                return
            body = _dumps(ready).encode()
            del ready  # only the encoded body stays while the request is in flight and retried
        try:
            try:
                done = await self._send(record, body, cost)
            except RequestError as first:
                if self.settings.retries == 0 or classify(first) != RETRY:
                    raise
                done = await self._policy.copy()(self._replay(first, record, body, cost))
        except _NotSent:
            return
        except Capped:  # the cost cap: this prompt is not sent (again)
            record.status, record.error = "cancelled", REASON
            return
        except RequestError as e:
            record.status, record.error = "error", str(e)
            if classify(e) == ABORT and self.abort is None:
                self.abort = e
                self._throttle.stop()
            self._progress.advance(False)
            return
        answer, dollars = done.answer, self.prices.cost(done.answer, self.settings.model)
        record.take(answer, dollars, done.request_id)
        if self._cache is not None:  # the row from the answer: the record holds the same, read slower
            self.keep(self.key(record.index), row_of(answer, cost=dollars, request_id=done.request_id),
                      latency_s=record.latency_s, attempts=record.attempts)
        self._progress.advance(True)

    def _replay(self, first: RequestError, record: Result, body: bytes,
                cost: int) -> Callable[[], Awaitable[Completion]]:
        """An attempt function for tenacity whose first call replays the failure already seen,
        so tenacity counts it and waits before the second request."""
        pending = [first]

        async def attempt() -> Completion:
            if pending:
                raise pending.pop()
            self.results.retried()
            self._progress.retried()
            return await self._send(record, body, cost)
        return attempt

    async def _send(self, record: Result, body: bytes, cost: int) -> Completion:
        """One attempt, sent again while the server only asks to slow down: a 429 or an overload
        (``slows``) waits (its own retry-after, capped, then the throttle's pace) but uses up no
        retry. The run still ends on those alone: the throttle names a spent quota, or 10
        minutes of nothing but 429s."""
        while True:
            try:
                if self.spend is None:  # no --max-cost: no hold to settle, one coroutine fewer
                    return await self._paid(record, body, cost, None)
                return await self._attempt(record, body, cost)
            except _SlowDown as paced:
                if self.abort:
                    raise paced.error from None
                wait = min(paced.error.retry_after or 0.0, self.settings.max_retry_wait)
                log.info("retry %d in %.2fs after %s (pacing: no retry used up)", record.attempts, wait, paced.error)
                if wait:  # cut short when the storm ends (a later request was answered)
                    await self._throttle.pause(wait, self._sleep)
                self.results.retried()
                self._progress.retried()

    async def _attempt(self, record: Result, body: bytes, cost: int) -> Completion:
        # --max-cost: wait for room under the cap (or raise Capped); the answer settles it
        hold = await self.spend.reserve(cost) if self.spend is not None else None
        try:
            return await self._paid(record, body, cost, hold)
        finally:
            if hold is not None:
                hold.settle(None)  # nothing came back: nothing billed (a no-op once settled)

    async def _paid(self, record: Result, body: bytes, cost: int, hold: Hold | None) -> Completion:
        assert self._slots is not None and self._client is not None  # run() is on
        async with self._slots:
            ticket = await self._throttle.acquire(cost)
            if self.abort:
                raise _NotSent
            record.attempts += 1
            started = time.perf_counter()
            try:
                done = await self._client.complete(body)
            except RequestError as e:
                self.timeline.add(started, time.perf_counter(), outcome_of(e), record.attempts)
                if slows(e):
                    quota = self._throttle.rate_limited(e.hints, ticket)
                    if quota:
                        raise RequestError(quota, status=429, code="quota_exhausted") from None
                    raise _SlowDown(e) from None
                else:
                    self._throttle.observe(e.hints if e.status else None, ticket)
                raise
            except asyncio.CancelledError:
                self.timeline.add(started, time.perf_counter(), CANCELLED, record.attempts)
                raise
            ended = time.perf_counter()
            if hold is not None:  # before the answer is checked: one that fails its checks was billed too
                hold.settle(done.answer)
            record.latency_s = ended - started
            self.timeline.add(started, ended, OK, record.attempts)
            self._throttle.observe(done.hints, ticket)
            if self._throttle.estimate is not None:
                self._throttle.estimate.seen(cost, done.answer.prompt_tokens, done.answer.completion_tokens)
            try:
                record.data = self.decode(record, done.text, done.finish_reason)
            except RequestError:
                self.timeline.outcomes[-1] = ERROR  # the attempt just recorded brought no answer after all
                raise
            return done

    def decode(self, record: Result, text: str, finish_reason: str | None = None) -> Any:
        """The parsed answer with --json or --schema; one that does not parse or match is kept in
        ``record.text`` and raised as an error that is retried once."""
        schema = self.settings.schema
        if schema is None and not self.settings.json:
            return None
        try:
            return schema.validate(text) if schema is not None else loads(text)  # nesting bounded
        except ValueError as e:
            record.text = text  # kept, so the user can see what came back
            shown = scrub(text, self.settings.api_key)[:60]  # scrubbed before it is cut
            if schema is None:
                why = f"{e}: " if isinstance(e, TooDeep) else ""
                message, code = f"not valid JSON: {why}{shown!r}", "invalid_json"
            else:
                reason = scrub(str(e), self.settings.api_key)[:160]
                message, code = f"does not match the schema: {reason}", "schema_mismatch"
            if finish_reason == "length":
                message += " (cut off at max_tokens)"
            raise RequestError(message, status=200, code=code, retryable=record.attempts < 2) from None


class _Picked(Sequence[Result]):
    """The records at ``indices`` of ``results``, each read when reached."""

    def __init__(self, results: Results, indices: Sequence[int]):
        self._results, self._indices = results, indices

    def __len__(self) -> int:
        return len(self._indices)

    @overload
    def __getitem__(self, i: int) -> Result: ...

    @overload
    def __getitem__(self, i: slice) -> list[Result]: ...

    def __getitem__(self, i: int | slice) -> Result | list[Result]:
        if isinstance(i, slice):
            return [self._results[j] for j in self._indices[i]]
        return self._results[self._indices[i]]

    def __iter__(self) -> Iterator[Result]:
        results = self._results
        return (results[i] for i in self._indices)


def check_prompts(prompts: Iterable[Any]) -> list[Any]:
    """A list of prompts (each checked by rows_of), or one clear ConfigError."""
    if isinstance(prompts, str):
        raise ConfigError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    if not prompts:
        raise ConfigError("no prompts to send")
    return prompts


def _dumps(body: dict[str, Any]) -> str:
    """The request body as JSON; never NaN or Infinity, which no server can read."""
    try:
        return dumps(body)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the request body is not valid JSON: {e}") from None
