"""The engine against a real OpenAI-compatible server on 127.0.0.1."""

import asyncio
import logging
import re

import pytest

import chatmagic
from chatmagic import ConfigError, RunAborted
from chatmagic.core.timeline import OUTCOMES


def run(server, prompts, **options):
    return chatmagic.chat_many(prompts, base_url=server.base_url, progress=False, **options)


def test_answers_in_prompt_order_with_usage(server):
    prompts = [f"prompt {i} [[sleep:{0.05 * (i % 3)}]]" for i in range(30)]
    results = run(server, prompts, concurrency=10)
    assert results.texts() == [f"echo: prompt {i}" for i in range(30)]
    r = results[0]
    assert (r.index, r.status, r.attempts, r.finish_reason, r.model) == (0, "ok", 1, "stop", "gpt-4o-mini")
    assert r.prompt_tokens > 0 and r.completion_tokens > 0 and r.latency_s >= 0


def test_in_flight_never_exceeds_the_cap(server):
    server.latency = 0.03
    run(server, [f"p{i}" for i in range(60)], concurrency=7)
    assert server.stats.peak_in_flight == 7


def test_concurrency_above_aiohttp_default_pool_of_100(server):
    server.latency = 0.5  # long enough for all 150 connections to open, even on a busy machine
    run(server, [f"p{i}" for i in range(400)], concurrency=150)
    assert server.stats.peak_in_flight == 150


def test_system_temperature_max_tokens_and_params_reach_the_server(server):
    results = run(server, ["hi"], system="be brief", temperature=0.2, max_tokens=7,
                  params={"seed": 3, "stop": ["x"]}, model="m1")
    assert results[0].text == "echo: [system=be brief] hi"
    assert results[0].model == "m1"
    assert server.stats.params == {"model": "m1", "temperature": 0.2, "max_tokens": 7, "seed": 3, "stop": ["x"]}


def test_429_with_retry_after_is_waited_out(server):
    from chatmagic.core.engine import Run
    from chatmagic.settings import resolve
    slept = []

    async def sleep(seconds):  # the retry's wait, recorded instead of slept
        slept.append(seconds)
    run_ = Run(["limited [[fail:429:1]] [[retry_after:0.4]]"],
               resolve({"base_url": server.base_url, "progress": False}), sleep=sleep)
    results = asyncio.run(run_.run())
    assert results[0].status == "ok" and results[0].attempts == 2
    assert slept == [pytest.approx(0.4, abs=0.05)]


def test_stalled_request_is_cut_and_retried(server):
    results = run(server, ["slow [[stall:10:1]]"], timeout=0.3)
    assert results[0].status == "ok" and results[0].attempts == 2
    assert server.stats.attempts["slow [[stall:10:1]]"] == 2


def test_timeout_is_recorded_when_retries_run_out(server):
    results = run(server, ["slow [[stall:10]]"], timeout=0.2, retries=1)
    assert results[0].status == "error" and results[0].error.startswith("timeout")
    assert results.texts() == [None]


@pytest.mark.timeout(30)
def test_a_request_the_server_holds_with_blank_lines_is_waited_for_not_cut_and_said(server):
    # DeepSeek under load: the 200 at once, then a blank line every 0.1 s for 1 s, then the answer;
    # each blank line gives the 0.3 s timeout back, so nothing is cut (nor sent, nor paid, twice)
    server.queue_s = 1.0
    results = run(server, ["a", "b", "c"], timeout=0.3, retries=3)
    assert [(r.status, r.text, r.attempts) for r in results] == [("ok", f"echo: {p}", 1) for p in "abc"]
    assert server.stats.requests == 3
    said = re.search(r"the server held 3 requests with blank lines \(queued\) past the 0.3s timeout, the longest "
                     r"([\d.]+) s \(waited at most 10 min more\)$", results.summary())
    assert said and 1.0 <= float(said[1]) < 5, results.summary()  # 1 s of blank lines, then the answer
    # a stall sends no blank line: cut at the timeout as before
    server.queue_s = 0.0
    assert run(server, ["slow [[stall:10:1]]"], timeout=0.3)[0].attempts == 2


