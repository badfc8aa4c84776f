#!/usr/bin/env python
"""Peak memory against hostile servers: chatmagic's capped read against an uncapped read
(``await resp.read()``, what chatmagic did before the cap), in the same run.

    python tests/benchmarks/bench_hostile.py            # endless body, 1 GB Content-Length, gzip bomb
    python tests/benchmarks/bench_hostile.py --quick    # fewer, shorter requests
    python tests/benchmarks/bench_hostile.py batch-error-body batch-two-processes   # the --batch rows

``--batch`` rows (a practice server in this process, its Files/Batches endpoints made hostile):
``batch-error-body``, the output file's download answers 500 with a 1.5 GB body (chatmagic's
batch client against an uncapped ``resp.read()`` of the same download); ``batch-two-processes``,
two processes run the same 40-prompt ``--batch`` cell at once on one cache, uploads taking 0.5 s
(chatmagic against the same code with its submit lock taken out: what it did before).

The practice server runs in its own process on 127.0.0.1 and misbehaves per prompt
(``[[endless]]``, ``[[hugelength]]``, ``[[gzipbomb]]``). Each client runs in a fresh process
of its own, so its peak RSS (``ru_maxrss``) is its own. Both clients send ``CONCURRENCY``
such prompts at once with a ``TIMEOUT`` per request and no retries; the uncapped client
keeps whatever arrives before the timeout. Nothing leaves 127.0.0.1; each request stops by
itself within the timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

SCENARIOS = ("endless", "hugelength", "gzipbomb")
BATCH_SCENARIOS = ("batch-error-body", "batch-two-processes")
ERROR_BODY = 1_500_000_000

BATCH_CLIENT = r"""
import asyncio, contextlib, json, os, resource, sys, time
from pathlib import Path
mode, url, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if go != "-":  # started with another: both submit at the same moment
    Path(go + ".ready" + str(os.getpid())).touch()
    while not Path(go).exists():
        time.sleep(0.01)
if mode == "uncapped":  # the error body read whole, as aiohttp's resp.read() does
    import aiohttp

    async def main():
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "/files/file-fake1/content") as resp:
                return f"read {len(await resp.read()) / 1e6:,.0f} MB"
    outcome = asyncio.run(main())
else:
    import chatmagic
    from chatmagic.batch import run as batchmod
    batchmod.POLL_FIRST = 0.01
    if mode == "nolock":  # the submit lock taken out: what chatmagic did before it
        @contextlib.asynccontextmanager
        async def nolock(folder=None):
            yield None
        batchmod.submitting = nolock
    try:
        chatmagic.chat_many([f"b{i}" for i in range(n)], base_url=url, batch=True, progress=False,
                            api_key="sk-bench-key")
        outcome = "ok"
    except chatmagic.RunAborted as e:
        outcome = str(e).split(":")[0]
try:  # this process's own peak: ru_maxrss keeps the parent's peak across fork and exec
    rss = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) / 1024
except OSError:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rss_mb": rss, "outcome": outcome}))
"""

CLIENT = r"""
import asyncio, json, resource, sys, time
mode, url, directive, n, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
prompts = [f"p{i} [[{directive}]]" for i in range(n)]
started = time.perf_counter()
if mode == "chatmagic":
    import chatmagic
    results = chatmagic.chat_many(prompts, base_url=url, concurrency=n, timeout=timeout, retries=0,
                                  progress=False, cache=False)
    outcome = sorted({(r.error or "ok").split(":")[0] for r in results})
else:  # uncapped: the whole body into memory, as before the cap
    import aiohttp

    async def one(session, prompt):
        body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
        try:
            async with session.post(url + "/chat/completions", json=body) as resp:
                return f"read {len(await resp.read()) / 1e6:,.0f} MB"
        except asyncio.TimeoutError:
            return "timeout"

    async def main():
        timeout = aiohttp.ClientTimeout(total=float(sys.argv[5]))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return await asyncio.gather(*(one(session, p) for p in prompts))
    outcome = sorted(set(asyncio.run(main())))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
