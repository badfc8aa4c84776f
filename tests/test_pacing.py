"""The engine against each server shape of the pacing model (ratelimit.py), at small N: every
prompt answered, few 429s, no crawl; waits capped and said; a far quota ends the run; storms
and 429-only servers end. Shapes are set before the limit (setting rpm/tpm builds the buckets)."""

import asyncio
import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

import chatmagic
from chatmagic.core.timeline import BACKOFF, R429, WAITS, completed
from chatmagic.errors import RunAborted


def run(server, n, **options):
    options.setdefault("progress", False)
    return chatmagic.chat_many([f"p{i}" for i in range(n)], base_url=server.base_url, **options)


def all_ok(results):
    return [r.status for r in results] == ["ok"] * len(results)


def waits(results) -> dict[str, int]:
    """The waits the run chose, counted by kind (backoff, cooldown, pace): its decisions, not a stopwatch.
    How fast a shape runs is tests/benchmarks/' job; a crawl fails the test's deadline."""
    return dict(Counter(WAITS[k] for k in results.timeline.wait_kinds))


def test_fixed_window_budget_is_spent_at_once(server):
    server.limit_shape, server.latency, server.rpm = "window", 0.02, 600  # 600 per 60 s window
    results = run(server, 100, concurrency=50)
    assert all_ok(results) and server.stats.by_status[429] == 0
    assert waits(results) == {}, results.summary()  # no wait at all (was 1 request per 60 s)


@pytest.mark.timeout(30)  # the second window (2 s), not the 60 s cap
def test_a_run_larger_than_the_window_goes_on_when_the_next_one_opens(server):
    server.limit_shape, server.window_s, server.latency = "window", 2.0, 0.02
    server.rpm = 600  # 20 per 2 s window
    results = run(server, 30, concurrency=30)
    assert all_ok(results)
    assert server.stats.by_status[200] == 30 and server.stats.by_status[429] <= 15
    assert waits(results), results.summary()  # it waited for the next window


def test_a_bucket_starting_full_is_spent_then_paced_at_its_refill(server):
    server.limit_shape, server.rpm = "bucket", 240  # 240 at once, then 4 per second
    results = run(server, 250, concurrency=50)
    assert all_ok(results) and server.stats.by_status[429] <= 12
    assert waits(results).get("pace", 0) >= 1, results.summary()  # the last 10 paced at the refill


@pytest.mark.timeout(40)  # not the daily refill (10 per minute: 6 minutes)
def test_an_announced_daily_budget_with_a_silent_minute_limit(server):
    server.daily, server.latency, server.rpm = 14400, 0.02, 1200  # 20 per second, enforced silently
    results = run(server, 60, concurrency=30)
    assert all_ok(results)


def test_a_token_budget_is_spent_then_paced(server):
    server.limit_shape, server.tpm = "bucket", 6000  # 6000 tokens at once, then 100 per second
    results = run(server, 350, concurrency=50, max_tokens=16)  # about 18 tokens each
    assert all_ok(results) and server.stats.by_status[429] <= 17
    assert waits(results).get("pace", 0) >= 1, results.summary()  # the last ~300 tokens waited for the refill


@pytest.mark.timeout(40)  # about 10 s; paced on 256 output tokens a request (as before): minutes
def test_a_token_budget_without_max_tokens_is_paced_on_the_output_seen(server):
    server.latency, server.tpm = 0.02, 6000  # 100 tokens a second, a bucket one second deep
    results = run(server, 60, concurrency=30)  # about 17 tokens each, 16 of them output
    assert all_ok(results) and server.stats.by_status[429] <= 6, server.stats.by_status
    assert waits(results).get("pace", 0) >= 1, results.summary()


@pytest.mark.timeout(40)  # learnt within seconds: at the server's 20 a second, 4 s
@pytest.mark.parametrize("headers", ["azure", "retry-after", "none"])
def test_without_a_refill_announced_the_pace_is_learnt_from_429s(server, headers):
    server.headers, server.latency, server.rpm = headers, 0.02, 1200
    results = run(server, 80, concurrency=30)
    assert all_ok(results)
    assert server.stats.by_status[429] <= 40, server.stats.by_status


@pytest.mark.timeout(20)  # the 2 s storm, then at once (at 1 a second after it, 40 s)
def test_after_a_storm_of_429s_the_pace_recovers_at_once(server):
    server.storm_s, server.latency = 2.0, 0.02
    results = run(server, 40, concurrency=16)
    assert all_ok(results)
    # the first wave (16), then a storm's probes, 5 a second for 2 s, and one probe more at the
    # storm's edge on a loaded machine; a pace not cut would send hundreds
    assert server.stats.by_status[429] <= 16 + 5 * 2 + 2, server.stats.by_status
    # a prompt waiting out its 429's retry-after (1 s) goes when the storm's end is seen, with
    # the first round after it, not after the others are done (the run's own record of its waits)
    tl = results.timeline
    backoffs = [end for end, kind in zip(tl.wait_ends, tl.wait_kinds) if kind == BACKOFF]
    assert backoffs and max(backoffs) <= completed(tl)[16], (backoffs, completed(tl))


def test_429s_use_up_no_retries_and_429_forever_ends_the_run(server, monkeypatch):
    # the bound on "nothing but 429s" is 10 minutes; shortened here so the test ends soon
    monkeypatch.setattr("chatmagic.core.ratelimit.QUOTA_WAIT", 3.0)
    server.storm_s = math.inf
    with pytest.raises(RunAborted, match=r"answered only 429 \(rate limited\) for 3") as caught:
        run(server, 2, concurrency=2, retries=1, max_retry_wait=0.1)
    results = caught.value.results
    assert not any(r.ok for r in results) and all("429" in r.error for r in results)
    assert max(r.attempts for r in results) > 2  # more 429s than retries: none of them counted
    assert server.stats.requests <= 2 + 3 * 5 + 1  # the first two, then a storm's probes (5/s) at most


