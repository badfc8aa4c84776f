"""Ctrl-C in a script (chat_many) and in terminal IPython: one line, and the answers kept."""

import signal
import subprocess
import sys

import pytest

PROMPTS = '["fast one", "fast two"] + [f"slow {i} [[sleep:8]]" for i in range(198)]'

SCRIPT = f"""
import chatmagic
try:
    chatmagic.chat_many({PROMPTS}, base_url=BASE, concurrency=16, progress=False)
except chatmagic.RunInterrupted as e:
    print(e.results.texts()[:3], e.results.texts().count(None), flush=True)
    raise
"""

SHELL = f"""
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_cell("%load_ext chatmagic")
prompts = "\\n".join({PROMPTS})
result = ip.run_cell(f"%%chatmany -q -o answers -c 16 --base-url {{BASE}}\\n{{prompts}}")
ip.run_cell("first = answers[:2]")
print("next cell:", ip.user_ns["first"], type(result.error_in_exec).__name__)
"""


@pytest.fixture
def interrupt(server, wait_until, cached_answers):
    """``interrupt(code)``: run ``code`` in a fresh Python, press Ctrl-C once 16 requests are in
    flight and the two fast answers are taken in (the slow ones take 8 s)."""
    def run(code: str) -> subprocess.CompletedProcess:
        proc = subprocess.Popen([sys.executable, "-c", f"BASE = {server.base_url!r}\n{code}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: server.stats.requests >= 16 and cached_answers() >= 2,
                   "16 requests in flight and the two fast answers taken in")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return run


def test_ctrl_c_in_chat_many_raises_one_keyboard_interrupt_with_the_results(interrupt):
    done = interrupt(SCRIPT)
    assert done.stdout.strip() == "['echo: fast one', 'echo: fast two', None] 198"
    assert done.returncode != 0
    assert done.stderr.count("Traceback") == 1, done.stderr
    for chained in ("CancelledError", "RuntimeError", "During handling", "asyncio"):
        assert chained not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "chatmagic.errors.RunInterrupted: 2 of 200 answers kept in .results; "
        "calling again sends only the other 198")


def test_ctrl_c_in_terminal_ipython_leaves_the_summary_and_one_line(interrupt):
    done = interrupt(SHELL)
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("2/200 ok, 198 cancelled"), done.stdout
    assert lines[1] == ("RunInterrupted: 2 of 200 answers kept in `answers`; "
                        "running the cell again sends only the other 198")
    assert lines[2] == "next cell: ['echo: fast one', 'echo: fast two'] RunInterrupted"
    assert len(lines) == 3 and done.stderr == ""


@pytest.mark.parametrize("cache, expected", [
    (True, "2 of 200 answers kept in .results; calling again sends only the other 198"),
    (False, "2 of 200 answers kept in .results; the cache is off, so calling again sends all 200 again"),
])
def test_the_line_says_what_running_again_sends(cache, expected):
    from chatmagic.errors import interrupted
    from chatmagic.results import Result, Results
    results = Results([Result(i, "p", status="ok" if i < 2 else "cancelled") for i in range(200)])
    error = interrupted({"m": results}, where=".results", again="calling again", cache=cache)
    assert isinstance(error, KeyboardInterrupt) and not isinstance(error, Exception)
    assert str(error) == expected and error.results is results
