#!/usr/bin/env python
"""Peak memory of a run that sends one local image per prompt, against the same run with text
only and against reading every image first (what a loop that builds all requests does).

    python tests/benchmarks/bench_images.py             # 1,000 images of 200 KB at -c 32
    python tests/benchmarks/bench_images.py --quick     # 100 images

The practice server runs in its own process on 127.0.0.1 (it checks every image part as OpenAI
does and answers with its size); each client runs in a fresh process, so its peak RSS
(``ru_maxrss``) is its own. The images are generated into a temporary folder: a valid PNG
header padded with random bytes to 200 KB each, so no two are alike. Target: the image run's
peak under 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import zlib

CLIENT = r"""
import asyncio, base64, json, os, resource, sys, time
mode, url, folder, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
prompts = [f"what is in image {i}?" for i in range(len(files))]
started = time.perf_counter()
if mode in ("text", "images"):
    import chatmagic
    results = chatmagic.chat_many(prompts, images=files if mode == "images" else None, base_url=url,
                                  concurrency=concurrency, progress=False, cache=False)
    ok = sum(r.ok for r in results)
    sizes_seen = sum("[media=1: 1x1 image/png" in (r.text or "") for r in results)
else:  # every request built first, then sent
    import aiohttp
    bodies = []
    for prompt, path in zip(prompts, files):
        with open(path, "rb") as f:
            url_ = "data:image/png;base64," + base64.b64encode(f.read()).decode()
        bodies.append(json.dumps({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url_}}]}]}).encode())

    async def main():
        gate = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
            async def one(body):
                async with gate, session.post(url + "/chat/completions", data=body) as resp:
                    return "[media=1: 1x1 image/png" in (await resp.json())["choices"][0]["message"]["content"]
            return await asyncio.gather(*(one(b) for b in bodies))
    seen = asyncio.run(main())
    ok = sizes_seen = sum(seen)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
print(json.dumps({"rss_mb": rss, "wall_s": time.perf_counter() - started, "ok": ok, "seen": sizes_seen}))
"""

TARGET_MB = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_png() -> bytes:
    """A valid 1x1 PNG (what the server's header check reads); the padding comes after IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00"))
            + chunk(b"IEND", b""))


def make_images(folder: str, n: int, size: int) -> None:
    head = tiny_png()
    for i in range(n):
        with open(os.path.join(folder, f"img{i:05d}.png"), "wb") as f:
            f.write(head + os.urandom(size - len(head)))


def measure(mode: str, url: str, folder: str, concurrency: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CLIENT, mode, url, folder, str(concurrency)],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("-n", type=int, help="images (default 1,000; --quick 100)")
    p.add_argument("-c", type=int, default=32, help="concurrency (default 32)")
    args = p.parse_args()
    n, size = args.n or (100 if args.quick else 1000), 200_000
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "chatmagic.practice.server", "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    folder = tempfile.TemporaryDirectory()
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "FakeOpenAI serving at ..."
        url = f"http://127.0.0.1:{port}/v1"
        make_images(folder.name, n, size)
        print(f"{n:,} prompts, one {size // 1000} KB image each, -c {args.c}; peak RSS per client process\n")
        print("| run | peak RSS | wall | answers that saw their image |")
        print("|---|---|---|---|")
        rows = {}
        for mode, label in (("text", "chatmagic, text only (baseline)"), ("images", "chatmagic, --images"),
                            ("upfront", "every request built first")):
            m = rows[mode] = measure(mode, url, folder.name, args.c)
            seen = f"{m['seen']:,}/{n:,}" if mode != "text" else f"{m['ok']:,} ok (no images)"
            print(f"| {label} | {m['rss_mb']:,.0f} MB | {m['wall_s']:.1f} s | {seen} |", flush=True)
        ours, text, upfront = rows["images"]["rss_mb"], rows["text"]["rss_mb"], rows["upfront"]["rss_mb"]
        print(f"\nimages over text only: +{ours - text:,.0f} MB ({ours / text:.2f}x); "
              f"built first / chatmagic: {upfront / ours:.1f}x")
        verdict = "PASS" if ours < TARGET_MB and rows["images"]["seen"] == n else "FAIL"
        print(f"target: peak RSS with {n:,} images under {TARGET_MB} MB -> {verdict}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        folder.cleanup()


if __name__ == "__main__":
    main()