@pytest.mark.timeout(30)
def test_blank_lines_hold_a_request_only_up_to_the_cap(server, monkeypatch):
    monkeypatch.setattr("chatmagic.transport.client.QUEUE_MAX", 0.4)
    results = run(server, ["held [[queue:5]]"], timeout=0.2, retries=1)  # each 0.2 + 0.4 s at most
    assert results[0].status == "error" and results[0].attempts == 2
    said = re.fullmatch(r"timeout: no answer within 0.2s after the server's last blank line "
                        r"\(it held the request ([\d.]+) s\)", results[0].error)
    assert said and 0.6 <= float(said[1]) < 5, results[0].error  # cut at 0.2 + 0.4 s, long before the 5 s


def test_500_then_200_succeeds(server):
    results = run(server, ["flaky [[fail:500:2]]"])
    assert (results[0].status, results[0].attempts, results.retries) == ("ok", 3, 2)


def test_200_that_is_not_a_completion_is_retried(server):
    results = run(server, ["odd [[bad200:1]]"])
    assert (results[0].status, results[0].attempts) == ("ok", 2)


def test_400_fails_one_prompt_without_retry(server):
    results = run(server, ["fine", "too long [[fail:400]] [[code:context_length_exceeded]]", "also fine"])
    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert results[1].attempts == 1 and results[1].error.startswith("400 context_length_exceeded")
    assert results.texts() == ["echo: fine", None, "echo: also fine"]
    assert "1 failed (1 400 context_length_exceeded)" in results.summary()


def test_retries_zero_means_one_attempt(server):
    results = run(server, ["flaky [[fail:500:1]]"], retries=0)
    assert (results[0].status, results[0].attempts) == ("error", 1)


def test_401_stops_the_run_after_requests_in_flight(server):
    server.latency = 0.1
    prompts = [f"p{i}" for i in range(3)] + ["bad key [[fail:401]]"] + [f"q{i}" for i in range(40)]
    with pytest.raises(RunAborted, match="401") as info:
        run(server, prompts, concurrency=4)
    results = info.value.results
    sent = server.stats.requests
    assert sent < 12  # the rest were never sent
    assert [r.status for r in results[:3]] == ["ok"] * 3  # in flight when the 401 came: kept
    assert results[3].status == "error" and results[3].attempts == 1
    assert results[-1].status == "cancelled" and results[-1].error.startswith("not sent")
    assert sum(r.attempts for r in results) == sent


@pytest.mark.parametrize("directive, status", [
    ("[[fail:402]]", 402), ("[[fail:403]]", 403), ("[[fail:429]] [[code:insufficient_quota]]", 429)])
def test_hopeless_errors_stop_the_run_without_retry(server, directive, status):
    with pytest.raises(RunAborted) as info:
        run(server, [f"x {directive}"] + ["y"] * 5, concurrency=1)
    assert info.value.status == status and server.stats.attempts[f"x {directive}"] == 1


def test_unknown_model_stops_the_run(server):
    server.unknown_models = {"nope"}
    with pytest.raises(RunAborted, match="404") as info:
        run(server, ["a", "b"], model="nope", concurrency=1)
    assert info.value.status == 404


def test_flagged_answers_are_ok_but_reported(server):
    results = run(server, ["cut [[finish:length]]", "fine"])
    assert results[0].ok and results[0].flagged and results[0].finish_reason == "length"
    assert "1 cut by length" in results.summary()


def test_retries_are_logged_not_printed(server, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="chatmagic"):
        run(server, ["flaky [[fail:503:1]]"])
    assert any("retry 1" in m and "503" in m for m in caplog.messages)
    assert capsys.readouterr().out == ""


def test_api_key_is_sent_but_never_shown(server, monkeypatch, caplog):
    key = "sk-test-very-secret"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with caplog.at_level(logging.DEBUG, logger="chatmagic"):
        results = run(server, ["ok", "flaky [[fail:500:1]]", "bad [[fail:400]]"])
    assert server.stats.auth_headers == {f"Bearer {key}"}
    shown = repr(results) + repr(list(results)) + results.summary() + caplog.text
    assert key not in shown


