"""What runs remember about servers from one run to the next, in an object passed to each run.

    paces   the pace learnt from each server's limit headers, so a later run starts at it and
            skips the first probe (``Paces``)
    names   what the answer cache calls a server known by what it is rather than where: the local
            model is named by its model file, not its port, so its answers survive a restart

``Run(..., memory=)`` and ``chat_many(..., memory=)`` take one. The default is a fresh memory per
run: nothing learnt, the cache keyed by URL (the API adds the local servers this process
started). The magic keeps one per IPython shell, so a later cell starts at the pace learnt.
Nothing here is module-level: two memories never share anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Paces:
    """Paces learnt per server URL, so a later run starts at them and skips the first probe.
    Held by a ``Memory``, passed to each run; a throttle given none has its own."""

    def __init__(self) -> None:
        self._rates: dict[str, tuple[float, float]] = {}

    def get(self, url: str) -> tuple[float, float] | None:
        return self._rates.get(url)

    def remember(self, url: str, requests: float, tokens: float) -> None:
        self._rates[url] = (requests, tokens)

    def forget(self, url: str) -> None:
        self._rates.pop(url, None)


@dataclass(eq=False)
class Memory:
    """Paces learnt per server URL, and the cache's names for servers (URL -> name)."""

    paces: Paces = field(default_factory=Paces)
    names: dict[str, str] = field(default_factory=dict)

    def server_name(self, url: str) -> str:
        """What the answer cache's keys call the server at ``url``: its name if it has one, else the URL."""
        return self.names.get(url, url)