print(json.dumps({"rss_mb": rss, "wall_s": time.perf_counter() - started, "outcome": outcome}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(mode: str, url: str, directive: str, n: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CHATMAGIC_CACHE_DIR": cache}
        done = subprocess.run([sys.executable, "-c", CLIENT, mode, url, directive, str(n), str(timeout)],
                              capture_output=True, text=True, timeout=120, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} {directive} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def batch_client(mode: str, url: str, n: int, cache: str, go: str = "-") -> subprocess.Popen[str]:
    env = {**os.environ, "CHATMAGIC_CACHE_DIR": cache}
    return subprocess.Popen([sys.executable, "-c", BATCH_CLIENT, mode, url, str(n), go],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def batch_result(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"batch client failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def batch_rows(names: list[str]) -> None:
    """The --batch rows, against a practice server in this process whose endpoints misbehave."""
    import asyncio
    from pathlib import Path

    from aiohttp import web

    from chatmagic.practice.server import FakeOpenAI

    async def huge_500(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=500, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            for _ in range(ERROR_BODY >> 20):
                await resp.write(bytes(1 << 20))
        except (ConnectionError, RuntimeError):
            pass  # the client hung up
        return resp

    print("\n| --batch server | chatmagic | baseline | baseline / chatmagic |")
    print("|---|---|---|---|")
    with FakeOpenAI() as srv:
        real_upload = srv.batch._upload
        if "batch-error-body" in names:
            srv.batch.reset()
            srv.batch._content = huge_500  # type: ignore[method-assign]
            with tempfile.TemporaryDirectory() as cache:
                ours = batch_result(batch_client("chatmagic", srv.base_url, 2, cache))
            with tempfile.TemporaryDirectory() as cache:
                bare = batch_result(batch_client("uncapped", srv.base_url, 2, cache))
            del srv.batch._content  # the method again
            print(f"| output download: 500 with a 1.5 GB body | {ours['rss_mb']:,.0f} MB peak, {ours['outcome']} "
                  f"| {bare['rss_mb']:,.0f} MB peak, {bare['outcome']} (uncapped read) "
                  f"| {bare['rss_mb'] / ours['rss_mb']:.1f}x |", flush=True)
        if "batch-two-processes" in names:
            async def slow_upload(request: web.Request) -> web.StreamResponse:
                await asyncio.sleep(0.5)
                answer: web.StreamResponse = await real_upload(request)
                return answer
            counts = {}
            for mode in ("chatmagic", "nolock"):
                srv.batch.reset()
                srv.batch._upload = slow_upload  # type: ignore[method-assign]
                with tempfile.TemporaryDirectory() as cache:
                    go = str(Path(cache) / "go")
                    kids = [batch_client(mode, srv.base_url, 40, cache, go) for _ in range(2)]
                    while len(list(Path(cache).glob("go.ready*"))) < 2:
                        if any(k.poll() is not None for k in kids):
                            raise SystemExit("a batch client ended before starting")
                        time.sleep(0.01)
                    Path(go).touch()
                    outcomes = [batch_result(k)["outcome"] for k in kids]
                counts[mode] = (srv.batch.stats["batches"], srv.batch.stats["requests"], "/".join(outcomes))
            (b1, r1, o1), (b2, r2, o2) = counts["chatmagic"], counts["nolock"]
            print(f"| two processes, one 40-prompt cell at once | {b1} batch, {r1} requests paid, {o1} "
                  f"| {b2} batches, {r2} requests paid, {o2} (no submit lock) | {r2 / r1:.1f}x paid |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("scenario", nargs="*", help=f"some of {', '.join(SCENARIOS + BATCH_SCENARIOS)} (default: all)")
    args = p.parse_args()
    if set(args.scenario) - set(SCENARIOS + BATCH_SCENARIOS):
        p.error(f"scenarios are {', '.join(SCENARIOS + BATCH_SCENARIOS)}")
    chosen = args.scenario or list(SCENARIOS + BATCH_SCENARIOS)
    interactive = [name for name in chosen if name in SCENARIOS]
    if interactive:
        interactive_rows(interactive, args.quick)
    batch = [name for name in chosen if name in BATCH_SCENARIOS]
    if batch:
        batch_rows(batch)


def interactive_rows(names: list[str], quick: bool) -> None:
    n, timeout = (2, 1.0) if quick else (4, 3.0)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "chatmagic.practice.server", "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "FakeOpenAI serving at ..."
        url = f"http://127.0.0.1:{port}/v1"
        print(f"{n} requests at once, timeout {timeout:g} s, no retries; peak RSS per client process\n")
        print("| server | chatmagic (cap 8 MB) | uncapped read | uncapped / chatmagic |")
        print("|---|---|---|---|")
        for directive in names:
            ours = measure("chatmagic", url, directive, n, timeout)
            bare = measure("uncapped", url, directive, n, timeout)
            print(f"| {directive} | {ours['rss_mb']:,.0f} MB, {ours['wall_s']:.1f} s, {'/'.join(ours['outcome'])} "
                  f"| {bare['rss_mb']:,.0f} MB, {bare['wall_s']:.1f} s, {'/'.join(bare['outcome'])} "
                  f"| {bare['rss_mb'] / ours['rss_mb']:.1f}x |", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
