"""What a notebook user sees in JupyterLab, rendered by a real Chromium: the live bar, the final
bar and its colour, the summary line, an interrupt, and the bar after saving and reloading."""

import os
import re
import time
from pathlib import Path

import nbformat
import pytest

from chatmagic.practice.server import FakeOpenAI

pytestmark = [pytest.mark.kernel, pytest.mark.browser, pytest.mark.timeout(300)]  # JupyterLab starts in the first

DOCS = Path(__file__).resolve().parents[2] / "docs"
GREEN, ORANGE, RED = "rgb(56, 142, 60)", "rgb(245, 124, 0)", "rgb(211, 47, 47)"


@pytest.fixture(scope="module")
def practice():
    with FakeOpenAI(latency=0.1) as server:
        yield server


def open_notebook(page, lab, name: str, cells: list[str]):
    """Write a notebook into the lab's root and open it; returns the page once its kernel is idle."""
    url, root, token = lab
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, root / name)
    page.goto(f"{url}/lab/tree/{name}?token={token}&reset")  # reset: no tabs of earlier tests
    wait_for_kernel(page)
    return root / name


def wait_for_kernel(page):
    # JupyterLab may ask which kernel to start; the notebook names one, so accept it
    page.add_locator_handler(page.locator(".jp-Dialog"), lambda d: d.locator(".jp-mod-accept").click())
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
    # the execution indicator says idle before a kernel exists; the status bar names the kernel
    page.locator(".jp-StatusBar-Widget", has_text="Python 3 (ipykernel) | Idle").first.wait_for(timeout=60_000)


def menu(page, top: str, item: str):
    page.click(f'.lm-MenuBar-itemLabel:text-is("{top}")')
    page.click(f'.lm-Menu-itemLabel:text-is("{item}")')


def cell(page, i: int):
    return page.locator(".jp-Notebook .jp-CodeCell").nth(i)


def bar(page, i: int):
    return cell(page, i).locator(".chatmagic-progress")


def fill_colour(locator) -> str:
    return locator.locator("div > div").evaluate("e => getComputedStyle(e).backgroundColor")


def test_the_bar_live_then_final_in_an_honest_colour_and_after_saving_and_reloading(page, lab, practice):
    practice.latency, practice.fail_rate = 0.1, 0.0
    path = open_notebook(page, lab, "bars.ipynb", [
        (f"%load_ext chatmagic\n%config ChatMany.base_url = '{practice.base_url}'\n"
         "topics = [f'topic {i}' for i in range(40)]"),
        "%%chatmany --over topics -o answers -c 4\nWrite one sentence about {item}.",
        "%%chatmany -o mixed -r 0\nWrite one sentence.\nThis one fails [[fail:400]]",
    ])
    menu(page, "Run", "Run All Cells")

    live = cell(page, 1).locator(".widget-hprogress")  # the live widget while it runs
    live.wait_for(timeout=30_000)
    assert re.search(r"\b\d+/40\b", cell(page, 1).locator(".jp-OutputArea").inner_text())

    bar(page, 1).wait_for(timeout=30_000)
    bar(page, 2).wait_for(timeout=30_000)
    ok, mixed = bar(page, 1), bar(page, 2)
    assert ok.get_attribute("data-state") == "ok" and fill_colour(ok) == GREEN
    assert re.search(r"40/40 \[.*40 ok\]", ok.inner_text())
    assert mixed.get_attribute("data-state") == "failed" and fill_colour(mixed) == ORANGE
    assert "1 ok, 1 failed" in mixed.inner_text()
    outputs = cell(page, 1).locator(".jp-OutputArea").inner_text()
    assert "40/40 ok" in outputs and "-> answers" in outputs  # the summary line under the bar
    assert "1/2 ok, 1 failed (1 400" in cell(page, 2).locator(".jp-OutputArea").inner_text()
    assert page.locator(".widget-hprogress").count() == 0  # every live widget was replaced
    if os.environ.get("CHATMAGIC_DOCS_SCREENSHOT"):  # README's picture: the two finished cells
        page.mouse.move(5, 890)
        top, bottom = cell(page, 1).bounding_box(), cell(page, 2).bounding_box()
        page.screenshot(path=str(DOCS / "progress.png"), clip={
            "x": top["x"], "y": top["y"], "width": top["width"],
            "height": bottom["y"] + bottom["height"] - top["y"]})

    page.keyboard.press("Control+s")
    page.wait_for_selector(".jp-mod-dirty", state="detached", timeout=10_000)
    saved = nbformat.read(path, as_version=4)
    assert all("application/vnd.jupyter.widget-view+json" not in o.get("data", {})
               for c in saved.cells for o in c.outputs)
    page.reload()
    wait_for_kernel(page)
    bar(page, 1).wait_for(timeout=30_000)
    assert re.search(r"40/40 \[.*40 ok\]", bar(page, 1).inner_text()) and fill_colour(bar(page, 1)) == GREEN
    assert fill_colour(bar(page, 2)) == ORANGE
    assert "Error displaying widget" not in page.locator(".jp-Notebook").inner_text()


