#!/usr/bin/env python
"""Make docs/plot.png, the README's picture of a run, against the practice server (offline).

    python docs/make_plot.py

A rate limit the server does not announce (so the first burst meets 429s and one shared cooldown),
a few HTTP 500s, and stalls cut by a one-second timeout.
"""

from pathlib import Path

import chatmagic
from chatmagic.practice.server import FakeOpenAI

OUT = Path(__file__).resolve().parent / "plot.png"


def main() -> None:
    with FakeOpenAI(latency=0.15, rpm=1200, headers="none", fail_rate=0.05, stall_rate=0.03,
                    stall_s=10, seed=3) as server:
        results = chatmagic.chat_many([f"Question {i}" for i in range(120)], base_url=server.base_url,
                                      model="practice", concurrency=16, timeout=1, cache=False,
                                      progress=False)
    print(results.summary())
    fig = results.plot(title="120 prompts, -c 16 -t 1, against a server allowing 1200 requests/min")
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
