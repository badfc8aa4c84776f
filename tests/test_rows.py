"""Rows that are more than one line of text, sent to the practice server on 127.0.0.1, which
checks every content part as OpenAI does and says in its answer what images it was sent."""

import base64
import io
import json
import urllib.error
import urllib.request

import pytest
from PIL import Image

from chatmagic import chat_many


def png(path, size=(64, 48), color=(200, 10, 10)):
    Image.new("RGB", size, color).save(path)
    return str(path)


def ask(server, prompts, **kw):
    kw.setdefault("progress", False)
    return chat_many(prompts, base_url=server.base_url, **kw)


def post(server, messages):
    """One raw request, for what the server refuses."""
    body = json.dumps({"model": "m", "messages": messages}).encode()
    request = urllib.request.Request(server.base_url + "/chat/completions", body,
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_images_are_sent_after_the_text_as_data_urls_and_urls(server, tmp_path):
    a, b = png(tmp_path / "a.png"), png(tmp_path / "b.png", (20, 30))
    results = ask(server, ["one", "two", "three"], cache=False,
                  images=[a, [a, b], "https://images.test/cat.jpg"])
    assert [r.text for r in results] == [
        f"echo: one [media=1: 64x48 image/png {(tmp_path / 'a.png').stat().st_size:,} B]",
        f"echo: two [media=2: 64x48 image/png {(tmp_path / 'a.png').stat().st_size:,} B; "
        f"20x30 image/png {(tmp_path / 'b.png').stat().st_size:,} B]",
        "echo: three [media=1: url]"]
    assert [r.prompt for r in results] == ["one", "two", "three"]


def test_pdfs_bytes_and_pil_images(server, tmp_path):
    pdf = b"%PDF-1.4\n%%EOF\n"
    out = io.BytesIO()
    Image.new("RGB", (5, 6)).save(out, format="JPEG")
    results = ask(server, ["doc", "raw", "pil"], cache=False,
                  images=[pdf, out.getvalue(), Image.new("RGB", (7, 8))])
    assert results[0].text == f"echo: doc [media=1: application/pdf {len(pdf)} B]"
    assert results[1].text == f"echo: raw [media=1: 5x6 image/jpeg {len(out.getvalue()):,} B]"
    assert results[2].text.startswith("echo: pil [media=1: 7x8 image/png ")


def test_a_bad_image_fails_only_its_row_before_anything_is_sent(server, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    good = png(tmp_path / "good.png")
    results = ask(server, ["ok", "missing", "text", "pdf url"], cache=False,
                  images=[good, str(tmp_path / "missing.png"), str(tmp_path / "notes.txt"),
                          "https://docs.test/a.pdf"])
    assert [r.status for r in results] == ["ok", "error", "error", "error"]
    assert results[1].error == f"not sent: {tmp_path / 'missing.png'}: cannot read (No such file or directory)"
    assert results[2].error.endswith("notes.txt: not a PNG, JPEG, GIF or WebP image, nor a PDF")
    assert "takes a PDF as data, not as a URL" in results[3].error
    assert server.stats.requests == 1 and all(r.attempts == 0 for r in results[1:])


def test_the_cache_covers_the_image_bytes(server, tmp_path):
    path = png(tmp_path / "a.png")
    first = ask(server, ["what?", "text only"], images=[path, None])
    assert server.stats.requests == 2 and not any(r.cached for r in first)
    again = ask(server, ["what?", "text only"], images=[path, None])  # unchanged: nothing sent
    assert server.stats.requests == 2 and all(r.cached for r in again)
    assert [r.text for r in again] == [r.text for r in first]
    png(tmp_path / "a.png", color=(0, 0, 255))  # same name, same size, other pixels
    changed = ask(server, ["what?", "text only"], images=[path, None])
    assert server.stats.requests == 3 and [r.cached for r in changed] == [False, True]
    plain = ask(server, ["what?"])  # the same text without its image is another request
    assert server.stats.requests == 4 and not plain[0].cached


def test_message_lists_are_sent_whole_with_the_system_prompt_first(server):
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": [{"type": "text", "text": "and this?"},
                                                 {"type": "image", "image": Image.new("RGB", (9, 9))}]}]
    results = ask(server, [conversation, "plain"], system="sys", cache=False)
    assert results[0].prompt == "and this?"
    assert results[0].text.startswith("echo: [system=sys\nbe brief] and this? [turns=3] [media=1: 9x9 image/png")
    assert results[1].text == "echo: [system=sys] plain"


