"""Progress reporting: a tqdm bar (a widget in Jupyter, text elsewhere) or nothing.

The engine calls ``advance(ok)`` per prompt and ``retried()`` per retry; the bar is redrawn at
most ten times a second, so a fast run spends its time on requests, not on drawing.

In a kernel the live widget is shown through a display handle and, when the run ends, replaced
by a static picture of the final state (HTML and text). A saved notebook then shows the final
counts everywhere (GitHub, nbviewer, a reopened notebook), not a widget that no longer exists.
"""

from __future__ import annotations

import sys
import time
from html import escape
from typing import Any, cast

INTERVAL = 0.1  # seconds between redraws

#: How a run ended -> the bar's colour (JupyterLab's success, warning, error and brand colours).
COLOURS = {"ok": "#388e3c", "failed": "#f57c00", "stopped": "#d32f2f", "running": "#1976d2"}
#: The end of the bar's text: with a rate, and without one when nothing was sent (all cached).
RATE = "{n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"
NO_RATE = "{n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class NullProgress:
    """No output (quiet runs, tests)."""

    def start(self, total: int, done: int = 0) -> None: ...
    def advance(self, ok: bool) -> None: ...
    def retried(self) -> None: ...
    def close(self, outcome: str = "done") -> None: ...


class TqdmProgress(NullProgress):
    def __init__(self, desc: str = "chatmany"):
        self.desc = desc
        self.bar: Bar | None = None

    def start(self, total: int, done: int = 0) -> None:
        self.bar = Bar(total, done, self.desc, "prompt")
        self.pending = self.failed = self.retries = 0
        self.ok = self.cached = done
        self.last = time.monotonic()

    def advance(self, ok: bool) -> None:
        self.pending += 1
        self.ok += ok
        self.failed += not ok
        now = time.monotonic()
        if now - self.last >= INTERVAL:
            self._flush(now)

    def retried(self) -> None:
        self.retries += 1

    def _flush(self, now: float) -> None:
        self.last = now
        bar = self.bar
        assert bar is not None  # advance and close come after start
        if self.failed and bar.state == "running":
            bar.paint("failed")  # the bar turns as soon as a prompt fails
        bar.tqdm.set_postfix_str(self._counts(), refresh=False)
        bar.tqdm.update(self.pending)
        self.pending = 0

    def _counts(self) -> str:
        parts = [f"{self.ok} ok"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.cached:
            parts.append(f"{self.cached} from cache")
        if self.retries:
            parts.append(f"{self.retries} retries")
        return ", ".join(parts)

    def close(self, outcome: str = "done") -> None:
        """``outcome``: "done", "stopped" (the run was aborted) or "interrupted"."""
        if self.bar is None:
            return
        self._flush(time.monotonic())
        counts = self._counts() + ("" if outcome == "done" else f", {outcome}")
        state = "stopped" if outcome != "done" else "failed" if self.failed else "ok"
        self.bar.finish(state, counts)


class Bar:
    """One tqdm bar that ends as a static picture of its final state."""

    def __init__(self, total: int, done: int, desc: str, unit: str):
        self.state = "running"
        self.handle = None
        kwargs = {"total": total, "initial": done, "desc": desc, "unit": unit,
                  "mininterval": INTERVAL, "smoothing": 0.1}
        if _widgets():
            from IPython.display import (
                display,  # only in a kernel, where the widget lives
            )
            from tqdm.notebook import tqdm
            self.tqdm = tqdm(**kwargs, display=False)
            self.handle = display(self.tqdm.container, display_id=True)  # type: ignore[no-untyped-call]
        else:
            from tqdm.std import tqdm
            self.tqdm = tqdm(**kwargs)

    def paint(self, state: str) -> None:
        self.state = state
        if self.handle is not None or sys.stderr.isatty():  # no colour codes in logs
            self.tqdm.colour = COLOURS[state]

    def finish(self, state: str, postfix: str) -> None:
        """Draw the final state with ``postfix`` in ``state``'s colour, and end the live bar."""
        bar = self.tqdm
        bar.set_postfix_str(postfix, refresh=False)
        fmt = NO_RATE if bar.n == bar.initial else RATE
        bar.bar_format = "{l_bar}{bar}| " + fmt
        self.paint(state)
        if self.handle is None:
            bar.close()  # draws the final frame once (a refresh first drew it twice in logs)
            return
        text, html = self.final(state, fmt)
        bar.disp = lambda *a, **k: None  # the widget is about to go; tqdm's close must not redraw it
        bar.close()
        self.handle.update({"text/plain": text, "text/html": html}, raw=True)
        bar.container.close()  # its models are closed; the output no longer refers to them

    def final(self, state: str, fmt: str) -> tuple[str, str]:
        """The final frame as text (tqdm's own) and as HTML that needs no widget."""
        from tqdm.std import tqdm
        d = {**self.tqdm.format_dict, "ncols": 80, "colour": None, "bar_format": "{l_bar}{bar}| " + fmt}
        text = tqdm.format_meter(**d)
        left = tqdm.format_meter(**{**d, "bar_format": "{l_bar}"}).rstrip("|")
        right = tqdm.format_meter(**{**d, "bar_format": fmt})
        width = 100 * d["n"] / d["total"] if d["total"] else 100
        html = (f'<div class="chatmagic-progress" data-state="{state}" style="display:flex;'
                'align-items:center;gap:6px;font-family:var(--jp-code-font-family,monospace);'
                f'font-size:var(--jp-code-font-size,13px);white-space:nowrap"><span>{escape(left)}</span>'
                '<div style="flex:0 1 300px;min-width:100px;height:1.1em;background:#e0e0e0">'
                f'<div style="width:{width:.1f}%;height:100%;background:{COLOURS[state]}"></div></div>'
                f'<span>{escape(right)}</span></div>')
        return text, html


def _widgets() -> bool:
    """Inside a kernel with ipywidgets: the widget bar; otherwise the text bar (no warning)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        import ipywidgets  # noqa: F401
        return True
    except ImportError:
        return False


def _tqdm_class() -> Any:
    """The widget bar inside a kernel with ipywidgets; the text bar otherwise (no warning)."""
    if _widgets():
        from tqdm.notebook import tqdm
        return tqdm
    from tqdm.std import tqdm
    return tqdm


def make_progress(enabled: object, desc: str = "chatmany") -> NullProgress:
    """``True`` for a tqdm bar, ``False``/None for none, or any object with the same methods."""
    if enabled is True:
        return TqdmProgress(desc)
    if not enabled:
        return NullProgress()
    return cast(NullProgress, enabled)