def test_async_api_runs_on_the_callers_loop(server):
    async def main():
        return await chatmagic.achat_many(["a", "b"], base_url=server.base_url, progress=False)
    assert asyncio.run(main()).texts() == ["echo: a", "echo: b"]


def test_chat_many_works_inside_a_running_loop(server):
    async def main():  # as in a notebook cell that calls the blocking API
        return run(server, ["inside"])
    assert asyncio.run(main()).texts() == ["echo: inside"]


def test_cancel_keeps_finished_answers(server, cancelled_run):
    """Cancelled while the slow answer (5 s) is on its way: not waited for, the fast one kept."""
    results = cancelled_run(["fast", "slow [[sleep:5]]"],
                            until=lambda run: run.results[0].ok and server.stats.requests == 2)
    assert [r.status for r in results] == ["ok", "cancelled"]
    assert [OUTCOMES[o] for o in results.timeline.outcomes] == ["ok", "cancelled"]
    assert results.texts() == ["echo: fast", None]


@pytest.mark.parametrize("prompts, message", [
    ([], "no prompts"), ("one string", "not one string"), (["a", 3], "must be a string")])
def test_bad_prompts(prompts, message, server):
    with pytest.raises(ConfigError, match=message):
        run(server, prompts)
    assert server.stats.requests == 0


def test_connection_refused_is_retried_then_recorded():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = chatmagic.chat_many(["x"], base_url=f"http://127.0.0.1:{port}/v1", retries=1,
                                  progress=False, max_retry_wait=0.1)
    assert results[0].status == "error" and results[0].error.startswith("connection")
    assert results[0].attempts == 2


def test_run_collaborators_are_passed_in(server, tmp_path):
    """A client factory, a shared cache and a sleep: the run uses them, and leaves the cache open."""
    from chatmagic.core.cache import Cache
    from chatmagic.core.engine import Run
    from chatmagic.settings import resolve
    from chatmagic.transport.client import Client

    made, slept = [], []

    def client(settings, **kwargs):
        made.append(kwargs)
        return Client(settings, **kwargs)

    async def sleep(seconds):
        slept.append(seconds)

    cache = Cache(tmp_path / "shared.sqlite3")
    settings = resolve({"base_url": server.base_url, "progress": False, "concurrency": 3})
    run_ = Run(["a", "b [[fail:500:1]]"], settings, client=client, cache=cache, sleep=sleep)
    assert asyncio.run(run_.run()).texts() == ["echo: a", "echo: b"]
    assert made == [{"limit": 3}] and len(slept) == 1  # one retry after the 500, waited through sleep
    assert not cache.closed and len(cache.get_many(run_.request_keys())) == 2  # its owner closes it
    cache.close()


def test_few_tasks_wait_for_a_slot_yet_every_slot_is_used(server, monkeypatch):
    """Tasks made ahead of a free slot are capped (``queued_max``): each costs the garbage
    collector; the places beyond are for prompts waiting out a backoff. The cap never idles a slot."""
    from chatmagic.core import engine
    from chatmagic.settings import resolve

    monkeypatch.setattr(engine, "queued_max", lambda concurrency: 2)
    server.latency = 0.02
    settings = resolve({"base_url": server.base_url, "progress": False, "concurrency": 4, "cache": False})
    run_ = engine.Run([f"p{i}" for i in range(40)], settings)
    most = [0]

    async def main() -> list[str | None]:
        going = asyncio.create_task(run_.run())
        while not going.done():  # every turn of the loop: the tasks made that hold no slot
            if run_._slots is not None:
                most[0] = max(most[0], run_._slots.queued + run_._ahead)
            await asyncio.sleep(0)
        return (await going).texts()
    assert asyncio.run(main()) == [f"echo: p{i}" for i in range(40)]
    assert 1 <= most[0] <= 2 and server.stats.peak_in_flight == 4
