"""--batch through the practice server's Files and Batches endpoints, in this process.

The same scenarios in real kernels are in test_batch_kernel.py.
"""

import asyncio
import json
import sqlite3
from functools import partial

import pytest

import chatmagic
from chatmagic.batch import admin as batchadmin
from chatmagic.batch import run as batchmod
from chatmagic.batch.store import BatchStore
from chatmagic.core.cache import request_keys
from chatmagic.core.engine import Run
from chatmagic.errors import RunAborted
from chatmagic.providers.openai import DIALECT
from chatmagic.settings import resolve


def run(server, prompts, **options):
    return chatmagic.chat_many(prompts, base_url=server.base_url, batch=True, progress=False, **options)


def test_round_trip_in_order_with_duplicates_and_a_failed_line(bserver):
    prompts = [f"q{i}" for i in range(6)] + ["bad [[fail:400]]", "q2"]
    results = run(bserver, prompts)
    assert results.texts() == [f"echo: q{i}" for i in range(6)] + [None, "echo: q2"]
    assert results[6].status == "error" and results[6].error.startswith("400 invalid_request_error: Scripted")
    assert results[0].prompt_tokens and results[0].model == "gpt-4o-mini" and results[0].finish_reason == "stop"
    assert dict(bserver.batch.stats) == {"files": 1, "batches": 1, "requests": 7, "answered": 7}  # q2 paid once
    sent = [json.loads(line) for line in bserver.batch.contents["file-fake1"].splitlines()]
    keys = request_keys(resolve({"base_url": bserver.base_url}).url,
                        partial(DIALECT.body, {"model": "gpt-4o-mini", "messages": []}), prompts)
    assert sent[2] == {"custom_id": f"2-{keys[2][:40]}", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "q2"}]}}
    assert "1 failed (1 400 invalid_request_error)" in results.summary()


def test_cached_prompts_are_not_submitted(bserver):
    run(bserver, ["a", "b"])
    results = run(bserver, ["a", "b", "c"])
    assert results.texts() == ["echo: a", "echo: b", "echo: c"]
    assert bserver.batch.stats["requests"] == 3 and bserver.batch.stats["batches"] == 2
    assert "(2 from cache)" in results.summary()
    run(bserver, ["a", "b", "c"])
    assert bserver.batch.stats["batches"] == 2  # all cached: nothing uploaded at all
    assert bserver.batch.stats["files"] == 2


@pytest.mark.parametrize("limit", ["requests", "bytes"])
def test_split_over_the_file_limits(bserver, monkeypatch, limit):
    if limit == "requests":
        monkeypatch.setattr(batchmod, "MAX_REQUESTS", 3)
    else:
        monkeypatch.setattr(batchmod, "MAX_BYTES", 400)  # a line here is ~190 bytes: 2 per file
    prompts = [f"p{i}" for i in range(7)]
    results = run(bserver, prompts)
    assert results.texts() == [f"echo: {p}" for p in prompts]
    sizes = [b["request_counts"]["total"] for b in bserver.batch.batches.values()]
    assert sizes == ([3, 3, 1] if limit == "requests" else [2, 2, 2, 1])
    inputs = [bserver.batch.contents[b["input_file_id"]] for b in bserver.batch.batches.values()]
    assert b"".join(inputs).count(b"\n") == 7
    if limit == "bytes":
        assert max(len(c) for c in inputs) <= 400


def test_no_wait_then_collect(bserver):
    bserver.batch.pace = 0.05
    results = run(bserver, ["x", "y", "z"], wait=False)
    assert [r.status for r in results] == ["pending"] * 3 and results.texts() == [None] * 3
    assert "3 pending in batch batch_fake1 (run again to collect" in results.summary()
    results = run(bserver, ["x", "y", "z"])
    assert results.texts() == ["echo: x", "echo: y", "echo: z"]
    assert bserver.batch.stats["batches"] == 1  # re-attached, not submitted again


