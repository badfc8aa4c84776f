"""The plain-Python API: the same engine as the magic, no IPython needed.

The engine (and with it aiohttp and tenacity) is imported on the first call, not on
``import chatmagic``, so ``%load_ext chatmagic`` stays fast.

The keywords are the engine options of ``chatmagic.settings.OPTIONS``, written out once (on
``achat_many``; ``chat_many`` takes the same) so that editors and type checkers show them;
tests/test_options.py checks them against the table. ``model``,
``provider``, ``base_url`` and ``api_key_env`` default to None because an environment variable or
the provider's profile fills them in when not given.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ParamSpec

from chatmagic.core.memory import Memory
from chatmagic.results import Results
from chatmagic.settings import ENGINE, OPTIONS, resolve

P = ParamSpec("P")


async def achat_many(
    prompts: Iterable[str | list[dict[str, Any]]],
    images: Sequence[Any] | None = None,
    *,
    model: str | None = None,
    concurrency: int = 16,
    timeout: float = 120.0,
    connect_timeout: float = 10.0,
    retries: int = 6,
    max_retry_wait: float = 60.0,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    image_detail: str | None = None,
    params: dict[str, Any] | None = None,
    provider: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    api_key: str | None = None,
    api_version: str | None = None,
    headers: dict[str, str] | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    proxy: str | None = None,
    max_response_mb: float = 8.0,
    json: bool = False,
    schema: object | None = None,
    batch: bool = False,
    wait: bool = True,
    refresh: bool = False,
    cache: bool = True,
    progress: bool = True,
    prices: dict[str, Any] | None = None,
    max_cost: float | None = None,
    memory: Memory | None = None,
) -> Results:
    """Send ``prompts`` concurrently and return their results in order.

    A prompt is a string, or a conversation: a list of ``{"role", "content"}`` messages sent as
    they are (after ``system``); content may be a list of text and image parts. ``images`` has
    one entry per prompt: a path, an http(s) URL, bytes, a PIL image, a list of them, or None;
    they go after the prompt's text. An image that cannot be sent fails only its prompt.

    Raises ``ConfigError`` before sending anything if an option is invalid, and ``RunAborted``
    (with ``.results``) if the server refuses the whole run. ``memory`` (a ``chatmagic.core.memory.Memory``)
    carries what runs learn about servers from one call to the next; without one each call starts afresh.
    """
    # each keyword by name (tests/test_options.py checks that every one arrives)
    options = {"model": model, "concurrency": concurrency, "timeout": timeout, "connect_timeout": connect_timeout,
               "retries": retries, "max_retry_wait": max_retry_wait, "system": system, "temperature": temperature,
               "max_tokens": max_tokens, "image_detail": image_detail, "params": params, "provider": provider,
               "base_url": base_url,
               "api_key_env": api_key_env, "api_key": api_key, "api_version": api_version, "headers": headers,
               "rpm": rpm, "tpm": tpm, "proxy": proxy, "max_response_mb": max_response_mb,
               "json": json, "schema": schema, "batch": batch, "wait": wait, "refresh": refresh, "cache": cache,
               "progress": progress, "prices": prices,
               "max_cost": max_cost}
    from chatmagic.batch.run import send
    from chatmagic.core.engine import Run
    return await send(Run(prompts, resolve(options, served=served_models()), images=images, memory=run_memory(memory)))


def _same_parameters(
        model: Callable[P, Awaitable[Results]]) -> Callable[[Callable[..., Results]], Callable[P, Results]]:
    """Give the decorated function ``model``'s parameters, for type checkers, editors and help()."""
    def take(function: Callable[..., Results]) -> Callable[P, Results]:
        function.__signature__ = inspect.signature(model, eval_str=True)  # type: ignore[attr-defined]
        return function
    return take


def served_models() -> dict[str, str]:
    """The models of the local servers this process started (chat URL -> model), for ``resolve``."""
    local = sys.modules.get("chatmagic.practice.local")  # a process that never imported it started none
    return local.served_models() if local is not None else {}


def run_memory(memory: Memory | None) -> Memory:
    """The memory of one run: ``memory`` (its paces shared) or a fresh one, naming the local model
    servers this process started, so their answers are found again after a restart on another port."""
    memory = Memory() if memory is None else memory
    local = sys.modules.get("chatmagic.practice.local")  # a process that never imported it started none
    names = local.cache_names() if local is not None else {}
    return dataclasses.replace(memory, names={**memory.names, **names}) if names else memory


@_same_parameters(achat_many)
def chat_many(prompts: Iterable[str | list[dict[str, Any]]], images: Sequence[Any] | None = None, *,
              memory: Memory | None = None, **options: Any) -> Results:
    """Blocking ``achat_many``: works in scripts, and in notebooks (on a worker thread).

    Ctrl-C (or a kernel interrupt) raises ``RunInterrupted``, a KeyboardInterrupt whose
    ``.results`` holds every answer that came back; the rest have status "cancelled".
    """
    from chatmagic.batch.run import send
    from chatmagic.core.bridge import run_sync
    from chatmagic.core.engine import Run
    run = Run(prompts, resolve(options, served=served_models()), images=images,
              memory=run_memory(memory))  # bad input fails here, before any thread starts
    try:
        return run_sync(lambda: send(run))
    except KeyboardInterrupt:
        from chatmagic.errors import interrupted
        raise interrupted({run.settings.model: run.results}, where=".results", again="calling again",
                          cache=run.settings.cache).one_line_if_uncaught() from None


def _keywords_doc() -> str:
    """The keywords' meanings, from the option table (appended to both docstrings)."""
    lines = [f"    {o.name}: {o.plain_help} (default: {o.shown_default()})" for o in OPTIONS if o.scope == ENGINE]
    return "\n\n    Keyword arguments (the flags of %%chatmany, in snake_case):\n\n" + "\n".join(lines) + "\n"


achat_many.__doc__ = (achat_many.__doc__ or "") + _keywords_doc()
chat_many.__doc__ = (chat_many.__doc__ or "") + _keywords_doc()
