"""What the hostile-data guards cost an ordinary answer, as ratios to the plain step in the same run:
the bounded parse of a structured answer (``core/jsonparse.loads``) against ``json.loads``, and
scrubbing the key from an answer's bytes (``Client.scrub_raw``) against parsing them.

    python tests/benchmarks/bench_structured.py [--repeat N]

CPU only, no server: each row is the best of ``--repeat`` timings of the same work.
"""

from __future__ import annotations

import argparse
import json
import timeit

from chatmagic.core.jsonparse import loads
from chatmagic.settings import resolve
from chatmagic.transport.client import Client

KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 5


def answers() -> dict[str, str]:
    """A typical --schema answer, a 20 KB one and a 1 MB one (lists of small objects: many
    brackets, so the depth is counted on the slow path), and a hostile one 5,000 deep."""
    row = {"label": "positive", "confidence": 0.93, "reason": "the reviewer liked it [a lot]", "tags": ["a", "b"]}
    return {"typical (150 B)": json.dumps(row),
            "20 KB, 130 objects": json.dumps({"rows": [row] * 130}),
            "1 MB, 6,500 objects": json.dumps({"rows": [row] * 6500}),
            "hostile, 5,000 deep (10 KB)": '{"x": ' + "[" * 5000 + "]" * 5000 + "}"}


def best(fn: object, number: int, repeat: int) -> float:
    """Seconds per call, the best of ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| answer | json.loads µs | bounded loads µs | ratio |")
    print("|---|---:|---:|---:|")
    for name, text in answers().items():
        number = max(1, 200_000 // len(text))
        try:
            json.loads(text)
            plain = best(lambda t=text: json.loads(t), number, args.repeat)
        except RecursionError:
            plain = float("nan")  # the unbounded parse cannot read it: the run used to end here
        try:
            loads(text)
        except ValueError:
            pass
        bounded = best(lambda t=text: _refused(t), number, args.repeat)
        ratio = "refused" if plain != plain else f"{bounded / plain:.2f}x"
        print(f"| {name} | {'RecursionError' if plain != plain else f'{plain * 1e6:,.1f}'} | "
              f"{bounded * 1e6:,.1f} | {ratio} |")
    client = Client(resolve({"base_url": "http://127.0.0.1:9/v1", "api_key": KEY}))
    print()
    print("| answer body | json.loads µs | scrub_raw µs | ratio |")
    print("|---|---:|---:|---:|")
    for name, text in list(answers().items())[:3]:
        body = json.dumps({"choices": [{"message": {"content": text}}], "model": "m"}).encode()
        number = max(1, 200_000 // len(body))
        parse = best(lambda b=body: json.loads(b), number, args.repeat)
        scrub = best(lambda b=body: client.scrub_raw(b), number, args.repeat)
        print(f"| {name} | {parse * 1e6:,.1f} | {scrub * 1e6:,.1f} | {scrub / parse:.2f}x |")


def _refused(text: str) -> object:
    try:
        return loads(text)
    except ValueError:
        return None


if __name__ == "__main__":
    main()
