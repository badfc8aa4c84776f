"""chatmagic: run many LLM prompts concurrently from a notebook (``%%chatmany``) or from Python.

    import chatmagic
    results = chatmagic.chat_many(["What is 2+2?", "Name a colour."], model="gpt-4o-mini")
    results.texts()
"""

from typing import Any as _Any

from chatmagic.api import achat_many, chat_many
from chatmagic.errors import (
    APIError,
    ChatmagicError,
    ChatmagicWarning,
    ConfigError,
    RequestError,
    RunAborted,
    RunInterrupted,
)
from chatmagic.results import Result, Results
from chatmagic.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "ChatmagicError",
    "ChatmagicWarning",
    "ConfigError",
    "RequestError",
    "Result",
    "Results",
    "RunAborted",
    "RunInterrupted",
    "Settings",
    "achat_many",
    "chat_many",
    "load_ipython_extension",
    "unload_ipython_extension",
]


def load_ipython_extension(ip: _Any) -> None:
    """``%load_ext chatmagic``: registers %%chatmany and its await path on the kernel's loop."""
    from chatmagic.notebook.magics import load
    load(ip)


def unload_ipython_extension(ip: _Any) -> None:
    """``%unload_ext chatmagic``: removes the await path (the magics stay until restart)."""
    from chatmagic.notebook.magics import unload
    unload(ip)
