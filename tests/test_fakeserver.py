"""Tests for the fake OpenAI server used by the chatmagic test-suite and benchmarks."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request

import aiohttp
import pytest

from chatmagic.practice.server import FakeOpenAI, go_duration
from chatmagic.providers.hints import parse_duration


@pytest.fixture
def srv():
    with FakeOpenAI() as server:
        yield server


def call(srv, content=None, *, messages=None, raw=None, headers=None, timeout=5, **params):
    """POST a chat completion; returns (status, headers, parsed JSON body)."""
    body = {"model": "fake-model", "messages": messages or [{"role": "user", "content": content}]}
    body.update(params)
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(srv.base_url + "/chat/completions", data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


def answer(body):
    return body["choices"][0]["message"]["content"]


@pytest.fixture
def waits(srv):
    """The server's waits (latency, stalls), recorded instead of slept: what it would have waited."""
    seen: list[float] = []

    async def record(seconds: float) -> None:
        seen.append(seconds)
    srv.sleep = record
    return seen


# ---- plain echo ------------------------------------------------------------

def test_echo_completion_shape(srv):
    status, _, body = call(srv, "  hello world  ", model="gpt-x")
    assert status == 200
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-x" and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "echo: hello world"}
    assert choice["finish_reason"] == "stop"
    prompt_tokens = len("  hello world  ") // 4 + 1
    assert body["usage"] == {"prompt_tokens": prompt_tokens,
                             "completion_tokens": len("echo: hello world") // 4 + 1,
                             "total_tokens": prompt_tokens + len("echo: hello world") // 4 + 1}


def test_echoes_last_user_message_and_system_prompt(srv):
    messages = [{"role": "system", "content": "be terse"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "echo: first"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]}]
    _, _, body = call(srv, messages=messages)
    assert answer(body) == "echo: [system=be terse] second [turns=3]"  # the turns are counted


def test_echo_params_returns_request_minus_messages(srv):
    _, _, body = call(srv, "hi", temperature=0.3, max_tokens=7, seed=42,
                      response_format={"type": "json_object"})
    assert body["echo_params"] == {"model": "fake-model", "temperature": 0.3, "max_tokens": 7,
                                   "seed": 42, "response_format": {"type": "json_object"}}


def test_models_and_health(srv):
    with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as resp:
        assert json.loads(resp.read())["data"][0]["id"] == "fake-model"
    health = srv.base_url.replace("/v1", "/health")
    with urllib.request.urlopen(health, timeout=5) as resp:
        assert resp.status == 200


def test_non_json_body_is_400(srv):
    assert call(srv, raw=b"not json")[0] == 400
    assert call(srv, raw=b'{"model": "m"}')[0] == 400
    assert srv.stats.by_status[400] == 2 and srv.stats.requests == 2


def test_unknown_model_is_404():
    with FakeOpenAI(unknown_models={"gpt-nope"}) as srv:
        status, _, body = call(srv, "hi", model="gpt-nope")
        assert status == 404 and body["error"]["code"] == "model_not_found"
        assert call(srv, "hi", model="gpt-ok")[0] == 200


def test_only_the_models_it_is_told_of_exist():
    with FakeOpenAI(models=["gpt-4o-mini", "gpt-4o"]) as srv:
        with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as resp:
            assert [m["id"] for m in json.loads(resp.read())["data"]] == ["gpt-4o-mini", "gpt-4o"]
        assert call(srv, "hi", model="gpt-4o")[0] == 200
        status, _, body = call(srv, "hi", model="gpt-4o-mni")
        assert status == 404 and body["error"]["code"] == "model_not_found" and "gpt-4o-mni" in body["error"]["message"]


def test_a_mistyped_model_fails_offline_in_one_line():
    import chatmagic
    with FakeOpenAI(models=["gpt-4o-mini"]) as srv:
        with pytest.raises(chatmagic.RunAborted) as info:
            chatmagic.chat_many(["a", "b"], model="gpt-4o-mni", base_url=srv.base_url, progress=False, cache=False)
        assert "\n" not in str(info.value) and "404" in str(info.value) and "gpt-4o-mni" in str(info.value)
        assert srv.stats.by_status[404] >= 1 and srv.stats.by_status[200] == 0


