#!/usr/bin/env python
"""Peak memory against hostile servers: chatmagic's capped read against an uncapped read
(``await resp.read()``, what chatmagic did before the cap), in the same run.

    python tests/benchmarks/bench_hostile.py            # endless body, 1 GB Content-Length, gzip bomb
    python tests/benchmarks/bench_hostile.py --quick    # fewer, shorter requests

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

SCENARIOS = ("endless", "hugelength", "gzipbomb")

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("scenario", nargs="*", help=f"some of {', '.join(SCENARIOS)} (default: all)")
    args = p.parse_args()
    if set(args.scenario) - set(SCENARIOS):
        p.error(f"scenarios are {', '.join(SCENARIOS)}")
    n, timeout = (2, 1.0) if args.quick else (4, 3.0)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "chatmagic.practice.server", "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "FakeOpenAI serving at ..."
        url = f"http://127.0.0.1:{port}/v1"
        print(f"{n} requests at once, timeout {timeout:g} s, no retries; peak RSS per client process\n")
        print("| server | chatmagic (cap 8 MB) | uncapped read | uncapped / chatmagic |")
        print("|---|---|---|---|")
        for directive in args.scenario or SCENARIOS:
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
