#!/usr/bin/env python
"""--batch at scale against the practice server (its Files and Batches endpoints).

    python tests/benchmarks/bench_batch.py            # 100,000 prompts (~1.5 min)
    python tests/benchmarks/bench_batch.py --quick    # 10,000
    python tests/benchmarks/bench_batch.py --provider anthropic   # through Message Batches

The server runs in its own process (bench.py's ``Server``; with ``--provider anthropic`` the
practice Anthropic server, ``python -m chatmagic.practice.anthropic``), each client run in a
fresh one with an empty answer cache. Two scenarios:

1. round trip: ``chat_many(prompts, batch=True)``; the time from the call to the last batch
   created (cache lookup, JSONL written to a temporary file, uploads, batch creations), the
   JSONL + upload part alone, the whole run, the client's peak RSS, answers in order and lost.
2. killed mid-wait: the same run against a server that takes ~20 s per batch, killed
   (SIGKILL) once its batches exist; then the same call again in a new process: the batches
   and requests it submits (the target is none), and the answers it collects.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import PY, Server

CLIENT = r"""
import json, resource, sys, time
import chatmagic, chatmagic.batch.run as b
n, base_url, provider = int(sys.argv[1]), sys.argv[2], sys.argv[3]
route = ({"provider": "anthropic", "api_key": "sk-ant-bench", "model": "claude-haiku-4-5"}
         if provider == "anthropic" else {})
b.POLL_FIRST = 0.5
marks = {}
submit = b.BatchRun._submit
async def timed(self, fresh):
    started = time.perf_counter()
    await submit(self, fresh)
    marks["jsonl_upload_s"] = time.perf_counter() - started
    marks["submitted_at"] = time.perf_counter()
b.BatchRun._submit = timed
prompts = [f"Prompt {i}: summarise item number {i} in one short sentence." for i in range(n)]
started = time.perf_counter()
r = chatmagic.chat_many(prompts, base_url=base_url, batch=True, progress=False, **route)
done = time.perf_counter()
wrong = sum(t != f"echo: {p}" for t, p in zip(r.texts(), prompts))
print(json.dumps({"call_to_submitted_s": marks.get("submitted_at", started) - started,
                  "jsonl_upload_s": marks.get("jsonl_upload_s"), "total_s": done - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "ok": sum(x.ok for x in r), "lost_or_wrong": wrong}))
"""


def batches(base_url: str) -> list[dict]:
    """The server's batches, each with ``status`` and ``request_counts.total`` (as OpenAI's)."""
    if not PROVIDER["anthropic"]:
        with urllib.request.urlopen(base_url + "/batches") as resp:
            return json.load(resp)["data"]
    req = urllib.request.Request(base_url + "/messages/batches?limit=100",
                                 headers={"x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req) as resp:
        found = json.load(resp)["data"]
    return [{"id": b["id"], "status": b["processing_status"],
             "request_counts": {"total": sum(b["request_counts"].values())}} for b in found]


def client(n: int, base_url: str, cache: str) -> subprocess.Popen:
    env = {**os.environ, "CHATMAGIC_CACHE_DIR": cache}
    provider = "anthropic" if PROVIDER["anthropic"] else "openai"
    return subprocess.Popen([PY, "-c", CLIENT, str(n), base_url, provider], env=env, stdout=subprocess.PIPE,
                            text=True)


#: Which practice server the scenarios run against (set by --provider).
PROVIDER = {"anthropic": False}
#: Requests per batch (OpenAI: 50,000 a file; Anthropic: 100,000 a Message Batch).
PER_BATCH = {False: 50_000, True: 100_000}


class AnthropicServer:
    """The practice Anthropic server in its own process: ``with AnthropicServer(batch_pace=x) as s``."""

    def __init__(self, batch_pace: float = 0.0):
        self.pace = batch_pace

    def __enter__(self) -> AnthropicServer:
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.proc = subprocess.Popen([PY, "-m", "chatmagic.practice.anthropic", "--port", str(port),
                                      "--api-key", "sk-ant-bench", "--batch-pace", str(self.pace)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "FakeAnthropic serving at ...": it listens
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait(10)


def serve(**options):
    return AnthropicServer(**options) if PROVIDER["anthropic"] else Server(**options)


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"client failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def round_trip(n: int) -> None:
    with serve() as s, tempfile.TemporaryDirectory() as cache:
        r = finish(client(n, s.base_url, cache))
        made = batches(s.base_url)
    print(f"\n### round trip, {n:,} prompts{' (Anthropic Message Batches)' * PROVIDER['anthropic']}\n")
    print("| batches | call to submitted | JSONL + upload | whole run | peak RSS | ok | lost or wrong |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {len(made)} | {r['call_to_submitted_s']:.1f} s | {r['jsonl_upload_s']:.1f} s | {r['total_s']:.1f} s "
          f"| {r['peak_rss_mb']:.0f} MB | {r['ok']:,} | {r['lost_or_wrong']} |")
    target(f"submission under 10 s ({r['call_to_submitted_s']:.1f} s)", r["call_to_submitted_s"] < 10)
    target(f"peak RSS under 250 MB ({r['peak_rss_mb']:.0f} MB)", r["peak_rss_mb"] < 250)
    target("every answer back, in order", r["ok"] == n and r["lost_or_wrong"] == 0)


def killed_mid_wait(n: int) -> None:
    per = PER_BATCH[PROVIDER["anthropic"]]
    pace = 20.0 / min(n, per)  # each batch takes about 20 s
    with serve(batch_pace=pace) as s, tempfile.TemporaryDirectory() as cache:
        first = client(n, s.base_url, cache)
        expected = -(-n // per)
        deadline = time.monotonic() + 120
        while len(batches(s.base_url)) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        first.kill()
        first.wait()
        before = batches(s.base_url)
        states = sorted({b["status"] for b in before})
        r = finish(client(n, s.base_url, cache))
        after = batches(s.base_url)
    new = [b for b in after if b["id"] not in {x["id"] for x in before}]
    requests = sum(b["request_counts"]["total"] for b in new)
    print(f"\n### killed mid-wait (batches {', '.join(states)} at the kill), then run again\n")
    print("| batches before | new batches | new requests | re-run | ok | lost or wrong |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(before)} | {len(new)} | {requests} | {r['total_s']:.1f} s | {r['ok']:,} | {r['lost_or_wrong']} |")
    target("the re-run submits 0 new requests", not new)
    target("and collects every answer, in order", r["ok"] == n and r["lost_or_wrong"] == 0)


def target(what: str, ok: bool) -> None:
    print(f"target: {what} -> {'PASS' if ok else 'FAIL'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10,000 prompts instead of 100,000")
    p.add_argument("--provider", choices=["openai", "anthropic"], default="openai")
    args = p.parse_args()
    PROVIDER["anthropic"] = args.provider == "anthropic"
    n = 10_000 if args.quick else 100_000
    round_trip(n)
    killed_mid_wait(n)


if __name__ == "__main__":
    main()
