"""What the practice servers share: the ``[[directive]]`` markers in prompts, message content as
text, OpenAI's error body, and serving from a background thread. Its own module so that server.py
and batch.py need not import each other."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping
from typing import TypeVar

from aiohttp import web

HOST = "127.0.0.1"  # practice servers never listen beyond this machine

#: ``[[name]]`` or ``[[name:args]]`` in a prompt scripts the practice server's answer to it.
DIRECTIVE = re.compile(r"\[\[(\w+)(?::([^\]]*))?\]\]")


def text_of(content: object) -> str:
    """Message content as text; accepts plain strings and lists of content parts."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def error_response(status: int, message: str, code: str | None, type_: str | None = None,
                   headers: Mapping[str, str] | None = None, param: str | None = None) -> web.Response:
    """An error answer in OpenAI's shape: ``{"error": {message, type, param, code}}``."""
    type_ = type_ or ("server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


S = TypeVar("S", bound="InThread")


class InThread:
    """Serving from a background thread with its own event loop, so a test or a notebook cell can
    use a practice server with ``with`` or ``start()``/``stop()``; subclasses give astart/astop."""

    port: int
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    async def serve(self, app: web.Application) -> None:
        """Listen on 127.0.0.1 only (port 0: a free one, read back into ``port``)."""
        # handler_cancellation: a client that gives up on a stall frees its slot;
        # short shutdown_timeout: stop() doesn't wait for stalled handlers.
        runner = self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                              shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, HOST, self.port, backlog=4096).start()
        self.port = runner.addresses[0][1]

    async def unserve(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def astart(self) -> object:
        raise NotImplementedError

    async def astop(self) -> None:
        raise NotImplementedError

    def start(self: S) -> S:
        """Serve from a background thread with its own event loop."""
        loop = self._loop = asyncio.new_event_loop()
        started = asyncio.run_coroutine_threadsafe(self.astart(), loop)
        thread = self._thread = threading.Thread(target=loop.run_forever, daemon=True, name=type(self).__name__)
        thread.start()
        try:
            started.result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.astop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
