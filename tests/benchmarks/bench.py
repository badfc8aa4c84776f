#!/usr/bin/env python
"""chatmagic benchmarks against the local fake OpenAI server (chatmagic/practice/server.py).

    python tests/benchmarks/bench.py                 # every scenario, full size (~5 min)
    python tests/benchmarks/bench.py ratelimit cpu   # some scenarios
    python tests/benchmarks/bench.py --quick         # every workload ~10x smaller (smoke run)
    python tests/benchmarks/bench.py timeline        # what recording the attempt timeline costs

Every scenario starts its fake server(s) on 127.0.0.1 in a separate process (so the client's
CPU time is its own) and runs each client in a fresh process of its own (so its CPU time and
peak RSS are its own, and no client warms up another's imports). The clients:

- chatmagic: ``achat_many`` (``chat_many`` in the memory scenario), with the scenario's settings;
  never given ``rpm``: it paces from the server's headers. Its answer cache (on by default)
  points at a fresh empty folder in every run ($CHATMAGIC_CACHE_DIR), so all prompts are sent
  and the user's cache is never touched.
- recipe: the well-known asyncio recipe: one aiohttp session, a semaphore, tenacity
  ``@retry(wait=wait_random_exponential(min=1, max=60), stop=stop_after_attempt(20))`` around a
  post that raises on non-200, ``ClientTimeout(total=timeout)``, None on final failure.
- openai SDK: ``AsyncOpenAI(max_retries=N, timeout=...)`` and a semaphore.
- bare aiohttp: one session, a semaphore, no retries: the CPU floor.

Each scenario prints a markdown table and ``target: ... -> PASS/FAIL`` lines; targets are
ratios within one run, since the machine is shared and noisy. The server answers
``echo: <prompt>``; an answer that is missing or wrong counts as lost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
PY = sys.executable
SPAWN = mp.get_context("spawn")
CLIENT_TIME_LIMIT = 240.0  # seconds; a client run still going then is killed and reported


def make_prompts(n: int, short: bool = False) -> list[str]:
    if short:  # a few tokens each: a token budget paced on an assumed output is far off here
        return [f"Q{i}?" for i in range(n)]
    return [f"Prompt {i}: summarise item number {i} in one short sentence." for i in range(n)]


def expected(prompt: str) -> str:
    return f"echo: {prompt}"


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------------------------
# The fake server, in its own process, with its stats read over a pipe.

def _serve(conn, options: dict) -> None:
    try:  # a faster loop for the server, so it is less often the bottleneck (clients keep asyncio's)
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    from chatmagic.practice.server import FakeOpenAI
    server = FakeOpenAI(**options).start()
    conn.send((server.base_url, loop_name))

    def cpu_s():
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    cpu_at_reset = cpu_s()
    while True:
        try:
            cmd = conn.recv()
        except (EOFError, OSError):  # the benchmark went away
            os._exit(0)
        if cmd == "stats":
            st = server.stats
            conn.send({"requests": st.requests, "by_status": dict(st.by_status),
                       "peak_in_flight": st.peak_in_flight, "cpu_s": cpu_s() - cpu_at_reset,
                       "storm_started": server._storm_started})
        elif cmd == "reset":
            cpu_at_reset = cpu_s()
            server.reset_stats()
            server.rpm, server.tpm = server.rpm, server.tpm  # fresh, full buckets
            conn.send(True)
        else:  # "stop": stalled handlers need no clean shutdown
            conn.send(True)
            os._exit(0)


class Server:
    """``with Server(latency=0.05, rpm=1200) as s:`` ... ``s.base_url``, ``s.reset()``, ``s.stats()``."""

    def __init__(self, **options):
        self.options = options

    def __enter__(self) -> Server:
        self.conn, child = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=_serve, args=(child, self.options), daemon=True,
                                  name="fakeserver")
        self.proc.start()
        child.close()
        if not self.conn.poll(30):
            self.proc.kill()
            raise RuntimeError("the fake server did not start within 30 s")
        self.base_url, self.loop_name = self.conn.recv()
        return self

    def _call(self, cmd: str):
        self.conn.send(cmd)
        if not self.conn.poll(30):
            raise RuntimeError(f"the fake server did not answer {cmd!r}")
        return self.conn.recv()

    def reset(self) -> None:
        self._call("reset")

    def stats(self) -> dict:
        return self._call("stats")

    def __exit__(self, *exc) -> None:
        try:
            self._call("stop")
        except Exception:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# ---------------------------------------------------------------------------------------------
# Clients. Each factory imports what it needs (outside the timed part) and returns
# ``run(url, prompts)``, a coroutine function (or a plain function) giving one text or None
# per prompt, in order.

def client_chatmagic(cfg: dict):
    import tqdm.std  # noqa: F401

    import chatmagic
    import chatmagic.core.engine
    from chatmagic.settings import DEFAULTS

    options = dict(model=cfg.get("model", "fake-model"), concurrency=cfg["concurrency"], timeout=cfg["timeout"],
                   progress=cfg.get("progress", False))
    for name in ("retries", "max_tokens", "max_retry_wait"):
        if cfg.get(name) is not None:
            options[name] = cfg[name]
    if cfg.get("cache") is not None and "cache" in DEFAULTS:  # else: chatmagic's default
        options["cache"] = cfg["cache"]
    if cfg.get("quota_wait") is not None:  # the "nothing but 429s" bound (10 min), shortened
        import chatmagic.core.ratelimit
        chatmagic.core.ratelimit.QUOTA_WAIT = cfg["quota_wait"]
    if cfg.get("sync"):
        def run(url, prompts):
            results = chatmagic.chat_many(prompts, base_url=url, **options)
            return results.texts()
        return run

    async def arun(url, prompts):
        try:
            results = await chatmagic.achat_many(prompts, base_url=url, **options)
        except chatmagic.RunAborted as e:  # the run ended early (429 forever): its answers so far
            results = e.results
        return results.texts()
    return arun


def client_recipe(cfg: dict):
    import aiohttp
    from tenacity import retry, stop_after_attempt, wait_random_exponential

    concurrency, timeout = cfg["concurrency"], cfg["timeout"]

    async def run(url, prompts):
        endpoint = url + "/chat/completions"
        sem = asyncio.Semaphore(concurrency)

        @retry(wait=wait_random_exponential(min=1, max=60), stop=stop_after_attempt(20))
        async def complete(session, prompt):
            body = {"model": cfg.get("model", "fake-model"), "messages": [{"role": "user", "content": prompt}]}
            async with session.post(endpoint, json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
                data = await resp.json()
                return data["choices"][0]["message"]["content"]

        async def one(session, prompt):
            async with sem:
                try:
                    return await complete(session, prompt)
                except Exception:  # tenacity's RetryError after the last attempt
                    return None

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            return await asyncio.gather(*(one(session, p) for p in prompts))
    return run


def client_openai(cfg: dict):
    from openai import AsyncOpenAI

    concurrency, timeout, max_retries = cfg["concurrency"], cfg["timeout"], cfg["max_retries"]

    async def run(url, prompts):
        client = AsyncOpenAI(base_url=url, api_key="sk-local", max_retries=max_retries,
                             timeout=timeout)
        sem = asyncio.Semaphore(concurrency)

        async def one(prompt):
            async with sem:
                try:
                    r = await client.chat.completions.create(
                        model=cfg.get("model", "fake-model"), messages=[{"role": "user", "content": prompt}])
                    return r.choices[0].message.content
                except Exception:
                    return None
        try:
            return await asyncio.gather(*(one(p) for p in prompts))
        finally:
            await client.close()
    return run


def client_bare(cfg: dict):
    import aiohttp

    concurrency, timeout = cfg["concurrency"], cfg["timeout"]

    async def run(url, prompts):
        endpoint = url + "/chat/completions"
        sem = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)

        async def one(session, prompt):
            body = {"model": cfg.get("model", "fake-model"), "messages": [{"role": "user", "content": prompt}]}
            async with sem:
                try:
                    async with session.post(endpoint, json=body) as resp:
                        if resp.status != 200:
                            return None
                        data = await resp.json()
                        return data["choices"][0]["message"]["content"]
                except Exception:
                    return None

        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            return await asyncio.gather(*(one(session, p) for p in prompts))
    return run


def client_baseline(cfg: dict):
    """Only ``import chatmagic``: with the prompt list, the memory floor of the memory scenario."""
    import chatmagic  # noqa: F401
    return None


CLIENTS = {"chatmagic": client_chatmagic, "recipe": client_recipe, "openai": client_openai,
           "bare": client_bare, "baseline": client_baseline}


def _client_main(conn, kind: str, url: str, n: int, cfg: dict) -> None:
    """In a fresh process: build the prompts, import the client, time one run, report."""
    # chatmagic's answer cache (on by default) starts empty in every run: each run sends every
    # prompt, and nothing is written to the user's own cache folder
    cache_dir = tempfile.mkdtemp(prefix="chatmagic-bench-cache-")
    os.environ["CHATMAGIC_CACHE_DIR"] = cache_dir
    try:
        if cfg.get("quiet_stderr"):
            sys.stderr = open(os.devnull, "w")  # the progress bar is drawn, to nowhere
        prompts = make_prompts(n, cfg.get("short", False))
        run = CLIENTS[kind](cfg)
        if run is None:
            conn.send({"rss_mb": maxrss_mb(), "wall": 0.0, "cpu": 0.0, "lost": 0, "wrong": 0})
            return
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        texts = asyncio.run(run(url, prompts)) if asyncio.iscoroutinefunction(run) else run(url, prompts)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ended = time.monotonic()  # the server's clock too (one machine): "done after the storm"
        missing = sum(t is None for t in texts) + max(0, n - len(texts))
        wrong = sum(t is not None and t != expected(p) for t, p in zip(texts, prompts))
        conn.send({"wall": wall, "cpu": cpu, "lost": missing + wrong, "wrong": wrong,
                   "rss_mb": maxrss_mb(), "ended": ended})
    except BaseException as e:  # reported as the client's row, the benchmark goes on
        conn.send({"error": f"{type(e).__name__}: {e}"[:300]})
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def run_client(server: Server | None, label: str, kind: str, n: int, **cfg) -> dict:
    """One client run in a fresh process; returns its figures, with the server's stats."""
    if server is not None:
        server.reset()
    parent, child = SPAWN.Pipe(duplex=False)
    proc = SPAWN.Process(target=_client_main, name=f"client-{kind}",
                         args=(child, kind, server.base_url if server else "", n, cfg))
    proc.start()
    child.close()
    try:
        if parent.poll(cfg.get("time_limit", CLIENT_TIME_LIMIT)):
            m = parent.recv()
        else:
            m = {"error": f"killed after {cfg.get('time_limit', CLIENT_TIME_LIMIT):g} s"}
    except EOFError:
        m = {"error": "the client process died"}
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    m.update(label=label, n=n)
    if server is not None:
        st = server.stats()
        m.update(requests=st["requests"], r429=st["by_status"].get(429, 0),
                 peak=st["peak_in_flight"], by_status=st["by_status"], server_cpu=st["cpu_s"],
                 storm_started=st.get("storm_started"))
    if "error" in m:
        print(f"  !! {label}: {m['error']}", flush=True)
    else:
        print(f"  .. {label}: {m['wall']:.2f} s, {m['cpu'] / n * 1e3:.3f} ms CPU/prompt, lost {m['lost']}"
              + (f", {m['requests'] / n:.2f} req/prompt, {m['r429']} x 429" if server else ""),
              file=sys.stderr, flush=True)
    return m


