"""The picture of a run: its data (not its pixels), the magic, and one image from a real kernel."""

import base64
import io
import sys
from itertools import pairwise

import pytest
from IPython.core.interactiveshell import InteractiveShell

import chatmagic
from chatmagic.core.timeline import OUTCOMES, Timeline, marks
from chatmagic.errors import ConfigError
from chatmagic.practice.server import FakeOpenAI

pytest.importorskip("matplotlib")


def run(server, prompts, **options):
    options = {"base_url": server.base_url, "cache": False, "progress": False, **options}
    return chatmagic.chat_many(prompts, **options)


def labelled(ax, label):
    """The line or marker collection drawn with ``label`` on ``ax``."""
    found = [a for a in [*ax.lines, *ax.collections, *ax.patches] if a.get_label() == label]
    assert len(found) == 1, f"{label!r} not drawn once on {ax.get_title()!r}"
    return found[0]


def panels(fig):
    """One (in flight, latency, answers) triple of axes per row."""
    return [tuple(sub.axes) for sub in fig.subfigs]


def test_the_figure_draws_every_attempt_under_the_cap(server):
    server.latency, server.fail_rate = 0.02, 0.2
    results = run(server, [f"q{i}" for i in range(30)], concurrency=5, retries=5)
    fig = results.plot()
    (flight, latency, answers), = panels(fig)
    y = labelled(flight, "requests in flight").get_ydata()
    assert sum(b > a for a, b in pairwise(y)) == sum(r.attempts for r in results) == server.stats.requests
    assert max(y) <= 5 and labelled(flight, "cap (-c 5)").get_ydata()[0] == 5
    assert len(labelled(flight, "5xx server error").get_offsets()) == server.stats.by_status[500] > 0
    assert len(labelled(flight, "retry sent").get_offsets()) == results.retries
    assert sum(p.get_height() for p in latency.patches) == sum(r.ok for r in results)
    assert labelled(answers, "answers").get_ydata()[-1] == 30
    assert "30 answered" in fig.subfigs[0]._suptitle.get_text()


def test_429s_are_marked_where_they_happened():
    with FakeOpenAI(latency=0.02, rpm=600, headers="none") as server:  # a burst meets 429s
        results = run(server, [f"q{i}" for i in range(30)], concurrency=30)
        rejected = server.stats.by_status[429]
    (flight, _, _), = panels(results.plot())
    xs = sorted(labelled(flight, "429 rate limited").get_offsets()[:, 0])
    assert xs == pytest.approx(sorted(marks(results.timeline)["429"])) and len(xs) == rejected > 0
    assert labelled(flight, "shared cooldown (after a 429)")  # the pause every request waited out


def test_the_rate_limit_is_drawn_when_known(server):
    server.rpm = 600  # announced in its headers
    fig = run(server, [f"q{i}" for i in range(5)]).plot(title="paced")
    (_, _, answers), = panels(fig)
    limit = labelled(answers, "rate limit: 600/min after a burst of 10")  # the practice server's full bucket
    (x0, x1), (y0, y1) = limit.get_xdata(), limit.get_ydata()
    assert (y1 - y0) / (x1 - x0) == pytest.approx(10.0) and (x0, y0) == (0, 10)
    assert fig._suptitle.get_text() == "paced"
    server.rpm = None
    (_, _, answers), = panels(run(server, ["q"]).plot())
    assert not [line for line in answers.lines if "rate limit" in line.get_label()]