# ---- directives ------------------------------------------------------------

def test_fail_always(srv):
    for _ in range(3):
        status, _, body = call(srv, "x [[fail:500]]")
        assert status == 500 and body["error"]["code"] == "server_error"
    assert srv.stats.attempts["x [[fail:500]]"] == 3


def test_fail_first_n_attempts_then_answer(srv):
    prompt = "retry me [[fail:503:2]]"
    assert [call(srv, prompt)[0] for _ in range(3)] == [503, 503, 200]
    assert answer(call(srv, prompt)[2]) == "echo: retry me"
    # a different prompt text has its own attempt counter
    assert call(srv, "other [[fail:503:2]]")[0] == 503
    srv.reset_stats()
    assert call(srv, prompt)[0] == 503  # reset restarts the script


def test_scripted_429_retry_after_headers(srv):
    status, headers, body = call(srv, "a [[fail:429]]")
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "1000"
    _, headers, _ = call(srv, "b [[fail:429]] [[retry_after:0.25]]")
    assert headers["retry-after-ms"] == "250" and headers["retry-after"] == "1"
    _, headers, _ = call(srv, "c [[fail:429]] [[retry_after:3]]")
    assert headers["retry-after"] == "3"
    _, headers, _ = call(srv, "d [[fail:429]] [[retry_after:none]]")
    assert "retry-after" not in headers and "retry-after-ms" not in headers


def test_code_directive(srv):
    status, _, body = call(srv, "q [[fail:429]][[code:insufficient_quota]]")
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    status, _, body = call(srv, "long [[fail:400]] [[code:context_length_exceeded]]")
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"


def test_stall_first_n_then_fast(srv, waits):
    assert call(srv, "s [[stall:0.3:1]]")[0] == 200 and waits == [0.3]
    assert call(srv, "s [[stall:0.3:1]]")[0] == 200 and waits == [0.3]  # the second attempt is not stalled


def test_stall_exercises_client_timeout_and_frees_slot(srv):
    with pytest.raises(TimeoutError):
        call(srv, "hang [[stall:5]]", timeout=0.2)
    deadline = time.monotonic() + 2
    while srv.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.stats.in_flight == 0  # the server cancelled the abandoned handler


def test_sleep_directive_and_latency_option(srv, waits):
    assert answer(call(srv, "slow [[sleep:0.2]]")[2]) == "echo: slow" and waits == [0.2]
    srv.latency = 0.15
    assert call(srv, "x")[0] == 200 and waits == [0.2, 0.15]


def test_finish_directive(srv):
    _, _, body = call(srv, "cut [[finish:length]]")
    assert body["choices"][0]["finish_reason"] == "length" and answer(body) == "echo: cut"


def test_bad200(srv):
    status, _, body = call(srv, "b [[bad200]]")
    assert status == 200 and "choices" not in body and body["error"]["message"] == "upstream error"
    results = [call(srv, "c [[bad200:1]]")[2] for _ in range(2)]
    assert "choices" not in results[0] and answer(results[1]) == "echo: c"


def test_json_and_badjson(srv):
    _, _, body = call(srv, 'say "hi" [[json]]')
    assert json.loads(answer(body)) == {"echo": 'say "hi"'}
    _, _, body = call(srv, "x [[badjson]]")
    assert answer(body) == "not json {"


# ---- rate limits -----------------------------------------------------------

def burst(srv, n, content="hi", **params):
    return [call(srv, content, **params) for _ in range(n)]


