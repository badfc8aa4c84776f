"""The two models the throttle paces from (ratelimit.py explains the whole policy).

``Credit``: a budget the server announces (requests or tokens), read from every answer and
projected forward: spent at once, then refilled. ``Hidden``: a limit it does not announce, learnt
from its 429s. ``Ticket``: one send, so an answer can be matched to what was sent after it.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from dataclasses import dataclass

from chatmagic.providers.hints import Budget

INF = math.inf

#: Pace at this fraction of the server's rate: room for clock drift between us and it.
SAFETY = 0.97
#: The slowest pace a hidden limit brings us to, in requests per second.
FLOOR = 2.0
#: During a storm (nothing accepted) one probe goes every STORM_PROBE seconds, or every
#: STORM_SHARE of the storm's length so far, at most STORM_PROBE_MAX: a short storm's end is seen
#: within a fifth of a second, a storm that goes on for minutes costs a request a second.
STORM_PROBE, STORM_SHARE, STORM_PROBE_MAX = 0.2, 0.02, 1.0
#: Seconds over which the accepted rate is measured when a hidden limit answers 429.
WINDOW = 2.0
#: Growth of a learnt hidden pace per second without 429s (probing for more).
PROBE_GROWTH = 0.05
#: A hidden pace above this (requests per second) is lifted altogether.
LIFT = 1000.0
#: A budget quoted per minute whose readings all refill it within this many seconds is enforced
#: over that short window (OpenAI "quantizes" a per-minute limit to a per-second one).
SHORT_WINDOW = 10.0
#: A budget whose reset was never longer than this (seconds) refills as fast as its readings
#: show, not at most limit / 60 per second: its limit is quoted per short window.
SHORT_RESET = 2.0


@dataclass(frozen=True, slots=True)
class Ticket:
    """One send: its number, its start time, and the token costs sent up to it (included)."""

    seq: int
    at: float
    tokens: float
    cost: float



class Credit:
    """One kind of announced budget (requests or tokens), projected from its latest reading."""

    def __init__(self) -> None:
        self.known = False
        self.capacity = 0.0     # the whole budget: the largest remaining seen
        self.fill: float | None = None  # announced refill per second (paced at SAFETY x); None: Azure
        self.level = 0.0        # remaining at ``stamp``, after the answered request
        self.stamp = 0.0        # when the answered request was sent
        self.spent_at = 0.0     # our total cost sent up to the answered request
        self.seq = -1           # the answered request's number: a later answer is newer
        self.reset_at = INF     # when the whole budget is back
        # what the readings showed so far, to tell the units they are in (``_units``)
        self.most = 0.0         # the largest remaining
        self.drain = INF        # the smallest drop below the limit, per unit of cost sent
        self.longest = 0.0      # the longest window: limit x reset / (limit - remaining)
        self.window = INF       # the shortest of the short windows (the safe side)
        self.longest_reset = 0.0
        self.scale = 1.0        # remaining and limit times this: what the short window allows

    def assume(self, fill: float, now: float) -> None:
        """Pace from a remembered fill rate until the first answer (no credit yet)."""
        self.known, self.fill, self.capacity, self.stamp = True, fill, 1.0, now

    def observe(self, b: Budget, ticket: Ticket, spent: float, cost: float) -> None:
        """A reading from the answer to ``ticket``; ``spent``: our total cost up to it."""
        if ticket.seq < self.seq or b.remaining is None:
            return  # an older reading than the one we have, or nothing to count
        self.known, self.seq, self.stamp = True, ticket.seq, ticket.at
        scale, uncapped = self._units(b, cost)
        if scale != self.scale:  # the window changed: the largest remaining seen is in old units
            self.scale, self.capacity = scale, 0.0
        self.level, self.spent_at = b.remaining * scale, spent
        self.capacity = max(self.capacity, self.level + cost)
        if b.limit:
            self.capacity = min(self.capacity, b.limit * scale)
            if self.most <= b.limit / 60 + 1:  # a per-second level: a second's worth at most (our
                self.capacity = min(self.capacity, b.limit / 60)  # cost estimate may be too high)
            per_minute, drained = b.limit / 60, b.limit - b.remaining
            if b.reset and drained > 0:
                # a fixed window's (limit - remaining) / reset grows as its end nears: at most
                # the whole limit per the longest reset seen (the window's length)
                refill = drained * scale / b.reset
                self.fill = min(refill, b.limit / self.longest_reset) if uncapped else min(refill, per_minute)
            elif self.fill is None or not uncapped:
                self.fill = per_minute  # full: the refill is not shown; keep one learnt
        # a fixed window's whole budget is back at its end (``available``); a short window's is
        # not waited for but refilled at ``fill``: a sliding window gives back one at its reset
        self.reset_at = ticket.at + b.reset if b.reset is not None and not uncapped else INF

    def _units(self, b: Budget, cost: float) -> tuple[float, bool]:
        """(scale, uncapped): what the readings so far say about their units.

        A reading's window is how long the whole limit takes to come back at the pace it shows:
        limit x reset / (limit - remaining). A minute's bucket shows 60 s, a fixed window or a
        daily budget more (in its first reading). Three budgets show windows of about 1 s:

        - OpenAI's per-second enforcement of a per-minute limit quotes ``remaining`` in the
          minute's units (one request drops it by 60): read at window / 60 (``scale``), refilled
          at limit / 60 per second;
        - a budget quoted in its own short window (a 20-deep bucket refilled in 1 s; fixed 1 s
          windows of 20): one request drops ``remaining`` by 1; refilled at (limit - remaining) /
          reset, faster than limit / 60 (``uncapped``);
        - a per-second level with a per-minute limit (``remaining`` never above limit / 60):
          as it is, refilled at limit / 60.

        A budget whose reset was ever longer than SHORT_RESET is a minute's (or longer): as it
        is, refilled at most at limit / 60 per second (a fixed window's comes back whole at
        its end, ``available``).
        """
        limit, remaining, reset = b.limit, b.remaining, b.reset
        if not limit or remaining is None:
            return 1.0, False
        self.most = max(self.most, remaining)
        if reset is not None:
            self.longest_reset = max(self.longest_reset, reset)
        if reset and limit > remaining:
            window = limit * reset / (limit - remaining)
            self.longest = max(self.longest, window)
            if window < SHORT_WINDOW:
                self.window = min(self.window, window)
            if cost > 0:
                self.drain = min(self.drain, (limit - remaining) / cost)
        own_units = self.most > limit / 60 + 1  # else a per-second level under a minute's limit
        if own_units and self.longest < SHORT_WINDOW and self.window < INF and self.drain >= 2:
            return self.window / 60, False
        return 1.0, own_units and self.longest_reset < SHORT_RESET

    def available(self, now: float, spent: float) -> float:
        """Credit at ``now``, given our total cost sent so far."""
        if now >= self.reset_at and spent == self.spent_at:
            # the whole budget is back (a window's end). Only when nothing was sent since the
            # reading: ``reset`` assumed so, and a continuous bucket's refill covers the rest
            self.level, self.stamp, self.reset_at = self.capacity, now, INF
        level = self.level + SAFETY * (self.fill or 0.0) * (now - self.stamp) - (spent - self.spent_at)
        return min(level, self.capacity)

    def ready_at(self, now: float, need: float, spent: float) -> float:
        """When a request costing ``need`` fits (now if it does, or if the refill is unknown)."""
        short = min(need, self.capacity) - self.available(now, spent)
        if short <= 0 or not self.fill:
            return now
        ready = now + short / (SAFETY * self.fill)
        return min(ready, self.reset_at) if spent == self.spent_at else ready

    def hold(self, until: float) -> None:
        """A 429 showed this budget spent: nothing refills before ``until`` (the wait it asked
        for), so the waiters do not go as one burst when it ends (a sliding window's entries
        come back only then)."""
        self.stamp = max(self.stamp, until)

    def explains(self, b: Budget | None, cost: float) -> bool:
        """A 429 whose reading shows this budget spent, with a known refill."""
        return (b is not None and b.remaining is not None and b.remaining * self.scale < cost
                and self.fill is not None)



class Hidden:
    """The pace for a limit the server does not announce, learnt from its 429s (AIMD-style)."""

    def __init__(self, clock: Callable[[], float]):
        self.rate = INF
        self.ceiling = INF     # the rate the server accepted at the last 429; INF after a storm
        self.decreased_at = -INF
        self._sends: collections.deque[float] = collections.deque()    # send times in WINDOW
        self._rejects: collections.deque[float] = collections.deque()  # send times of 429s in WINDOW
        self._clock = clock
        self._started = clock()
        self.lifted_at = -INF   # when the end of a storm lifted the pace
        self.rejected_sent = -INF  # when the newest request answered 429 was sent
        self.storm_since = INF  # when the storm going on began (INF: none)
        self.gradual = False    # a lift met a storm again at once: recover by doubling instead

    def sent(self, at: float) -> None:
        sends = self._sends
        sends.append(at)
        # only the last WINDOW counts (rejected reads no further back): without this a run with
        # no 429 kept every send time, 32 bytes a request (32 MB for a million prompts)
        while sends[0] < at - WINDOW:
            sends.popleft()

    def rejected(self, ticket: Ticket, now: float) -> None:
        """A 429 no budget explains: pace at the rate accepted lately (or the floor)."""
        self._rejects.append(ticket.at)
        self.rejected_sent = max(self.rejected_sent, ticket.at)
        horizon = now - WINDOW
        for times in (self._sends, self._rejects):
            while times and times[0] < horizon:
                times.popleft()
        accepted = (len(self._sends) - len(self._rejects)) / min(WINDOW, max(now - self._started, 1.0))
        self.ceiling = accepted if accepted >= 2 * FLOOR else INF
        if self.ceiling == INF and now - self.lifted_at < 2 * WINDOW:
            self.gradual = True  # not a storm that ended but a limit this low: find it step by step
        if self.ceiling == INF and not self.gradual:  # a storm: probe for its end
            self.storm_since = min(self.storm_since, now)
            self.rate = 1 / min(STORM_PROBE_MAX, max(STORM_PROBE, STORM_SHARE * (now - self.storm_since)))
            self.decreased_at = now
            return
        self.storm_since = INF
        target = max(FLOOR, SAFETY * accepted)
        if target < self.rate:
            self.rate, self.decreased_at = target, now
        elif ticket.at >= self.decreased_at:  # sent at the current pace, and still too fast
            self.rate, self.decreased_at = max(FLOOR, self.rate * 0.9), now

    def accepted(self, sent: float) -> None:
        """An answer that was not a 429, to a request sent at ``sent``: probe upwards; after a
        storm (nothing accepted, so no rate learnt) lift the pace at once, or double it if a lift
        already met 429s again. Only an answer sent after the newest 429'd request ends a storm:
        an older one (a long request from before it) says nothing about the server now."""
        if self.rate == INF:
            return
        if self.ceiling == INF and sent < self.rejected_sent:
            return
        if self.ceiling == INF and not self.gradual:
            self.rate, self.lifted_at, self.storm_since = INF, self._clock(), INF
        elif self.ceiling == INF:
            self.rate *= 2
        else:
            self.rate *= 1 + PROBE_GROWTH / self.rate
        if self.rate > LIFT:
            self.rate = INF


class TokenEstimate:
    """A request's token cost for token pacing, from its text estimate (characters / 4, which
    the caller gives) and what the answers' ``usage`` showed in this run (one model): plus the
    mean of prompt_tokens over the text estimate (the chat format's own tokens), plus
    ``max_tokens`` when set, else the mean ``completion_tokens`` (``default_output`` before the
    first answer)."""

    def __init__(self, max_tokens: int | None, default_output: float):
        self.max_tokens, self.default_output = max_tokens, default_output
        self._answers = 0
        self._overhead = self._output = 0.0  # sums over the answers with usage

    def cost(self, text_tokens: float) -> float:
        overhead = self._overhead / self._answers if self._answers else 0.0
        output = self._output / self._answers if self._answers else self.default_output
        return text_tokens + max(0.0, overhead) + (self.max_tokens or output)

    def seen(self, text_tokens: float, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        if prompt_tokens is None or completion_tokens is None or min(prompt_tokens, completion_tokens) < 0:
            return
        self._answers += 1
        self._overhead += prompt_tokens - text_tokens
        self._output += completion_tokens
