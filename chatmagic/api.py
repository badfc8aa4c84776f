"""The plain-Python API: the same engine as the magic, no IPython needed.

The engine (and with it aiohttp and tenacity) is imported on the first call, not on
``import chatmagic``, so ``%load_ext chatmagic`` stays fast.
"""

from __future__ import annotations

from .config import resolve
from .results import Results


async def achat_many(prompts, **options) -> Results:
    """Send ``prompts`` concurrently and return their results in order.

    Options are the magic's flags in snake_case: model, concurrency, timeout, retries, system,
    temperature, max_tokens, params, base_url, api_key or api_key_env, rpm, tpm, json, schema
    (a concise spec, a JSON-schema dict or a pydantic model class), cache, refresh, progress.
    Raises ``ConfigError`` before sending anything if an option is invalid, and ``RunAborted``
    (with ``.results``) if the server refuses the whole run.
    """
    from .engine import Run
    return await Run(prompts, resolve(options)).run()


def chat_many(prompts, **options) -> Results:
    """Blocking ``achat_many``: works in scripts, and in notebooks (on a worker thread).

    Ctrl-C (or a kernel interrupt) raises ``RunInterrupted``, a KeyboardInterrupt whose
    ``.results`` holds every answer that came back; the rest have status "cancelled"."""
    from .bridge import run_sync
    from .engine import Run
    run = Run(prompts, resolve(options))  # bad input fails here, before any thread starts
    try:
        return run_sync(run.run)
    except KeyboardInterrupt:
        from .errors import interrupted
        raise interrupted({run.settings.model: run.results}, where=".results", again="calling again",
                          cache=run.settings.cache) from None
