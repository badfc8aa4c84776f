"""How synchronous code runs the engine, and how Ctrl-C / a kernel interrupt reaches it.

- No loop running in this thread: ``asyncio.run``.
- A loop already running here (a notebook cell calling ``chat_many``): a private loop in a worker
  thread while this thread waits, as IPython's %%script does. nest_asyncio is not used.
- ``interruptible``: while a run is awaited on the main thread's running loop, SIGINT cancels it
  at once instead of at the loop's next event (see shared/design/event-loop.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar, cast

T = TypeVar("T")


def run_sync(make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``make_coro()`` to completion from synchronous code and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    return _run_in_thread(make_coro)


def _run_in_thread(make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = asyncio.new_event_loop()
    box: dict[str, Any] = {}  # the task, then its result or error
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        box["task"] = loop.create_task(make_coro())
        started.set()
        try:
            box["result"] = loop.run_until_complete(box["task"])
        except BaseException as e:  # handed to the waiting thread
            box["error"] = e
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    worker = threading.Thread(target=main, name="chatmagic", daemon=True)
    worker.start()
    started.wait()
    try:
        while worker.is_alive():
            worker.join(0.05)  # short joins keep this thread responsive to KeyboardInterrupt
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(box["task"].cancel)
        worker.join()
        raise
    if "error" in box:
        raise box["error"]
    return cast(T, box["result"])


@contextlib.contextmanager
def interruptible(task: asyncio.Task[Any]) -> Iterator[list[bool] | None]:
    """While inside, SIGINT cancels ``task`` immediately (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    loop = task.get_loop()
    interrupted: list[bool] = []

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        interrupted.append(True)
        loop.call_soon_threadsafe(task.cancel)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not allowed here (embedded interpreter)
        yield None
        return
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