def median_of(runs: list[dict]) -> dict:
    """The median of each figure over repeated runs of one client (errors kept if any)."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    m = dict(good[0])
    for key in ("wall", "cpu", "requests", "r429", "peak", "rss_mb", "server_cpu"):
        if key in m:
            m[key] = statistics.median(r[key] for r in good)
    m["lost"] = max(r["lost"] for r in good)  # the worst run: a lost prompt is never noise
    m["cpu_runs"] = [r["cpu"] / r["n"] * 1e3 for r in good]
    m["wall_runs"] = [r["wall"] for r in good]
    return m


# ---------------------------------------------------------------------------------------------
# Output

RESULTS: list[tuple[str, str, bool]] = []  # (scenario, target, passed)


def fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[dict], ratio_name: str | None = None, ratio=None, extra=()) -> None:
    """Markdown table; ``ratio(row)`` fills the ``ratio_name`` column."""
    head = ["client", "wall s"]
    if ratio_name:
        head.append(ratio_name)
    head += ["CPU ms/prompt", "requests/prompt", "429s/prompt", "lost", "peak in-flight",
             "peak RSS MB", "server busy"] + [name for name, _ in extra]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
    for r in rows:
        if "error" in r:
            print(f"| {r['label']} | error: {r['error']} |" + " |" * (len(head) - 2))
            continue
        n = r["n"]
        cells = [r["label"], fmt(r["wall"])]
        if ratio_name:
            cells.append(fmt(ratio(r)) + "x")
        cells += [fmt(r["cpu"] / n * 1e3, ".3f"),
                  fmt(r["requests"] / n if "requests" in r else None, ".3f"),
                  fmt(r["r429"] / n if "r429" in r else None, ".3f"),
                  f"{r['lost']:g}" if r["lost"] == r["lost"] else "-",
                  f"{r['peak']:g}" if "peak" in r else "-",
                  fmt(r["rss_mb"], ".0f"), server_busy(r)] + [fn(r) for _, fn in extra]
        print("| " + " | ".join(cells) + " |")
    print()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def server_busy(r: dict) -> str:
    """The server process's CPU time during the run over the run's wall time: near 100% means
    the fake server (one Python process), not the client, set the pace."""
    if "server_cpu" not in r or not r.get("wall"):
        return "-"
    return f"{100 * r['server_cpu'] / r['wall']:.0f}%"


def target(scenario: str, text: str, passed: bool, note: str = "") -> None:
    RESULTS.append((scenario, text, passed))
    print(f"target: {text} -> {'PASS' if passed else 'FAIL'}" + (f"  ({note})" if note else ""))


def ok(r: dict) -> bool:
    return "error" not in r


# ---------------------------------------------------------------------------------------------
# Scenarios. ``q`` is True for --quick (workloads ~10x smaller).

def scenario_ratelimit(q: bool) -> None:
    n, rpm, latency, conc, timeout = (60 if q else 300), 1200, 0.05, 50, 60.0
    ideal = n / (rpm / 60)
    print(f"## ratelimit\n\nserver: rpm={rpm} (token bucket per second, OpenAI x-ratelimit-* headers, "
          f"retry-after on 429), latency {latency} s; {n} prompts, concurrency {conc}, timeout {timeout:g} s. "
          f"ideal = {n} / ({rpm}/60) = {ideal:g} s. chatmagic is not told the rpm.\n")
    common = dict(concurrency=conc, timeout=timeout)
    with Server(latency=latency, rpm=rpm, headers="openai") as s:
        rows = [run_client(s, "chatmagic", "chatmagic", n, **common),
                run_client(s, "recipe (tenacity)", "recipe", n, **common),
                run_client(s, "openai SDK, max_retries=10", "openai", n, max_retries=10, **common),
                run_client(s, "openai SDK, default max_retries=2", "openai", n, max_retries=2, **common)]
    table(rows, "wall/ideal", lambda r: r["wall"] / ideal)
    cm = rows[0]
    target("ratelimit", "chatmagic wall <= 1.05x ideal", ok(cm) and cm["wall"] <= 1.05 * ideal,
           f"{cm['wall'] / ideal:.3f}x" if ok(cm) else cm["error"])
    target("ratelimit", "chatmagic <= 0.02 rejected (429) requests per prompt",
           ok(cm) and cm["r429"] / n <= 0.02, f"{cm['r429'] / n:.3f}" if ok(cm) else "")
    target("ratelimit", "chatmagic loses no prompt", ok(cm) and cm["lost"] == 0,
           f"lost {cm['lost']}" if ok(cm) else "")
    print()


# ---------------------------------------------------------------------------------------------
# Server shapes (issue 9): one row each, chatmagic side by side with the recipe and the openai
# SDK (its default max_retries=2, as users get it), in one run. chatmagic is never told a rate.

def _tokens_of(prompts: list[str], max_tokens: int = 16) -> int:
    """What the practice server charges: the prompt's characters / 4 + 1, plus max_tokens."""
    return sum(len(p) // 4 + 1 + max_tokens for p in prompts)


def _shape_rows(q: bool) -> list[dict]:
    """name, server behaviour, server options, N, concurrency, ideal seconds, targets."""
    s = 10 if q else 1  # --quick: ~10x smaller
    tok_n = 250 // s
    tok_ideal = max(0.0, (_tokens_of(make_prompts(tok_n)) - 6000) / 100)
    return [
        dict(name="window60", behaviour="fixed 60 s window, 600 per window, remaining counts down, "
             "reset = time to the window's end", server=dict(rpm=600, limit_shape="window"),
             n=300 // s, conc=50, nolimit=True,
             targets=[("wall <= 1.5x the no-limit time (done in the first window)",
                       lambda cm, x: cm["wall"] <= 1.5 * x["nolimit"])]),
        dict(name="window20", behaviour="fixed 20 s windows, 120 per window, run larger than one window",
             server=dict(rpm=360, limit_shape="window", window_s=20.0), n=200 // s, conc=50,
             ideal=20.0 if not q else 0.0,
             targets=[("wall <= the next window + 0.5 s", lambda cm, x: cm["wall"] <= x["ideal"] + 0.5),
                      ("<= 0.5 429/prompt", lambda cm, x: cm["r429"] / cm["n"] <= 0.5)]),
        dict(name="bucket", behaviour="token bucket, 600 rpm, starts full, continuous refill "
             "(OpenAI's documented semantics)", server=dict(rpm=600, limit_shape="bucket"),
             n=900 // s, conc=50, ideal=max(0.0, (900 // s - 600) / 10),
             targets=[("wall <= 1.1x (N - capacity) / refill", lambda cm, x: cm["wall"] <= 1.1 * x["ideal"]),
                      ("<= 0.05 429/prompt", lambda cm, x: cm["r429"] / cm["n"] <= 0.05)]),
        dict(name="daily", behaviour="daily limit announced (14,400/day), 1200 rpm enforced per second "
             "silently, 429 + retry-after (Groq-like)", server=dict(rpm=1200, daily=14400),
             n=200 // s, conc=50, ideal=200 // s / 20,
             targets=[("wall <= 1.25x the minute limit's pace", lambda cm, x: cm["wall"] <= 1.25 * x["ideal"])]),
        dict(name="tokens", behaviour="token limit binding: 6000 tpm bucket starting full "
             "(x-ratelimit-*-tokens), ~32 tokens a prompt", server=dict(tpm=6000, limit_shape="bucket"),
             n=tok_n, conc=50, ideal=tok_ideal, chatmagic=dict(max_tokens=16),
             targets=[("wall <= 1.15x ideal", lambda cm, x: cm["wall"] <= 1.15 * x["ideal"])]),
        dict(name="azure", behaviour="remaining-only headers (Azure-like), 1200 rpm enforced per second",
             server=dict(rpm=1200, headers="azure"), n=300 // s, conc=50, ideal=300 // s / 20,
             targets=[("wall <= 1.15x ideal", lambda cm, x: cm["wall"] <= 1.15 * x["ideal"])]),
        dict(name="retry-after", behaviour="no rate-limit headers, 429 + retry-after only, 1200 rpm per second",
             server=dict(rpm=1200, headers="retry-after"), n=300 // s, conc=50, ideal=300 // s / 20,
             targets=[("wall <= 1.3x ideal", lambda cm, x: cm["wall"] <= 1.3 * x["ideal"])]),
        dict(name="storm", behaviour="429 (retry-after 1) to everything for 10 s, then healthy",
             server=dict(storm_s=10.0 / s), n=100, conc=16, ideal=10.0 / s,
             targets=[("done within 2 s after the storm ends", lambda cm, x: cm["wall"] <= x["ideal"] + 2)]),
        dict(name="forever", behaviour="429 forever (retry-after 1), default retries; the run's bound on "
             "nothing but 429s (10 min, and 10x max_retry_wait) shortened to 20 s in this process", n=10, conc=16,
             server=dict(storm_s=math.inf), ideal=None, expect_lost=True, time_limit=40 if q else 120,
             chatmagic=dict(quota_wait=20.0, max_retry_wait=2.0),
             targets=[("ends at the bound, every prompt failed (429s use up no retries: they are pacing)",
                       lambda cm, x: cm["lost"] == 10 and 20 <= cm["wall"] <= 22)]),
    ]


def scenario_shapes(q: bool) -> None:
    latency = 0.05
    print("## shapes\n\nOne server behaviour per row; latency 50 ms; timeout 60 s; chatmagic with its "
          "defaults (6 retries), never told the limit; the recipe; the openai SDK with its default "
          "max_retries=2. wall/ideal uses each row's ideal: the limit's pace from a cold start.\n")
    for row in _shape_rows(q):
        n, conc = row["n"], row["conc"]
        print(f"### {row['name']}: {row['behaviour']}\n\n{n} prompts, concurrency {conc}"
              + (f", ideal {row['ideal']:.2f} s" if row.get("ideal") else "") + "\n")
        common = dict(concurrency=conc, timeout=60.0, time_limit=row.get("time_limit", CLIENT_TIME_LIMIT))
        extra = {}
        if row.get("nolimit"):
            with Server(latency=latency) as s:
                free = run_client(s, "chatmagic, no limit", "chatmagic", n, **common)
            extra["nolimit"] = free["wall"] if ok(free) else float("nan")
        with Server(latency=latency, **row["server"]) as s:
            rows = [run_client(s, "chatmagic", "chatmagic", n, **common, **row.get("chatmagic", {})),
                    run_client(s, "recipe (tenacity)", "recipe", n, **common),
                    run_client(s, "openai SDK (default max_retries=2)", "openai", n, max_retries=2, **common)]
        ideal = row.get("ideal") or extra.get("nolimit")
        SHAPES.append((row, rows, ideal))
        table(rows, "wall/ideal" if ideal else None, (lambda r, ideal=ideal: r["wall"] / ideal) if ideal else None)
        cm = rows[0]
        for text, check in row["targets"]:
            target(row["name"], f"chatmagic {text}", ok(cm) and check(cm, {**row, **extra}),
                   (f"{cm['wall']:.2f} s, {cm['r429'] / n:.3f} 429/prompt" if ok(cm) else cm["error"])
                   + (f"; no limit {extra['nolimit']:.2f} s" if "nolimit" in extra else ""))
        if not row.get("expect_lost"):
            target(row["name"], "chatmagic loses no prompt", ok(cm) and cm["lost"] == 0)
        print()


SHAPES: list = []  # (row, client results, ideal) for the summary table


def scenario_cpu(q: bool, reps: int) -> None:
    n, conc, timeout = (500 if q else 5000), 200, 60.0
    print(f"## cpu\n\nserver: no limit, latency 0; {n} prompts, concurrency {conc}. Each client runs "
          f"{reps} times, interleaved (the openai SDK once); medians shown (CPU = process time of the client process "
          f"during the run / prompts). chatmagic draws its tqdm bar (to /dev/null); its answer cache, "
          "on by default, starts empty (a fresh folder per run).\n")
    common = dict(concurrency=conc, timeout=timeout)
    clients = [("chatmagic (defaults: progress bar, cache)", "chatmagic",
                dict(progress=True, quiet_stderr=True)),
               ("chatmagic (progress bar, cache=False)", "chatmagic",
                dict(progress=True, quiet_stderr=True, cache=False)),
               ("recipe (tenacity)", "recipe", {}),
               ("openai SDK (default max_retries)", "openai", dict(max_retries=2)),
               ("bare aiohttp", "bare", {})]
    runs = {label: [] for label, _, _ in clients}
    with Server(latency=0.0) as s:
        for rep in range(reps):
            for label, kind, cfg in clients:
                if kind == "openai" and rep:  # ~10x the others' CPU: one run tells, and saves a minute
                    continue
                runs[label].append(run_client(s, label, kind, n, **common, **cfg))
    rows = [median_of(runs[label]) for label, _, _ in clients]
    bare = rows[-1]
    bare_cpu = bare["cpu"] if ok(bare) else float("nan")
    table(rows, "CPU / bare", lambda r: r["cpu"] / bare_cpu,
          extra=[("CPU ms/prompt, each run", lambda r: " ".join(f"{c:.3f}" for c in r.get("cpu_runs", [])))])
    cm, sdk = rows[0], rows[-2]
    good = ok(cm) and ok(bare) and ok(sdk)
    target("cpu", "chatmagic (defaults, progress bar on) CPU/prompt <= 1.2x bare aiohttp",
           good and cm["cpu"] <= 1.2 * bare["cpu"], f"{cm['cpu'] / bare['cpu']:.2f}x" if good else "")
    nocache = rows[1]
    if ok(nocache) and ok(bare):
        print(f"info: chatmagic with cache=False (progress bar on): {nocache['cpu'] / bare['cpu']:.2f}x bare aiohttp; "
              f"the answer cache costs {(cm['cpu'] - nocache['cpu']) / n * 1e6:+.0f} us/prompt here")
    target("cpu", "openai SDK CPU/prompt >= 5x chatmagic's", good and sdk["cpu"] >= 5 * cm["cpu"],
           f"{sdk['cpu'] / cm['cpu']:.2f}x" if good else "")
    target("cpu", "no prompt lost (chatmagic)", ok(cm) and cm["lost"] == 0)
    print()


def scenario_throughput(q: bool, reps: int) -> None:
    n, conc, latency, timeout = (200 if q else 2000), (10 if q else 100), 0.05, 60.0
    ideal = n / conc * latency
    print(f"## throughput\n\nserver: no limit, latency {latency} s; {n} prompts, concurrency {conc}; "
          f"ideal = {n}/{conc} x {latency} = {ideal:g} s. {reps} interleaved runs per client (the openai "
          "SDK once), medians. bare aiohttp shows what this machine and server allow.\n")
    common = dict(concurrency=conc, timeout=timeout)
    clients = [("chatmagic", "chatmagic", {}), ("recipe (tenacity)", "recipe", {}),
               ("openai SDK (default max_retries)", "openai", dict(max_retries=2)),
               ("bare aiohttp", "bare", {})]
    runs = {label: [] for label, _, _ in clients}
    with Server(latency=latency) as s:
        for rep in range(reps):
            for label, kind, cfg in clients:
                if kind == "openai" and rep:  # far behind the others: one run tells
                    continue
                runs[label].append(run_client(s, label, kind, n, **common, **cfg))
    rows = [median_of(runs[label]) for label, _, _ in clients]
    bare = rows[-1]
    table(rows, "wall/ideal", lambda r: r["wall"] / ideal,
          extra=[("wall / bare", lambda r: fmt(r["wall"] / bare["wall"]) + "x" if ok(bare) else "-"),
                 ("wall s, each run", lambda r: " ".join(f"{w:.2f}" for w in r.get("wall_runs", [])))])
    cm = rows[0]
    target("throughput", "chatmagic wall <= 1.15x ideal", ok(cm) and cm["wall"] <= 1.15 * ideal,
           f"{cm['wall'] / ideal:.3f}x; bare aiohttp {bare['wall'] / ideal:.3f}x" if ok(cm) and ok(bare) else "")
    if ok(cm) and ok(bare):
        print(f"info: chatmagic wall / bare aiohttp wall = {cm['wall'] / bare['wall']:.2f}x (same server, "
              "same run: the client's own share of the gap to ideal)")
    target("throughput", "no prompt lost (chatmagic)", ok(cm) and cm["lost"] == 0)
    print()


def scenario_faults(q: bool) -> None:
    fail_rate, stall_rate, stall_s, timeout, seed = 0.10, 0.02, 30.0, 2.0, 7
    workloads = [(200, 0.05, 20), (100, 0.2, 10)] if q else [(2000, 0.05, 100), (1000, 0.5, 50)]
    print(f"## faults\n\nfaulty server: fail_rate {fail_rate} (HTTP 500), stall_rate {stall_rate} "
          f"(a stall of {stall_s:g} s), seed {seed}; clients' timeout {timeout:g} s. Each client runs the "
          f"same workload on a clean server and on the faulty one. A stall costs at least one {timeout:g} s "
          "timeout plus a retry, so at 50 ms the floor is chatmagic's clean run plus one timeout.\n")
    for n, latency, conc in workloads:
        clean_ideal = n / conc * latency
        print(f"### {n} prompts, latency {latency} s, concurrency {conc} (clean ideal {clean_ideal:g} s)\n")
        common = dict(concurrency=conc, timeout=timeout)
        clients = [("chatmagic", "chatmagic", {}), ("recipe (tenacity)", "recipe", {}),
                   ("openai SDK, max_retries=10", "openai", dict(max_retries=10))]
        clean, faulty = {}, {}
        with Server(latency=latency) as s:
            for label, kind, cfg in clients:
                clean[label] = run_client(s, label + ", clean", kind, n, **common, **cfg)
        with Server(latency=latency, fail_rate=fail_rate, stall_rate=stall_rate, stall_s=stall_s,
                    seed=seed) as s:
            for label, kind, cfg in clients:
                faulty[label] = run_client(s, label + ", faulty", kind, n, **common, **cfg)
        rows = []
        for label, _, _ in clients:
            rows += [clean[label], faulty[label]]
        # each row (clean or faulty) is compared with the same client's clean run
        base = {r["label"]: clean[lbl] for lbl in clean for r in (clean[lbl], faulty[lbl])}
        table(rows, "wall / clean", lambda r, base=base: r["wall"] / base[r["label"]]["wall"]
              if ok(base[r["label"]]) else float("nan"),
              extra=[("500s/prompt", lambda r: fmt(r.get("by_status", {}).get(500, 0) / r["n"], ".3f"))])
        cm_c, cm_f = clean["chatmagic"], faulty["chatmagic"]
        both = ok(cm_c) and ok(cm_f)
        where = f"latency {latency} s"
        FAULTS.append((n, latency, conc, clean, faulty))
        target("faults", f"[{where}] chatmagic: every prompt completes on the faulty server",
               ok(cm_f) and cm_f["lost"] == 0, f"lost {cm_f['lost']}" if ok(cm_f) else cm_f["error"])
        if latency <= 0.05 and both:
            floor = cm_c["wall"] + timeout
            target("faults", f"[{where}] chatmagic faulty <= 1.5x the floor (its clean run + one timeout)",
                   cm_f["wall"] <= 1.5 * floor, f"{cm_f['wall']:.2f} s, floor {floor:.2f} s: "
                   f"{cm_f['wall'] / floor:.2f}x")
        peers = [faulty[label] for label, kind, _ in clients if kind != "chatmagic"]
        target("faults", f"[{where}] chatmagic faulty ahead of every peer in the same run",
               both and all(not ok(p) or p["wall"] > cm_f["wall"] for p in peers),
               ", ".join(f"{p['label']} {p['wall']:.2f} s" for p in peers if ok(p))
               + (f"; chatmagic {cm_f['wall']:.2f} s" if ok(cm_f) else ""))
        print()


FAULTS: list = []


def scenario_memory(q: bool) -> None:
    n, conc = (10_000 if q else 100_000), 100
    print(f"## memory\n\nserver: no limit, latency 0; {n:,} prompts, concurrency {conc}, progress off; "
          "chatmagic.chat_many in a fresh process; peak RSS = ru_maxrss of that process. Baseline: a "
          f"fresh process that imports chatmagic and builds the same {n:,} prompt strings.\n")
    base = run_client(None, "baseline: import chatmagic + prompts", "baseline", n, concurrency=conc, timeout=60)
    with Server(latency=0.0) as s:
        cm = run_client(s, "chatmagic (chat_many)", "chatmagic", n, concurrency=conc, timeout=60.0,
                        progress=False, sync=True, time_limit=400)
    print("| process | peak RSS MB | wall s | CPU ms/prompt | requests/prompt | lost |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in (base, cm):
        if not ok(r):
            print(f"| {r['label']} | error: {r['error']} | | | | |")
        elif r is base:
            print(f"| {r['label']} | {r['rss_mb']:.0f} | - | - | - | - |")
        else:
            print(f"| {r['label']} | {r['rss_mb']:.0f} | {r['wall']:.1f} | {r['cpu'] / n * 1e3:.3f} "
                  f"| {r['requests'] / n:.3f} | {r['lost']:g} |")
    print()
    if ok(cm) and ok(base):
        print(f"chatmagic's run added {cm['rss_mb'] - base['rss_mb']:.0f} MB over the baseline "
              f"({(cm['rss_mb'] - base['rss_mb']) * 2**20 / n:.0f} bytes per prompt).")
    target("memory", f"chatmagic peak RSS <= 200 MB for {n:,} prompts", ok(cm) and cm["rss_mb"] <= 200,
           f"{cm['rss_mb']:.0f} MB" if ok(cm) else cm["error"])
    target("memory", "no prompt lost", ok(cm) and cm["lost"] == 0)
    print()


_CACHE_RERUN = """
import json, sys, time
import chatmagic, chatmagic.core.engine
url, n = sys.argv[1], int(sys.argv[2])
prompts = [f"cached prompt {i}" for i in range(n)]
out = {}
for run in ("first", "rerun"):
    t0, c0 = time.perf_counter(), time.process_time()
    results = chatmagic.chat_many(prompts, base_url=url, model="fake-model", concurrency=100, progress=False)
    out[run] = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                "cached": sum(r.cached for r in results), "ok": sum(r.ok for r in results)}
print(json.dumps(out))
"""


def scenario_cache(q: bool) -> None:
    n = 10_000 if q else 100_000
    print(f"## cache\n\nserver: no limit, latency 0; {n:,} prompts, concurrency 100, progress off, in "
          "a fresh process with an empty cache folder: a first run fills the answer cache, then the "
          "same cell is run again. (The cache's CPU cost per prompt is the cpu scenario's two "
          "chatmagic rows.)\n")
    with Server(latency=0.0) as s, tempfile.TemporaryDirectory() as folder:
        s.reset()
        env = {**os.environ, "CHATMAGIC_CACHE_DIR": folder}
        done = subprocess.run([PY, "-c", _CACHE_RERUN, s.base_url, str(n)], env=env, capture_output=True,
                              text=True, timeout=600)
        sent = s.stats()["requests"]
    if done.returncode != 0:
        print(f"error: {done.stderr[-500:]}")
        target("cache", f"a re-run of {n:,} cached prompts takes < 2 s and sends nothing", False, "error")
        return
    runs = json.loads(done.stdout)
    print("| run | wall s | CPU s | from cache | ok | requests sent |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| first | {runs['first']['wall']:.2f} | {runs['first']['cpu']:.2f} | {runs['first']['cached']:,} "
          f"| {runs['first']['ok']:,} | {sent:,} (both runs) |")
    print(f"| re-run | {runs['rerun']['wall']:.2f} | {runs['rerun']['cpu']:.2f} | {runs['rerun']['cached']:,} "
          f"| {runs['rerun']['ok']:,} | {sent - n:,} |")
    print()
    rerun = runs["rerun"]
    target("cache", f"a re-run of {n:,} cached prompts takes < 2 s and sends nothing",
           rerun["wall"] < 2 and sent == n and rerun["cached"] == n, f"{rerun['wall']:.2f} s, {sent - n} sent")
    print()


_TIMELINE_RUN = """
import json, resource, sys
import chatmagic, chatmagic.core.engine
from chatmagic.core.timeline import Timeline
url, n, record = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "on"
if not record:  # the same run with the recording hooks doing nothing: the baseline
    Timeline.add = Timeline.wait = lambda *args, **kwargs: None
prompts = [f"Prompt {i}: summarise item number {i} in one short sentence." for i in range(n)]
results = chatmagic.chat_many(prompts, base_url=url, model="fake-model", concurrency=100,
                              progress=False, cache=False)
tl = results.timeline
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "nbytes": tl.nbytes, "attempts": len(tl), "waits": len(tl.wait_kinds),
                  "ok": sum(r.ok for r in results)}))
"""


def scenario_timeline(q: bool) -> None:
    n, budget_mb = (10_000 if q else 100_000), 30
    print(f"## timeline\n\nserver: no limit, latency 0; {n:,} prompts, concurrency 100, progress and "
          "cache off, chat_many in a fresh process, with the attempt timeline recorded and with its "
          "recording hooks replaced by no-ops (the baseline). Budget: 100,000 prompts may add "
          f"{budget_mb} MB.\n")
    runs = {}
    with Server(latency=0.0) as s:
        for record in ("off", "on", "off", "on"):  # interleaved, the best of two each
            done = subprocess.run([PY, "-c", _TIMELINE_RUN, s.base_url, str(n), record],
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                print(f"error: {done.stderr[-500:]}")
                target("timeline", "the timeline of 100,000 prompts fits its budget", False, "error")
                return
            out = json.loads(done.stdout)
            if record not in runs or out["rss_mb"] < runs[record]["rss_mb"]:
                runs[record] = out
    on, off = runs["on"], runs["off"]
    print("| recording | peak RSS MB | timeline bytes | attempts | waits | ok |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in (("off (hooks are no-ops)", off), ("on", on)):
        print(f"| {name} | {r['rss_mb']:.0f} | {r['nbytes']:,} | {r['attempts']:,} | {r['waits']:,} | {r['ok']:,} |")
    per_prompt = on["nbytes"] / n
    print(f"\nThe timeline holds {per_prompt:.1f} bytes per prompt here ({on['nbytes'] / 2**20:.2f} MB); "
          f"peak RSS {on['rss_mb'] - off['rss_mb']:+.1f} MB with recording.")
    target("timeline", f"timeline of 100,000 prompts <= {budget_mb} MB (columns, measured)",
           per_prompt * 100_000 <= budget_mb * 2**20, f"{per_prompt * 100_000 / 2**20:.2f} MB")
    target("timeline", f"peak RSS with recording - without <= {budget_mb} MB",
           on["rss_mb"] - off["rss_mb"] <= budget_mb * n / 100_000, f"{on['rss_mb'] - off['rss_mb']:+.1f} MB")
    target("timeline", "no prompt lost", on["ok"] == off["ok"] == n)
    print()


def scenario_import(q: bool) -> None:
    reps = 5
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def timed(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([PY, "-c", code], check=True, env=env, cwd=str(TESTS.parent))
        return time.perf_counter() - t0

    timed("import chatmagic")  # warm the page cache and .pyc files once, untimed
    bare_runs, import_runs = [], []
    for _ in range(reps):  # interleaved
        bare_runs.append(timed("pass"))
        import_runs.append(timed("import chatmagic"))
    bare, imp = statistics.median(bare_runs), statistics.median(import_runs)
    heavy = ["pandas", "numpy", "IPython", "ipywidgets", "tqdm", "openai", "aiohttp", "tenacity"]
    probe = "import sys, json, chatmagic; print(json.dumps({m: m in sys.modules for m in " + repr(heavy) + "}))"
    loaded = json.loads(subprocess.run([PY, "-c", probe], check=True, env=env, capture_output=True,
                                       text=True).stdout)
    print(f"## import\n\nwall of a fresh `python -c ...`, median of {reps} interleaved runs.\n")
    print("| command | median s | runs |")
    print("|---|---:|---|")
    print(f"| python -c \"pass\" | {bare:.3f} | {' '.join(f'{x:.3f}' for x in bare_runs)} |")
    print(f"| python -c \"import chatmagic\" | {imp:.3f} | {' '.join(f'{x:.3f}' for x in import_runs)} |")
    print(f"| import chatmagic alone | {imp - bare:.3f} | |")
    print()
    print("modules loaded by `import chatmagic`: "
          + ", ".join(f"{m}={'yes' if v else 'no'}" for m, v in loaded.items()))
    target("import", "import chatmagic <= 0.25 s (over a bare interpreter)", imp - bare <= 0.25,
           f"{imp - bare:.3f} s")
    target("import", "'pandas' not in sys.modules after import chatmagic", not loaded["pandas"])
    print()


SCENARIOS = ["ratelimit", "shapes", "cpu", "throughput", "faults", "memory", "cache", "timeline", "import"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", metavar="scenario",
                   help=f"any of {', '.join(SCENARIOS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="every workload ~10x smaller (smoke run)")
    p.add_argument("--reps", type=int, default=None,
                   help="runs per client in the cpu and throughput scenarios (default 5 and 3; 1 with --quick)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any target fails")
    args = p.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    chosen = args.scenarios or SCENARIOS
    reps = {"cpu": args.reps or (1 if args.quick else 5),
            "throughput": args.reps or (1 if args.quick else 3)}
    sys.stdout.reconfigure(line_buffering=True)  # tables and stderr progress lines in order
    import chatmagic
    print(f"# chatmagic benchmarks{' (quick)' if args.quick else ''}\n")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}; "
          f"chatmagic {chatmagic.__version__}; server: chatmagic/practice/server.py in its own process; "
          "each client in a fresh process; chatmagic's answer cache (if this version has one) in a "
          "fresh empty folder per run, so every run sends every prompt.\n")
    print(f"load average at start: {load()} (other work on this machine slows every client alike; "
          "compare ratios within a run)\n")
    started = time.perf_counter()
    for name in chosen:
        t0 = time.perf_counter()
        if name in ("cpu", "throughput"):
            globals()["scenario_" + name](args.quick, reps[name])
        else:
            globals()["scenario_" + name](args.quick)
        print(f"({name}: {time.perf_counter() - t0:.0f} s; load average now {load()})\n", flush=True)
    failed = [(s, t) for s, t, passed in RESULTS if not passed]
    print(f"## summary\n\n{len(RESULTS) - len(failed)}/{len(RESULTS)} targets met "
          f"in {time.perf_counter() - started:.0f} s" + (" (quick mode: workloads ~10x smaller, "
                                                       "targets indicative only)" if args.quick else ""))
    for s, t in failed:
        print(f"- FAIL [{s}] {t}")
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