def test_a_request_held_with_blank_lines_is_answered_and_the_summary_says_so(page, lab, practice):
    # DeepSeek's queue: 1 s of blank lines against a 0.3 s timeout; answered, green, and said once
    practice.latency, practice.fail_rate = 0.1, 0.0
    open_notebook(page, lab, "held.ipynb", [
        f"%load_ext chatmagic\n%config ChatMany.base_url = '{practice.base_url}'",
        "%%chatmany -o held -t 0.3\nWrite one sentence. [[queue:1]]",
    ])
    menu(page, "Run", "Run All Cells")
    bar(page, 1).wait_for(timeout=30_000)
    assert bar(page, 1).get_attribute("data-state") == "ok" and fill_colour(bar(page, 1)) == GREEN
    shown = cell(page, 1).locator(".jp-OutputArea").inner_text()
    assert "1/1 ok" in shown and "-> held" in shown, shown
    assert re.search(r"the server held 1 request with blank lines \(queued\) past the 0.3s timeout, "
                     r"the longest [\d.]+ s \(waited at most 10 min more\)", shown), shown


def test_an_interrupt_of_200_prompts_at_c16_leaves_the_summary_and_one_line(page, lab, practice):
    practice.latency, practice.fail_rate = 0.1, 0.0
    practice.reset_stats()
    prompts = ["Write one sentence about cats.", "Write one sentence about dogs."] + [
        f"Write one sentence about the number {i}. [[sleep:8]]" for i in range(198)]
    open_notebook(page, lab, "interrupt.ipynb", [
        f"%load_ext chatmagic\n%config ChatMany.base_url = '{practice.base_url}'",
        "%%chatmany -o long -c 16\n" + "\n".join(prompts),
        "print('queued cell ran')",
    ])
    menu(page, "Run", "Run All Cells")
    cell(page, 1).locator(".widget-hprogress").wait_for(timeout=30_000)
    cell(page, 1).get_by_text("2/200").wait_for(timeout=30_000)  # the bar has the two fast answers
    deadline = time.monotonic() + 30
    while practice.stats.requests < 16 and time.monotonic() < deadline:  # 14 in flight, 184 waiting
        time.sleep(0.1)
    menu(page, "Kernel", "Interrupt Kernel")

    error = cell(page, 1).locator("[data-mime-type='application/vnd.jupyter.stderr']")
    error.wait_for(timeout=15_000)
    assert error.inner_text().strip() == ("RunInterrupted: 2 of 200 answers kept in `long`; "
                                          "running the cell again sends only the other 198")
    shown = cell(page, 1).locator(".jp-OutputArea").inner_text()
    assert "2/200 ok, 198 cancelled" in shown and "-> long" in shown
    for noise in ("Traceback", "Task exception", "Session is closed", "await __import__", "CancelledError"):
        assert noise not in shown
    stopped = bar(page, 1)
    assert stopped.get_attribute("data-state") == "stopped" and fill_colour(stopped) == RED
    assert "2 ok, interrupted" in stopped.inner_text()
    assert cell(page, 2).locator(".jp-OutputArea-output").count() == 0  # the queued cell aborted

    cell(page, 2).click()
    page.keyboard.press("Shift+Enter")  # and the kernel answers the next one
    cell(page, 2).locator(".jp-OutputArea-output", has_text="queued cell ran").wait_for(timeout=15_000)
    if os.environ.get("CHATMAGIC_DOCS_SCREENSHOT"):  # README's picture of what an interrupt leaves
        page.mouse.move(5, 890)
        cell(page, 1).locator(".jp-OutputArea").screenshot(path=str(DOCS / "interrupt.png"))


