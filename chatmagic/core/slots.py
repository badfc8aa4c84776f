"""A semaphore whose release costs the same with 5 waiters or 5,000.

``asyncio.Semaphore.release`` wakes the first waiter that is not done yet by scanning its
waiters from the front; the woken ones leave the queue only when their task next runs, so
when many answers arrive in one turn of the loop each release scans past all those woken
before it: at concurrency 5,000 that scan was a visible share of a run's CPU. Here a release
hands its slot straight to the first waiter and drops it from the queue: O(1).

``shorter_than(m)`` lets the one who makes the waiters (the engine) wait until fewer than ``m``
are queued: every queued task is objects the garbage collector walks again and again.
"""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType


class Slots:
    """``async with slots:`` holds one of ``n`` slots, first come first served."""

    __slots__ = ("free", "_waiters", "_short", "_short_of")

    def __init__(self, n: int):
        self.free = n
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._short: asyncio.Future[None] | None = None  # shorter_than's wait, and its length
        self._short_of = 0

    @property
    def queued(self) -> int:
        """Tasks waiting for a slot (a cancelled one counts until a release skips it)."""
        return len(self._waiters)

    async def shorter_than(self, m: int) -> None:
        """Return once fewer than ``m`` wait for a slot (one caller at a time). A queue only
        shortens when a slot is released, and there is a queue only while every slot is held."""
        if len(self._waiters) < m:
            return
        self._short, self._short_of = asyncio.get_running_loop().create_future(), m
        try:
            await self._short
        finally:
            self._short = None

    async def acquire(self) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot, then cancelled: pass it on
                self.release()
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():  # a cancelled waiter is skipped
                fut.set_result(None)  # the slot goes to it as it is: ``free`` stays
                short = self._short
                if short is not None and len(self._waiters) < self._short_of and not short.done():
                    short.set_result(None)
                return
        self.free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()
