"""Looking after submitted batches (``%chatmany_batches``): list them, cancel one.

    print(list_batches(settings))           # the stored batches, open ones refreshed first
    print(cancel_batch(settings, "batch_...")) # the provider's cancel (OpenAI: POST /batches/{id}/cancel)

``settings`` (from ``chatmagic.settings.resolve``) says which server to ask; a batch this cache
sent to another provider's server (``-m anthropic:...`` while the default is OpenAI) is cancelled
on that server, found by the server its row was stored for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatmagic.batch.dialect import batch_dialect
from chatmagic.batch.store import BatchStore

if TYPE_CHECKING:
    from chatmagic.settings import Settings


async def _refresh(settings: Settings, store: BatchStore) -> None:
    """Update the stored status of this server's uncollected batches from the server."""
    from chatmagic.errors import RequestError
    from chatmagic.transport.files import FilesClient
    async with FilesClient(settings) as client:
        for batch_id in store.open_batches(settings.url):
            try:
                batch = await batch_dialect(settings).retrieve(client, batch_id)
            except RequestError:
                continue  # unreachable or unknown here: the stored status stays
            store.update(batch_id, batch["status"], batch.get("request_counts"))


def list_batches(settings: Settings | None = None) -> str:
    """The cache's batches, one per line: id, status, counts, age (oldest first). With
    ``settings``, the statuses of that server's open batches are fetched first."""
    from chatmagic.core.bridge import run_sync
    with BatchStore() as store:
        if settings is not None:
            run_sync(lambda: _refresh(settings, store))
        rows = store.listing()
    if not rows:
        return "no batches"
    lines = [f"{'id':<32} {'status':<11} {'done/failed/total':>18}  {'age':>4}  model"]
    for b in rows:
        counts = f"{b.completed}/{b.failed}/{b.total}"
        note = "" if b.collected else "  (not collected yet: run the cell again)"
        lines.append(f"{b.id:<32} {b.status:<11} {counts:>18}  {b.age():>4}  {b.model}{note}")
    return "\n".join(lines)


def owner(settings: Settings, batch_id: str) -> Settings:
    """The settings of the server that holds ``batch_id``: ``settings`` if its stored row is theirs
    (or there is no row), else those of the provider profile whose URL the row was stored for."""
    from chatmagic.batch.store import server_hash
    from chatmagic.errors import ConfigError
    from chatmagic.providers.profiles import PROFILES
    from chatmagic.settings import resolve
    with BatchStore() as store:
        row = store.get(batch_id)
    if row is None or row.server == server_hash(settings.url):
        return settings
    for name in PROFILES:
        try:
            candidate = resolve({"provider": name, "model": row.model or "model"})
        except ConfigError:  # no key (or no base URL) for this provider here: not the one
            continue
        if server_hash(candidate.url) == row.server:
            return candidate
    return settings


def cancel_batch(settings: Settings, batch_id: str) -> str:
    """Ask the batch's server (see ``owner``) to cancel ``batch_id``; one line saying what it answered."""
    from chatmagic.core.bridge import run_sync
    from chatmagic.transport.files import FilesClient
    settings = owner(settings, batch_id)

    async def cancel() -> dict[str, Any]:
        async with FilesClient(settings) as client:
            return await batch_dialect(settings).cancel(client, batch_id)
    batch = run_sync(cancel)
    with BatchStore() as store:
        if store.get(batch_id) is not None:
            store.update(batch_id, batch["status"], batch.get("request_counts"))
    return (f"batch {batch_id}: {batch['status']}; finished requests are kept, run the cell "
            "again to collect them (the rest are recorded as batch_cancelled)")
