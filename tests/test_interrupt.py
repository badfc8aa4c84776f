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
def interrupt(server, wait_until, cached_answers, tmp_path):
    """``interrupt(code)``: run ``code`` in a fresh Python, press Ctrl-C once 16 requests are in
    flight and the two fast answers are taken in (the slow ones take 8 s)."""
    def run(code: str, command: list[str] | None = None) -> subprocess.CompletedProcess:
        """``command``: run ``code`` as a script file with it (``[python -m IPython]``)."""
        code = f"BASE = {server.base_url!r}\n{code}"
        if command is not None:
            script = tmp_path / "script.py"
            script.write_text(code)
        argv = [sys.executable, "-c", code] if command is None else [*command, str(script)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    for noise in ("Traceback", "CancelledError", "RuntimeError", "During handling", "asyncio"):
        assert noise not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [  # uncaught, it ends the script in its one line
        "RunInterrupted: 2 of 200 answers kept in .results; calling again sends only the other 198"]


def test_ctrl_c_in_a_script_draws_the_final_bar_once_then_one_line(interrupt):
    done = interrupt(SCRIPT.replace("progress=False", "progress=True"))
    frames = [f for f in done.stderr.replace("\r", "\n").splitlines() if f.strip()]
    assert [f for f in frames if "interrupted" in f] == [frames[-2]], frames  # the final bar, once
    assert "2 ok, interrupted" in frames[-2]
    assert frames[-1].startswith("RunInterrupted: 2 of 200 answers kept") and "Traceback" not in done.stderr


def test_ctrl_c_in_ipython_script_py_is_one_line_with_no_crash_banner(interrupt):
    """IPython treats a KeyboardInterrupt out of ``ipython script.py`` as its own crash (a
    traceback and "If you suspect this is an IPython bug"); a RunInterrupted stays one line."""
    done = interrupt(SCRIPT, [sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor"])
    assert done.stdout.strip().splitlines()[-1] == "['echo: fast one', 'echo: fast two', None] 198"
    assert "IPython bug" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "RunInterrupted: 2 of 200 answers kept in .results; calling again sends only the other 198")
    assert done.returncode != 0


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