def test_a_conversation_with_an_image_url_part(server):
    conversation = [{"role": "user", "content": [
        {"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "https://images.test/x.png"}}]}]
    assert ask(server, [conversation], cache=False)[0].text == "echo: see [media=1: url]"


def test_the_server_refuses_what_openai_refuses(server):
    bad = [
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
         "messages[0].content[0].image_url.url"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90"}}]}],
         "messages[0].content[0].image_url.url"),
        ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}],
         "messages[0].content[0]"),
        ([{"role": "user", "content": [{"type": "video"}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "file", "file": {"filename": "a.pdf"}}]}],
         "messages[0].content[0].file"),
    ]
    for messages, param in bad:
        status, body = post(server, messages)
        assert status == 400 and body["error"]["param"] == param, (messages, body)
    good = base64.b64encode(b"%PDF-1.4\n").decode()
    status, body = post(server, [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64," + good}}]}])
    assert status == 200 and body["choices"][0]["message"]["content"] == "echo:  [media=1: application/pdf 9 B]"


# ---- %%chatmany --over with --images, --messages and a --system template -------------------


@pytest.fixture
def shell(server, capsys):
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext chatmagic")
    ip.run_cell(f"%config ChatMany.base_url = {server.base_url!r}")
    ip.run_cell("%config ChatMany.quiet = True")
    capsys.readouterr()
    yield ip
    ip.run_cell("%config ChatMany.base_url = None")
    ip.run_cell("%config ChatMany.quiet = False")
    ip.run_cell("%unload_ext chatmagic")


def test_cell_over_a_frame_with_images_and_a_system_per_row(shell, server, tmp_path, capsys):
    import pandas as pd
    shell.user_ns["photos"] = pd.DataFrame({"file": [png(tmp_path / "a.png"), str(tmp_path / "gone.png")],
                                            "persona": ["a pirate", "a judge"]})
    cell = ("%%chatmany --over photos --images file --system 'You are {persona}.' --df --no-cache -o df\n"
            "Describe row {index}")
    assert shell.run_cell(cell).success
    df = shell.user_ns["df"]
    assert df["response"][0] == (f"echo: [system=You are a pirate.] Describe row 0 "
                                 f"[media=1: 64x48 image/png {(tmp_path / 'a.png').stat().st_size:,} B]")
    assert df["status"][1] == "error" and "gone.png: cannot read" in df["error"][1]
    assert server.stats.requests == 1 and "1/2 ok, 1 failed (1 not sent)" in capsys.readouterr().out


def test_cell_over_conversations_empty_cell_or_a_last_turn(shell, server):
    import pandas as pd
    shell.user_ns["chats"] = pd.DataFrame({"turns": [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
         {"role": "user", "content": "bye"}],
        [{"role": "user", "content": "one"}]]})
    assert shell.run_cell("%%chatmany --over chats --messages turns --no-cache -o a\n").success
    assert shell.user_ns["a"] == ["echo: bye [turns=3]", "echo: one"]
    assert shell.run_cell("%%chatmany --over chats --messages turns --no-cache -o b\nrow {index}").success
    assert shell.user_ns["b"] == ["echo: row 0 [turns=4]", "echo: row 1 [turns=2]"]


def test_cell_flags_say_what_is_wrong_in_one_line(shell, capsys):
    import pandas as pd
    shell.user_ns["d"] = pd.DataFrame({"x": ["a"]})
    shell.user_ns["lst"] = ["a"]
    for cell, message in [
        ("%%chatmany --images x\nhi", "--images x names a column: it needs --over DATA"),
        ("%%chatmany --over d --images nope\n{x}", "--images nope: is not a column of --over d; columns: x"),
        ("%%chatmany --over lst --images file\n{item}", "use --images item for its elements"),
        ("%%chatmany --over d --messages x\n", "--messages x, row 0: str, not a list of"),
        ("%%chatmany --over d --system 'as {\"json\": 1}'\n{x}", "--system (a template with --over): template field"),
    ]:
        capsys.readouterr()
        result = shell.run_cell(cell)
        assert not result.success
        shown = capsys.readouterr()
        assert message in (shown.out + shown.err) or message in str(result.error_in_exec), (cell, shown)


def test_dry_run_counts_images_and_their_tokens_from_headers(shell, server, tmp_path, capsys):
    import pandas as pd
    Image.new("RGB", (1024, 1024)).save(tmp_path / "big.jpg")
    shell.user_ns["photos"] = pd.DataFrame({"file": [[png(tmp_path / "a.png"), str(tmp_path / "big.jpg")],
                                                     str(tmp_path / "gone.png")]})
    assert shell.run_cell("%%chatmany --over photos --images file --dry-run\nWhat is in it?").success
    out = capsys.readouterr().out
    size = ((tmp_path / "a.png").stat().st_size + (tmp_path / "big.jpg").stat().st_size) / 1e6
    assert (f"images: 2 (~34,001 tokens by OpenAI's rule for gpt-4o-mini, in the estimate below); "
            f"{size:,.1f} MB of local files; 1 cannot be sent, their rows would fail: "
            f"{tmp_path / 'gone.png'}: cannot read") in out
    # gpt-4o-mini's rates: 2,833 + 5,667 a tile; 1 tile and 4 tiles; 4 tokens for each prompt's text
    assert "~34,009 in per model" in out
    assert server.stats.requests == 0


def test_batch_lines_carry_the_images_and_a_rerun_pays_nothing_twice(server, tmp_path, monkeypatch):
    from chatmagic.batch import run as batch_run
    monkeypatch.setattr(batch_run, "POLL_FIRST", 0.01)
    server.batch.reset()
    path = png(tmp_path / "a.png")
    prompts, images = ["look", "plain", "gone"], [path, None, str(tmp_path / "gone.png")]
    results = ask(server, prompts, images=images, batch=True)
    size = (tmp_path / "a.png").stat().st_size
    assert [r.text for r in results[:2]] == [f"echo: look [media=1: 64x48 image/png {size:,} B]", "echo: plain"]
    assert results[2].status == "error" and "gone.png: cannot read" in results[2].error
    lines = [json.loads(line) for line in server.batch.contents["file-fake1"].splitlines()]
    assert len(lines) == 2 and lines[0]["body"]["messages"][0]["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,")
    again = ask(server, prompts[:2], images=images[:2], batch=True)
    assert all(r.cached for r in again) and server.batch.stats["batches"] == 1
    png(tmp_path / "a.png", color=(1, 2, 3))
    changed = ask(server, prompts[:2], images=images[:2], batch=True)
    assert [r.cached for r in changed] == [False, True] and server.batch.stats["requests"] == 3


def test_the_anthropic_practice_server_checks_blocks_and_says_what_it_got(tmp_path):
    from chatmagic.core.media import Media, load
    from chatmagic.practice.anthropic import FakeAnthropic
    from chatmagic.providers.content import anthropic_content
    image = load(Media(path=png(tmp_path / "a.png")))
    pdf = load(Media(data=b"%PDF-1.4\n%%EOF\n"))
    content = anthropic_content([{"type": "text", "text": "both"}, image, pdf,
                                 load(Media(url="https://images.test/x.webp"))])
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01", "Content-Type": "application/json"}

    def send(server, messages):
        body = json.dumps({"model": "claude-x", "max_tokens": 64, "messages": messages}).encode()
        request = urllib.request.Request(server.base_url + "/messages", body, headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with FakeAnthropic(api_key="k") as server:
        status, body = send(server, [{"role": "user", "content": content}])
        size = (tmp_path / "a.png").stat().st_size
        assert status == 200 and body["content"][0]["text"] == (
            f"echo: both [media=3: 64x48 image/png {size:,} B; application/pdf 15 B; url]")
        wrong_type = {**content[1], "source": {**content[1]["source"], "media_type": "image/jpeg"}}
        for block, reason in [({"type": "image", "source": {"type": "base64", "media_type": "image/png"}},
                               "data: invalid base64"),
                              (wrong_type, "does not appear to be that type"),
                              ({"type": "image", "source": {"type": "url"}}, "url: Field required"),
                              ({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                               "Input tag 'image_url'")]:
            status, body = send(server, [{"role": "user", "content": [block]}])
            assert status == 400 and reason in body["error"]["message"], (block, body)


def test_an_image_url_part_keeps_its_detail(server, tmp_path):
    png(tmp_path / "a.png")
    inline = "data:image/png;base64," + base64.b64encode((tmp_path / "a.png").read_bytes()).decode()
    conversation = [{"role": "user", "content": [
        {"type": "text", "text": "small"}, {"type": "image_url", "image_url": {"url": inline, "detail": "low"}}]}]
    from chatmagic.core.engine import Run
    from chatmagic.settings import resolve
    run = Run([conversation], resolve({"base_url": server.base_url}))
    body = run.rich_body(run.rows[0])
    assert body["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": inline, "detail": "low"}}
    assert ask(server, [conversation], cache=False)[0].text.startswith("echo: small [media=1: 64x48 image/png")


def test_a_file_over_the_providers_limit_fails_its_row_unread(server, tmp_path, monkeypatch):
    from chatmagic.providers import openai
    monkeypatch.setattr(openai.DIALECT, "file_limits", {"image": 1000, "document": 1000})
    import os
    Image.frombytes("RGB", (40, 40), os.urandom(40 * 40 * 3)).save(tmp_path / "big.png")  # noise: ~5 KB
    big, small = str(tmp_path / "big.png"), png(tmp_path / "small.png", (4, 4))
    results = ask(server, ["big", "small"], images=[big, small], cache=False)
    assert results[0].status == "error" and results[1].ok and server.stats.requests == 1
    assert results[0].error == (f"not sent: {big}: {(tmp_path / 'big.png').stat().st_size / 1e6:,.1f} MB, "
                                "over the 0.001 MB the provider takes")


def test_image_detail_for_every_image_unless_a_part_has_its_own(server, tmp_path, shell, capsys):
    from chatmagic.core.engine import Run
    from chatmagic.errors import ConfigError
    from chatmagic.settings import resolve
    path = png(tmp_path / "a.png")
    own = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png",
                                                                            "detail": "high"}}]}]
    run = Run(["look", own], resolve({"base_url": server.base_url, "image_detail": "low"}), images=[path, None])
    details = [run.rich_body(row)["messages"][-1]["content"][-1]["image_url"]["detail"] for row in run.rows]
    assert details == ["low", "high"]
    assert ask(server, ["look"], images=[path], image_detail="low", cache=False)[0].ok
    with pytest.raises(ConfigError, match="image_detail must be auto, low or high, got 'tiny'"):
        ask(server, ["look"], images=[path], image_detail="tiny")
    import pandas as pd
    shell.user_ns["photos"] = pd.DataFrame({"file": [path]})
    capsys.readouterr()
    assert shell.run_cell("%%chatmany --over photos --images file --image-detail low --dry-run -m gpt-4o\nx").success
    assert "images: 1 (~85 tokens by OpenAI's rule for gpt-4o" in capsys.readouterr().out


def test_cell_over_a_list_of_files_with_images_item(shell, server, tmp_path):
    shell.user_ns["files"] = [png(tmp_path / "a.png"), png(tmp_path / "b.png", (8, 8))]
    assert shell.run_cell("%%chatmany --over files --images item --no-cache -o a\nImage {index}").success
    size_a, size_b = ((tmp_path / n).stat().st_size for n in ("a.png", "b.png"))
    assert shell.user_ns["a"] == [f"echo: Image 0 [media=1: 64x48 image/png {size_a:,} B]",
                                  f"echo: Image 1 [media=1: 8x8 image/png {size_b:,} B]"]
    assert shell.run_cell("%%chatmany --over files --images item --no-cache -o b\n").success  # images only
    assert shell.user_ns["b"][0] == f"echo:  [media=1: 64x48 image/png {size_a:,} B]"


def test_images_as_a_series_go_by_position_not_label(server, tmp_path):
    import pandas as pd
    files = pd.Series([png(tmp_path / "a.png"), None], index=[7, 3])
    results = ask(server, ["a", "b"], images=files, cache=False)
    assert results[0].text.startswith("echo: a [media=1: 64x48") and results[1].text == "echo: b"