def test_rpm_burst_gets_429_with_openai_headers():
    with FakeOpenAI(rpm=600) as srv:  # 10 requests per 1 s bucket
        results = burst(srv, 15)
        statuses = [r[0] for r in results]
        assert 10 <= statuses.count(200) <= 11 and statuses[:10] == [200] * 10
        first, last = results[0][1], results[-1][1]
        assert first["x-ratelimit-limit-requests"] == "600"
        assert first["x-ratelimit-remaining-requests"] == "9"
        assert first["x-ratelimit-reset-requests"].endswith("ms")  # 1 slot at 10/s ≈ 100ms
        status, headers, body = results[-1]
        assert status == 429 and last["x-ratelimit-remaining-requests"] == "0"
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert body["error"]["type"] == "requests"
        assert body["error"]["message"].startswith("Rate limit reached")
        assert headers["retry-after"] == "1" and 0 < int(headers["retry-after-ms"]) <= 100
        time.sleep(int(headers["retry-after-ms"]) / 1000)
        assert call(srv, "hi")[0] == 200
        assert srv.stats.by_status[429] == statuses.count(429)


def test_quantized_limit_is_enforced_per_second_and_quoted_per_minute():
    with FakeOpenAI(rpm=1200, limit_shape="quantized") as srv:  # 20 a second, quoted as 1200 a minute
        results = burst(srv, 40)
        statuses = [r[0] for r in results]
        assert statuses[:20] == [200] * 20 and 429 in statuses  # a second's worth, then 429s
        first = results[0][1]
        assert first["x-ratelimit-limit-requests"] == "1200"
        remaining = int(first["x-ratelimit-remaining-requests"])
        assert 1130 <= remaining <= 1140  # 19 of 20 left, in the minute's units (a second's refill is 60)
        reset = parse_duration(first["x-ratelimit-reset-requests"])
        assert first["x-ratelimit-reset-requests"].endswith("ms") and 0 < reset <= 0.05  # one 20th of a second
        rejected = results[statuses.index(429)][1]
        assert int(rejected["x-ratelimit-remaining-requests"]) < 60  # less than one request's worth


def test_tpm_limit_counts_prompt_and_max_tokens():
    with FakeOpenAI(tpm=6000) as srv:  # 100 tokens per second
        status, headers, _ = call(srv, "x" * 40, max_tokens=50)  # 11 + 50 tokens
        assert status == 200 and headers["x-ratelimit-remaining-tokens"] == "39"
        assert headers["x-ratelimit-limit-tokens"] == "6000"
        assert "x-ratelimit-limit-requests" not in headers
        status, headers, body = call(srv, "x" * 40, max_tokens=50)
        assert status == 429 and body["error"]["type"] == "tokens"
        assert 150 <= int(headers["retry-after-ms"]) <= 220  # 22 tokens at 100/s


def test_fractional_rate_and_reconfiguring_limits(srv):
    srv.rpm = 30  # 0.5 request per second: one now, then one every 2 s
    assert call(srv, "a")[0] == 200
    status, headers, _ = call(srv, "a")
    assert status == 429 and headers["retry-after"] == "2"
    srv.rpm = None
    assert [r[0] for r in burst(srv, 5)] == [200] * 5


def test_azure_headers():
    with FakeOpenAI(rpm=60, headers="azure") as srv:
        ok, limited = burst(srv, 2)
        assert ok[1]["x-ratelimit-remaining-requests"] == "0"
        assert not any(h.startswith("x-ratelimit-limit") or h.startswith("x-ratelimit-reset")
                       for h in ok[1])
        assert limited[0] == 429 and limited[2]["error"]["code"] == "429"
        assert "retry-after-ms" in limited[1] and "retry-after" in limited[1]


def test_no_headers_mode():
    with FakeOpenAI(rpm=60, headers="none") as srv:
        ok, limited = burst(srv, 2)
        assert limited[0] == 429
        for _, headers, _ in (ok, limited):
            assert not [h for h in headers if h.startswith(("x-ratelimit", "retry-after"))]


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (1, "1s"), (0.02, "20ms"), (0.0205, "20.5ms"), (360, "6m0s"),
    (86.4, "1m26.4s"), (3723.5, "1h2m3.5s"), (0.0000015, "1.5µs"), (7200, "2h0m0s")])
