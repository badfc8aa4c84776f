"""Rows that are more than text sent to the practice Anthropic server on 127.0.0.1 through the
native dialect: image and document blocks, a conversation with the system prompt top-level, a
system prompt per row, the cache over the image bytes, the dry run's area rule."""

from __future__ import annotations

import io

import pytest
from PIL import Image

import chatmagic

KEY = "sk-ant-rows-test-key"


@pytest.fixture
def srv(anthropic):
    return anthropic(KEY)


def run(srv, prompts, **options):
    options.setdefault("progress", False)
    return chatmagic.chat_many(prompts, provider="anthropic", model="claude-haiku-4-5", base_url=srv.base_url,
                               api_key=KEY, **options)


def png(path, size=(64, 48), color=(200, 10, 10)):
    Image.new("RGB", size, color).save(path)
    return str(path)


def test_images_documents_and_urls_as_anthropic_blocks(srv, tmp_path):
    pdf = b"%PDF-1.4\n%%EOF\n"
    out = io.BytesIO()
    Image.new("RGB", (5, 6)).save(out, format="JPEG")
    a = png(tmp_path / "a.png")
    results = run(srv, ["both", "raw", "missing"], cache=False,
                  images=[[a, pdf, "https://images.test/cat.webp", "https://docs.test/a.pdf"], out.getvalue(),
                          str(tmp_path / "gone.png")])
    size = (tmp_path / "a.png").stat().st_size
    assert results[0].text == f"echo: both [media=4: 64x48 image/png {size:,} B; application/pdf 15 B; url; url]"
    assert results[1].text == f"echo: raw [media=1: 5x6 image/jpeg {len(out.getvalue()):,} B]"
    assert results[2].status == "error" and "gone.png: cannot read" in results[2].error
    assert srv.stats.requests == 2


def test_a_conversation_keeps_its_system_prompt_top_level(srv):
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": [{"type": "text", "text": "and this?"},
                                                 {"type": "image", "image": Image.new("RGB", (9, 9))}]}]
    results = run(srv, [conversation], system="sys", cache=False)
    assert results[0].text.startswith("echo: [system=sys\n\nbe brief] and this? [turns=3] [media=1: 9x9 image/png")


def test_the_cache_covers_the_image_bytes(srv, tmp_path):
    path = png(tmp_path / "a.png")
    run(srv, ["what?"], images=[path])
    assert run(srv, ["what?"], images=[path])[0].cached and srv.stats.requests == 1
    png(tmp_path / "a.png", color=(0, 0, 255))
    assert not run(srv, ["what?"], images=[path])[0].cached and srv.stats.requests == 2


def test_a_system_prompt_per_row_and_the_dry_run_by_the_area_rule(srv, tmp_path, capsys, monkeypatch):
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext chatmagic")
    try:
        Image.new("RGB", (1000, 1000)).save(tmp_path / "big.png")
        ip.user_ns["photos"] = pd.DataFrame({"file": [str(tmp_path / "big.png")], "persona": ["a judge"]})
        flags = f"--provider anthropic -m claude-haiku-4-5 --base-url {srv.base_url} -q --no-cache"
        capsys.readouterr()
        assert ip.run_cell(f"%%chatmany --over photos --images file --dry-run {flags}\nLook").success
        assert "images: 1 (~1,334 tokens by Anthropic's area rule" in capsys.readouterr().out
        assert ip.run_cell(f"%%chatmany --over photos --images file --system 'You are {{persona}}.' {flags} -o a\n"
                           "Look").success
        assert ip.user_ns["a"][0].startswith("echo: [system=You are a judge.] Look [media=1: 1000x1000 image/png")
        assert srv.stats.requests == 1
    finally:
        ip.run_cell("%unload_ext chatmagic")