def test_a_multi_model_run_draws_one_row_per_model_and_the_magic_finds_runs(server):
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "chatmagic")
    server.latency = 0.01
    ip.run_cell_magic("chatmany", f"-m one,two -c 3 --no-cache -q --base-url {server.base_url} -o both",
                      "a\nb\nc\nd\n")
    fig = ip.run_line_magic("chatmany_plot", "")
    assert [s._suptitle.get_text().split(":")[0] for s in fig.subfigs] == ["one", "two"]
    assert all(len(row) == 3 for row in panels(fig))
    ip.run_cell_magic("chatmany", f"--no-cache -q --base-url {server.base_url} -o single", "x\n")
    assert len(ip.run_line_magic("chatmany_plot", "both").subfigs) == 2  # by its -o, not only the last
    assert len(ip.run_line_magic("chatmany_plot", "").subfigs) == 1
    ip.user_ns["mine"] = run(server, ["p", "q"])
    (flight, _, _), = panels(ip.run_line_magic("chatmany_plot", "mine"))
    y = labelled(flight, "requests in flight").get_ydata()
    assert sum(b > a for a, b in pairwise(y)) == 2  # its two attempts
    with pytest.raises(ConfigError, match="no %%chatmany run stored there"):
        ip.run_line_magic("chatmany_plot", "nothing_here")
    fig = ip.run_line_magic("chatmany_plot", "single both mine")  # one figure, one time axis
    assert [s._suptitle.get_text().split(":")[0] for s in fig.subfigs] == [
        "single (gpt-4o-mini)", "both (one)", "both (two)", "mine (gpt-4o-mini)"]
    assert len({row[0].get_xlim() for row in panels(fig)}) == 1


def test_an_interrupted_run_draws_until_the_interrupt(server, cancelled_run):
    server.latency = 5
    results = cancelled_run([f"q{i}" for i in range(6)])
    (flight, latency, answers), = panels(results.plot())
    assert len(labelled(flight, "cancelled").get_offsets()) == len(results.timeline) == 6
    interrupted = labelled(flight, "interrupted").get_xdata()[0]
    assert interrupted == max(results.timeline.ends)
    assert max(labelled(flight, "requests in flight").get_xdata()) <= interrupted
    assert labelled(answers, "answers").get_ydata()[-1] == 0
    assert "no successful attempt" in [t.get_text() for t in latency.texts]


def test_without_matplotlib_one_line_error(monkeypatch, server):
    results = run(server, ["q"])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ConfigError, match=r"pip install 'chatmagic\[plot\]'"):
        results.plot()


def test_a_run_that_sent_nothing_says_so(server):
    run(server, ["a", "b"], cache=True)
    (flight, latency, _), = panels(run(server, ["a", "b"], cache=True).plot())
    assert "nothing sent" in flight.texts[0].get_text()
    assert "no successful attempt" in latency.texts[0].get_text()


def test_hand_made_results_have_nothing_to_plot():
    with pytest.raises(ConfigError, match="no timeline"):
        chatmagic.Results([chatmagic.Result(0, "q")]).plot()


def test_a_hand_recorded_timeline_plots_the_same_way():
    from chatmagic.core.plotting import figure
    tl = Timeline(2, rate=1.0, label="recipe", clock=lambda: 0.0)
    for i, outcome in enumerate(["ok", "429", "timeout", "ok"]):
        tl.add(i * 0.5, i * 0.5 + 0.4, outcome, attempt=1 + (i == 3))
    fig = figure([tl])
    (flight, _, answers), = panels(fig)
    assert len(labelled(flight, "timeout").get_offsets()) == 1
    assert [OUTCOMES[o] for o in tl.outcomes].count("ok") == labelled(answers, "answers").get_ydata()[-1]
    assert fig.subfigs[0]._suptitle.get_text().startswith("recipe: 4 attempts, 2 answered, 1 retries, 1 429s")


@pytest.mark.kernel
def test_one_image_from_a_real_kernel(tmp_path):
    """%chatmany_plot in a real kernel shows the figure once, as a PNG that decodes."""
    import nbformat
    from matplotlib.image import imread
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "%load_ext chatmagic\nimport os\nfrom chatmagic.practice.server import FakeOpenAI\n"
        "server = FakeOpenAI(latency=0.05, fail_rate=0.2).start()\nos.environ['OPENAI_BASE_URL'] = server.base_url",
        "%%chatmany -c 4 --no-cache -q -o answers\n" + "\n".join(f"Question {i}" for i in range(12)),
        "%chatmany_plot",
        "server.stop()")]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    images = [o for o in nb.cells[2].outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    path = tmp_path / "run.png"
    path.write_bytes(base64.b64decode(images[0]["data"]["image/png"]))
    pixels = imread(io.BytesIO(path.read_bytes()))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 600
