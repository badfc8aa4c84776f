"""``--batch``: the same prompts sent through the provider's Batch API, at half the price.

    todo  = prompts without a cached answer
    wait  = those already in a submitted, uncollected batch (found in ``batchstore``)
    fresh = the rest -> a temporary file per batch (split at the provider's limits) -> the
            provider's create (OpenAI: POST /files, POST /batches; Anthropic: POST
            /messages/batches) -> stored at once, so a re-run re-attaches instead of paying twice
    then poll the batch (POLL_FIRST s, growing to POLL_MAX), read its result lines, fill the
    records in prompt order and put the answers into the cache.

What is provider-specific (the wire, limits, status names, result lines) is the batch
dialect's (batch/dialect.py: OpenAI's Batches, Anthropic's Message Batches); this module is
the same for every provider.

Each JSONL line's ``custom_id`` is ``<prompt position>-<first 40 hex of the request key>``;
the key (the answer cache's) is what results are matched by, so a batch submitted by one run
can be collected by another, and a prompt that appears twice is paid once.

With ``wait=False``, or after an interrupt, the records still in a batch are ``pending`` and
the batch keeps running; re-running the same prompts collects them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatmagic.batch.dialect import TERMINAL, batch_dialect
from chatmagic.batch.format import ID_HEX, unfinished, write_parts
from chatmagic.batch.lock import scratch_file, submitting
from chatmagic.batch.progress import BatchProgress
from chatmagic.batch.store import INTENT, BatchStore
from chatmagic.core.cache import CacheWarning, row_of
from chatmagic.core.retry import RETRY, classify
from chatmagic.core.spend import fit_batch
from chatmagic.errors import APIError, RequestError, RunAborted
from chatmagic.results import Result, Results

if TYPE_CHECKING:
    from chatmagic.core.engine import Run
    from chatmagic.settings import Settings

log = logging.getLogger("chatmagic")

#: Caps on one batch below the provider's own (OpenAI: 50,000 requests, 200 MB a file;
#: Anthropic: 100,000 requests, 256 MB); None: the provider's. Tests lower them.
MAX_REQUESTS: int | None = None
MAX_BYTES: int | None = None
#: Seconds before the first status check; each wait is 1.5x the last, up to POLL_MAX.
POLL_FIRST = 3.0
POLL_MAX = 60.0
#: Status checks of one batch failing in a row (timeouts, 5xx) before the run stops waiting.
POLL_FAILURES = 5


async def send(run: Run) -> Results:
    """Send a run: through the Batch API with ``settings.batch``, else prompt by prompt. Every
    caller that may have a batch run sends it through here (the engine knows nothing of batches)."""
    if run.settings.batch:
        return await BatchRun(run).run_batch()
    return await run.run()


class BatchRun:
    """One batch run of an engine ``Run`` (its records, settings, cache and request body)."""

    def __init__(self, run: Run):
        self.run, self.settings, self.results = run, run.settings, run.results
        self.api = batch_dialect(run.settings)
        self.wanted: dict[str, list[Result]] = {}  # request key -> records waiting for it
        self.batches: dict[str, dict[str, Any]] = {}         # batch id -> last Batch object seen
        self.batch_keys: dict[str, list[str]] = {}  # batch id -> every request key in it
        self.failures: list[str] = []
        self.store: BatchStore | None = None
        self.collected: set[str] = set()           # batches whose results are in the records
        self._recent: list[dict[str, Any]] | None = None  # the server's last batches, listed once per run
        self._poll_failures: dict[str, int] = {}  # batch id -> status checks failed in a row

    async def run_batch(self) -> Results:
        started = time.perf_counter()
        try:
            self._still_wanted()
            if self.wanted:
                await self._submit_and_wait()
        finally:
            self.results.finished(time.perf_counter() - started)
            self.run.close_cache()
            if self.store is not None:
                self.store.close()
        if self.failures:
            raise RunAborted(APIError("; ".join(self.failures), code="batch_failed"), self.results)
        return self.results

    def _still_wanted(self) -> None:
        """``wanted``: the records without a cached answer, by request key."""
        todo = self.run.from_cache()
        keys = self.run.request_keys()
        if self.run.rows is not None:  # a rich row's key covers its images: read them now
            todo = [r for r in todo if self.run.rich(r.index) is None or self.run.rich_ready(r)]
        self.wanted = {}
        for record in todo:
            self.wanted.setdefault(keys[record.index], []).append(record)

    async def _submit_and_wait(self) -> None:
        from chatmagic.transport.files import FilesClient  # aiohttp only once a batch run starts
        self.store = _open_store()
        async with FilesClient(self.settings) as self.client:
            try:
                # one process at a time: a second one running the same cell attaches to our batch
                async with submitting() as folder:
                    # the open batches before the cache: a batch another process collects in between
                    # is then either still open here or all in the cache (it flushes, then marks)
                    open_batches = self._open_batches()
                    if self.run.settings.cache:  # another process may have collected them meanwhile
                        self.run.close_cache()
                        self._still_wanted()
                    attached = self._attach(open_batches)
                    fresh = [k for k in self.wanted if k not in attached]
                    fresh = fit_batch(self.run, fresh, self.wanted)  # --max-cost
                    if fresh:
                        await self._submit(fresh, folder)
                if self.settings.wait:
                    await self._wait()
            except RequestError as e:  # what was submitted keeps running; a re-run collects it
                self._mark_pending(f"not submitted: {e}")
                raise RunAborted(e, self.results) from None
            finally:
                self._mark_pending("not submitted: the run was interrupted")

    def _open_batches(self) -> dict[str, list[str]]:
        if self.store is None or self.settings.refresh:
            return {}
        return self.store.open_batches(self.settings.url)

    def _attach(self, open_batches: dict[str, list[str]]) -> set[str]:
        """Keys already in this server's open batches: those are waited for, not submitted."""
        found: set[str] = set()
        for batch_id, keys in open_batches.items():
            mine = [k for k in keys if k in self.wanted and k not in found]
            if mine:
                found.update(mine)
                self.batches[batch_id] = {"id": batch_id, "status": "validating"}
                self.batch_keys[batch_id] = keys
        return found

    # ---- submitting ------------------------------------------------------------

    async def _submit(self, fresh: list[str], folder: Path | None) -> None:
        """Submit ``fresh`` as one batch per file's worth (one temporary file in ``folder``, rewritten)."""
        path = scratch_file(folder)
        try:
            make = self.api.line_maker(self.run.body)
            lines = ((key, self._line(make, key)) for key in fresh)
            most = MAX_REQUESTS or self.api.max_requests, MAX_BYTES or self.api.max_bytes
            for keys in write_parts(lines, path, *most):
                await self._create(path, keys)
        finally:
            os.unlink(path)

    def _line(self, make: Callable[[str, str], bytes], key: str) -> bytes:
        record = self.wanted[key][0]
        custom_id = f"{record.index}-{key[:ID_HEX]}"
        row = self.run.rich(record.index)
        if row is None:
            return make(custom_id, record.prompt)
        return self.api.request_line(custom_id, self.run.rich_body(row))  # read again

    async def _create(self, path: str, keys: list[str]) -> None:
        part = hashlib.sha256("".join(keys).encode()).hexdigest()[:32]
        batch = await self._unrecorded(part, len(keys))
        if batch is None:
            batch = await self._send(path, part, len(keys))
        self.batches[batch["id"]], self.batch_keys[batch["id"]] = batch, keys
        if self.store is not None:
            self.store.add(batch["id"], self.settings.url, self.settings.model, keys, len(keys))
            self.store.forget(INTENT + part)

    async def _send(self, path: str, part: str, total: int) -> dict[str, Any]:
        """Submit one batch. When its batches carry no label of ours, an intent is stored first,
        so that a run killed before the batch is recorded leaves a trace to look for it by."""
        if self.store is not None and not self.api.labelled:
            self.store.intend(part, self.settings.url, self.settings.model, total)
        try:
            return await self.api.create(self.client, path, part)
        except RequestError as e:
            if e.status is not None and self.store is not None:  # the server said no: no batch exists
                self.store.forget(INTENT + part)
            raise

    async def _unrecorded(self, part: str, total: int) -> dict[str, Any] | None:
        """A batch of exactly these requests that the server created but the store does not hold
        (a kernel killed between creating and recording it, or a store that could not be
        written); None if there is none. Found by its label among the server's recent batches;
        without labels, only after an intent was left: then the unrecorded batch of as many
        requests created nearest the intent (at most a minute before it: clock skew). A wrong
        guess never gives a wrong answer (results are matched to prompts by custom_id): its
        requests are recorded as not run, and a re-run sends them."""
        since = None
        if not self.api.labelled:
            since = self.store.intent(part, self.settings.url) if self.store is not None else None
            if since is None:
                return None
        if self._recent is None:
            try:
                self._recent = await self.api.recent(self.client)
            except (RequestError, KeyError, TypeError, AttributeError):
                self._recent = []  # a server that cannot list batches: nothing to find
        fits = [b for b in self._recent if b.get("id")
                and (self.store is None or self.store.get(b["id"]) is None)
                and (b.get("part") == part if since is None else _near(b, since, total))]
        if since is not None:  # several intents left (a run of several batches killed): each its nearest
            fits.sort(key=lambda b: abs(b["created"] - since))
        return fits[0] if fits else None

    # ---- waiting and collecting ----------------------------------------------------

    async def _wait(self) -> None:
        progress = BatchProgress(self.settings.progress, sum(len(v) for v in self.wanted.values()),
                                 f"batch {self.settings.model}")
        delays = poll_delays(POLL_FIRST, POLL_MAX)
        open_ids = list(self.batches)
        try:
            while open_ids:
                for batch_id in list(open_ids):
                    batch = self.batches[batch_id] = await self._poll(batch_id)
                    if self.store is not None:
                        self.store.update(batch_id, batch["status"], batch.get("request_counts"))
                    if batch["status"] in TERMINAL:
                        await self._collect(batch)
                        open_ids.remove(batch_id)
                progress.show(self.batches.values())
                if open_ids:
                    await asyncio.sleep(next(delays))
        finally:
            progress.close(self.batches.values(), interrupted=bool(open_ids))

    async def _poll(self, batch_id: str) -> dict[str, Any]:
        """The batch's state; a transient failure (timeout, 5xx, 429) keeps the last one seen."""
        try:
            # the batch asked for, whatever id the answer names (it files the results)
            batch = {**await self.api.retrieve(self.client, batch_id), "id": batch_id}
            self._poll_failures.pop(batch_id, None)
            return batch
        except RequestError as e:
            if e.status == 404:  # gone (or another server): recorded, so a re-run submits again
                return {**self.batches[batch_id], "status": "not_found"}
            failed = self._poll_failures[batch_id] = self._poll_failures.get(batch_id, 0) + 1
            if classify(e) != RETRY or failed >= POLL_FAILURES:  # the batch runs on; a re-run collects it
                raise
            log.info("checking batch %s failed (%s); trying again later", batch_id, e)
            return self.batches[batch_id]

    async def _collect(self, batch: dict[str, Any]) -> None:
        """Fill the records of one finished batch from its result lines. Total: a line that
        cannot be read fails only the prompts left without a result, with that reason; the
        batch is marked collected once its lines are read, so no re-run stumbles on it again."""
        keys = self.batch_keys[batch["id"]]
        by_id = {k[:ID_HEX]: k for k in keys}
        seen: dict[str, bool] = {}  # request key -> whether an answer was taken for it
        unreadable = 0
        async for raw in self.api.result_lines(self.client, batch):
            try:
                line = json.loads(raw) if raw.strip() else None
                if line is not None:
                    self._take(line, batch["id"], by_id, seen)
            except (ValueError, TypeError, AttributeError, KeyError, RecursionError):
                unreadable += 1  # matched to no prompt: those left without a line say why below
        why = self.client.scrub(unfinished(batch))
        if unreadable:
            why = (f"bad_response: no readable result line for this request ({unreadable:,} "
                   f"unreadable line{'s' * (unreadable > 1)} in {batch['id']})")
        for key in keys:
            if key not in seen:
                for record in self.wanted.get(key, ()):
                    record.status, record.error = "error", why
        if batch["status"] == "failed":
            self.failures.append(f"batch {batch['id']} failed: {why.split(': ', 1)[-1]}")
        self.collected.add(batch["id"])
        if self.store is not None:
            self.run.flush_cache()  # its answers in the cache before the batch is marked collected
            self.store.update(batch["id"], batch["status"], batch.get("request_counts"), collected=True)

    def _take(self, line: object, batch_id: str, by_id: dict[str, Any], seen: dict[str, bool]) -> None:
        """One result line into its records. A request answered twice (the same custom_id on two
        lines) has one outcome, the same in the record and the cache: the first answer, else
        the first failure."""
        custom_id, done, why = self.api.read_line(line, batch_id)
        key = by_id.get(custom_id.partition("-")[2])
        if key is None or seen.get(key) or (key in seen and done is None):
            return  # not ours (a line we cannot match is never guessed), or already decided
        seen[key] = done is not None
        if done is not None:
            done = self.client.scrub_answer(done)  # the key echoed into a field is never kept
            cost = self.run.prices.cost(done, self.settings.model)  # at the batch price
            # with its cost: a later run taking it from the cache shows what it cost then
            self.run.keep(key, row_of(done, cost=cost), attempts=1)  # one request in the batch; no latency of its own
        for record in self.wanted.get(key, ()):
            record.attempts = 1
            if done is None:
                record.status, record.error = "error", self.client.scrub(why or "batch_error: no answer")
                continue
            record.status, record.error = "ok", None  # an earlier line may have failed it
            record.take(done, cost)
            try:  # --json or --schema: parsed and checked as in an interactive run, not retried
                record.data = self.run.decode(record, record.text or "")
            except RequestError as e:
                record.status, record.error = "error", str(e)

    def _mark_pending(self, unsent: str) -> None:
        """Records of a batch not collected (still running, or its results not read) become
        ``pending``; those never submitted keep status ``cancelled`` with ``unsent`` as the reason."""
        running = [b for b in self.batches if b not in self.collected]
        for batch_id in running:
            for key in self.batch_keys[batch_id]:
                for record in self.wanted.get(key, ()):
                    if record.status == "cancelled":  # not filled in yet
                        record.status = "pending"
        for records in self.wanted.values():
            for record in records:
                if record.status == "cancelled" and record.error is None:
                    record.error = unsent
        self.results.pending_in(running)