def test_go_duration(seconds, text):
    assert go_duration(seconds) == text


# ---- chaos options, stats, running -----------------------------------------

def test_fail_rate_is_seeded_and_reproducible():
    with FakeOpenAI(fail_rate=0.5, seed=7) as srv:
        first = [r[0] for r in burst(srv, 20)]
        srv.reset_stats()  # reseeds
        assert [r[0] for r in burst(srv, 20)] == first
        assert 3 <= first.count(500) <= 17
        srv.fail_rate = 0.0
        assert call(srv, "hi")[0] == 200


def test_stall_rate():
    with FakeOpenAI(stall_rate=1.0, stall_s=0.25) as srv:
        stalls: list[float] = []

        async def record(seconds: float) -> None:
            stalls.append(seconds)
        srv.sleep = record
        assert call(srv, "hi")[0] == 200 and stalls == [0.25]


def test_peak_in_flight_and_stats():
    with FakeOpenAI(latency=0.3, record_times=True) as srv:
        threads = [threading.Thread(target=call, args=(srv, f"p{i}"),
                                    kwargs={"headers": {"Authorization": f"Bearer k{i % 2}"}})
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        st = srv.stats
        assert st.peak_in_flight == 8 and st.in_flight == 0 and st.requests == 8  # served concurrently
        assert st.by_status == {200: 8} and st.attempts["p3"] == 1
        assert st.auth_headers == {"Bearer k0", "Bearer k1"}
        assert len(st.times) == 8 and st.times == sorted(st.times)
        srv.reset_stats()
        assert srv.stats.requests == 0 and srv.stats.times == []


def test_reset_stats_during_a_request_keeps_in_flight_consistent(srv):
    srv.latency = 0.3
    worker = threading.Thread(target=call, args=(srv, "slow"))
    worker.start()
    deadline = time.monotonic() + 30
    while srv.stats.in_flight == 0 and time.monotonic() < deadline:  # the request is being served
        time.sleep(0.01)
    srv.reset_stats()
    assert srv.stats.in_flight == 1 and srv.stats.requests == 0
    worker.join()
    assert srv.stats.in_flight == 0


def test_rate_limited_requests_count_as_attempts():
    with FakeOpenAI(rpm=60) as srv:
        assert [r[0] for r in burst(srv, 3, "p [[fail:500:2]]")] == [500, 429, 429]
        assert srv.stats.attempts["p [[fail:500:2]]"] == 3
        srv.rpm = None  # the 429s used up the scripted failures
        assert call(srv, "p [[fail:500:2]]")[0] == 200


def test_times_not_recorded_by_default(srv):
    call(srv, "hi")
    assert srv.stats.times is None


def test_astart_on_callers_loop_serves_2000_requests():  # how fast: tests/benchmarks, not here
    async def main():
        srv = await FakeOpenAI().astart()
        sem = asyncio.Semaphore(64)
        async with aiohttp.ClientSession() as session:
            async def one(i):
                async with sem, session.post(srv.base_url + "/chat/completions", json={
                        "model": "m", "messages": [{"role": "user", "content": f"n{i}"}]}) as r:
                    return (await r.json())["choices"][0]["message"]["content"]
            out = await asyncio.gather(*(one(i) for i in range(2000)))
        await srv.astop()
        return srv, out
    srv, out = asyncio.run(main())
    assert out[1234] == "echo: n1234" and srv.stats.requests == 2000


def test_main_runs_in_foreground():
    proc = subprocess.Popen([sys.executable, "-m", "chatmagic.practice.server", "--port", "0", "--rpm", "1200"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        base = line.split()[3]
        assert base.startswith("http://127.0.0.1:") and base.endswith("/v1")
        with urllib.request.urlopen(base.replace("/v1", "/health"), timeout=5) as resp:
            assert resp.status == 200
        _, headers, body = call(types.SimpleNamespace(base_url=base), "cli")
        assert answer(body) == "echo: cli" and headers["x-ratelimit-limit-requests"] == "1200"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
