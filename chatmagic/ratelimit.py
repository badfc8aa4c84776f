"""Pacing request starts from user caps and the server's own rate-limit headers.

The recipe answered each 429 with its own random backoff, so rejected requests came back in
waves and were rejected again. Here every request start goes through one ``Throttle``:

- starts are spaced evenly at the allowed rate (no bursts), from ``--rpm``/``--tpm`` or from
  the rate the server's ``x-ratelimit-*`` headers imply, whichever is lower;
- the first request goes alone, so the limit is known before a full burst is sent;
- a 429 starts one shared cooldown (the server's retry-after or reset) that every request
  waits out, and lowers the pace a little so the limit is approached, not crossed again.
"""

from __future__ import annotations

import asyncio
import math
import time

from .hints import Budget, Hints

INF = math.inf

#: Pace at this fraction of the server's rate: room for clock drift between us and it.
SAFETY = 0.97
#: Longest the other requests wait for the first response before going anyway: long enough
#: for a hosted API's first answer; short for a server on this machine (llama.cpp, vLLM,
#: Ollama), which announces no limits and would only make every run wait a generation.
PROBE_WAIT = 2.0
PROBE_WAIT_LOCAL = 0.25

def server_rate(budget: Budget | None) -> float | None:
    """Requests (or tokens) per second that an announced budget allows, or None.

    The limit is per minute at OpenAI; at Groq ``limit-requests`` is per day. The refill seen
    so far, (limit - remaining) / reset, tells them apart: when it is far below limit/60,
    it is the real rate.
    """
    if budget is None or not budget.limit:
        return None
    limit, remaining, reset = budget.limit, budget.remaining, budget.reset
    rate = limit / 60
    if remaining is not None and reset and limit - remaining >= 1:
        refill = (limit - remaining) / reset
        if refill < rate / 2:
            rate = refill
    return rate


#: The limits each server announced in earlier runs of this process, url -> (requests/s,
#: tokens/s), so that later runs pace from their first request and skip the probe.
_known: dict[str, tuple[float, float]] = {}


def _advance(scheduled: float, now: float, interval: float) -> float:
    """The next start: on schedule if we are late by less than an interval (so oversleeping
    does not slow the pace), else a fresh start from now (so idle time is no burst credit)."""
    return (scheduled if now - scheduled < interval else now) + interval


class Throttle:
    """Paces request starts. All times come from ``clock`` and waits go through ``sleep``
    (tests pass a fake clock).

    Attributes: ``user_rpm``/``user_tpm`` (caps given by the user, or None), ``request_rate``
    and ``token_rate`` (per second, INF when unknown), ``cooldown_until`` (clock time),
    ``sent`` and ``rejected`` (requests sent, and answered 429).
    """

    def __init__(self, rpm=None, tpm=None, *, url=None, probe=True, probe_wait=PROBE_WAIT,
                 clock=time.monotonic, sleep=asyncio.sleep):
        self.user_rpm, self.user_tpm = rpm, tpm
        self.request_rate = rpm / 60 if rpm else INF
        self.token_rate = tpm / 60 if tpm else INF
        self.cooldown_until = 0.0
        self.clock, self.sleep = clock, sleep
        self._next_start = 0.0   # earliest start for the next request (request pacing)
        self._next_tokens = 0.0  # same for token pacing
        self._lock = asyncio.Lock()
        self._probing: asyncio.Event | None = None
        self._probe = probe
        self.probe_wait = probe_wait
        self._started = clock()
        self.sent = 0      # requests sent (counted by the engine) and rejected with 429
        self.rejected = 0
        self._server_rate = INF
        self._server_token_rate = INF
        self._estimated = False  # request_rate was inferred from 429s, not given or announced
        self.url = url
        self._remembered = url in _known  # paced from an earlier run until this one hears back
        if self._remembered:
            self._probe = False
            self._learn(*_known[url])

    @property
    def idle(self) -> bool:
        """Nothing to pace: no rate known and no cooldown (the hot path checks this)."""
        return (self.request_rate == INF and self.token_rate == INF
                and self.cooldown_until <= self.clock() and not self._probe)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a request costing ``tokens`` may start.

        One waiter at a time holds the lock and sleeps until its start, re-checking after each
        sleep, so a cooldown or a new rate applies at once and no one is woken for nothing.
        """
        if self._probe:
            await self._wait_for_probe()
        async with self._lock:
            while True:
                now = self.clock()
                start = max(self.cooldown_until, self._next_start,
                            self._next_tokens if self.token_rate != INF else 0.0)
                if start <= now:
                    break
                await self.sleep(start - now)
            if self.request_rate != INF:
                self._next_start = _advance(self._next_start, now, 1 / self.request_rate)
            if self.token_rate != INF:
                # a request that alone exceeds the budget still goes; the ones after it wait
                self._next_tokens = _advance(self._next_tokens, now, tokens / self.token_rate)

    async def _wait_for_probe(self) -> None:
        if self._probing is None:  # this is the first request: it goes alone
            self._probing = asyncio.Event()
            return
        try:
            await asyncio.wait_for(self._probing.wait(), self.probe_wait)
        except asyncio.TimeoutError:
            self._end_probe()

    def _end_probe(self) -> None:
        self._probe = False
        if self._probing is not None:
            self._probing.set()

    def observe(self, hints: Hints) -> None:
        """Learn from what a response said (any status)."""
        if self._probe:
            self._end_probe()
        if self._estimated:
            self.request_rate *= 1.005
        requests, tokens = server_rate(hints.requests), server_rate(hints.tokens)
        if requests is not None or tokens is not None:
            self._learn(requests or self._server_rate, tokens or self._server_token_rate)
        elif self._remembered:  # the server no longer announces a limit: forget the old one
            self._learn(INF, INF)
        self._remembered = False
        if self.url is not None:
            if self._server_rate == self._server_token_rate == INF:
                # nothing announced: probe again next time, in case a limit appears
                _known.pop(self.url, None)
            else:
                _known[self.url] = (self._server_rate, self._server_token_rate)

    def _learn(self, requests: float, tokens: float) -> None:
        if requests != self._server_rate:
            self._server_rate, self._estimated = requests, False
            self.request_rate = min(requests * SAFETY, self.user_rpm / 60 if self.user_rpm else INF)
        if tokens != self._server_token_rate:
            self._server_token_rate = tokens
            self.token_rate = min(tokens * SAFETY, self.user_tpm / 60 if self.user_tpm else INF)

    def rate_limited(self, wait: float | None, hints: Hints | None = None) -> None:
        """A 429: every request waits out one shared cooldown, and the pace slows a little."""
        if self._probe:
            self._end_probe()
        now = self.clock()
        if wait is None and hints is not None:
            resets = [b.reset for b in (hints.requests, hints.tokens) if b is not None]
            wait = max((r for r in resets if r is not None), default=None)
        self.rejected += 1
        first_of_wave = now >= self.cooldown_until  # the rest of a wave were sent at the old pace
        self.cooldown_until = max(self.cooldown_until, now + (1.0 if wait is None else wait))
        self._next_start = max(self._next_start, self.cooldown_until)
        accepted = max((self.sent - self.rejected) / max(now - self._started, 1.0), 1.0)
        if self.request_rate == INF:
            # no headers and no cap: pace at the rate the server has been accepting (each 429 of
            # the wave refines it), then speed up a little with each success
            self.request_rate, self._estimated = accepted, True
        elif first_of_wave:
            self.request_rate *= 0.9
        if self._estimated:
            self.request_rate = min(self.request_rate, accepted)
