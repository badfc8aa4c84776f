"""Errors users see.

    ChatmagicError                 base; renders as one line in IPython
    ├── ConfigError                bad flags, options or settings; nothing was sent
    └── APIError                   an error answer from the server (status, code, message)
        ├── RequestError           one attempt failed; recorded in the results, retried or not
        └── RunAborted             the run stopped early (bad key, no credit, unknown model);
                                   carries the results that finished
    KeyboardInterrupt
    └── RunInterrupted             Ctrl-C or a kernel interrupt stopped the run; carries the
                                   results that finished; one line in IPython
    ChatmagicWarning               (a UserWarning) a limit was applied, the key goes in clear

A prompt that fails is data in the results (status "error" and a reason), never an exception:
only a failure of the whole run raises. Real bugs keep their tracebacks.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from chatmagic.providers.hints import NONE, Hints

#: A verdict on a failed attempt: retry it; retry and slow every prompt down; fail this prompt; end the run.
Action = Literal["retry", "slow", "fail", "abort"]


class ChatmagicError(Exception):
    """Base class. IPython shows ``_render_traceback_`` instead of a traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ChatmagicWarning(UserWarning):
    """Something the user should know that does not stop the run (said once)."""


class ConfigError(ChatmagicError, ValueError):
    """A flag, option or setting is invalid. Raised before anything is sent."""


class APIError(ChatmagicError):
    """The server answered with an error that is not about a single prompt."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        where = " ".join(str(p) for p in (self.status, self.code) if p)
        return f"{where}: {self.message}" if where else self.message


class RequestError(APIError):
    """One attempt failed. ``status`` is None for timeouts and connection errors, whose
    ``code`` is "timeout" or "connection". ``retry_after`` is the wait the server asked for;
    ``hints`` everything it said about waiting (see hints.py); ``action`` the dialect's verdict
    (retry, slow, fail, abort: providers/dialect.py), None to decide by the status."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None, hints: Hints = NONE, retryable: bool | None = None,
                 action: Action | None = None):
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after
        self.hints = hints
        self.retryable = retryable  # None: decided by the status; else the server's or ours
        self.action = action


class RunAborted(APIError):
    """The run stopped early because every remaining prompt would fail the same way
    (bad key, no credit, unknown model). ``results`` holds what finished."""

    def __init__(self, cause: APIError, results: Any = None):  # a Results, or a dict of them by model
        super().__init__(cause.message, status=cause.status, code=cause.code)
        self.results = results


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or a kernel interrupt stopped the run. ``results`` holds what finished (those
    answers are also in the cache, so running again sends only the rest).

    A KeyboardInterrupt, so that ``except Exception`` does not swallow Ctrl-C, a script still
    stops, and a notebook aborts the cells queued after this one."""

    def __init__(self, message: str, results: Any = None):
        super().__init__(message)
        self.results = results

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]

    def one_line_if_uncaught(self) -> RunInterrupted:
        """Let a script that does not catch this end with its one line (``RunInterrupted: 2 of 22
        answers kept ...``) rather than a traceback, and ``ipython script.py`` without IPython's
        crash banner (it treats a KeyboardInterrupt out of a script as its own bug): the hook of
        the moment is wrapped, and still handles every other exception. Returns self, to raise."""
        previous = sys.excepthook
        if getattr(previous, "chatmagic_one_line", False):
            return self

        def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
            if isinstance(value, RunInterrupted):
                print(f"{kind.__name__}: {value}", file=sys.stderr, flush=True)
            else:
                previous(kind, value, tb)

        hook.chatmagic_one_line = True  # type: ignore[attr-defined]
        sys.excepthook = hook
        return self


def interrupted(results_by_model: Mapping[str, Sequence[Any]], *, where: str, again: str,
                cache: bool) -> RunInterrupted:
    """The one line an interrupt leaves: what was kept, where, and what running again sends."""
    runs = list(results_by_model.values())
    kept = sum(r.ok for rs in runs for r in rs)
    total = sum(len(rs) for rs in runs)
    pending = sum(r.status == "pending" for rs in runs for r in rs)
    if pending:  # --batch: the batch keeps running and is re-attached, not sent again
        rest = f"the batch keeps running; {again} collects its {pending} answers"
    elif not cache:
        rest = f"the cache is off, so {again} sends all {total} again"
    elif kept == total:
        rest = f"{again} sends nothing"
    else:
        rest = f"{again} sends only the other {total - kept}"
    results = runs[0] if len(runs) == 1 else dict(results_by_model)
    return RunInterrupted(f"{kept} of {total} answers kept in {where}; {rest}", results)
