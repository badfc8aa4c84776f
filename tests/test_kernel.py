"""%%chatmany in real Jupyter kernels: the kernel's loop, Run All, the widget, interrupts."""

import time

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

pytestmark = pytest.mark.kernel


def run_notebook(cells, **kw):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=60, kernel_name="python3", **kw).execute()
    return nb


def text_of(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_run_all_next_cell_sees_the_variable_and_the_saved_bar_is_final(server):
    server.latency = 0.05
    nb = run_notebook([
        "%load_ext chatmagic",
        f"%%chatmany -o answers -c 4 --base-url {server.base_url}\n" + "\n".join(f"q{i}" for i in range(16)),
        "print(answers == [f'echo: q{i}' for i in range(16)])",
        "print(get_ipython().transform_cell('%%chatmany\\nx').startswith('await '))",
    ])
    assert "16/16 ok" in text_of(nb.cells[1])
    assert text_of(nb.cells[2]).strip() == "True"
    assert text_of(nb.cells[3]).strip() == "True"  # ran on the kernel's loop, not a thread
    bar = nb.cells[1].outputs[0]  # the live widget was replaced by a picture of the final state
    assert bar.output_type == "display_data" and set(bar.data) == {"text/plain", "text/html"}
    assert "16/16 [" in bar.data["text/plain"] and "16 ok]" in bar.data["text/plain"]
    assert 'data-state="ok"' in bar.data["text/html"] and "16/16 [" in bar.data["text/html"]


def test_errors_render_as_one_line_in_the_notebook(server):
    nb = run_notebook(["%load_ext chatmagic", "%%chatmany -c 0\nx"], allow_errors=True)
    error = next(o for o in nb.cells[1].outputs if o.output_type == "error")
    assert error.traceback == ["ConfigError: concurrency must be at least 1, got 0"]
    assert server.stats.requests == 0


@pytest.mark.parametrize("autoawait", ["on", "off"])  # the await path, and the worker-thread fallback
def test_interrupt_of_a_large_run_cancels_at_once_keeps_answers_and_says_one_line(server, autoawait, wait_until,
                                                                                 cached_answers):
    """200 prompts at -c 16: 16 in flight and 182 waiting for a slot when the interrupt comes.
    At once: the requests in flight are cancelled, not waited for (their answers take 8 s)."""
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive(f"%load_ext chatmagic\n%autoawait {autoawait}", timeout=30)
        prompts = "\n".join(["fast one", "fast two"] + [f"slow {i} [[sleep:8]]" for i in range(198)])
        msg_id = kc.execute(f"%%chatmany -o answers -c 16 --base-url {server.base_url}\n{prompts}")
        queued = kc.execute("print('queued cell ran')")
        wait_until(lambda: server.stats.requests >= 16 and cached_answers() >= 2,
                   "16 requests in flight and the two fast answers taken in")
        km.interrupt_kernel()
        reply = _reply(kc, msg_id, timeout=30)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "RunInterrupted"
        assert _reply(kc, queued)["content"]["status"] == "aborted"
        streams, errors = _outputs(kc, msg_id)
        assert "2/200 ok, 198 cancelled" in streams["stdout"] and "-> answers" in streams["stdout"]
        assert "Traceback" not in streams["stderr"] and "exception" not in streams["stderr"]
        assert errors == [["RunInterrupted: 2 of 200 answers kept in `answers`; "
                           "running the cell again sends only the other 198"]]
        out = []
        kc.execute_interactive("print(answers[:3], answers.count(None))", timeout=10,
                               output_hook=lambda m: out.append(m["content"].get("text", "")))
        assert "".join(out).strip() == "['echo: fast one', 'echo: fast two', None] 198"
        out.clear()  # every attempt sent was answered (the two fast ones) or cancelled: none was waited for
        kc.execute_interactive("import sys; from chatmagic.core.timeline import OK, CANCELLED\n"
                               "o = sys.last_value.results.timeline.outcomes\n"
                               "print(o.count(OK), o.count(CANCELLED) == len(o) - 2, len(o) >= 16)", timeout=10,
                               output_hook=lambda m: out.append(m["content"].get("text", "")))
        assert "".join(out).strip() == "2 True True"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _outputs(kc, msg_id, timeout=10):
    """The cell's stream text by name and its error tracebacks, up to the kernel going idle."""
    streams, errors = {"stdout": "", "stderr": ""}, []
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            streams[content["name"]] += content["text"]
        elif kind == "error":
            errors.append(content["traceback"])
        elif kind == "status" and content["execution_state"] == "idle":
            return streams, errors


def _reply(kc, msg_id, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg
