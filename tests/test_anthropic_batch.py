"""--batch through Anthropic's Message Batches, against the practice Anthropic server on 127.0.0.1:
everything --batch promises (order, duplicates paid once, splitting, --no-wait, cancel, expiry,
re-attach after a killed process with nothing paid twice, the listing, the batch price)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from aiohttp import web

import chatmagic
from chatmagic.batch import admin as batchadmin
from chatmagic.batch import run as batchmod
from chatmagic.settings import resolve

KEY = "sk-ant-batch-test-key"
MODEL = "claude-haiku-4-5"


@pytest.fixture
def srv(anthropic, monkeypatch):
    """The practice Anthropic server, reset; polls 10 ms apart."""
    monkeypatch.setattr(batchmod, "POLL_FIRST", 0.01)
    return anthropic(KEY)


def options(srv, **more):
    return {"provider": "anthropic", "base_url": srv.base_url, "api_key": KEY, "model": MODEL, **more}


def run(srv, prompts, **more):
    return chatmagic.chat_many(prompts, batch=True, progress=False, **options(srv, **more))


def test_round_trip_in_order_with_duplicates_and_a_failed_request(srv):
    prompts = [f"q{i}" for i in range(5)] + ["bad [[fail:400]]", "q2"]
    results = run(srv, prompts, system="be brief", max_tokens=50)
    assert results.texts() == [f"echo: [system=be brief] q{i}" for i in range(5)] + [None, "echo: [system=be brief] q2"]
    assert results[5].status == "error" and results[5].error == "400 invalid_request_error: Scripted failure 400."
    assert results[0].model == MODEL and results[0].finish_reason == "stop" and results[0].prompt_tokens
    assert srv.batches.stats["batches"] == 1 and srv.batches.stats["requests"] == 6  # q2 paid once
    (sent,) = srv.batches.submitted.values()
    assert sent[2]["params"] == {"model": MODEL, "max_tokens": 50, "system": "be brief",
                                 "messages": [{"role": "user", "content": "q2"}]}
    assert sent[2]["custom_id"].startswith("2-") and len(sent[2]["custom_id"]) <= 64
    # the answers went into the cache under the interactive keys: asking again sends nothing
    again = chatmagic.chat_many(prompts[:5], progress=False, **options(srv, system="be brief", max_tokens=50))
    assert all(r.cached for r in again) and srv.stats.requests == 0


def test_split_at_the_request_limit(srv, monkeypatch):
    monkeypatch.setattr(batchmod, "MAX_REQUESTS", 3)
    prompts = [f"p{i}" for i in range(7)]
    results = run(srv, prompts)
    assert results.texts() == [f"echo: {p}" for p in prompts]
    assert [len(r) for r in srv.batches.submitted.values()] == [3, 3, 1]


def test_split_at_the_size_limit(srv, monkeypatch):
    from chatmagic.batch.anthropic import request_item
    one = len(request_item("0-" + "a" * 40, {"model": MODEL, "max_tokens": 4096,
                                             "messages": [{"role": "user", "content": "p0"}]}))
    monkeypatch.setattr(batchmod, "MAX_BYTES", 2 * one + 10)  # 2 requests a batch
    results = run(srv, [f"p{i}" for i in range(5)])
    assert results.texts() == [f"echo: p{i}" for i in range(5)]
    assert [len(r) for r in srv.batches.submitted.values()] == [2, 2, 1]


def test_the_limits_are_anthropics():
    from chatmagic.batch.anthropic import DIALECT
    assert (DIALECT.max_requests, DIALECT.max_bytes + len('{"requests":[]}')) == (100_000, 256_000_000)
    settings = resolve({"provider": "anthropic", "base_url": "http://127.0.0.1:9", "model": MODEL})
    note = batchmod.dry_run_note(250_000, 1, settings)
    assert "3 files of at most 100,000 requests" in note


def test_no_wait_then_collect(srv):
    srv.batches.pace = 0.05
    results = run(srv, ["x", "y", "z"], wait=False)
    assert [r.status for r in results] == ["pending"] * 3
    assert "3 pending in batch msgbatch_fake0001" in results.summary()
    results = run(srv, ["x", "y", "z"])
    assert results.texts() == ["echo: x", "echo: y", "echo: z"]
    assert srv.batches.stats["batches"] == 1  # re-attached, not submitted again


def test_expired_requests_are_recorded_and_a_rerun_sends_only_them(srv):
    srv.batches.expire_after = 2
    prompts = [f"e{i}" for i in range(5)]
    results = run(srv, prompts)
    assert sum(r.ok for r in results) == 2
    assert sorted(r.error.split(":")[0] for r in results if not r.ok) == ["batch_expired"] * 3
    assert "3 failed (3 batch_expired)" in results.summary()
    srv.batches.expire_after = None
    results = run(srv, prompts)
    assert results.texts() == [f"echo: {p}" for p in prompts]
    assert srv.batches.stats["requests"] == 5 + 3


def test_cancel_keeps_finished_answers_and_a_rerun_sends_the_rest(srv):
    srv.batches.pace = 2.0  # room between the first answer and the cancel on a loaded machine
    settings = resolve(options(srv))
    run(srv, ["c1", "c2", "c3", "c4"], wait=False)
    batch = srv.batches.batches["msgbatch_fake0001"]
    deadline = time.monotonic() + 30
    while batch["request_counts"]["succeeded"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    line = batchadmin.cancel_batch(settings, "msgbatch_fake0001")
    assert line.startswith("batch msgbatch_fake0001: cancelling")
    results = run(srv, ["c1", "c2", "c3", "c4"])
    done = sum(r.ok for r in results)
    assert 1 <= done < 4 and results[3].error.startswith("batch_cancelled: not run")
    srv.batches.pace = 0.0
    results = run(srv, ["c1", "c2", "c3", "c4"])
    assert results.texts() == ["echo: c1", "echo: c2", "echo: c3", "echo: c4"]
    assert srv.batches.stats["requests"] == 4 + (4 - done)
    listing = batchadmin.list_batches(settings)
    assert "msgbatch_fake0001" in listing and "cancelled" in listing and "msgbatch_fake0002" in listing


def test_schema_answers_are_checked_as_in_an_interactive_run(srv):
    results = run(srv, ["fine", "off [[badschema]]"], schema="label: yes|no, n int")
    assert results[0].data["label"] in ("yes", "no") and isinstance(results[0].data["n"], int)
    assert results[1].status == "error" and "schema_mismatch" in results[1].error
    params = next(iter(srv.batches.submitted.values()))[0]["params"]
    assert params["tool_choice"]["type"] == "tool" and params["tools"][0]["input_schema"]["required"]


def test_summary_shows_the_batch_price(srv):
    results = run(srv, ["price me"], prices={MODEL: [1000.0, 5000.0]}, cache=False)
    tokens = results[0].prompt_tokens * 1000.0 + results[0].completion_tokens * 5000.0
    assert results.cost == pytest.approx(tokens / 1e6 / 2)
    assert f"${tokens / 1e6 / 2:.4f} (batch price)" in results.summary()


def test_a_killed_process_then_a_rerun_reattaches_with_nothing_submitted_again(srv, stored_batches):
    srv.batches.pace = 0.25  # 5 s for 20 requests: the kill lands while the client waits, also on a loaded machine
    prompts = [f"k{i}" for i in range(20)]
    script = ("import chatmagic\n"
              f"chatmagic.chat_many({prompts!r}, provider='anthropic', base_url={srv.base_url!r}, "
              f"api_key={KEY!r}, model={MODEL!r}, batch=True, progress=False)\n")
    child = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    deadline = time.monotonic() + 60
    try:
        # read-only polls: a writable store opened and closed every 20 ms (its schema, the WAL's
        # checkpoint) held the child's write back for seconds on a loaded machine
        while not stored_batches():  # recorded: now it waits
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.02)
        assert srv.batches.batches["msgbatch_fake0001"]["processing_status"] == "in_progress"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    srv.batches.pace = 0.0
    results = run(srv, prompts)
    assert results.texts() == [f"echo: {p}" for p in prompts]
    assert srv.batches.stats["batches"] == 1 and srv.batches.stats["requests"] == 20  # 0 new submissions


def test_a_results_url_on_another_host_is_not_followed(srv, monkeypatch):
    """The key goes with the results request: a results_url elsewhere is replaced by the path
    on the server that was asked."""
    real = srv.batches._process

    async def elsewhere(batch, requests):
        await real(batch, requests)
        batch["results_url"] = "http://192.0.2.1:9/v1/messages/batches/x/results"  # TEST-NET: never reached
    monkeypatch.setattr(srv.batches, "_process", elsewhere)
    results = run(srv, ["r1"], timeout=5)
    assert results.texts() == ["echo: r1"]


def create_directly(srv, requests):
    import json
    import urllib.request
    req = urllib.request.Request(srv.base_url + "/messages/batches", data=json.dumps({"requests": requests}).encode(),
                                 headers={"x-api-key": KEY, "anthropic-version": "2023-06-01",
                                          "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _intents(tmp_path):
    import sqlite3
    path = tmp_path / "cache" / "answers.sqlite3"
    return sqlite3.connect(path).execute("SELECT count(*) FROM batches WHERE id LIKE 'submitting:%'").fetchone()[0]


def test_a_batch_created_but_never_recorded_is_found_again_by_its_intent(srv, monkeypatch, tmp_path):
    """A Message Batch has no metadata: when the answer to the POST is lost after the server made
    the batch (as when the kernel dies there), the intent stored before it leads the next run
    to that batch instead of paying again."""
    from chatmagic.batch.anthropic import AnthropicBatches
    from chatmagic.errors import RequestError, RunAborted
    real = AnthropicBatches.create

    async def lost(self, client, path, part):
        await real(self, client, path, part)
        raise RequestError("connection reset by peer", code="connection")
    srv.batches.pace = 0.02
    other = [{"custom_id": "other", "params": {"model": MODEL, "max_tokens": 5,
                                               "messages": [{"role": "user", "content": "not ours"}]}}]
    create_directly(srv, other)  # someone else's batch, of another size, created before
    with monkeypatch.context() as m:
        m.setattr(AnthropicBatches, "create", lost)
        with pytest.raises(RunAborted):
            run(srv, ["m1", "m2", "m3"], wait=False)
    assert srv.batches.stats["batches"] == 2 and _intents(tmp_path) == 1
    results = run(srv, ["m1", "m2", "m3"])
    assert results.texts() == ["echo: m1", "echo: m2", "echo: m3"]
    assert srv.batches.stats["batches"] == 2 and srv.batches.stats["requests"] == 1 + 3  # not paid again
    assert _intents(tmp_path) == 0  # recorded now: the intent is gone


def test_a_refused_batch_leaves_no_intent(srv, monkeypatch, tmp_path):
    from chatmagic.batch.anthropic import AnthropicBatches
    from chatmagic.errors import RequestError, RunAborted

    async def refused(self, client, path, part):
        raise RequestError("requests: too many", status=400, code="invalid_request_error")
    with monkeypatch.context() as m:
        m.setattr(AnthropicBatches, "create", refused)
        with pytest.raises(RunAborted):
            run(srv, ["n1"])
    assert _intents(tmp_path) == 0
    assert run(srv, ["n1"]).texts() == ["echo: n1"] and srv.batches.stats["batches"] == 1


def test_an_image_row_goes_into_the_batch_as_an_image_block(srv):
    from pathlib import Path
    image = sorted((Path(__file__).parent.parent / "notebooks" / "data" / "images").glob("*.png"))[0]
    results = run(srv, ["What is this?"], images=[str(image)])
    assert "image/png" in results.texts()[0]
    (sent,) = srv.batches.submitted.values()
    text, block = sent[0]["params"]["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert block["type"] == "image" and block["source"]["type"] == "base64"
    assert block["source"]["media_type"] == "image/png"


def test_a_batch_id_that_could_leave_its_path_is_refused_in_one_line(srv, monkeypatch):
    real = srv.batches._create

    async def odd_id(request):
        answer = await real(request)
        body = json.loads(answer.body)
        body["id"] = "../../v1/messages"
        return web.json_response(body)
    monkeypatch.setattr(srv.batches, "_create", odd_id)
    from chatmagic.errors import RunAborted
    with pytest.raises(RunAborted) as caught:
        run(srv, ["z1"])
    assert "no usable id" in str(caught.value) and "\n" not in str(caught.value)


def test_a_status_answer_naming_another_batch_still_files_the_results_under_the_one_asked(srv, monkeypatch):
    real = srv.batches._get

    async def renamed(request):
        answer = await real(request)
        body = json.loads(answer.body)
        return web.json_response({**body, "id": "msgbatch_someone_else"})
    monkeypatch.setattr(srv.batches, "_get", renamed)
    assert run(srv, ["y1", "y2"]).texts() == ["echo: y1", "echo: y2"]


def test_cancel_finds_the_provider_a_stored_batch_was_sent_to(srv, monkeypatch):
    """%chatmany_batches cancel ID with OpenAI the default: a Message Batch this cache sent to
    Anthropic (-m anthropic:...) is cancelled on Anthropic's server."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.base_url.removesuffix("/v1"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    srv.batches.pace = 1.0
    chatmagic.chat_many(["w1", "w2", "w3"], model=f"anthropic:{MODEL}", batch=True, wait=False, progress=False)
    default = resolve({"base_url": "http://127.0.0.1:9/v1"})  # the session's default: an OpenAI-style server
    line = batchadmin.cancel_batch(default, "msgbatch_fake0001")
    assert line.startswith("batch msgbatch_fake0001: cancelling")
    assert srv.batches.batches["msgbatch_fake0001"]["cancel_initiated_at"]