def _near(batch: dict[str, Any], since: float, total: int) -> bool:
    """``batch`` may be the one an intent of ``total`` requests at ``since`` created."""
    created = batch.get("created")
    return (isinstance(created, (int, float)) and created >= since - 60
            and (batch.get("request_counts") or {}).get("total") == total)


def poll_delays(first: float, most: float) -> Iterator[float]:
    """Seconds between status checks: ``first``, then 1.5x longer each time, up to ``most``
    (or 20x ``first`` if that is less, so a test's tiny interval stays tiny)."""
    cap = min(most, 20 * first)
    delay = first
    while True:
        yield delay
        delay = min(delay * 1.5, cap)


def _open_store() -> BatchStore | None:
    try:
        return BatchStore()
    except (sqlite3.Error, OSError) as e:
        warnings.warn(f"chatmagic: batch ids cannot be stored ({e}); an interrupted batch run "
                      "cannot be re-attached", CacheWarning, stacklevel=3)
        return None


def dry_run_note(requests_per_model: int, models: int, settings: Settings | None = None) -> str:
    """The line --dry-run adds for --batch: how the requests would be submitted and billed
    (with ``settings``, at its provider's limit per batch; else OpenAI's)."""
    most = MAX_REQUESTS or (batch_dialect(settings).max_requests if settings is not None else 50_000)
    files = -(-requests_per_model // most)
    per = f" per model ({models} models)" if models > 1 else ""
    return (f"--batch: through the Batch API, {files} file{'s' * (files > 1)} of at most {most:,} "
            f"requests{per} (prompts with a cached answer are not sent); the estimate above is at "
            "the batch price")