def test_interrupt_leaves_the_batch_running_and_a_rerun_collects(bserver, stored_batches):
    bserver.batch.pace = 0.5  # 1.5 s: still running when the test looks, on a loaded machine

    async def interrupted():
        r = Run(["i1", "i2", "i3"], resolve({"base_url": bserver.base_url, "batch": True, "progress": False}))
        task = asyncio.ensure_future(batchmod.send(r))
        while not stored_batches():  # submitted and remembered: the run is waiting on it
            assert not task.done()
            await asyncio.sleep(0.01)
        task.cancel()
        assert isinstance((await asyncio.gather(task, return_exceptions=True))[0], asyncio.CancelledError)
        return r.results
    results = asyncio.run(interrupted())
    assert [r.status for r in results] == ["pending"] * 3 and results.batch_ids == ["batch_fake1"]
    assert bserver.batch.batches["batch_fake1"]["status"] in ("validating", "in_progress")
    assert "%chatmany_batches cancel batch_fake1" in results.summary()
    results = run(bserver, ["i1", "i2", "i3"])
    assert results.texts() == ["echo: i1", "echo: i2", "echo: i3"]
    assert bserver.batch.stats["batches"] == 1


def test_expired_batch_keeps_what_finished_and_a_rerun_sends_only_the_rest(bserver):
    bserver.batch.expire_after = 2
    prompts = [f"e{i}" for i in range(5)]
    results = run(bserver, prompts)
    assert results.texts()[:2] == ["echo: e0", "echo: e1"] and results.texts()[2:] == [None] * 3
    assert all(r.error.startswith("batch_expired: ") for r in results[2:])
    assert "3 failed (3 batch_expired)" in results.summary()
    bserver.batch.expire_after = None
    results = run(bserver, prompts)
    assert results.texts() == [f"echo: {p}" for p in prompts]
    assert bserver.batch.stats["requests"] == 5 + 3  # only the three that had not run


def test_validation_failure_is_one_line_and_nothing_is_lost(bserver):
    bserver.batch.invalid = "model gpt-x is not supported by the Batch API"
    with pytest.raises(RunAborted) as caught:
        run(bserver, ["v1", "v2"])
    message = str(caught.value)
    assert "\n" not in message and "batch batch_fake1 failed: line 1: model gpt-x is not supported" in message
    assert [r.status for r in caught.value.results] == ["error", "error"]
    assert caught.value.results[0].error.startswith("batch_failed: line 1: model gpt-x")


def test_cancel_keeps_finished_answers_and_rerun_sends_the_rest(bserver):
    bserver.batch.pace = 1.0  # room between the first answer and the cancel on a loaded machine
    settings = resolve({"base_url": bserver.base_url})
    run(bserver, ["c1", "c2", "c3", "c4"], wait=False)
    while bserver.batch.batches["batch_fake1"]["request_counts"]["completed"] < 1:
        asyncio.run(asyncio.sleep(0.02))
    line = batchadmin.cancel_batch(settings, "batch_fake1")
    assert line.startswith("batch batch_fake1: cancelling")
    results = run(bserver, ["c1", "c2", "c3", "c4"])
    assert results.texts()[0] == "echo: c1" and results[3].error.startswith("batch_cancelled")
    done = sum(r.ok for r in results)
    bserver.batch.pace = 0.0
    results = run(bserver, ["c1", "c2", "c3", "c4"])
    assert results.texts() == ["echo: c1", "echo: c2", "echo: c3", "echo: c4"]
    assert bserver.batch.stats["requests"] == 4 + (4 - done)
    listing = batchadmin.list_batches(settings)
    assert "batch_fake1" in listing and "cancelled" in listing and "batch_fake2" in listing


def test_json_and_system_go_into_each_line(bserver):
    results = run(bserver, ["j [[json]]"], json=True, system="be brief")
    assert results.values() == [{"echo": "j"}]
    body = json.loads(bserver.batch.contents["file-fake1"])["body"]
    assert body["response_format"] == {"type": "json_object"} and body["messages"][0]["role"] == "system"


def test_schema_answers_are_checked_as_in_an_interactive_run(bserver):
    results = run(bserver, ["fine", "off [[badschema]]"], schema="label: yes|no, n int")
    assert results[0].data["label"] in ("yes", "no") and isinstance(results[0].data["n"], int)
    assert results[1].status == "error" and results[1].error.startswith("200 schema_mismatch: ")
    assert results[1].text == '{"not_in_schema": "off"}'
    body = json.loads(bserver.batch.contents["file-fake1"].splitlines()[0])["body"]
    assert body["response_format"]["json_schema"]["strict"] is True


