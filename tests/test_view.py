"""How Results shows itself (chatmagic.core.view): a notebook's table and the text repr."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbclient import NotebookClient

from chatmagic.core import view
from chatmagic.results import Result, Results


def sample(n: int = 3) -> Results:
    records = [Result(i, f"prompt {i}", text=f"answer {i}", status="ok", attempts=1, model="m") for i in range(n)]
    records[1] = Result(1, "<script>alert(1)</script>\nsecond line", status="error",
                        error="400 context_length_exceeded: too <long> & more")
    records[2] = Result(2, "p2", status="cancelled")
    return Results(records, elapsed_s=1.5, model="m")


def test_html_has_the_counts_then_rows_with_status_and_reason_all_escaped():
    shown = sample()._repr_html_()
    assert "1/3 ok, 1 failed (1 400 context_length_exceeded), 1 cancelled" in shown
    assert "<script>" not in shown and "&lt;script&gt;alert(1)&lt;/script&gt; second line" in shown
    assert "too &lt;long&gt; &amp; more" in shown
    rows = re.findall(r"<tr>(.*?)</tr>", shown)
    assert len(rows) == 4  # the header and three records
    assert ">ok</span>" in rows[1] and "answer 0" in rows[1]
    assert ">error</span>" in rows[2] and "400 context_length_exceeded" in rows[2]
    assert ">cancelled</span>" in rows[3] and "not sent or not finished" in rows[3]
    assert "more" not in shown.split("</table>")[1]  # everything is shown: no "N more"


def test_text_repr_is_the_summary_line_then_aligned_rows():
    lines = repr(sample()).split("\n")
    assert lines[0].startswith("<Results 1/3 ok, 1 failed") and lines[0].endswith(">")
    assert lines[1].split() == ["prompt", "status", "answer", "or", "reason"]
    assert lines[2].split()[:4] == ["0", "prompt", "0", "ok"] and lines[2].endswith("answer 0")
    assert "second line" in lines[3] and "error" in lines[3] and "400 context_length_exceeded" in lines[3]
    assert len(lines) == 5 and lines[2].index("ok") == lines[3].index("error")  # one column


def test_a_long_run_shows_its_head_and_how_many_more():
    results = sample(25)
    shown = results._repr_html_()
    assert len(re.findall(r"<tr>", shown)) == view.HEAD + 1 and "… 15 more" in shown
    assert repr(results).split("\n")[-1] == "… 20 more"  # five rows in the text repr
    cut = Results([Result(0, "x" * 500, text="y" * 500, status="ok")])._repr_html_()
    assert "x" * (view.CELL - 1) + "…" in cut and "x" * view.CELL not in cut


def test_a_million_results_count_in_one_pass_and_draw_ten_rows():
    """Above SUMMARY_UPTO records the header counts statuses only (the full summary reads every
    field of every record); rows are the head only, read by index."""
    records = [Result(i, f"p{i}", text="a", status="ok") for i in range(1_000_000)]
    records[7] = Result(7, "p7", status="error", error="429 rate_limit_exceeded: slow down")
    read: list[int] = []

    class Watched(Results):
        def __getitem__(self, i):  # what the view reads by index, as opposed to iterating
            if isinstance(i, int):
                read.append(i)
            return super().__getitem__(i)

        def __iter__(self):
            return iter(self._records)

    shown = Watched(records, elapsed_s=9.0)._repr_html_()
    assert "1,000,000 prompts: 999,999 ok, 1 failed (1 429 rate_limit_exceeded)" in shown
    assert read == list(range(view.HEAD)) and "… 999,990 more" in shown


@pytest.mark.kernel
def test_a_notebook_shows_results_as_a_table(server):
    """In a real kernel, evaluating a Results gives the HTML table (and the text repr as plain)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import chatmagic\n"
        f"results = chatmagic.chat_many(['hello', 'bad [[fail:400]]'], base_url='{server.base_url}', "
        "progress=False, cache=False)\nresults")]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    (out,) = [o for o in nb.cells[0].outputs if o.output_type == "execute_result"]
    assert "<table>" in out.data["text/html"] and ">error</span>" in out.data["text/html"]
    assert out.data["text/plain"].startswith("<Results 1/2 ok, 1 failed (1 400 invalid_request_error)")
    assert "echo: hello" in out.data["text/plain"]
