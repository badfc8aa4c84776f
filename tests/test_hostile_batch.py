"""``--batch`` against hostile servers on 127.0.0.1 (issue 21's batch rows): one decompression, the
size cap and a whole-call deadline on every Files/Batches call, total collection, nothing paid
twice across processes, the key never stored or shown. Where memory, a hang or a SIGKILL must be
observed, the client runs in a subprocess of its own against the practice server of this one."""

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
import zlib

import pytest
from aiohttp import web

import chatmagic
from chatmagic.batch import admin
from chatmagic.batch import run as batchmod
from chatmagic.batch.store import BatchStore
from chatmagic.core.cache import DB_NAME
from chatmagic.errors import RunAborted
from chatmagic.settings import resolve

KEY = "sk-proj-" + "Hq4wZt7Lx2" * 8


def run(server, prompts, **options):
    options.setdefault("api_key", KEY)
    return chatmagic.chat_many(prompts, base_url=server.base_url, batch=True, progress=False, **options)


#: A client in a process of its own: runs the prompts with --batch, prints what came back and its peak RSS.
CHILD = textwrap.dedent(r"""
    import json, os, sys, time
    from pathlib import Path
    import chatmagic
    from chatmagic.batch import run as batchmod
    url, prompts, options = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    batchmod.POLL_FIRST, batchmod.POLL_FAILURES = 0.01, options.pop("poll_failures", 5)
    go = options.pop("go", None)
    if go:  # started with another: both submit at the same moment
        Path(go + ".ready" + str(os.getpid())).touch()
        while not Path(go).exists():
            time.sleep(0.01)
    try:
        results, aborted = chatmagic.chat_many(prompts, base_url=url, batch=True, progress=False, **options), None
    except chatmagic.RunAborted as e:
        results, aborted = e.results, str(e)
    # this process's own peak (VmHWM starts again at exec; ru_maxrss keeps pytest's, the parent's, peak)
    rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"rss_mb": rss, "aborted": aborted, "status": [r.status for r in results],
                      "errors": [r.error for r in results], "texts": [r.text for r in results]}))
""")


