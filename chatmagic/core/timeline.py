"""Every attempt of a run on one clock: when it started and ended, and how it went.

Recorded cheaply so every run can keep one: a few ``array`` columns (10 bytes an attempt,
9 a wait), no object per attempt. 100,000 prompts add about 1-2 MB. Times are 32-bit floats
(seconds since the start): within 1 us over the first 10 s, 0.25 ms after an hour, which a plot
never shows; 64-bit ones were 8 MB more at a million prompts. The functions below
turn the columns into what ``chatmagic.plot`` draws, so tests can check the figure's data.

The engine records its own attempts; any other client (the recipe in notebooks/teaching.ipynb)
can record the same way with ``add`` and ``wait``.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatmagic.core.ratelimit import Throttle

#: How a wait is slept: ``asyncio.sleep`` or a test's fake.
Sleep = Callable[[float], Awaitable[None]]

#: Outcomes of an attempt, stored as their index (one byte).
OUTCOMES = ("ok", "429", "5xx", "timeout", "connection", "cancelled", "error")
OK, R429, R5XX, TIMEOUT, CONNECTION, CANCELLED, ERROR = range(len(OUTCOMES))
#: Kinds of wait, stored as their index: a retry's backoff, the shared cooldown after a 429,
#: and the spacing between starts at a known rate.
WAITS = ("backoff", "cooldown", "pace")
BACKOFF, COOLDOWN, PACE = range(len(WAITS))


def outcome_of(err: BaseException) -> int:
    """The outcome code of a failed attempt (a RequestError, or a cancellation)."""
    status, code = getattr(err, "status", None), getattr(err, "code", None)
    if status == 429:
        return R429
    if status is not None and status >= 500:
        return R5XX
    if status is None and code in ("timeout", "connection"):
        return TIMEOUT if code == "timeout" else CONNECTION
    if type(err).__name__ in ("CancelledError", "KeyboardInterrupt"):  # asyncio is not imported here
        return CANCELLED
    return ERROR


class Timeline:
    """The attempts and waits of one run; times are seconds since ``t0`` on ``clock``.

    ``concurrency`` (the cap) and the rate limit are drawn as lines: ``rate`` requests per
    second (None when unknown) after a first ``burst`` (a full bucket of requests allowed at
    once); ``label`` names the row (the model).
    """

    __slots__ = ("clock", "t0", "starts", "ends", "outcomes", "tries",
                 "wait_starts", "wait_ends", "wait_kinds", "concurrency", "rate", "burst", "label")

    def __init__(self, concurrency: int | None = None, *, rate: float | None = None,
                 burst: float = 0.0, label: str = "", clock: Callable[[], float] = time.perf_counter):
        self.clock, self.t0 = clock, clock()
        self.starts, self.ends = array("f"), array("f")
        self.outcomes, self.tries = array("b"), array("B")
        self.wait_starts, self.wait_ends, self.wait_kinds = array("f"), array("f"), array("b")
        self.concurrency, self.rate, self.burst, self.label = concurrency, rate, burst, label

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, start: float, end: float, outcome: int | str = OK, attempt: int = 1) -> None:
        """One attempt, from ``start`` to ``end`` (``clock`` times); ``attempt`` 2+ is a retry."""
        self.starts.append(start - self.t0)
        self.ends.append(end - self.t0)
        self.outcomes.append(outcome if isinstance(outcome, int) else OUTCOMES.index(outcome))
        self.tries.append(min(attempt, 255))

    def wait(self, start: float, end: float, kind: int | str = BACKOFF) -> None:
        """A wait from ``start`` to ``end`` (``clock`` times) outside any request."""
        self.wait_starts.append(start - self.t0)
        self.wait_ends.append(end - self.t0)
        self.wait_kinds.append(kind if isinstance(kind, int) else WAITS.index(kind))

    def sleeper(self, sleep: Sleep, kind: Callable[[], int] | None = None) -> Sleep:
        """``sleep`` that records each wait: of ``kind``, or of the kind ``kind()`` names then."""
        async def recorded(seconds: float) -> None:
            which = BACKOFF if kind is None else kind()
            start = self.clock()
            try:
                await sleep(seconds)
            finally:
                self.wait(start, self.clock(), which)
        return recorded

    @property
    def nbytes(self) -> int:
        """Bytes the columns hold (allocated, including the arrays' spare room)."""
        import sys
        return sum(sys.getsizeof(a) for a in (self.starts, self.ends, self.outcomes, self.tries,
                                              self.wait_starts, self.wait_ends, self.wait_kinds))

    @property
    def span(self) -> float:
        """Seconds from the start to the last recorded end (0 when nothing was recorded)."""
        return max(max(self.ends, default=0.0), max(self.wait_ends, default=0.0))

    def __repr__(self) -> str:
        return f"<Timeline {self.label or 'run'}: {len(self)} attempts over {self.span:.1f}s>"


def throttle_wait(throttle: Throttle) -> Callable[[], int]:
    """For ``Timeline.sleeper``: the kind of wait the throttle is sleeping out now."""
    return lambda: COOLDOWN if throttle.cooldown_until > throttle.clock() else PACE


def known_limit(throttle: Throttle) -> tuple[float | None, float]:
    """(requests per second, burst): what the server announced (its refill and its full
    bucket) or the user's ``rpm`` allows, whichever is lower; (None, 0) if neither. A pace
    learnt from 429s is a guess, not a known limit."""
    announced, cap = throttle.requests.fill, (throttle.user_rpm or 0) / 60
    if announced and not (cap and cap < announced):
        return announced, throttle.requests.capacity
    return (cap, 0.0) if cap else (None, 0.0)


def in_flight(tl: Timeline) -> tuple[list[float], list[int]]:
    """Requests in flight as a step curve: one point per start (+1) and per end (-1), in time
    order (an end before a start at the same instant), from (0, 0)."""
    return _steps(zip(tl.starts, tl.ends))


def _steps(spans: Iterable[tuple[float, float]]) -> tuple[list[float], list[int]]:
    events = sorted([(t, step) for s, e in spans for t, step in ((s, 1), (e, -1))])
    times, counts, n = [0.0], [0], 0
    for t, step in events:
        n += step
        times.append(t)
        counts.append(n)
    return times, counts


def marks(tl: Timeline) -> dict[str, list[float]]:
    """When attempts went wrong or were retried: "429", "5xx", "timeout", "connection",
    "cancelled", "error" at the attempt's end; "retry" at a retry's start."""
    out: dict[str, list[float]] = {name: [] for name in OUTCOMES[1:]}
    for end, outcome in zip(tl.ends, tl.outcomes):
        if outcome != OK:
            out[OUTCOMES[outcome]].append(end)
    out["retry"] = [s for s, n in zip(tl.starts, tl.tries) if n > 1]
    return out


def latencies(tl: Timeline) -> list[float]:
    """Seconds each successful attempt took."""
    return [e - s for s, e, o in zip(tl.starts, tl.ends, tl.outcomes) if o == OK]


def completed(tl: Timeline) -> list[float]:
    """When each answer came back, in time order (the throughput curve)."""
    return sorted(e for e, o in zip(tl.ends, tl.outcomes) if o == OK)


def backing_off(tl: Timeline) -> tuple[list[float], list[int]]:
    """Prompts waiting out a retry's backoff, as a step curve like ``in_flight``."""
    return _steps((s, e) for s, e, k in zip(tl.wait_starts, tl.wait_ends, tl.wait_kinds) if k == BACKOFF)


def cooldowns(tl: Timeline) -> list[tuple[float, float]]:
    """The shared cooldowns after 429s, as (start, end), overlapping ones merged."""
    spans = sorted((s, e) for s, e, k in zip(tl.wait_starts, tl.wait_ends, tl.wait_kinds) if k == COOLDOWN)
    merged: list[tuple[float, float]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def buckets(times: list[float], width: float) -> list[int]:
    """How many of ``times`` fall in each ``width``-second bucket from 0."""
    if not times:
        return []
    counts = [0] * (int(max(times) // width) + 1)
    for t in times:
        counts[int(t // width)] += 1
    return counts


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between closest ranks."""
    values = sorted(values)
    if not values:
        return float("nan")
    pos = (len(values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)
