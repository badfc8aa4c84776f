"""Pacing from caps and rate-limit headers: the parser, the throttle on a fake clock, and the
engine against a server that enforces a limit."""

import asyncio
import heapq

import pytest

import chatmagic
from chatmagic.hints import parse
from chatmagic.ratelimit import INF, Throttle, server_rate


@pytest.mark.parametrize("headers, rate", [
    ({}, None),
    ({"x-ratelimit-limit-requests": "1200"}, 20.0),                                 # per minute
    ({"x-ratelimit-limit-requests": "1200", "x-ratelimit-remaining-requests": "1199",
      "x-ratelimit-reset-requests": "50ms"}, 20.0),
    # Groq: limit-requests counts per day; the refill seen, 30 over 179.56 s, is the real rate
    ({"x-ratelimit-limit-requests": "14400", "x-ratelimit-remaining-requests": "14370",
      "x-ratelimit-reset-requests": "2m59.56s"}, 30 / 179.56),
    ({"x-ratelimit-remaining-requests": "5"}, None),                                # Azure: remaining only
    ({"x-ratelimit-limit-requests": "junk"}, None),
    ({"x-ratelimit-limit-requests": "0"}, None),
])
def test_server_rate(headers, rate):
    got = server_rate(parse(headers).requests)
    assert got == (pytest.approx(rate) if rate is not None else None)