def test_summary_shows_the_batch_price(bserver):
    results = run(bserver, ["price me"], prices={"gpt-4o-mini": [1000.0, 2000.0]}, cache=False)
    tokens = results[0].prompt_tokens * 1000.0 + results[0].completion_tokens * 2000.0
    assert results[0].cost == pytest.approx(tokens / 1e6 / 2) and results.cost == results[0].cost
    assert f"${tokens / 1e6 / 2:.4f} (batch price)" in results.summary()
    own = {"gpt-4o-mini": [1000.0, 2000.0], "gpt-4o-mini@batch": [100.0, 200.0]}
    results = run(bserver, ["price me"], prices=own, cache=False)
    assert f"${tokens / 1e7:.4f} (batch price)" in results.summary()


def test_store_holds_ids_and_hashes_not_prompts(bserver, tmp_path):
    run(bserver, ["a secret prompt"])
    path = tmp_path / "cache" / "answers.sqlite3"
    assert bserver.base_url.encode() not in path.read_bytes()
    rows = sqlite3.connect(path).execute("SELECT * FROM batches").fetchall()
    assert len(rows) == 1 and not any(b"secret" in (v if isinstance(v, bytes) else str(v).encode()) for v in rows[0])
    with BatchStore(path) as store:
        [row] = store.listing()
    assert (row.id, row.status, row.completed, row.total, row.collected) == ("batch_fake1", "completed", 1, 1, True)
    assert sqlite3.connect(path).execute("SELECT count(*) FROM answers").fetchone()[0] == 1


def test_progress_shows_the_batch_status_and_counts(bserver, capsys, monkeypatch):
    from chatmagic.core import progress
    monkeypatch.setattr(progress, "_widgets", lambda: False)  # text even if ipykernel was imported
    chatmagic.chat_many(["p1", "p2"], base_url=bserver.base_url, batch=True)
    err = capsys.readouterr().err
    assert "batch gpt-4o-mini" in err and "2/2" in err and "completed" in err


def test_no_wait_or_batch_must_be_booleans():
    with pytest.raises(chatmagic.ConfigError, match="wait must be True or False"):
        resolve({"base_url": "http://127.0.0.1:1/v1", "wait": "no"})


def test_cancelling_an_unknown_batch_is_one_line_from_the_server(bserver):
    settings = resolve({"base_url": bserver.base_url, "api_key": "sk-secret-key"})
    with pytest.raises(chatmagic.RequestError) as caught:
        batchadmin.cancel_batch(settings, "batch_nope")
    assert str(caught.value) == "404 invalid_request_error: No such batch: batch_nope"


def test_a_server_error_while_checking_is_retried_at_the_next_check(bserver, monkeypatch):
    bserver.batch.pace = 0.05
    real = bserver.batch._get
    calls = []

    async def flaky(request):
        calls.append(1)
        if len(calls) == 2:
            from aiohttp import web
            return web.json_response({"error": {"message": "busy", "code": None}}, status=503)
        return await real(request)
    monkeypatch.setattr(bserver.batch, "_get", flaky)
    results = run(bserver, ["f1", "f2"])
    assert results.texts() == ["echo: f1", "echo: f2"] and len(calls) > 2


def test_a_failed_upload_stops_the_run_in_one_line_and_nothing_is_pending(bserver, monkeypatch):
    async def refuse(request):
        from aiohttp import web
        return web.json_response({"error": {"message": "storage full", "code": None}}, status=400)
    monkeypatch.setattr(bserver.batch, "_upload", refuse)
    with pytest.raises(RunAborted, match="400: storage full") as caught:
        run(bserver, ["u1"])
    record = caught.value.results[0]
    assert record.status == "cancelled" and record.error == "not submitted: 400: storage full"


def test_the_magic_with_two_models_and_a_dry_run(bserver, capsys):
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext chatmagic")
    try:
        ip.run_cell(f"%%chatmany -q --batch --dry-run -m a,b --base-url {bserver.base_url}\nx1\nx2")
        out = capsys.readouterr().out
        assert "--batch: through the Batch API, 1 file of at most 50,000 requests per model (2 models)" in out
        assert not bserver.batch.batches
        ip.run_cell(f"%%chatmany -q --batch -m a,b -o both --base-url {bserver.base_url}\nx1\nx2")
        assert ip.user_ns["both"] == [{"a": "echo: x1", "b": "echo: x1"}, {"a": "echo: x2", "b": "echo: x2"}]
        assert bserver.batch.stats["batches"] == 2
    finally:
        ip.run_cell("%unload_ext chatmagic")


