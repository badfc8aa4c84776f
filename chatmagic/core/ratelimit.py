"""Pacing request starts: as fast as each server allows, and never stuck.

Every request start goes through one ``Throttle`` per run. The model, for every server shape:

- **Announced budget** (``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``): ``remaining``
  is credit that may be spent at once. It is re-read from every answer and projected forward:
  minus what was sent after the answered request, plus the refill since. The refill rate is
  (limit - remaining) / reset, at most limit / 60 s, so one reading serves a per-minute limit
  enforced per second (OpenAI), a token bucket starting full, a daily limit (Groq announces
  per day) and a fixed window. When ``reset`` has passed with nothing sent since the reading, the
  whole budget is back (the largest ``remaining`` seen): a fixed window's credit returns at its
  end, not bit by bit. The reading that counts is the newest request's, not the last to arrive.
  A start waiting for the refill goes at once when a reading shows a request's worth more
  than projected (a window that came back without a ``reset`` announced: LiteLLM's calendar
  minutes); not at every reading, each stamped at its send and so a little early.
- **Hidden limit** (no headers at all, Azure's remaining-only once spent, or a per-minute limit
  enforced while a daily one is announced): a 429 the budget does not explain sets the pace to
  the rate the server accepted over the last seconds (AIMD-style: decrease to what worked, then
  probe upwards a few percent a second; never below ``budgets.FLOOR``, 2 a second). If it
  accepted almost nothing (a 429 storm) one probe goes every 0.2 s, or every 2% of the storm's
  length so far, at most 1 s (``budgets.STORM_PROBE``), and the first answer to a request sent
  after the storm's last 429 lifts the pace (a storm taught no rate): the start waiting for its
  turn goes at once, and so do the prompts waiting out their own 429's
  retry-after (``pause``) and the storm's cooldown (a spent budget's wait stays); if that lift
  meets a storm again at once, the limit is that low, and each answer doubles the pace instead.
  A 429 uses up none of the prompt's retries (the engine sends it again; retries count faults)
  and adds no backoff of its own beyond its retry-after: the throttle is the shared backoff.
- **Short windows**: a budget quoted per minute but enforced per second (OpenAI's quantized
  limits: ``remaining`` in the minute's units, ``reset`` under a second) is read in the short
  window's units (``Credit`` works out the window from limit, remaining and reset), so only that
  window's share is spent at once. A limit quoted in its own short window (limit 20 for 20 a
  second, resets under 2 s) refills at its own pace, not at most limit / 60 s; a 429 showing
  a budget spent holds its refill until the wait ends (``Credit.hold``).
- **Waits**, every one capped at ``max_wait`` (max_retry_wait): a 429 the budget explains
  (remaining 0) makes every request wait the server's retry-after (or reset); a longer ask is
  noted once (``notes``). A 429 it does not explain pauses the others only for a retry-after
  over 1 s or one to the millisecond (``retry-after-ms``: a fixed window's end, before which
  every send is refused too); a whole second or less is a per-second limiter's rounding, and
  the new pace spaces them. A
  budget refilling too slowly is waited for ``max_wait`` at most, then tried: a 429 whose budget
  is spent and resets later than ``QUOTA_WAIT`` (and 10x ``max_wait``) is a quota the run cannot
  outwait, so ``rate_limited`` returns a reason and the engine ends the run. So does a server
  that has answered nothing but 429s for as long (a storm that does not end): without it,
  thousands of prompts retried at the floor pace would keep a notebook busy for hours.
- User caps (``--rpm``/``--tpm``) space starts evenly and apply on top of all this.

The first request goes alone, so the budget is known before a burst (skipped for a server whose
paces this process remembers, in a ``Paces`` object the engine passes in).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from chatmagic.core.budgets import INF, Credit, Hidden, Ticket, TokenEstimate
from chatmagic.core.memory import Paces
from chatmagic.providers.hints import Hints, say

log = logging.getLogger("chatmagic")

#: Longest the other requests wait for the first response before going anyway: long enough
#: for a hosted API's first answer; short for a server on this machine (llama.cpp, vLLM,
#: Ollama), which announces no limits and would only make every run wait a generation.
PROBE_WAIT = 2.0
PROBE_WAIT_LOCAL = 0.25
#: Shared pause after a 429 that names no wait and that no budget explains.
NO_HINT_WAIT = 0.5
#: A 429 whose budget is spent and resets at least this much later (and 10x max_wait) ends the run.
QUOTA_WAIT = 600.0


async def sleep_unless(sleep: Callable[[float], Awaitable[None]], seconds: float, event: asyncio.Event) -> None:
    """``sleep(seconds)``, cut short when ``event`` is set (an answer changed what the wait is for)."""
    if event.is_set():
        return
    nap, woke = asyncio.ensure_future(sleep(seconds)), asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((nap, woke), return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the run is cancelled: neither is left behind
        nap.cancel()
        woke.cancel()


def _advance(scheduled: float, now: float, interval: float) -> float:
    """The next start: on schedule if we are late by less than an interval (so oversleeping
    does not slow the pace), else a fresh start from now (so idle time is no burst credit)."""
    return (scheduled if now - scheduled < interval else now) + interval


class Throttle:
    """Paces request starts and counts them. All times come from ``clock`` and waits go
    through ``sleep`` (tests pass a fake clock).

    ``sent``/``rejected``: requests started, and answered 429. ``notes``: what the run should
    tell its user (a wait the server asked for that was longer than ``max_wait``).
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *, url: str | None = None,
                 paces: Paces | None = None, probe: bool = True, probe_wait: float = PROBE_WAIT,
                 max_wait: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, estimate: TokenEstimate | None = None):
        self.user_rpm, self.user_tpm = rpm, tpm
        self.clock, self.sleep = clock, sleep
        self.max_wait = max_wait
        self.cooldown_until = 0.0
        self.sent = self.rejected = 0
        self.tokens_sent = 0.0
        self.notes: list[str] = []
        self._answered_at = clock()  # the last answer that was not a 429
        self.requests, self.tokens = Credit(), Credit()
        self.hidden = Hidden(clock)
        self._next = {"rpm": 0.0, "tpm": 0.0, "hidden": 0.0}  # evenly spaced starts
        self._lock = asyncio.Lock()
        self._stopped = False  # the run is ending: nothing waits any more
        self.estimate = estimate  # a request's token cost from its text (None: as given)
        self._last_start = -INF
        self._probing: asyncio.Event | None = None
        self._probe_timer: asyncio.TimerHandle | None = None
        # set (then renewed) when an answer raises a learnt pace, and when a storm's end lifts it
        self._raised, self._lifted = asyncio.Event(), asyncio.Event()
        self._sleeping = False  # a start is waiting (under the lock) for its time
        self._paced_until = 0.0  # the cooldown a spent budget asked for (a lift does not end it)
        self.probe_wait = probe_wait
        self.url, self.paces = url, Paces() if paces is None else paces
        remembered = self.paces.get(url) if url is not None else None
        self._remembered = remembered is not None  # paced from an earlier run until this one hears back
        self._probe = probe and not self._remembered
        if remembered:
            for credit, fill in zip((self.requests, self.tokens), remembered):
                if fill:
                    credit.assume(fill, clock())

    @property
    def idle(self) -> bool:
        """Nothing to pace (the hot path checks this)."""
        return not (self.user_rpm or self.user_tpm or self.requests.known or self.tokens.known
                    or self._probe or self.hidden.rate != INF or self.cooldown_until > self.clock())

    async def acquire(self, tokens: float = 0) -> Ticket:
        """Wait until a request costing ``tokens`` may start; count it; return its ticket.

        One waiter at a time holds the lock and sleeps until its start, re-checking after each
        sleep, so a cooldown or a new reading applies at once and no one is woken for nothing.
        """
        if self.idle:
            return self._count(self.clock(), self.estimate.cost(tokens) if self.estimate is not None else tokens)
        if self._probe:
            await self._wait_for_probe()
        async with self._lock:
            # a budget that refills too slowly to wait for is tried at the cap anyway: its 429
            # says whether the quota is gone for hours (the run ends) or just slow
            give_up = self.clock() + self.max_wait
            while True:
                now = self.clock()
                # the estimate may have moved while this request waited (an answer came)
                need = self.estimate.cost(tokens) if self.estimate is not None else tokens
                start = self._start(now, need, give_up)
                if start <= now or self._stopped:
                    break
                # any answer may move the start earlier (a new reading, a learnt pace raised, a
                # storm's end): wake when one comes, not at the start computed before it
                self._sleeping = True
                try:
                    await sleep_unless(self.sleep, start - now, self._raised)
                finally:
                    self._sleeping = False
            if self.user_rpm:
                self._next["rpm"] = _advance(self._next["rpm"], now, 60 / self.user_rpm)
            if self.user_tpm:
                # a request that alone exceeds the cap still goes; the ones after it wait
                self._next["tpm"] = _advance(self._next["tpm"], now, need * 60 / self.user_tpm)
            if self.hidden.rate != INF:
                self._next["hidden"] = _advance(self._next["hidden"], now, 1 / self.hidden.rate)
            return self._count(now, need)

    def _start(self, now: float, tokens: float, give_up: float) -> float:
        budget = now
        if self.requests.known:
            budget = self.requests.ready_at(now, 1, self.sent)
        if self.tokens.known and tokens:
            budget = max(budget, self.tokens.ready_at(now, tokens, self.tokens_sent))
        start = max(self.cooldown_until, self._next["rpm"], self._next["tpm"], min(budget, give_up))
        return max(start, self._next["hidden"]) if self.hidden.rate != INF else start

    def _count(self, now: float, tokens: float) -> Ticket:
        self.sent += 1
        self._last_start = now
        self.tokens_sent += tokens
        self.hidden.sent(now)
        return Ticket(self.sent - 1, now, self.tokens_sent, tokens)

    def stop(self) -> None:
        """The run is ending: every waiter goes at once (and sends nothing: the engine checks)."""
        self._stopped = True
        self._end_probe()

    async def _wait_for_probe(self) -> None:
        if self._probing is None:  # this is the first request: it goes alone
            self._probing = asyncio.Event()
            return
        if self._probe_timer is None:
            # one timer, armed by the first waiter, ends the probe for all (as that waiter's own
            # timeout did): a wait_for each made a task per waiting request, 5,000 at C=5,000
            self._probe_timer = asyncio.get_running_loop().call_later(self.probe_wait, self._end_probe)
        await self._probing.wait()

    def _end_probe(self) -> None:
        self._probe = False
        if self._probe_timer is not None:
            self._probe_timer.cancel()
        if self._probing is not None:
            self._probing.set()

    def observe(self, hints: Hints | None, ticket: Ticket) -> None:
        """An answer other than a 429 (``hints`` None: no answer at all, e.g. a timeout)."""
        if self._probe:
            self._end_probe()
        if hints is None:
            return
        now = self._answered_at = self.clock()
        before, credit = self.hidden.rate, self._credit(now)
        self.hidden.accepted(ticket.at)
        raised = self.hidden.rate > before
        if raised:  # the next start at the new pace, not the old one
            self._next["hidden"] = min(self._next["hidden"], self._last_start + 1 / self.hidden.rate)
            if self.hidden.rate == INF:  # the storm is over: its waits with it
                self.cooldown_until = min(self.cooldown_until, self._paced_until)
                self._lifted.set()
                self._lifted = asyncio.Event()
        self._read(hints, ticket)
        # the waiting start looks again when the pace rose or the reading shows a request's worth
        # more than projected (a window that came back: LiteLLM's calendar minutes); not for
        # every reading: each is a little early (stamped at the send), and the earliest of all
        # would start too soon
        if self._sleeping and (raised or any(after - was >= unit for was, after, unit in
                                             zip(credit, self._credit(now), (1.0, ticket.cost or INF)))):
            self._raised.set()
            self._raised = asyncio.Event()

    def _credit(self, now: float) -> tuple[float, float]:
        """The announced budgets' credit now (requests, tokens): -INF for one not known."""
        return (self.requests.available(now, self.sent) if self.requests.known else -INF,
                self.tokens.available(now, self.tokens_sent) if self.tokens.known else -INF)

    async def pause(self, seconds: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        """A rate-limited prompt's own wait (its 429's retry-after), cut short when the storm
        that caused it ends: a later request was answered, so the server is taking them again."""
        await sleep_unless(sleep, seconds, self._lifted)

    def _read(self, hints: Hints, ticket: Ticket) -> None:
        if hints.requests is not None:
            self.requests.observe(hints.requests, ticket, ticket.seq + 1, 1.0)
        if hints.tokens is not None:
            self.tokens.observe(hints.tokens, ticket, ticket.tokens, ticket.cost)
        if self.url is None:
            return
        fills = (self.requests.fill or 0.0, self.tokens.fill or 0.0)
        if hints.budgets and any(fills):
            self.paces.remember(self.url, *fills)
        elif self._remembered and not hints.budgets:
            # the server no longer announces a limit: forget the old one
            self.requests, self.tokens = Credit(), Credit()
            self.paces.forget(self.url)
        self._remembered = False

    def rate_limited(self, hints: Hints, ticket: Ticket) -> str | None:
        """A 429: wait as the server asks (capped), or learn its hidden limit. Returns a reason
        to end the run when a spent quota resets too far away to wait for."""
        if self._probe:
            self._end_probe()
        now = self.clock()
        self.rejected += 1
        self._read(hints, ticket)
        spent = {kind: b for kind, c, b, cost in (("requests", self.requests, hints.requests, 1.0),
                                                  ("tokens", self.tokens, hints.tokens, ticket.cost))
                 if b is not None and c.explains(b, cost)}
        resets = {b.reset: kind for kind, b in spent.items() if b.reset is not None}
        if resets and min(resets) >= max(QUOTA_WAIT, 10 * self.max_wait):
            return f"the server's {resets[min(resets)]} quota is spent and resets in {say(min(resets))}"
        if now - self._answered_at >= max(QUOTA_WAIT, 10 * self.max_wait):
            return f"the server has answered only 429 (rate limited) for {say(now - self._answered_at)}"
        wait = hints.retry_after
        if spent:
            wait = wait if wait is not None else max(resets, default=NO_HINT_WAIT)
        else:
            self.hidden.rejected(ticket, now)
            # the new pace spaces the others; a whole second or less is a per-second limiter's
            # rounding, a longer wait or one to the millisecond (retry-after-ms: a fixed
            # window's end) a real ask: what is sent before it would be refused too
            wait = NO_HINT_WAIT if wait is None else (wait if wait > 1.0 or wait != int(wait) else 0.0)
        if wait > self.max_wait:
            self._note(wait)
            wait = self.max_wait
        self.cooldown_until = max(self.cooldown_until, now + wait)
        if spent:
            self._paced_until = max(self._paced_until, now + wait)
        for kind in spent:
            (self.requests if kind == "requests" else self.tokens).hold(self.cooldown_until)
        return None

    def _note(self, asked: float) -> None:
        if not self.notes:
            note = f"server asked to wait {say(asked)}; waited {say(self.max_wait)} (max_retry_wait)"
            self.notes.append(note)
            log.warning(note)