class FakeClock:
    """Virtual time: each sleep schedules one step that wakes the earliest sleeper, which then
    moves the clock to its time: tests never wait and concurrent sleepers wake in order."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []
        self._heap = []

    def __call__(self):
        return self.now

    async def sleep(self, seconds):
        self.sleeps.append(seconds)
        future = asyncio.get_running_loop().create_future()
        when = self.now + seconds
        heapq.heappush(self._heap, (when, len(self.sleeps), future))
        asyncio.get_running_loop().call_soon(self._wake_earliest)
        await future
        self.now = max(self.now, when)  # on waking, in wake order

    def _wake_earliest(self):
        heapq.heappop(self._heap)[2].set_result(None)


def starts(throttle, clock, n, tokens=0):
    async def main():
        out = []
        for _ in range(n):
            await throttle.acquire(tokens)
            out.append(clock.now)
        return out
    return asyncio.run(main())


def test_user_rpm_spaces_starts_evenly():
    clock = FakeClock()
    t = Throttle(rpm=600, probe=False, clock=clock, sleep=clock.sleep)
    times = starts(t, clock, 5)
    assert [round(b - a, 6) for a, b in zip(times, times[1:])] == [0.1] * 4


def test_token_cap_and_a_request_bigger_than_the_cap_is_sent_alone():
    clock = FakeClock()
    t = Throttle(tpm=600, probe=False, clock=clock, sleep=clock.sleep)  # 10 tokens/s
    times = starts(t, clock, 3, tokens=5)
    assert [round(b - a, 6) for a, b in zip(times, times[1:])] == [0.5, 0.5]
    big = starts(t, clock, 2, tokens=6000)  # ten minutes of budget each: goes, never spins
    assert big[1] - big[0] == pytest.approx(600)
    assert len(clock.sleeps) <= 4


def test_server_headers_set_the_pace_below_a_looser_user_cap():
    clock = FakeClock()
    t = Throttle(rpm=6000, probe=False, clock=clock, sleep=clock.sleep)
    t.observe(parse({"x-ratelimit-limit-requests": "1200"}))
    assert t.request_rate == pytest.approx(20 * 0.97)
    t2 = Throttle(rpm=60, probe=False, clock=clock, sleep=clock.sleep)
    t2.observe(parse({"x-ratelimit-limit-requests": "1200"}))
    assert t2.request_rate == pytest.approx(1.0)  # the user's lower cap wins


def test_429_starts_one_shared_cooldown_and_slows_the_pace():
    clock = FakeClock()
    t = Throttle(probe=False, clock=clock, sleep=clock.sleep)
    t.observe(parse({"x-ratelimit-limit-requests": "600"}))
    before = t.request_rate
    t.rate_limited(2.0)
    assert t.cooldown_until == pytest.approx(102.0)
    assert t.request_rate == pytest.approx(before * 0.9)

    async def many():
        return await asyncio.gather(*(_start(t, clock) for _ in range(4)))
    times = asyncio.run(many())
    assert min(times) >= 102.0  # nobody went before the cooldown ended
    assert sorted(round(b - a, 6) for a, b in zip(sorted(times), sorted(times)[1:])) == \
        [round(1 / t.request_rate, 6)] * 3  # then one at a time, not in a wave


async def _start(t, clock):
    await t.acquire()
    return clock.now


def test_429_without_headers_uses_reset_header_or_one_second():
    clock = FakeClock()
    t = Throttle(probe=False, clock=clock, sleep=clock.sleep)
    t.rate_limited(None, parse({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "3s",
                           "x-ratelimit-remaining-tokens": "9", "x-ratelimit-reset-tokens": "20ms"}))
    assert t.cooldown_until == pytest.approx(103.0)
    t2 = Throttle(probe=False, clock=clock, sleep=clock.sleep)
    t2.rate_limited(None, parse({}))
    assert t2.cooldown_until == pytest.approx(clock.now + 1.0)
    assert t2.request_rate < INF  # a server that says nothing still gets paced after a 429


def test_idle_without_limits_after_the_probe():
    clock = FakeClock()
    t = Throttle(clock=clock, sleep=clock.sleep)
    assert not t.idle  # the first request goes alone
    t.observe(parse({}))
    assert t.idle and t.request_rate == INF


def test_first_request_goes_alone_until_the_server_answers():
    async def main():
        t = Throttle()
        await t.acquire()  # the probe
        waiter = asyncio.ensure_future(t.acquire())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        t.observe(parse({"x-ratelimit-limit-requests": "60000"}))
        await asyncio.wait_for(waiter, 1)
    asyncio.run(main())


# The engine against servers that enforce a limit


def run(server, n, **options):
    return chatmagic.chat_many([f"p{i}" for i in range(n)], base_url=server.base_url, progress=False, **options)


@pytest.mark.parametrize("headers", ["openai", "azure", "none"])
def test_rate_limited_server_every_prompt_completes_with_few_rejections(server, headers):
    server.rpm, server.headers, server.latency = 1200, headers, 0.02  # 20 per second
    results = run(server, 60, concurrency=30)
    assert [r.status for r in results] == ["ok"] * 60
    assert results.elapsed_s < 60 / 20 * 2, results.summary()
    rejected = server.stats.by_status[429]
    if headers == "openai":
        assert rejected <= 2, server.stats.by_status  # paced from the headers
    else:
        # no rate announced: the first burst beyond the server's bucket (30 sent into 20) is
        # rejected once; after that the pace learnt from the 429s keeps rejections rare
        assert rejected <= 16, server.stats.by_status


def test_user_rpm_cap_without_server_headers(server):
    server.rpm, server.headers = 600, "none"
    results = run(server, 30, concurrency=30, rpm=540)
    assert [r.status for r in results] == ["ok"] * 30
    assert server.stats.by_status[429] == 0
    assert results.elapsed_s >= 29 / 9 * 0.95  # 9 per second


def test_a_later_run_paces_from_the_first_request_and_forgets_a_limit_no_longer_announced(server):
    server.rpm, server.latency = 1200, 0.0
    run(server, 5, concurrency=5)
    again = Throttle(url=server.base_url + "/chat/completions")
    assert not again._probe and again.request_rate == pytest.approx(20 * 0.97)
    again.observe(parse({}))  # the server says nothing now
    assert again.request_rate == INF
    assert Throttle(url=again.url)._probe  # and the next run probes again


def test_timeouts_do_not_grow_the_backoff():
    from chatmagic.errors import RequestError
    from chatmagic.retry import ServerOrBackoff

    class State:
        attempt_number = 6
        outcome = type("O", (), {"exception": lambda self: RequestError("t", code="timeout")})()
    assert all(0 <= ServerOrBackoff(cap=60)(State()) <= 0.5 for _ in range(20))