def test_a_batch_the_server_forgot_is_recorded_and_the_next_run_submits_again(bserver):
    run(bserver, ["g1", "g2"], wait=False)
    bserver.batch.reset()  # a restarted practice server knows no batches
    results = run(bserver, ["g1", "g2"])
    assert [r.error for r in results] == ["batch_not_found: the server does not know batch batch_fake1; "
                                          "run again to submit"] * 2
    results = run(bserver, ["g1", "g2"])
    assert results.texts() == ["echo: g1", "echo: g2"] and bserver.batch.stats["batches"] == 1


def test_status_checks_back_off_from_a_few_seconds_to_a_minute():
    from itertools import islice
    assert list(islice(batchmod.poll_delays(3.0, 60.0), 10)) == [3.0, 4.5, 6.75, 10.125, 15.1875, 22.78125,
                                                                 34.171875, 51.2578125, 60.0, 60.0]
    assert max(islice(batchmod.poll_delays(0.01, 60.0), 50)) == 0.2  # a test's interval stays small



def test_a_batch_created_but_never_recorded_is_found_by_its_metadata(bserver, monkeypatch):
    """A kernel killed between the server creating a batch and the store recording it (here:
    no store at all for the first run) must not pay for the same requests again."""
    bserver.batch.pace = 0.02
    with monkeypatch.context() as m:
        m.setattr(batchmod, "_open_store", lambda: None)
        run(bserver, ["m1", "m2", "m3"], wait=False)
    assert bserver.batch.batches["batch_fake1"]["metadata"]["created_by"] == "chatmagic"
    results = run(bserver, ["m1", "m2", "m3"])
    assert results.texts() == ["echo: m1", "echo: m2", "echo: m3"]
    assert bserver.batch.stats["batches"] == 1 and bserver.batch.stats["files"] == 1
    bserver.batch.invalid = "not today"  # a recorded, collected batch of the same requests...
    with pytest.raises(RunAborted):
        run(bserver, ["m4"])
    bserver.batch.invalid = None  # ...is never taken again: the re-run submits anew
    assert run(bserver, ["m4"]).texts() == ["echo: m4"] and bserver.batch.stats["batches"] == 3


def test_answers_and_result_lines_over_the_size_cap_fail_in_one_line(bserver, monkeypatch):
    from aiohttp import web
    cap = {"max_response_mb": 0.002}  # 2,000 bytes: a batch object fits

    async def endless_line(request):
        return web.Response(body=b"x" * 200_000)
    monkeypatch.setattr(bserver.batch, "_content", endless_line)
    with pytest.raises(RunAborted, match=r"too_large: answer over the 0\.002 MB limit") as caught:
        run(bserver, ["z1"], **cap)
    assert caught.value.results[0].status == "pending"  # the batch is done; a re-run can collect it

    async def huge(request):
        return web.json_response({"id": "batch_fake2", "pad": "y" * 5000})
    monkeypatch.setattr(bserver.batch, "_get", huge)
    with pytest.raises(RunAborted, match="too_large"):
        run(bserver, ["z2"], **cap)


def test_server_text_in_line_errors_is_scrubbed_of_the_key(bserver):
    key = "sk-proj-" + "Zq7" * 20
    results = run(bserver, [f"x [[fail:400]] [[code:{key}]]", f"{key} is not JSON"], api_key=key, json=True)
    assert results[0].error == "400 ***: Scripted failure 400."
    assert results[1].error.startswith("200 invalid_json: not valid JSON: 'echo: *** is not JSON")
    assert not any("Zq7Zq7" in r.error for r in results)


@pytest.mark.parametrize("prompt", ["plain", 'quotes " and \\ backslash', "ünïcode ✓ and \ud800 surrogate",
                                    "\x00chatmagic-prompt\x00 the marker itself", "line\nbreak"])
def test_the_fast_request_line_is_the_same_bytes_as_json_dumps(prompt):
    from chatmagic.batch.format import line_maker, request_line
    head = {"model": "m", "temperature": 0.5, "messages": [{"role": "system", "content": "be brief"}]}
    body = {**head, "messages": [*head["messages"], {"role": "user", "content": prompt}]}
    assert line_maker(partial(DIALECT.body, head))("7-abc", prompt) == request_line("7-abc", body)
    odd = {**head, "messages": [{"role": "system", "content": "\x00chatmagic-prompt\x00"}]}
    odd_body = {**odd, "messages": [*odd["messages"], {"role": "user", "content": prompt}]}
    assert line_maker(partial(DIALECT.body, odd))("7-abc", prompt) == request_line("7-abc", odd_body)