def test_a_prompt_rate_limited_more_often_than_its_retries_is_answered(server):
    server.storm_s, server.latency = 1.0, 0.02
    results = run(server, 4, concurrency=4, retries=0)  # no retry for a fault; 429s are pacing
    assert all_ok(results) and max(r.attempts for r in results) >= 2  # was: failed at its first 429
    assert results.retries == server.stats.by_status[429]  # each re-send is shown as a retry


def test_429s_and_overloads_use_no_retry_and_add_no_backoff_of_their_own(server):
    # retries=0: a fault fails its prompt at once, while 429s and an overload (503) are sent
    # again; the prompt's own waits, on a recorded (fake) sleep, are each 429's retry-after only
    from chatmagic.core.engine import Run
    from chatmagic.settings import resolve
    slept = []

    async def sleep(seconds):
        slept.append(seconds)
    prompts = ["p [[fail:429:3]] [[retry_after:0.2]]", "q [[fail:503:1]]", "r [[fail:500:1]]"]
    results = asyncio.run(Run(prompts, resolve({"base_url": server.base_url, "progress": False, "retries": 0}),
                              sleep=sleep).run())
    assert [(r.status, r.attempts) for r in results] == [("ok", 4), ("ok", 2), ("error", 1)], results.summary()
    assert slept == [pytest.approx(0.2)] * 3


def test_a_quantized_limit_is_paced_at_its_second_with_few_429s(server_process):
    # 20 a second, quoted per minute; a process of its own, as in test_ratelimit's header-paced test
    url = server_process("--limit-shape", "quantized", "--latency", "0.02", "--rpm", "1200")
    results = chatmagic.chat_many([f"p{i}" for i in range(60)], base_url=url, progress=False, concurrency=30)
    assert all_ok(results)
    rejected = sum(o == R429 for o in results.timeline.outcomes)
    assert rejected <= 6, results.summary()  # was ~30: the minute spent at once
    assert waits(results).get("pace", 0) >= 1, results.summary()  # the 40 after the second's 20 paced


def test_a_long_retry_after_is_capped_and_said_once(server):
    prompts = ["a [[fail:429:1]] [[retry_after:3600]]", "b [[fail:429:1]] [[retry_after:3600]]"]
    results = chatmagic.chat_many(prompts, base_url=server.base_url, progress=False, max_retry_wait=0.5)
    assert all_ok(results) and [r.attempts for r in results] == [2, 2]
    assert results.summary().endswith("server asked to wait 1h; waited 0.5 s (max_retry_wait)")


def test_a_spent_quota_that_resets_hours_away_ends_the_run(server):
    server.daily, server.rpm = 5, 6000  # 5 a day
    with pytest.raises(RunAborted, match=r"requests quota is spent and resets in 2[34].*h") as caught:
        run(server, 10, concurrency=1, max_retry_wait=1)  # the refill is waited for 1 s at most
    statuses = [r.status for r in caught.value.results]
    assert statuses[:5] == ["ok"] * 5 and "ok" not in statuses[5:]
    assert server.stats.by_status[429] == 1  # said once, not retried


def test_transient_faults_are_retried_soon(server):
    server.fail_rate = 0.2
    results = run(server, 40, concurrency=10)
    assert all_ok(results) and results.retries >= 1


# The same against a limiter nobody here wrote: mocklimit (PyPI), 20 a second quoted as such

MOCKLIMIT = Path(__file__).resolve().parent / "benchmarks" / "mocklimit"


@pytest.fixture
def mocklimit(request):
    """mocklimit on 127.0.0.1 with the benchmark's config named by the test's parameter."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mocklimit", "serve", "--spec", str(MOCKLIMIT / "openapi.yaml"),
                             "--rate-config", str(MOCKLIMIT / f"{request.param}.yaml"), "--port", str(port),
                             "--log-level", "ERROR"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = f"http://127.0.0.1:{port}/mocklimit/stats"

    def rejected() -> int:
        with urllib.request.urlopen(stats, timeout=5) as r:
            per_ip = next(iter(json.load(r).get("POST /v1/chat/completions", {}).values()), {})
        return per_ip.get("total_429s", 0)
    try:
        for _ in range(300):  # polls until it answers
            try:
                rejected()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1", rejected
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.timeout(30)  # at 20 a second, 3 s; paced at 20 a minute (as before), 3 minutes
@pytest.mark.parametrize("mocklimit, waited", [("bucket", "pace"), ("windows", "pace"), ("sliding", "pace"),
                                               ("retry-after", "cooldown")], indirect=["mocklimit"])
def test_a_limit_quoted_in_its_own_second_is_paced_at_it(mocklimit, waited):
    # retry-after: no rate-limit headers, fixed windows that say only retry-after-ms: the pace is
    # learnt from the 429s, and their retry-after-ms (the window's end) pauses everyone (was:
    # ignored as under a second, each 429 sent before the window's end cut the pace by a tenth,
    # to 8 a second)
    url, rejected = mocklimit
    results = chatmagic.chat_many([f"p{i}" for i in range(60)], base_url=url, concurrency=30, progress=False,
                                  cache=False)
    assert all_ok(results) and waits(results).get(waited, 0) >= 1, results.summary()
    assert rejected() <= 30
