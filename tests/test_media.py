"""Images and documents of a row: sniffed, sized, read once, refused in one line. Pure functions."""

import base64
import io
import math

import pytest
from PIL import Image

from chatmagic.core.media import Media, load, media_of, peek
from chatmagic.core.rows import Row, check_messages, rows_of, turns
from chatmagic.errors import ConfigError
from chatmagic.providers import imagesize
from chatmagic.providers.content import anthropic_block, openai_part
from chatmagic.providers.imagetokens import anthropic_image_tokens, openai_image_tokens
from chatmagic.providers.parts import DOCUMENT, IMAGE, MediaError

PDF_BYTES = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def image_bytes(fmt: str, size=(37, 21)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt,media_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                            ("GIF", "image/gif"), ("WEBP", "image/webp")])
def test_type_and_pixels_come_from_the_bytes(fmt, media_type):
    data = image_bytes(fmt)
    assert imagesize.sniff(data[:16]) == media_type
    assert imagesize.dimensions(data, media_type) == (37, 21)


def test_lossless_and_extended_webp_sizes():
    out = io.BytesIO()
    Image.new("RGBA", (300, 5), (1, 2, 3, 4)).save(out, format="WEBP", lossless=True)
    assert imagesize.dimensions(out.getvalue(), imagesize.WEBP) == (300, 5)


def test_pdf_and_unknown_types():
    assert imagesize.sniff(PDF_BYTES[:16]) == imagesize.PDF
    assert imagesize.sniff(b"hello world, not an image") is None
    assert imagesize.dimensions(b"\x89PNG\r\n\x1a\n", imagesize.PNG) is None  # cut short


def test_values_a_row_may_hold(tmp_path):
    img = Image.new("RGB", (4, 4))
    got = media_of([str(tmp_path / "a.png"), tmp_path / "b.png", "https://x.test/c.jpg", b"\x89PNG", img,
                    "data:image/png;base64,AAAA", "  "])
    assert [m.path for m in got[:2]] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert got[2].url == "https://x.test/c.jpg" and got[3].data == b"\x89PNG" and got[4].image is img
    assert got[5].url.startswith("data:") and len(got) == 6  # a blank string is no image
    assert media_of(None) == () and media_of(float("nan")) == () and media_of([]) == ()
    import numpy as np
    import pandas as pd
    assert media_of(pd.NA) == () and [m.url for m in media_of(np.array(["https://x.test/a.png"]))] == [
        "https://x.test/a.png"]
    assert "got int" in media_of(7)[0].bad and media_of([[1]])[0].bad


def test_load_reads_sniffs_and_keeps_urls(tmp_path):
    (tmp_path / "photo.txt").write_bytes(image_bytes("JPEG"))  # the name does not decide the type
    part = load(Media(path=str(tmp_path / "photo.txt")))
    assert (part.kind, part.media_type, part.name) == (IMAGE, "image/jpeg", "photo.txt")
    assert part.data_url().startswith("data:image/jpeg;base64,/9j/")
    url = load(Media(url="https://x.test/scan.pdf?sig=1"))
    assert (url.kind, url.media_type, url.url, url.data) == (DOCUMENT, "application/pdf",
                                                              "https://x.test/scan.pdf?sig=1", None)
    assert load(Media(data=PDF_BYTES)).kind == DOCUMENT
    pil = load(Media(image=Image.new("RGB", (3, 2))))
    assert pil.media_type == "image/png" and imagesize.dimensions(pil.data, "image/png") == (3, 2)
    inline = "data:image/png;base64," + base64.b64encode(image_bytes("PNG")).decode()
    assert load(Media(url=inline)).data == image_bytes("PNG")


def test_what_cannot_be_sent_says_why_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "big.png").write_bytes(image_bytes("PNG", (400, 400)))
    cases = [
        (Media(path=str(tmp_path / "missing.png")), "missing.png: cannot read (No such file or directory)"),
        (Media(path=str(tmp_path)), "cannot read (Is a directory)"),
        (Media(path=str(tmp_path / "notes.txt")), "notes.txt: not a PNG, JPEG, GIF or WebP image, nor a PDF"),
        (Media(url="data:image/png;base64,***"), "the data: URL is not valid base64"),
        (media_of(3.5)[0], "an image must be a path, an http(s) URL, bytes or a PIL image, got float"),
    ]
    for media, reason in cases:
        with pytest.raises(MediaError) as e:
            load(media)
        assert reason in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(MediaError, match=r"big.png: 0.0 MB, over the 0.0001 MB"):
        load(Media(path=str(tmp_path / "big.png")), {IMAGE: 100, DOCUMENT: 100})


def test_peek_reads_only_the_header(tmp_path):
    (tmp_path / "a.png").write_bytes(image_bytes("PNG", (640, 480)))
    seen = peek(Media(path=str(tmp_path / "a.png")))
    assert (seen.kind, seen.media_type, seen.pixels) == (IMAGE, "image/png", (640, 480))
    assert seen.size == (tmp_path / "a.png").stat().st_size
    assert peek(Media(url="https://x.test/a")).size is None


def test_each_provider_shape():
    png = load(Media(data=image_bytes("PNG")))
    b64 = base64.b64encode(image_bytes("PNG")).decode()
    assert openai_part(png) == {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64}}
    url = load(Media(url="https://x.test/a.webp"))
    assert openai_part(url) == {"type": "image_url", "image_url": {"url": "https://x.test/a.webp"}}
    pdf = load(Media(data=PDF_BYTES))
    pdf_url = "data:application/pdf;base64," + base64.b64encode(PDF_BYTES).decode()
    assert openai_part(pdf) == {"type": "file", "file": {"filename": "file", "file_data": pdf_url}}
    with pytest.raises(MediaError, match="takes a PDF as data, not as a URL"):
        openai_part(load(Media(url="https://x.test/a.pdf")))
    assert anthropic_block(png) == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                "data": b64}}
    assert anthropic_block(pdf)["type"] == "document" and anthropic_block(pdf)["source"]["media_type"] == \
        "application/pdf"
    assert anthropic_block(url) == {"type": "image", "source": {"type": "url", "url": "https://x.test/a.webp"}}


