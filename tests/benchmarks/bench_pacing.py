#!/usr/bin/env python
"""Issue 20's rows: servers that enforce a limit but say little or say it in other units.

    python tests/benchmarks/bench_pacing.py                # every practice-server row (~10 min)
    python tests/benchmarks/bench_pacing.py quantized storm
    python tests/benchmarks/bench_pacing.py queued         # DeepSeek's queue: blank lines past the timeout
    python tests/benchmarks/bench_pacing.py --quick        # ~5x smaller (smoke run)
    python tests/benchmarks/bench_pacing.py --external     # also the rows on mocklimit (PyPI)
    python tests/benchmarks/bench_pacing.py --external --litellm /path/venv/bin/litellm   # and LiteLLM's proxy

Each row runs chatmagic (never told the limit), the recipe (tenacity) and the openai SDK (its
default max_retries=2) against the same server, one fresh process each, in one run (bench.py's
machinery), and prints the table with wall / ideal and the row's targets. The ideal is the
limit's own pace: N / (limit per second); for the storm rows, the time after the storm's end.

``--external`` runs the per-second rows again against a limiter nobody here wrote: mocklimit
(``pip install mocklimit``), one server process per client run, configured by the files in
``mocklimit/`` (fixed 1 s windows under a 60 s one, a sliding 1 s window, a 20/s token bucket,
and the windows with no rate-limit headers, 429 + retry-after-ms only). Its answers are all
one fixed completion, so there an answer counts when it came back at all.

``--litellm PATH``: LiteLLM's proxy (``pip install 'litellm[proxy]'`` in a venv of its own: it
pins its own pydantic, httpx and more) with an rpm limit per deployment in front of the practice
server; see ``LiteLLM``. Its 429s are not counted (the proxy shows no count).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import RESULTS, Server, fmt, load, make_prompts, ok, run_client, table, target

HERE = Path(__file__).resolve().parent
LATENCY, RPM = 0.05, 1200
PEERS = [("recipe (tenacity)", "recipe", {}), ("openai SDK, max_retries=2", "openai", dict(max_retries=2))]


def _tokens(prompts: list[str]) -> int:
    """What the practice server charges without max_tokens: the prompt's characters / 4 + 1,
    plus the echo answer's own (characters / 4 + 1)."""
    return sum(len(p) // 4 + 1 + len(f"echo: {p}") // 4 + 1 for p in prompts)


def rows(q: bool) -> list[dict]:
    s = 5 if q else 1
    per_s = RPM / 60
    return [
        dict(name="quantized", behaviour="1200 rpm enforced per second (20/s), OpenAI headers: remaining "
             "scaled to the minute, reset < 1 s", server=dict(rpm=RPM, limit_shape="quantized"),
             n=300 // s, conc=50, ideal=300 // s / per_s,
             targets=[("wall <= 1.05x ideal", lambda cm, x: cm["wall"] <= 1.05 * x["ideal"]),
                      ("<= 0.05 429/prompt", lambda cm, x: cm["r429"] / cm["n"] <= 0.05),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
        dict(name="quantized-1200", behaviour="the same, 1,200 prompts", server=dict(rpm=RPM, limit_shape="quantized"),
             n=1200 // s, conc=50, ideal=1200 // s / per_s, peers=False,
             targets=[("wall <= 1.05x ideal", lambda cm, x: cm["wall"] <= 1.05 * x["ideal"]),
                      ("<= 0.05 429/prompt", lambda cm, x: cm["r429"] / cm["n"] <= 0.05),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
        dict(name="azure", behaviour="remaining-only headers (Azure-like), 1200 rpm enforced per second",
             server=dict(rpm=RPM, headers="azure"), n=300 // s, conc=50, ideal=300 // s / per_s,
             targets=[("wall <= 1.15x ideal", lambda cm, x: cm["wall"] <= 1.15 * x["ideal"]),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
        dict(name="retry-after", behaviour="no rate-limit headers, 429 + retry-after only, 1200 rpm per second",
             server=dict(rpm=RPM, headers="retry-after"), n=300 // s, conc=50, ideal=300 // s / per_s,
             targets=[("wall <= 1.2x ideal", lambda cm, x: cm["wall"] <= 1.2 * x["ideal"]),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
        dict(name="none", behaviour="no headers at all, 429s only, 1200 rpm per second",
             server=dict(rpm=RPM, headers="none"), n=300 // s, conc=50, ideal=300 // s / per_s,
             targets=[("wall <= 1.3x ideal", lambda cm, x: cm["wall"] <= 1.3 * x["ideal"]),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
        dict(name="tokens", behaviour="30,000 tpm enforced per second (500/s), OpenAI token headers; requests "
             "without max_tokens: the server charges the answer's real length (~31 tokens a request)",
             server=dict(tpm=30000), n=300 // s, conc=50, ideal=_tokens(make_prompts(300 // s)) / 500,
             targets=[("wall <= 1.15x ideal", lambda cm, x: cm["wall"] <= 1.15 * x["ideal"]),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
        dict(name="tokens-short", behaviour="6,000 tpm enforced per second (100/s), the same without max_tokens, "
             "short prompts (~6 tokens a request)", server=dict(tpm=6000), n=300 // s, conc=50,
             ideal=_tokens(make_prompts(300 // s, short=True)) / 100, short=True,
             targets=[("wall <= 1.15x ideal", lambda cm, x: cm["wall"] <= 1.15 * x["ideal"]),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
        # the storm starts at the server's first request; "after" is the last answer's time less
        # the storm's end, on the machine's one monotonic clock (the run's setup is not pacing)
        dict(name="storm", behaviour="429 (retry-after 1) to everything for 10 s, then healthy",
             server=dict(storm_s=10.0 / s), n=100, conc=16, ideal=10.0 / s,
             targets=[("done <= 0.6 s after the storm ends", lambda cm, x: cm["after"] <= 0.6),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
        dict(name="storm-offset", behaviour="the same, 10.1 s: it ends half-way between two of chatmagic's "
             "probes (5 a second during a storm)", server=dict(storm_s=10.1 / s), n=100, conc=16,
             ideal=10.1 / s,
             targets=[("done <= 0.6 s after the storm ends", lambda cm, x: cm["after"] <= 0.6),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
        # DeepSeek under load: the 200 at once, blank lines while queued, then the answer; each
        # client's timeout (2 s) is shorter than the queue: a cut request loses its place
        dict(name="queued", behaviour="every request held 5 s with blank lines (DeepSeek under load), "
             "timeout 2 s", server=dict(queue_s=5.0), n=60, conc=60, ideal=5.0 + LATENCY, timeout=2.0,
             time_limit=60,  # the recipe's 20 attempts, each cut at 2 s, would back off for ~10 min
             targets=[("loses no prompt", lambda cm, x: cm["lost"] == 0),
                      ("1 request a prompt (none cut and sent again)", lambda cm, x: cm["requests"] == cm["n"])]),
    ]


def run_row(row: dict) -> None:
    n, conc = row["n"], row["conc"]
    print(f"### {row['name']}: {row['behaviour']}\n\n{n} prompts, concurrency {conc}, latency "
          f"{LATENCY:g} s, ideal {row['ideal']:.2f} s\n")
    common = dict(concurrency=conc, timeout=row.get("timeout", 60.0), short=row.get("short", False))
    if "time_limit" in row:  # a client that never gets there is stopped and shown as such
        common["time_limit"] = row["time_limit"]
    with Server(latency=LATENCY, **row["server"]) as s:
        got = [run_client(s, "chatmagic", "chatmagic", n, **common)]
        if row.get("peers", True):
            got += [run_client(s, label, kind, n, **common, **cfg) for label, kind, cfg in PEERS]
    storm = row["server"].get("storm_s")
    extra = []
    if storm:
        for r in got:
            if ok(r) and r.get("storm_started") is not None:
                r["after"] = r["ended"] - r["storm_started"] - storm
        extra = [("done after the storm s", lambda r: fmt(r.get("after")))]
    table(got, "wall/ideal", lambda r: r["wall"] / row["ideal"], extra=extra)
    cm = got[0]
    for text, check in row["targets"]:
        passed = ok(cm) and check(cm, row)
        note = (f"{cm['wall'] / row['ideal']:.3f}x, {cm['r429'] / n:.3f} 429/prompt, lost {cm['lost']}"
                + (f", done {cm['after']:.2f} s after the storm" if "after" in cm else "")
                if ok(cm) else cm["error"])
        target(row["name"], f"[{row['name']}] chatmagic {text}", passed, note)
    print()


class MockLimit:
    """mocklimit in its own process, started afresh for each client run (fresh limiter state):
    the interface of bench.Server that run_client uses (base_url, reset, stats)."""

    def __init__(self, config: str):
        self.config = str(HERE / "mocklimit" / f"{config}.yaml")
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    def reset(self) -> None:
        self.stop()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mocklimit", "serve", "--spec", str(HERE / "mocklimit" / "openapi.yaml"),
             "--rate-config", self.config, "--port", str(port), "--log-level", "ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # polls until it answers
            try:
                self._stats()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("mocklimit did not start within 30 s")

    def _stats(self) -> dict:
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/mocklimit/stats", timeout=5) as r:
            return json.load(r)

    def stats(self) -> dict:
        per_ip = next(iter(self._stats().get("POST /v1/chat/completions", {}).values()),
                      {"total_requests": 0, "total_429s": 0})
        total, rejected = per_ip["total_requests"], per_ip["total_429s"]
        self.stop()
        return {"requests": total, "by_status": {200: total - rejected, 429: rejected},
                "peak_in_flight": float("nan"), "cpu_s": 0.0}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


EXTERNAL = [("windows", "mocklimit: 20 per fixed 1 s window under 1200 per 60 s, x-ratelimit-* headers of "
             "the tighter window (limit 20), retry-after-ms"),
            ("sliding", "mocklimit: 20 per sliding 1 s window, x-ratelimit-* headers, retry-after-ms"),
            ("bucket", "mocklimit: token bucket, 20 deep, 20 a second, x-ratelimit-* headers, retry-after-ms"),
            ("retry-after", "mocklimit: the fixed windows, no rate-limit headers, 429 + retry-after-ms only")]


def run_external(q: bool, only: list[str], peers: bool = True) -> None:
    n, conc = (60 if q else 300), 50
    ideal = n / (RPM / 60)
    for config, behaviour in EXTERNAL:
        if only and config not in only:
            continue
        print(f"### mocklimit {config}: {behaviour}\n\n{n} prompts, concurrency {conc}, latency "
              f"{LATENCY:g} s, ideal {ideal:.2f} s\n")
        server = MockLimit(config)
        common = dict(concurrency=conc, timeout=60.0)
        try:
            got = [run_client(server, "chatmagic", "chatmagic", n, **common)]  # type: ignore[arg-type]
            got += [run_client(server, label, kind, n, **common, **cfg)  # type: ignore[arg-type]
                    for label, kind, cfg in (PEERS if peers else [])]
        finally:
            server.stop()
        for r in got:  # every answer is mocklimit's one completion: count missing ones only
            if ok(r):
                r["lost"] -= r["wrong"]
        table(got, "wall/ideal", lambda r: r["wall"] / ideal)
        cm = got[0]
        note = (f"{cm['wall'] / ideal:.3f}x, {cm['r429'] / n:.3f} 429/prompt, lost {cm['lost']}"
                if ok(cm) else cm["error"])
        target("mocklimit", f"[mocklimit {config}] chatmagic wall <= 1.2x ideal",
               ok(cm) and cm["wall"] <= 1.2 * ideal, note)
        target("mocklimit", f"[mocklimit {config}] chatmagic loses no prompt", ok(cm) and cm["lost"] == 0, note)
        print()


class LiteLLM:
    """LiteLLM's proxy (its own venv: ``pip install 'litellm[proxy]'``, then ``--litellm
    PATH/bin/litellm``) in front of the practice server (no limit of its own), with an rpm limit
    per deployment (usage-based-routing-v2: a fixed window per calendar minute; answers carry
    ``x-ratelimit-{limit,remaining}-requests`` without a reset, its 429s only
    ``llm_provider-retry-after: 60``). One deployment per client, so each run has its own count;
    each run starts at second ``PHASE`` of a minute, so its ideal is the time to that minute's end."""

    PHASE = 30

    def __init__(self, binary: str, upstream: str, rpms: dict[str, int]):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
        deployments = "".join(
            f"  - model_name: {name}\n    litellm_params:\n      model: openai/fake-model\n"
            f"      api_base: {upstream}\n      api_key: sk-local\n      rpm: {rpm}\n" for name, rpm in rpms.items())
        (self.dir / "config.yaml").write_text(
            f"model_list:\n{deployments}router_settings:\n  routing_strategy: usage-based-routing-v2\n"
            "litellm_settings:\n  num_retries: 0\n")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true", "LITELLM_LOG": "ERROR"}
        self.proc = subprocess.Popen([binary, "--config", str(self.dir / "config.yaml"), "--host", "127.0.0.1",
                                      "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=env, cwd=self.dir)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.phased = True
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # polls until it answers (~30 s: a heavy import)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).close()
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("LiteLLM's proxy did not start within 120 s")

    def reset(self) -> None:
        """Wait for second PHASE of a minute (the windows are calendar minutes)."""
        if self.phased:
            time.sleep((self.PHASE - time.time()) % 60)

    def stats(self) -> dict:  # the proxy counts nothing we can read: 429s unknown
        return {"requests": float("nan"), "by_status": {429: float("nan")}, "peak_in_flight": float("nan"),
                "cpu_s": 0.0}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def run_litellm(binary: str, q: bool, peers: bool = True) -> None:
    rpm, n, conc = 60, (75 if q else 90), 10
    clients = [("chatmagic", "chatmagic", {})] + (PEERS if peers else [])
    print(f"### LiteLLM proxy: {rpm} rpm per deployment, a fixed window per calendar minute; answers say "
          f"limit and remaining (no reset), 429s only llm_provider-retry-after: 60\n\n{n} prompts, concurrency "
          f"{conc}, latency {LATENCY:g} s (the practice server behind it); each run starts at second "
          f"{LiteLLM.PHASE} of a minute: ideal = the time to that minute's end (the second window opens) + "
          f"the time bare aiohttp takes for the {n - rpm} left through the proxy without a limit (its own "
          "latency, ~0.5 s a request on a loaded machine)\n")
    rpms = {f"fake-model-{i}": rpm for i in range(len(clients))}
    with Server(latency=LATENCY) as upstream:
        proxy = LiteLLM(binary, upstream.base_url, {**rpms, "fake-model-free": 10**6})
        try:
            proxy.phased = False
            free = run_client(proxy, "bare aiohttp, no limit", "bare", n - rpm, concurrency=conc, timeout=60.0,
                              model="fake-model-free")  # type: ignore[arg-type]
            proxy.phased = True
            got = [run_client(proxy, label, kind, n, concurrency=conc, timeout=60.0, model=f"fake-model-{i}",
                              time_limit=180, **cfg)  # type: ignore[arg-type]
                   for i, (label, kind, cfg) in enumerate(clients)]
        finally:
            proxy.stop()
    drain = free["wall"] if ok(free) else float("nan")
    print(f"bare aiohttp, {n - rpm} prompts through the proxy without a limit: {drain:.2f} s\n")
    offset = time.time() - time.monotonic()
    for r in got:
        if ok(r):
            started = r["ended"] - r["wall"] + offset
            r["ideal"] = math.ceil(started / 60) * 60 - started + drain
    table(got, "wall/ideal", lambda r: r["wall"] / r["ideal"], extra=[("ideal s", lambda r: fmt(r.get("ideal")))])
    cm = got[0]
    note = f"{cm['wall'] / cm['ideal']:.3f}x, lost {cm['lost']}" if ok(cm) else cm["error"]
    target("litellm", "[LiteLLM] chatmagic wall <= 1.2x ideal", ok(cm) and cm["wall"] <= 1.2 * cm["ideal"], note)
    target("litellm", "[LiteLLM] chatmagic loses no prompt", ok(cm) and cm["lost"] == 0, note)
    print()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", nargs="*", help="row names (default: all)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--external", action="store_true", help="also run the rows on mocklimit (PyPI)")
    p.add_argument("--only-external", action="store_true", help="only the rows on mocklimit")
    p.add_argument("--no-peers", action="store_true", help="chatmagic alone (a quick look)")
    p.add_argument("--litellm", metavar="PATH", help="also the row on LiteLLM's proxy (PATH: its litellm command)")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    chosen = [r for r in rows(args.quick) if not args.rows or r["name"] in args.rows]
    if args.no_peers:
        for row in chosen:
            row["peers"] = False
    print(f"## pacing (issue 20){' (quick)' if args.quick else ''}\n\nload average at start: {load()}\n")
    for row in [] if args.only_external else chosen:
        run_row(row)
    mine = [name for name, _ in EXTERNAL if name in args.rows]
    if (args.external or args.only_external) and (mine or not args.rows):
        run_external(args.quick, mine, not args.no_peers)
    if args.litellm:
        run_litellm(args.litellm, args.quick, not args.no_peers)
    failed = [t for _, t, passed in RESULTS if not passed]
    print(f"## summary\n\n{len(RESULTS) - len(failed)}/{len(RESULTS)} targets met; load average {load()}")
    for t in failed:
        print(f"- FAIL {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