def child(server, prompts, **options):
    options.setdefault("api_key", KEY)
    return subprocess.Popen([sys.executable, "-c", CHILD, server.base_url, json.dumps(prompts), json.dumps(options)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def outcome(proc, timeout=120):
    """What a child printed; a child that crashed (a traceback) or hung fails the test."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the client hung for {timeout} s") from None
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def shows_key(text) -> bool:
    secret = KEY[len("sk-proj-"):]
    return any(secret[i:i + 8] in str(text) for i in range(len(secret) - 7))


# --- row 1: gzip ------------------------------------------------------------------------------

def test_gzipped_answers_are_inflated_once_and_reruns_find_the_batch(bserver, monkeypatch):
    bserver.batch.gzip = True
    bserver.batch.pace = 0.02
    asked = urllib.request.Request(bserver.base_url + "/batches", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(asked) as resp:  # the server really gzips what the client asks for
        assert resp.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(resp.read()))["object"] == "list"
    with monkeypatch.context() as m:  # killed before recording: only the (gzipped) listing finds it
        m.setattr(batchmod, "_open_store", lambda: None)
        first = run(bserver, ["g1", "g2"], wait=False)
    assert [r.status for r in first] == ["pending", "pending"]
    for _ in range(2):
        assert run(bserver, ["g1", "g2"]).texts() == ["echo: g1", "echo: g2"]
    assert (bserver.batch.stats["batches"], bserver.batch.stats["requests"]) == (1, 2)  # was 3 and 6


# --- row 2: a 1.5 GB error body ---------------------------------------------------------------

GB_1_5 = 1_500_000_000


def _gzipped_zeros(size: int) -> bytes:
    pack, block = zlib.compressobj(wbits=31), bytes(1 << 20)
    return b"".join(pack.compress(block) for _ in range(size >> 20)) + pack.flush()


@pytest.mark.parametrize("encoding", ["identity", "gzip", "announced"])
def test_a_huge_error_body_on_the_download_is_cut_at_the_cap(bserver, monkeypatch, encoding):
    body = _gzipped_zeros(GB_1_5) if encoding == "gzip" else None

    async def huge_500(request):
        resp = web.StreamResponse(status=500, headers={"Content-Type": "application/json"})
        if body is not None:
            resp.headers["Content-Encoding"] = "gzip"
        if encoding == "announced":  # a Content-Length of 1.5 GB: refused before reading
            resp.content_length = GB_1_5
        await resp.prepare(request)
        try:
            if body is not None:
                await resp.write(body)
            else:
                for _ in range(GB_1_5 >> 20):
                    await resp.write(bytes(1 << 20))
        except (ConnectionError, RuntimeError):
            pass  # the client hung up at its cap
        return resp
    monkeypatch.setattr(bserver.batch, "_content", huge_500)
    got = outcome(child(bserver, ["h1", "h2"], timeout=30))
    assert got["aborted"].startswith("too_large: answer over the 8 MB limit")
    assert ("1,500 MB announced" in got["aborted"]) == (encoding == "announced")
    assert got["status"] == ["pending", "pending"]  # the batch is done: a re-run collects it
    assert got["rss_mb"] < 250  # against 1,500 MB read (3.9 GB peak before)


# --- rows 3, 4: result lines that are not results ---------------------------------------------------

@pytest.mark.parametrize("bad, reason", [
    (b"{not json", "bad_response: no readable result line for this request (1 unreadable line in batch_fake1)"),
    (b"[1, 2, 3]", "bad_response: no readable result line for this request (1 unreadable line in batch_fake1)"),
    ('{{"custom_id": "{cid}", "response": [1]}}', "bad_response: the result's response is a list"),
    ('{{"custom_id": "{cid}", "response": {{"status_code": 200, "body": "x"}}}}',
     "bad_response: the result's body is a str"),
    ('{{"custom_id": "{cid}", "response": {{"status_code": 200, "body": {{"choices": 5}}}}}}',
     "bad_response: the result holds no completion"),
])
def test_a_bad_result_line_fails_only_its_prompt_and_the_batch_is_collected(bserver, monkeypatch, bad, reason):
    real = bserver.batch._content

    async def garbled(request):
        lines = bserver.batch.contents[request.match_info["id"]].splitlines()
        out = []
        for raw in lines:
            line = json.loads(raw)
            if "echo: bad" in raw.decode():
                raw = bad if isinstance(bad, bytes) else bad.format(cid=line["custom_id"]).encode()
            out.append(raw)
        return web.Response(body=b"\n".join(out) + b"\n")
    monkeypatch.setattr(bserver.batch, "_content", garbled)
    prompts = ["a1", "bad", "a3"]
    results = run(bserver, prompts)
    assert [r.status for r in results] == ["ok", "error", "ok"]  # the answer after the bad line too
    assert results[1].error == reason
    assert BatchStore().get("batch_fake1").collected  # so a re-run never re-attaches to it
    again = run(bserver, prompts)  # the bad one is sent again (and garbled again), the rest from cache
    assert [r.status for r in again] == ["ok", "error", "ok"] and again[1].error == reason.replace("fake1", "fake2")
    assert (bserver.batch.stats["batches"], bserver.batch.stats["requests"]) == (2, 4)
    monkeypatch.setattr(bserver.batch, "_content", real)
    assert run(bserver, prompts).texts() == ["echo: a1", "echo: bad", "echo: a3"]


# --- row 5: two processes, one batch ------------------------------------------------------------

def test_two_processes_running_the_same_cell_at_once_pay_once(bserver, monkeypatch, tmp_path, wait_until):
    real = bserver.batch._upload

    async def slow_upload(request):  # a window wide enough for the second process to race the first
        await asyncio.sleep(0.5)
        return await real(request)
    monkeypatch.setattr(bserver.batch, "_upload", slow_upload)
    prompts = [f"two {i}" for i in range(40)]
    go = str(tmp_path / "go")
    kids = [child(bserver, prompts, go=go) for _ in range(2)]
    try:
        wait_until(lambda: len(list(tmp_path.glob("go.ready*"))) == 2, "both clients to be ready")
        (tmp_path / "go").touch()
        said = [k.communicate(timeout=120) for k in kids]
    finally:
        for k in kids:
            k.kill()
            k.wait(10)
    assert all(k.returncode == 0 and "Traceback" not in err for k, (_, err) in zip(kids, said)), said
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in said]
    assert all(g["texts"] == [f"echo: {p}" for p in prompts] for g in got)
    # the one that waited said so, naming the other's pid; the first did not
    waited = [i for i, (_, err) in enumerate(said) if "is submitting a batch from" in err]
    assert len(waited) == 1, said
    assert f"another process (pid {kids[1 - waited[0]].pid}) is submitting" in said[waited[0]][1]
    assert (bserver.batch.stats["batches"], bserver.batch.stats["requests"]) == (1, 40)  # was 2 and 80


# --- row 6 (batch part): the key echoed in a batch id or status ---------------------------------------

def test_a_batch_id_or_status_echoing_the_key_is_never_stored_or_shown(bserver, monkeypatch, tmp_path):
    real_create, real_get = bserver.batch._create, bserver.batch._get

    async def echo_id(request):
        answer = json.loads((await real_create(request)).body)
        return web.json_response({**answer, "id": f"batch_{KEY}"})
    monkeypatch.setattr(bserver.batch, "_create", echo_id)
    with pytest.raises(RunAborted, match="bad_response: the server sent a batch without a usable id") as caught:
        run(bserver, ["e1"])
    assert not shows_key(caught.value) and not shows_key(caught.value.results.summary())
    monkeypatch.setattr(bserver.batch, "_create", real_create)

    async def echo_status(request):
        answer = json.loads((await real_get(request)).body)
        return web.json_response({**answer, "status": f"busy {KEY}"})
    monkeypatch.setattr(bserver.batch, "_get", echo_status)
    results = run(bserver, ["e2"], wait=False)
    shown = admin.list_batches(resolve({"base_url": bserver.base_url, "api_key": KEY}))
    assert "busy ***" in shown
    assert not shows_key(shown) and not shows_key(results.summary()) and not shows_key(repr(results))
    assert not shows_key((tmp_path / "cache" / DB_NAME).read_bytes().decode("latin-1"))


# --- row 8: a trickling status endpoint (and download) -----------------------------------------------------

@pytest.mark.parametrize("endpoint", ["_get", "_content"])
def test_a_status_or_download_trickling_a_byte_at_a_time_ends_at_the_timeout(bserver, monkeypatch, endpoint):
    async def trickle(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            for byte in b'{"id": "batch_fake1", "status": "in_progress"}':
                await resp.write(bytes([byte]))
                await asyncio.sleep(1.5)  # each read well within the 2 s timeout: only a whole-call deadline ends it
        except (ConnectionError, RuntimeError):
            pass
        return resp
    monkeypatch.setattr(bserver.batch, endpoint, trickle)
    got = outcome(child(bserver, ["t1"], timeout=2, poll_failures=1), timeout=60)  # was: still running after 40 s
    assert got["aborted"] == "timeout: no answer within 2s" and got["status"] == ["pending"]


# --- row 13: a lone surrogate in a prompt ---------------------------------------------------------------

def test_a_prompt_with_a_lone_surrogate_is_sent_as_the_interactive_path_sends_it(bserver):
    results = run(bserver, ["odd \ud800 one", "fine ✓"])
    assert [r.status for r in results] == ["ok", "ok"]
    uploaded = bserver.batch.contents["file-fake1"]
    uploaded.decode("utf-8")  # strict: valid UTF-8, as the real Batch API demands
    assert b"odd \\ud800 one" in uploaded and "fine ✓".encode() in uploaded  # the escape json.dumps writes
    assert results[0].text == "echo: odd \ud800 one"


# --- row 14: a status object without a status ------------------------------------------------------------

def test_a_status_object_without_status_is_one_clear_line(bserver, monkeypatch):
    async def no_status(request):
        return web.json_response({"id": request.match_info["id"], "object": "batch"})
    monkeypatch.setattr(bserver.batch, "_get", no_status)
    with pytest.raises(RunAborted) as caught:
        run(bserver, ["s1"])
    assert str(caught.value) == "200 bad_response: the server sent batch batch_fake1 without a status"
    assert caught.value.results[0].status == "pending"


def test_request_counts_of_the_wrong_type_are_read_as_unknown(bserver, monkeypatch):
    real = bserver.batch._get

    async def odd_counts(request):
        answer = json.loads((await real(request)).body)
        return web.json_response({**answer, "request_counts": "lots" if answer["status"] != "completed"
                                  else {"total": "1", "completed": [1], "failed": None}})
    monkeypatch.setattr(bserver.batch, "_get", odd_counts)
    assert run(bserver, ["c1"]).texts() == ["echo: c1"]
    stored = BatchStore().get("batch_fake1")
    assert (stored.total, stored.completed, stored.failed, stored.collected) == (1, 0, 0, True)


# --- row 16: temporary files ------------------------------------------------------------------------------

def test_temporary_files_live_in_the_cache_and_a_kill_leaves_none_for_long(bserver, monkeypatch, tmp_path, wait_until):
    started, released = [], []
    real = bserver.batch._upload

    async def hang(request):  # the upload lasts until the client is killed while submitting
        started.append(1)
        while not released:
            await asyncio.sleep(0.02)
        return web.Response(status=499)
    monkeypatch.setattr(bserver.batch, "_upload", hang)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "systemp"))
    (tmp_path / "systemp").mkdir()
    kid = child(bserver, ["k1", "k2"])
    try:
        wait_until(lambda: started, "the upload to start")
        files = tmp_path / "cache" / "batch-files"
        assert [p.name.startswith("chatmagic-batch-") for p in files.iterdir()] == [True]
        kid.send_signal(signal.SIGKILL)
        kid.wait(10)
    finally:
        kid.kill()
        released.append(1)
    assert kid.returncode == -signal.SIGKILL
    assert len(list(files.iterdir())) == 1 and list((tmp_path / "systemp").iterdir()) == []  # the leftover
    monkeypatch.setattr(bserver.batch, "_upload", real)
    assert run(bserver, ["k1", "k2"]).texts() == ["echo: k1", "echo: k2"]
    assert list(files.iterdir()) == []  # the next run removed it (and its own)


# --- row 17: the same custom_id twice -----------------------------------------------------------------------

@pytest.mark.parametrize("order", ["ok first", "error first"])
def test_a_custom_id_twice_has_one_outcome_in_the_record_and_the_cache(bserver, monkeypatch, order):
    async def twice(request):
        data = bserver.batch.contents[request.match_info["id"]]
        line = json.loads(data.splitlines()[0])
        error = {**line, "response": {"status_code": 500, "body": {"error": {"message": "late failure"}}}}
        both = [json.dumps(line).encode(), json.dumps(error).encode()]
        return web.Response(body=b"\n".join(both if order == "ok first" else both[::-1]) + b"\n")
    monkeypatch.setattr(bserver.batch, "_content", twice)
    results = run(bserver, ["d1"])
    assert (results[0].status, results[0].text, results[0].error) == ("ok", "echo: d1", None)
    again = run(bserver, ["d1"])  # from the cache: the same outcome
    assert again[0].cached and again[0].text == "echo: d1" and bserver.batch.stats["batches"] == 1


# --- the same through Anthropic's Message Batches ---------------------------------------------------------

ANT_KEY, ANT_MODEL = "sk-ant-" + "Pw8rTy3Ku6" * 6, "claude-haiku-4-5"


def test_anthropic_results_gzipped_with_bad_and_repeated_lines(anthropic, monkeypatch):
    srv = anthropic(ANT_KEY)
    monkeypatch.setattr(batchmod, "POLL_FIRST", 0.01)
    real = srv.batches._results

    async def hostile(request):
        lines = (await real(request)).body.splitlines()
        line = next(raw for raw in lines if b"echo: a2" in raw)
        failed = {"custom_id": json.loads(line)["custom_id"], "result": {"type": "errored", "error": {
            "type": "error", "error": {"type": "api_error", "message": "late"}}}}
        odd = [raw for raw in lines if b"echo: a2" not in raw and b"echo: bad" not in raw]
        body = b"\n".join([b"{not json", b"[]", json.dumps(failed).encode(), line, *odd]) + b"\n"
        answer = web.Response(body=body, content_type="application/binary")
        answer.enable_compression()  # gzip: the client asks for it
        return answer
    monkeypatch.setattr(srv.batches, "_results", hostile)
    results = chatmagic.chat_many(["a1", "a2", "bad"], batch=True, progress=False, provider="anthropic",
                                  base_url=srv.base_url, api_key=ANT_KEY, model=ANT_MODEL)
    assert results.texts()[:2] == ["echo: a1", "echo: a2"]  # an answer after a failure of the same id wins
    assert results[2].error.startswith("bad_response: no readable result line for this request (2 unreadable lines")
    assert BatchStore().listing()[0].collected
