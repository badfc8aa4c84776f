#!/usr/bin/env python
"""Issue 20's scale rows: a million prompts in bounded memory, CPU per prompt flat in N, and the
overhead above bare aiohttp at 5,000 requests in flight.

    python tests/benchmarks/bench_scale.py            # both rows, full size (~15 min on 2 cores)
    python tests/benchmarks/bench_scale.py memory     # one row
    python tests/benchmarks/bench_scale.py --quick    # every N 10x smaller (smoke run)
    python tests/benchmarks/bench_scale.py --smoke    # 100x smaller: that it runs (the test suite)

bench.py's machinery: the practice server in a process of its own, each client run in a fresh
process (its peak RSS and CPU time are its own), chatmagic's answer cache on (its default) in a
fresh empty folder per run.

- memory: N = 100,000 / 500,000 / 1,000,000 prompts (bench.make_prompts, ~66 characters each),
  latency 0, concurrency 200, ``chat_many`` with progress off. Peak RSS of the process, and of
  a baseline process that only imports chatmagic and builds the same prompts (the user's own
  data: the prompts, ~130 bytes each); CPU ms per prompt at each N and its ratio to the smallest N.
- concurrency: N = 20,000, concurrency 5,000, latency 0.1 s: chatmagic's wall vs bare aiohttp
  (one session, a semaphore, no retries), interleaved runs, medians, in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # the benchmarks' shared machinery, beside this file

RSS_TARGETS = {1_000_000: 400, 500_000: 200}  # MB, issue 20
CPU_FLAT = 1.10   # CPU per prompt at 1M / at 100k
WALL_C5000 = 1.10  # chatmagic wall / bare aiohttp wall


def scenario_memory(q: bool, shrink: int = 1) -> None:
    sizes = [n // shrink for n in ([10_000, 50_000, 100_000] if q else [100_000, 500_000, 1_000_000])]
    conc = 200
    print(f"## memory\n\nserver: no limit, latency 0; concurrency {conc}; chatmagic.chat_many, progress off, "
          "answer cache on (a fresh folder); each N in a fresh process; peak RSS = ru_maxrss. Baseline: a fresh "
          "process that imports chatmagic and builds the same prompts.\n")
    rows = []
    with bench.Server(latency=0.0) as s:
        for n in sizes:
            base = bench.run_client(None, f"baseline {n:,}", "baseline", n, concurrency=conc, timeout=60)
            cm = bench.run_client(s, f"chatmagic {n:,}", "chatmagic", n, concurrency=conc, timeout=60.0,
                                  progress=False, sync=True, time_limit=2400)
            rows.append((n, base, cm))
    first = rows[0][2]
    print("| prompts | baseline RSS MB | chatmagic peak RSS MB | added bytes/prompt | wall s | CPU ms/prompt "
          f"| CPU/prompt vs {sizes[0]:,} | lost |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, base, cm in rows:
        if not (bench.ok(cm) and bench.ok(base)):
            print(f"| {n:,} | error: {cm.get('error') or base.get('error')} | | | | | | |")
            continue
        added = (cm["rss_mb"] - base["rss_mb"]) * 2**20 / n
        ratio = (cm["cpu"] / n) / (first["cpu"] / first["n"]) if bench.ok(first) else float("nan")
        print(f"| {n:,} | {base['rss_mb']:.0f} | {cm['rss_mb']:.0f} | {added:.0f} | {cm['wall']:.1f} "
              f"| {cm['cpu'] / n * 1e3:.3f} | {ratio:.2f}x | {cm['lost']:g} |")
    print()
    for n, _, cm in rows:
        limit = None if q or shrink > 1 else RSS_TARGETS.get(n)
        if limit is not None:
            bench.target("memory", f"chatmagic peak RSS <= {limit} MB at {n:,} prompts",
                         bench.ok(cm) and cm["rss_mb"] <= limit,
                         f"{cm['rss_mb']:.0f} MB, {cm['rss_mb'] / limit:.2f}x the target" if bench.ok(cm) else "")
    n, _, last = rows[-1]
    if bench.ok(last) and bench.ok(first):
        ratio = (last["cpu"] / n) / (first["cpu"] / first["n"])
        bench.target("memory", f"CPU per prompt flat in N: {n:,} vs {first['n']:,} <= {CPU_FLAT}x",
                     ratio <= CPU_FLAT, f"{ratio:.2f}x")
    bench.target("memory", "no prompt lost", all(bench.ok(cm) and cm["lost"] == 0 for _, _, cm in rows))
    print()


def scenario_concurrency(q: bool, reps: int, shrink: int = 1) -> None:
    n, conc, latency = (2_000 if q else 20_000) // shrink, (500 if q else 5_000) // shrink, 0.1
    print(f"## concurrency\n\nserver: no limit, latency {latency} s; {n:,} prompts, concurrency {conc:,}; "
          f"ideal = {n:,}/{conc:,} x {latency} = {n / conc * latency:g} s. {reps} interleaved runs per client, "
          "medians. chatmagic with its defaults (retries, answer cache in a fresh folder), progress off.\n")
    clients = [("chatmagic", "chatmagic"), ("bare aiohttp", "bare")]
    runs: dict[str, list[dict]] = {label: [] for label, _ in clients}
    with bench.Server(latency=latency) as s:
        for _ in range(reps):
            for label, kind in clients:
                runs[label].append(bench.run_client(s, label, kind, n, concurrency=conc, timeout=120.0,
                                                    progress=False, time_limit=600))
    rows = [bench.median_of(runs[label]) for label, _ in clients]
    cm, bare = rows
    bench.table(rows, "wall / bare", lambda r: r["wall"] / bare["wall"] if bench.ok(bare) else float("nan"),
                extra=[("wall s, each run", lambda r: " ".join(f"{w:.2f}" for w in r.get("wall_runs", [])))])
    good = bench.ok(cm) and bench.ok(bare)
    bench.target("concurrency", f"chatmagic wall <= {WALL_C5000}x bare aiohttp at concurrency {conc:,}",
                 good and cm["wall"] <= WALL_C5000 * bare["wall"],
                 f"{cm['wall'] / bare['wall']:.2f}x (runs: chatmagic "
                 + " ".join(f"{w:.2f}" for w in cm.get("wall_runs", [])) + ", bare "
                 + " ".join(f"{w:.2f}" for w in bare.get("wall_runs", [])) + ")" if good else "")
    bench.target("concurrency", "no prompt lost (chatmagic)", bench.ok(cm) and cm["lost"] == 0)
    print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenarios", nargs="*", help="memory, concurrency (default: both)")
    p.add_argument("--quick", action="store_true", help="every N 10x smaller (smoke run)")
    p.add_argument("--smoke", action="store_true", help="100x smaller: 1,000 to 10,000 prompts (the test suite)")
    p.add_argument("--reps", type=int, default=None, help="runs per client in the concurrency row (default 3)")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    chosen = args.scenarios or ["memory", "concurrency"]
    if set(chosen) - {"memory", "concurrency"}:
        p.error("scenarios: memory, concurrency")
    print(f"# chatmagic scale benchmarks{' (quick)' if args.quick else ''}\n\nload average at start: {bench.load()}\n")
    started = time.perf_counter()
    for name in chosen:
        t0 = time.perf_counter()
        if name == "memory":
            scenario_memory(args.quick or args.smoke, 10 if args.smoke else 1)
        else:
            scenario_concurrency(args.quick or args.smoke, args.reps or (1 if args.quick or args.smoke else 3),
                                 5 if args.smoke else 1)
        print(f"({name}: {time.perf_counter() - t0:.0f} s; load average now {bench.load()})\n")
    failed = [(s, t) for s, t, passed in bench.RESULTS if not passed]
    print(f"## summary\n\n{len(bench.RESULTS) - len(failed)}/{len(bench.RESULTS)} targets met in "
          f"{time.perf_counter() - started:.0f} s")
    for s, t in failed:
        print(f"- FAIL [{s}] {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
