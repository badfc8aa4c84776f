"""%%chatmany --batch in real Jupyter kernels against the practice server's Batch API."""

import os

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.kernel

SETUP = "%load_ext chatmagic\nimport chatmagic.batch.run\nchatmagic.batch.run.POLL_FIRST = 0.02"


@pytest.fixture
def bserver(server):
    server.batch.reset()
    return server


class Kernel:
    def __enter__(self):
        self.km, self.kc = start_new_kernel(kernel_name="python3")
        return self

    def __call__(self, code: str, timeout: float = 60) -> tuple[str, str]:
        """Run ``code``; return (status, printed text plus any error line)."""
        out = []

        def hook(msg):
            c = msg["content"]
            if msg["msg_type"] == "stream" and c["name"] == "stdout":
                out.append(c["text"])
            elif msg["msg_type"] == "error":
                out.append(f"{c['ename']}: {c['evalue']}")
        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return reply["content"]["status"], "".join(out)

    def kill(self):
        os.kill(self.km.provisioner.process.pid, 9)

    def __exit__(self, *exc):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def cell(server, flags: str, prompts) -> str:
    return f"%%chatmany -q {flags} --base-url {server.base_url}\n" + "\n".join(prompts)


def test_batch_scenarios_in_one_kernel(bserver):
    """Round trip in order, split, cached prompts, --no-wait then collect, expiry then a
    re-run of only the missing, a validation failure, cancel and the listing."""
    b = bserver.batch
    prompts = [f"k{i}" for i in range(5)]
    with Kernel() as k:
        assert k(SETUP)[0] == "ok"
        status, text = k(cell(bserver, "--batch -o a", prompts))
        assert status == "ok" and "5/5 ok" in text
        assert k("print(a == [f'echo: k{i}' for i in range(5)])")[1].strip() == "True"

        # split into several batches; the five cached prompts are not submitted again
        k("chatmagic.batch.run.MAX_REQUESTS = 2")
        more = prompts + [f"s{i}" for i in range(5)]
        status, text = k(cell(bserver, "--batch -o a", more))
        assert "10/10 ok (5 from cache)" in text and b.stats["requests"] == 10 and b.stats["batches"] == 4
        assert k("print(a[5:] == [f'echo: s{i}' for i in range(5)])")[1].strip() == "True"
        k("chatmagic.batch.run.MAX_REQUESTS = 50_000")

        # --no-wait then collect
        b.pace = 0.02
        status, text = k(cell(bserver, "--batch --no-wait -o w", ["n1", "n2"]))
        assert status == "ok" and "2 pending in batch batch_fake5" in text
        assert k("print(w)")[1].strip() == "[None, None]"
        status, text = k(cell(bserver, "--batch -o w", ["n1", "n2"]))
        assert "2/2 ok" in text and b.stats["batches"] == 5

        # expired part-way, then a re-run submits only the missing
        b.pace, b.expire_after = 0.0, 1
        status, text = k(cell(bserver, "--batch -o e", ["x1", "x2", "x3"]))
        assert "1/3 ok, 2 failed (2 batch_expired)" in text
        b.expire_after, before = None, b.stats["requests"]
        status, text = k(cell(bserver, "--batch -o e", ["x1", "x2", "x3"]))
        assert "3/3 ok (1 from cache)" in text and b.stats["requests"] - before == 2

        # validation failure: one line, results stored
        b.invalid = "this model is not available in the Batch API"
        status, text = k(cell(bserver, "--batch -o v", ["v1"]))
        assert status == "error" and text.count("\n") == 1  # the summary line, then the error
        assert "RunAborted: batch_failed: batch batch_fake8 failed: line 1: this model is not available" in text
        b.invalid = None

        # cancel from %chatmany_batches; the listing shows it
        b.pace = 2.0  # the cancel arrives long before the batch could finish
        k(f"%config ChatMany.base_url = '{bserver.base_url}'")
        k(cell(bserver, "--batch --no-wait -o c", ["c1", "c2", "c3"]))
        status, text = k("%chatmany_batches cancel batch_fake9")
        assert status == "ok" and "batch_fake9: cancelling" in text
        status, text = k(cell(bserver, "--batch -o c", ["c1", "c2", "c3"]))
        assert "batch_cancelled" in text
        status, text = k("%chatmany_batches")
        assert "batch_fake9" in text and "cancelled" in text and "batch_fake1 " in text


def test_rerun_after_a_killed_kernel_reattaches_and_pays_nothing_twice(bserver, wait_until, stored_batches):
    bserver.batch.pace = 0.3
    prompts = [f"r{i}" for i in range(6)]
    with Kernel() as k:
        assert k(SETUP)[0] == "ok"
        k.kc.execute(cell(bserver, "--batch -o r", prompts))
        wait_until(lambda: bserver.batch.batches and stored_batches(), "the batch submitted and stored")
        assert bserver.batch.batches["batch_fake1"]["status"] in ("validating", "in_progress")
        k.kill()
    with Kernel() as k:
        assert k(SETUP)[0] == "ok"
        status, text = k(cell(bserver, "--batch -o r", prompts))
        assert status == "ok" and "6/6 ok" in text
        assert k("print(r == [f'echo: r{i}' for i in range(6)])")[1].strip() == "True"
    assert bserver.batch.stats["batches"] == 1 and bserver.batch.stats["requests"] == 6


def test_interrupt_stops_waiting_leaves_the_batch_and_says_how_to_reattach(bserver, wait_until, stored_batches):
    import threading
    bserver.batch.pace = 1.0  # 5 s: still running when the interrupt lands on a loaded machine
    prompts = [f"i{i}" for i in range(5)]
    with Kernel() as k:
        assert k(SETUP)[0] == "ok"
        box = {}
        waiting = threading.Thread(target=lambda: box.update(out=k(cell(bserver, "--batch -o i", prompts))))
        waiting.start()
        wait_until(lambda: bserver.batch.batches and stored_batches(), "the batch submitted and stored")
        k.km.interrupt_kernel()
        waiting.join(30)
        status, text = box["out"]
        assert status == "error" and "RunInterrupted: 0 of 5 answers kept in `i`; the batch keeps " \
            "running; running the cell again collects its 5 answers" in text
        assert "0/5 ok, 5 pending in batch batch_fake1 (run again to collect, or " \
               "%chatmany_batches cancel batch_fake1)" in text
        assert bserver.batch.batches["batch_fake1"]["status"] == "in_progress"
        assert k("print(i)")[1].strip() == "[None, None, None, None, None]"
        status, text = k(cell(bserver, "--batch -o i", prompts))
        assert status == "ok" and "5/5 ok" in text and bserver.batch.stats["batches"] == 1
