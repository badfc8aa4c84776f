"""The benchmark script still runs (a small workload; its figures are not judged here)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "benchmarks" / "bench.py"


def test_quick_benchmark_runs_and_loses_nothing():
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "ratelimit", "import"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| chatmagic |")]
    assert rows, done.stdout
    lost = int(rows[0][7])
    assert lost == 0
    assert "target: 'pandas' not in sys.modules after import chatmagic -> PASS" in done.stdout


def test_hostile_memory_benchmark_runs():
    script = BENCH.parent / "bench_hostile.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "hugelength"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| hugelength |"))
    assert "too_large" in row.split("|")[2]


def test_image_memory_benchmark_runs():
    script = BENCH.parent / "bench_images.py"
    done = subprocess.run([sys.executable, str(script), "-n", "40", "-c", "8"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| chatmagic, --images |"))
    assert row.endswith("| 40/40 |") and "-> PASS" in done.stdout


def test_structured_guard_benchmark_runs():
    script = BENCH.parent / "bench_structured.py"
    done = subprocess.run([sys.executable, str(script), "--repeat", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| hostile, 5,000 deep"))
    assert row.split("|")[2].strip() == "RecursionError" and row.endswith("| refused |")


def test_scale_benchmark_runs_and_loses_nothing():
    script = BENCH.parent / "bench_scale.py"
    done = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| 10,000 |")]
    assert rows and rows[0][-2].strip() == "0", done.stdout  # the memory row at its largest N: none lost
    assert "target: no prompt lost (chatmagic) -> PASS" in done.stdout
    assert "CPU per prompt flat in N" in done.stdout and "x bare aiohttp at concurrency 100" in done.stdout