def test_results_show_as_a_table_and_a_mistyped_flag_names_the_right_one(page, lab, practice):
    """Evaluating a Results renders the summary and the first rows (status, answer or reason),
    with a hostile prompt shown as text; a mistyped flag is one line naming the closest flag."""
    practice.latency, practice.fail_rate = 0.0, 0.0
    open_notebook(page, lab, "table.ipynb", [
        ("import chatmagic\n"
         f"results = chatmagic.chat_many(['hello', '<img src=x onerror=\"window.hacked=1\">', 'bad [[fail:400]]'], "
         f"base_url='{practice.base_url}', progress=False, cache=False)\nresults"),
        "%load_ext chatmagic",
        "%%chatmany --concurency 4\nhello",
    ])
    menu(page, "Run", "Run All Cells")
    table = cell(page, 0).locator(".chatmagic-results table")
    table.wait_for(timeout=30_000)
    assert "2/3 ok, 1 failed (1 400" in cell(page, 0).locator(".chatmagic-results p").first.inner_text()
    rows = table.locator("tbody tr")
    assert rows.count() == 3
    assert rows.nth(0).inner_text().split("\t")[1:4] == ["hello", "ok", "echo: hello"]
    assert '<img src=x onerror="window.hacked=1">' in rows.nth(1).inner_text()  # text, not an element
    assert table.locator("img").count() == 0 and page.evaluate("window.hacked") is None
    failed = rows.nth(2).locator("span")
    assert failed.inner_text() == "error" and failed.evaluate("e => getComputedStyle(e).color") == "rgb(198, 40, 40)"
    assert "400" in rows.nth(2).inner_text()
    error = cell(page, 2).locator("[data-mime-type='application/vnd.jupyter.stderr']")
    error.wait_for(timeout=15_000)
    assert error.inner_text().strip() == ("ConfigError: %%chatmany: unrecognized arguments: --concurency; "
                                          "did you mean --concurrency?")


@pytest.mark.local
def test_the_quickstart_answers_sensibly_and_says_nothing_surprising(page, lab):
    """The quickstart's cells in JupyterLab with the real local model: short right answers, the
    cached table with the answers' own latency (not None), and no "answered by ..., not ..." line."""
    pytest.importorskip("xllamacpp")
    source = nbformat.read(Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb", as_version=4)
    code = [c.source for c in source.cells if c.cell_type == "code"]
    open_notebook(page, lab, "quickstart-browser.ipynb", code)
    menu(page, "Run", "Run All Cells")
    last = cell(page, len(code) - 1).locator(".jp-OutputArea")
    last.filter(has_text="local model stopped").wait_for(timeout=240_000)
    listing = next(cell(page, i) for i, c in enumerate(code) if c.startswith("prompts = "))
    shown = listing.locator(".jp-OutputArea").inner_text()
    assert re.search(r"capital of France\?\s+-> Paris", shown) and re.search(r"capital of Japan\?\s+-> Tokyo", shown)
    table = cell(page, next(i for i, c in enumerate(code) if c.startswith("table[")))
    rows = table.locator("table.dataframe tbody tr")
    assert rows.count() == 10
    latencies = [rows.nth(i).locator("td").nth(3).inner_text() for i in range(10)]
    assert all(re.fullmatch(r"\d+\.\d+", v) for v in latencies), latencies  # the answers' own, from the cache
    page_text = page.locator(".jp-Notebook").inner_text()
    assert "answered by" not in page_text and "Traceback" not in page_text