@pytest.mark.parametrize("pixels,detail,tokens", [((1024, 1024), "high", 765), ((2048, 4096), "high", 1105),
                                                  ((4096, 8192), "low", 85), ((500, 500), "auto", 255),
                                                  ((513, 500), "auto", 425)])
def test_openai_tile_rule(pixels, detail, tokens):  # the examples of OpenAI's vision guide
    assert openai_image_tokens(pixels, detail) == tokens == openai_image_tokens(pixels, detail, "gpt-4o-2024-08-06")


@pytest.mark.parametrize("pixels,model,tokens", [
    ((1024, 1024), "gpt-4.1-mini", math.ceil(1024 * 1.62)),  # 32 x 32 patches, under the cap
    ((1800, 2400), "gpt-4.1-nano-2025-04-14", math.ceil(1452 * 2.46)),  # scaled to 33 x 44 patches
    ((128, 64), "gpt-4o-mini-2024-07-18", 2833 + 5667),  # one tile at gpt-4o-mini's rates
    ((1024, 1024), "o3", 75 + 150 * 4),
    ((1024, 1024), "o4-mini", math.ceil(1024 * 1.72)),
])
def test_openai_rules_by_model(pixels, model, tokens):  # the rules and examples of OpenAI's vision guide
    assert openai_image_tokens(pixels, "auto", model) == tokens


@pytest.mark.parametrize("pixels,tokens", [((200, 200), 54), ((1000, 1000), 1334), ((1092, 1092), 1590),
                                           ((4000, 4000), 1600)])
def test_anthropic_area_rule(pixels, tokens):  # the examples of Anthropic's vision guide
    assert abs(anthropic_image_tokens(pixels) - tokens) <= 1


def test_rows_from_api_prompts():
    texts, rows = rows_of(["plain", [{"role": "user", "content": "hi"}]], images=[None, "https://x.test/a.png"])
    assert texts == ["plain", "hi"] and rows[0].plain and not rows[1].plain
    assert rows_of(["a", "b"])[1] is None  # all text: the fast path
    with pytest.raises(ConfigError, match="images has 1 entries for 2 prompts"):
        rows_of(["a", "b"], images=["x.png"])
    with pytest.raises(ConfigError, match="prompt 0, message 1: role 'robot'"):
        rows_of([[{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]])
    with pytest.raises(ConfigError, match="prompt 0, message 0: a content part is"):
        rows_of([[{"role": "user", "content": [{"type": "audio"}]}]])
    with pytest.raises(ConfigError, match=r"an image_url part needs image_url\.url"):
        check_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "x")


def test_turns_put_system_first_and_images_after_the_text():
    m = media_of("https://x.test/a.png")
    row = Row("question", messages=({"role": "system", "content": "own"}, {"role": "user", "content": "q1"},
                                    {"role": "assistant", "content": "a1"}), media=m)
    assert turns(row, "sys") == [{"role": "system", "content": "sys"}, {"role": "system", "content": "own"},
                                 {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                                 {"role": "user", "content": [{"type": "text", "text": "question"}, m[0]]}]
    assert turns(Row("t", system="mine"), "sys")[0] == {"role": "system", "content": "mine"}
    only = Row(None, messages=({"role": "user", "content": "look"},), media=m)
    assert turns(only, None) == [{"role": "user", "content": [{"type": "text", "text": "look"}, m[0]]}]


def test_a_rich_row_body_per_dialect():
    from chatmagic.providers import anthropic, openai
    png = load(Media(data=image_bytes("PNG")))
    turns_ = [{"role": "system", "content": "be brief"}, {"role": "system", "content": "row's own"},
              {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
              {"role": "user", "content": [{"type": "text", "text": "look"}, png]}]
    body = openai.DIALECT.rich_body({"model": "m", "messages": [{"role": "system", "content": "x"}]}, turns_)
    assert body["messages"][:2] == turns_[:2] and body["messages"][4]["content"][1]["type"] == "image_url"
    body = anthropic.DIALECT.rich_body({"model": "c", "max_tokens": 9, "system": "x", "messages": []}, turns_)
    assert body["system"] == "be brief\n\nrow's own" and body["max_tokens"] == 9
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][2]["content"] == [{"type": "text", "text": "look"}, anthropic_block(png)]


def test_a_row_over_what_one_request_carries(monkeypatch):
    from chatmagic.providers import anthropic, openai
    png = load(Media(data=image_bytes("PNG")))
    turns_ = [{"role": "user", "content": [{"type": "text", "text": "x"}, png, png, png]}]
    monkeypatch.setattr(openai.DIALECT, "request_limits", (10**9, 2))
    monkeypatch.setattr(anthropic.DIALECT, "request_limits", (len(png.data) * 2, 100))
    with pytest.raises(MediaError, match=r"^3 images and documents in one request, over the 2 it may carry$"):
        openai.DIALECT.rich_body({}, turns_)
    with pytest.raises(MediaError, match=r"^the row's files are 0\.0 MB together, over the 0\.000"):
        anthropic.DIALECT.rich_body({}, turns_)
    assert anthropic.DIALECT.rich_body({}, [{"role": "user", "content": [png]}])["messages"]  # one fits
