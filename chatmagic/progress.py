"""Progress reporting: a tqdm bar (a widget in Jupyter, text elsewhere) or nothing.

The engine calls ``advance(ok)`` per prompt and ``retried()`` per retry; the bar is redrawn at
most ten times a second, so a fast run spends its time on requests, not on drawing.
"""

from __future__ import annotations

import sys
import time

INTERVAL = 0.1  # seconds between redraws


class NullProgress:
    """No output (quiet runs, tests)."""

    def start(self, total: int, done: int = 0) -> None: ...
    def advance(self, ok: bool) -> None: ...
    def retried(self) -> None: ...
    def close(self) -> None: ...


class TqdmProgress(NullProgress):
    def __init__(self, desc: str = "chatmany"):
        self.desc = desc
        self.bar = None

    def start(self, total: int, done: int = 0) -> None:
        self.bar = _tqdm_class()(total=total, initial=done, desc=self.desc, unit="prompt",
                                 mininterval=INTERVAL, smoothing=0.1)
        self.pending = self.failed = self.retries = 0
        self.last = time.monotonic()

    def advance(self, ok: bool) -> None:
        self.pending += 1
        self.failed += not ok
        now = time.monotonic()
        if now - self.last >= INTERVAL:
            self._flush(now)

    def retried(self) -> None:
        self.retries += 1

    def _flush(self, now: float) -> None:
        self.last = now
        if self.failed or self.retries:
            self.bar.set_postfix_str(f"failed={self.failed} retries={self.retries}", refresh=False)
        self.bar.update(self.pending)
        self.pending = 0

    def close(self) -> None:
        if self.bar is not None:
            self._flush(time.monotonic())
            self.bar.refresh()
            self.bar.close()


def _tqdm_class():
    """The widget bar inside a kernel with ipywidgets; the text bar otherwise (no warning)."""
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm
            return tqdm
        except ImportError:
            pass
    from tqdm.std import tqdm
    return tqdm


def make_progress(enabled, desc: str = "chatmany") -> NullProgress:
    """``True`` for a tqdm bar, ``False``/None for none, or any object with the same methods."""
    if enabled is True:
        return TqdmProgress(desc)
    if not enabled:
        return NullProgress()
    return enabled
