#!/usr/bin/env python
"""How often the local model's answers are right, before and after the few-shot framing.

    python tests/benchmarks/bench_local.py          # the question set of tests/local_questions.py (~1 min)
    python tests/benchmarks/bench_local.py --show   # every answer, too

One local server (``chatmagic.practice.local.start()``) answers the same questions twice, with
the settings ``%chatmany_local`` uses (max tokens 48, 4 in flight, no answer cache):

- before: llama.cpp's own chat endpoint behind the proxy (``server.backend_url``), which feeds the
  base model Gemma's chat template, as chatmagic did until the few-shot framing;
- after: the server's chat endpoint (``server.base_url``), the few-shot Q/A framing.

Then one-label ``--schema`` classifications (continents, review sentiment), the same two ways.

It prints right answers per kind of question and in all, and the seconds each pass took. A
markdown table for the README with ``--markdown``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the question set
from local_questions import LABELLED, QUESTIONS, is_right

import chatmagic
from chatmagic.practice import local


def ask(base_url: str) -> tuple[list[str | None], float]:
    started = time.perf_counter()
    results = chatmagic.chat_many([q for _, q, _ in QUESTIONS], base_url=base_url, model=local.MODEL_NAME,
                                  max_tokens=48, concurrency=4, cache=False, progress=False)
    return results.texts(), time.perf_counter() - started


def labels(base_url: str) -> dict[str, int]:
    """Right labels per --schema spec (one-label schemas: continents, sentiment)."""
    right: Counter[str] = Counter()
    for spec in dict.fromkeys(s for s, _, _ in LABELLED):
        asked = [(q, want) for s, q, want in LABELLED if s == spec]
        results = chatmagic.chat_many([q for q, _ in asked], base_url=base_url, model=local.MODEL_NAME, schema=spec,
                                      max_tokens=24, temperature=0, concurrency=4, cache=False, progress=False)
        field = spec.split(":")[0]
        right[field] = sum(isinstance(r.data, dict) and r.data.get(field) == want
                           for r, (_, want) in zip(results, asked))
    return right


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--show", action="store_true", help="print every answer")
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    args = parser.parse_args()
    with local.start() as server:
        passes = {"before (chat template)": ask(f"{server.backend_url}/v1"),
                  "after (few-shot)": ask(server.base_url)}
        schema = {"before": labels(f"{server.backend_url}/v1"), "after": labels(server.base_url)}
    kinds = list(dict.fromkeys(kind for kind, _, _ in QUESTIONS))
    totals = Counter(kind for kind, _, _ in QUESTIONS)
    right = {name: Counter(kind for (kind, _, ok), text in zip(QUESTIONS, texts) if is_right(kind, text, ok))
             for name, (texts, _) in passes.items()}
    if args.show:
        for i, (kind, question, _) in enumerate(QUESTIONS):
            print(f"{kind:10} {question}")
            for name, (texts, _) in passes.items():
                mark = "+" if is_right(kind, texts[i], QUESTIONS[i][2]) else "-"
                print(f"   {mark} {name:24} {texts[i]!r}")
    print(f"{len(QUESTIONS)} questions; right answers per kind")
    print(f"{'kind':12}" + "".join(f"{name:>26}" for name in passes))
    for kind in [*kinds, "all"]:
        n = len(QUESTIONS) if kind == "all" else totals[kind]
        cells = [sum(r.values()) if kind == "all" else r[kind] for r in right.values()]
        print(f"{kind:12}" + "".join(f"{f'{c}/{n}':>26}" for c in cells))
    print("seconds     " + "".join(f"{seconds:>26.1f}" for _, seconds in passes.values()))
    per_field = Counter(s.split(":")[0] for s, _, _ in LABELLED)
    print("--schema, one label: " + "; ".join(
        f"{field} {schema['before'][field]}/{n} before, {schema['after'][field]}/{n} after"
        for field, n in per_field.items()))
    if args.markdown:
        print("\n| kind | questions | " + " | ".join(passes) + " |\n|---|---|" + "---|" * len(passes))
        for kind in [*kinds, "all"]:
            n = len(QUESTIONS) if kind == "all" else totals[kind]
            cells = [sum(r.values()) if kind == "all" else r[kind] for r in right.values()]
            print(f"| {kind} | {n} | " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
