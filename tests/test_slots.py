"""core/slots.Slots: the engine's semaphore. At most n held, first come first served, and a
cancelled waiter never keeps a slot (nor loses one)."""

from __future__ import annotations

import asyncio

import pytest

from chatmagic.core.slots import Slots


def test_at_most_n_are_held_and_waiters_get_slots_in_order():
    async def main() -> tuple[int, list[int]]:
        slots, held, peak, order = Slots(3), [0], [0], []
        gates = [asyncio.Event() for _ in range(10)]

        async def one(i: int) -> None:
            async with slots:
                order.append(i)
                held[0] += 1
                peak[0] = max(peak[0], held[0])
                await gates[i].wait()
                held[0] -= 1

        tasks = [asyncio.create_task(one(i)) for i in range(10)]
        for i in range(10):  # release them one by one, in order
            while len(order) <= i:
                await asyncio.sleep(0)
            gates[i].set()
        await asyncio.gather(*tasks)
        return peak[0], order
    peak, order = asyncio.run(main())
    assert peak == 3 and order == list(range(10))


@pytest.mark.parametrize("released_first", [False, True], ids=["cancelled-then-released", "handed-then-cancelled"])
def test_a_cancelled_waiter_keeps_no_slot(released_first):
    """A waiter cancelled while it waits is skipped; one cancelled after it was handed the slot
    (before it ran) passes it on: either way the next waiter gets it and no slot is lost."""
    async def main() -> tuple[list[str], int]:
        slots, got = Slots(1), []
        await slots.acquire()

        async def wait(name: str) -> None:
            await slots.acquire()
            got.append(name)

        a, b = asyncio.create_task(wait("a")), asyncio.create_task(wait("b"))
        await asyncio.sleep(0)
        if released_first:
            slots.release()  # handed to a, which is cancelled before it runs
        a.cancel()
        await asyncio.gather(a, return_exceptions=True)
        if not released_first:
            slots.release()  # goes past the cancelled a to b
        await b
        slots.release()
        return got, slots.free
    got, free = asyncio.run(main())
    assert got == ["b"] and free == 1


def test_shorter_than_waits_until_a_release_shortens_the_queue():
    async def main() -> list[str]:
        slots, seen = Slots(1), []
        await slots.acquire()
        waiters = [asyncio.create_task(slots.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        assert slots.queued == 3
        await slots.shorter_than(4)  # already shorter: returns at once
        seen.append("short already")

        async def watch() -> None:
            await slots.shorter_than(2)
            seen.append(f"below 2 at {slots.queued}")
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)
        slots.release()  # 3 -> 2 queued: still waiting
        await asyncio.sleep(0)
        assert seen == ["short already"]
        slots.release()  # 2 -> 1
        await watcher
        for _ in range(2):
            slots.release()
        await asyncio.gather(*waiters)
        return seen
    assert asyncio.run(main()) == ["short already", "below 2 at 1"]
