"""The attempt timeline: every attempt recorded where and when it happened, in little memory."""

import asyncio
import time
from itertools import pairwise

import pytest

import chatmagic
from chatmagic.core.timeline import (
    BACKOFF,
    COOLDOWN,
    OUTCOMES,
    Timeline,
    backing_off,
    buckets,
    completed,
    cooldowns,
    in_flight,
    latencies,
    marks,
    percentile,
)
from chatmagic.practice.server import FakeOpenAI


def run(server, prompts, **options):
    options = {"base_url": server.base_url, "cache": False, "progress": False, **options}
    return chatmagic.chat_many(prompts, **options)


def test_every_attempt_is_recorded_with_its_outcome(server):
    server.latency, server.fail_rate, server.stall_rate, server.stall_s = 0.01, 0.2, 0.1, 5
    results = run(server, [f"q{i}" for i in range(40)], concurrency=8, timeout=0.5, retries=4)
    tl = results.timeline
    outcomes = [OUTCOMES[o] for o in tl.outcomes]
    assert len(tl) == sum(r.attempts for r in results) == server.stats.requests
    assert outcomes.count("ok") == sum(r.ok for r in results) == server.stats.by_status[200]
    assert outcomes.count("5xx") == server.stats.by_status[500] > 0
    assert outcomes.count("timeout") > 0  # stalls cut by -t: the server never answered them
    assert len(marks(tl)["retry"]) == results.retries
    assert all(0 <= s <= e <= results.elapsed_s for s, e in zip(tl.starts, tl.ends))
    # each retry waited out a backoff, recorded as a wait
    assert sum(k == BACKOFF for k in tl.wait_kinds) == results.retries


def test_in_flight_never_exceeds_the_cap_and_reaches_it(server):
    server.latency = 0.05
    results = run(server, [f"q{i}" for i in range(40)], concurrency=6)
    times, counts = in_flight(results.timeline)
    assert results.timeline.concurrency == 6
    assert max(counts) == 6 == server.stats.peak_in_flight
    assert counts[-1] == 0 and times == sorted(times)
    assert sum(step > 0 for step in (b - a for a, b in pairwise(counts))) == 40


def test_429s_are_recorded_when_the_server_sent_them():
    """A rate-limited practice server that announces nothing: the first burst meets 429s. Each
    429 on the timeline is within 0.2 s of one the server logged (on the same clock)."""
    with FakeOpenAI(latency=0.02, rpm=600, headers="none", record_times=True) as server:
        offset = time.perf_counter() - time.monotonic()  # both are CLOCK_MONOTONIC on Linux
        results = run(server, [f"q{i}" for i in range(40)], concurrency=20)
        tl = results.timeline
        sent = sorted(t + offset - tl.t0 for t, status in server.stats.answers if status == 429)
    drawn = sorted(marks(tl)["429"])
    assert len(drawn) == len(sent) == server.stats.by_status[429] > 0
    assert all(abs(a - b) < 0.2 for a, b in zip(drawn, sent))
    assert sum(buckets(drawn, 0.5)) == len(drawn) and buckets(drawn, 0.5)[0] > 0  # the first burst
    assert cooldowns(tl)  # the shared pause after the 429s
    assert results.texts() == [f"echo: q{i}" for i in range(40)]


def test_the_announced_rate_limit_is_kept_for_the_plot(server):
    server.rpm = 1200
    results = run(server, [f"q{i}" for i in range(5)])
    assert results.timeline.rate == pytest.approx(20.0) and results.timeline.burst == 20  # a full bucket
    server.rpm = None
    assert (run(server, ["q"], rpm=90).timeline.rate, run(server, ["q"], rpm=90).timeline.burst) == (1.5, 0)
    assert run(server, ["q"]).timeline.rate is None
    server.rpm, server.headers = 600, "none"  # a limit learnt from 429s is a guess: no line
    assert run(server, [f"q{i}" for i in range(30)], concurrency=30).timeline.rate is None


def test_an_interrupted_run_has_what_happened_until_the_interrupt(server, cancelled_run):
    server.latency = 5
    results = cancelled_run([f"q{i}" for i in range(10)])  # each answer would take 5 s
    tl = results.timeline
    assert [OUTCOMES[o] for o in tl.outcomes] == ["cancelled"] * 10  # ended by the cancel, not answered
    assert in_flight(tl)[1][-1] == 0


def test_an_answer_that_is_not_json_is_no_answer_on_the_timeline(server):
    results = run(server, ["fine [[json]]", "broken [[badjson]]"], json=True, retries=1)
    assert [r.status for r in results] == ["ok", "error"]
    assert [OUTCOMES[o] for o in results.timeline.outcomes].count("ok") == 1
    assert len(completed(results.timeline)) == 1 and len(results.timeline) == 3


def test_cached_prompts_add_no_attempt(server):
    run(server, ["a", "b"], cache=True)
    again = run(server, ["a", "b", "c"], cache=True)
    assert len(again.timeline) == 1 and completed(again.timeline)


def test_data_helpers_on_a_hand_made_timeline():
    tl = Timeline(2, clock=lambda: 8.0)
    tl.add(8.0, 9.0, "ok")
    tl.add(8.5, 8.75, "429")
    tl.add(9.25, 10.25, "ok", attempt=2)
    tl.wait(8.75, 9.25, "backoff")
    assert in_flight(tl) == ([0.0, 0.0, 0.5, 0.75, 1.0, 1.25, 2.25], [0, 1, 2, 1, 0, 1, 0])
    assert marks(tl)["429"] == [0.75] and marks(tl)["retry"] == [1.25]
    assert latencies(tl) == [1.0, 1.0] and completed(tl) == [1.0, 2.25]
    assert backing_off(tl) == ([0.0, 0.75, 1.25], [0, 1, 0])
    assert buckets([0.1, 0.2, 1.5], 1.0) == [2, 1]
    assert percentile([1, 2, 3, 4, 5], 50) == 3 and percentile([1, 2], 95) == pytest.approx(1.95)


def test_memory_stays_small():
    """100,000 prompts may add 30 MB; the columns take a fifteenth of that for an attempt and a
    wait per prompt (the benchmark's timeline scenario measures it in a real run): 32-bit times,
    within a microsecond over the first 10 s."""
    tl = Timeline(100, clock=lambda: 0.0)
    for i in range(100_000):
        tl.add(i / 10_000, i / 10_000 + 1.0, "ok")
        tl.wait(i / 10_000, i / 10_000 + 0.5, "pace")
    assert tl.nbytes < 2_100_000
    assert max(abs(s - i / 10_000) for i, s in enumerate(tl.starts)) < 1e-6
    assert max(abs(e - s - 0.5) for s, e in zip(tl.wait_starts, tl.wait_ends)) < 1e-6


def test_the_sleeper_records_its_wait():
    tl = Timeline(clock=time.perf_counter)
    asyncio.run(tl.sleeper(asyncio.sleep, lambda: COOLDOWN)(0.01))
    assert list(tl.wait_kinds) == [COOLDOWN] and tl.wait_ends[0] - tl.wait_starts[0] >= 0.009
