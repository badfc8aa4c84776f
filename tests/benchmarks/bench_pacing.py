#!/usr/bin/env python
"""Issue 20's rows: servers that enforce a limit but say little or say it in other units.

    python tests/benchmarks/bench_pacing.py                # every row, full size (~6 min)
    python tests/benchmarks/bench_pacing.py quantized storm
    python tests/benchmarks/bench_pacing.py --quick        # ~5x smaller (smoke run)

Each row runs chatmagic (never told the limit), the recipe (tenacity) and the openai SDK (its
default max_retries=2) against the same practice server, one fresh process each, in one run
(bench.py's machinery), and prints the table with wall / ideal and the row's targets. The ideal
is the limit's own pace: N / (limit per second).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import RESULTS, Server, load, ok, run_client, table, target

LATENCY, RPM = 0.05, 1200
PEERS = [("recipe (tenacity)", "recipe", {}), ("openai SDK, max_retries=2", "openai", dict(max_retries=2))]


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
        dict(name="storm", behaviour="429 (retry-after 1) to everything for 10 s, then healthy",
             server=dict(storm_s=10.0 / s), n=100, conc=16, ideal=10.0 / s,
             targets=[("done <= 0.6 s after the storm ends", lambda cm, x: cm["wall"] <= x["ideal"] + 0.6),
                      ("loses no prompt", lambda cm, x: cm["lost"] == 0)]),
    ]


def run_row(row: dict) -> None:
    n, conc = row["n"], row["conc"]
    print(f"### {row['name']}: {row['behaviour']}\n\n{n} prompts, concurrency {conc}, latency "
          f"{LATENCY:g} s, ideal {row['ideal']:.2f} s\n")
    common = dict(concurrency=conc, timeout=60.0)
    with Server(latency=LATENCY, **row["server"]) as s:
        got = [run_client(s, "chatmagic", "chatmagic", n, **common)]
        if row.get("peers", True):
            got += [run_client(s, label, kind, n, **common, **cfg) for label, kind, cfg in PEERS]
    table(got, "wall/ideal", lambda r: r["wall"] / row["ideal"])
    cm = got[0]
    for text, check in row["targets"]:
        passed = ok(cm) and check(cm, row)
        note = (f"{cm['wall'] / row['ideal']:.3f}x, {cm['r429'] / n:.3f} 429/prompt, lost {cm['lost']}"
                if ok(cm) else cm["error"])
        target(row["name"], f"[{row['name']}] chatmagic {text}", passed, note)
    print()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", nargs="*", help="row names (default: all)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    chosen = [r for r in rows(args.quick) if not args.rows or r["name"] in args.rows]
    print(f"## pacing (issue 20){' (quick)' if args.quick else ''}\n\nload average at start: {load()}\n")
    for row in chosen:
        run_row(row)
    failed = [t for _, t, passed in RESULTS if not passed]
    print(f"## summary\n\n{len(RESULTS) - len(failed)}/{len(RESULTS)} targets met; load average {load()}")
    for t in failed:
        print(f"- FAIL {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
