#!/usr/bin/env python
"""Issue 20's rows: servers that enforce a limit but say little or say it in other units.

    python tests/benchmarks/bench_pacing.py                # every row, full size (~6 min)
    python tests/benchmarks/bench_pacing.py quantized storm
    python tests/benchmarks/bench_pacing.py --quick        # ~5x smaller (smoke run)
    python tests/benchmarks/bench_pacing.py --external     # also the rows on mocklimit (PyPI)

Each row runs chatmagic (never told the limit), the recipe (tenacity) and the openai SDK (its
default max_retries=2) against the same practice server, one fresh process each, in one run
(bench.py's machinery), and prints the table with wall / ideal and the row's targets. The ideal
is the limit's own pace: N / (limit per second).

``--external`` runs the per-second rows again against a limiter nobody here wrote: mocklimit
(``pip install mocklimit``), one server process per client run, configured by the files in
``mocklimit/`` (fixed 1 s windows under a 60 s one, a sliding 1 s window, a 20/s token bucket,
and the windows with no rate-limit headers, 429 + retry-after-ms only). Its answers are all
one fixed completion, so there an answer counts when it came back at all.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
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
        dict(name="storm-offset", behaviour="the same, 10.25 s: it ends half-way between two of chatmagic's "
             "probes (2 a second during a storm)", server=dict(storm_s=10.25 / s), n=100, conc=16,
             ideal=10.25 / s,
             targets=[("done <= 0.6 s after the storm ends", lambda cm, x: cm["after"] <= 0.6),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
    ]


def run_row(row: dict) -> None:
    n, conc = row["n"], row["conc"]
    print(f"### {row['name']}: {row['behaviour']}\n\n{n} prompts, concurrency {conc}, latency "
          f"{LATENCY:g} s, ideal {row['ideal']:.2f} s\n")
    common = dict(concurrency=conc, timeout=60.0, short=row.get("short", False))
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", nargs="*", help="row names (default: all)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--external", action="store_true", help="also run the rows on mocklimit (PyPI)")
    p.add_argument("--only-external", action="store_true", help="only the rows on mocklimit")
    p.add_argument("--no-peers", action="store_true", help="chatmagic alone (a quick look)")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    chosen = [r for r in rows(args.quick) if not args.rows or r["name"] in args.rows]
    if args.no_peers:
        for row in chosen:
            row["peers"] = False
    print(f"## pacing (issue 20){' (quick)' if args.quick else ''}\n\nload average at start: {load()}\n")
    for row in [] if args.only_external else chosen:
        run_row(row)
    if args.external or args.only_external:
        run_external(args.quick, [name for name, _ in EXTERNAL if name in args.rows], not args.no_peers)
    failed = [t for _, t, passed in RESULTS if not passed]
    print(f"## summary\n\n{len(RESULTS) - len(failed)}/{len(RESULTS)} targets met; load average {load()}")
    for t in failed:
        print(f"- FAIL {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
