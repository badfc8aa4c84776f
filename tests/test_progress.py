"""The progress bar's final frame: counts, an honest colour, no unknown rate."""

import pytest

import chatmagic
from chatmagic.core import progress
from chatmagic.core.progress import COLOURS, TqdmProgress


@pytest.fixture(autouse=True)
def text_bar(monkeypatch):
    monkeypatch.setattr(progress, "_widgets", lambda: False)  # text even if ipykernel was imported


def last_frame(err: str) -> str:
    return err.replace("\r", "\n").strip().splitlines()[-1]


def test_the_text_bar_ends_with_the_counts(server, capsys):
    chatmagic.chat_many(["a", "b [[fail:500:1]]", "c"], base_url=server.base_url, progress=True,
                        max_retry_wait=0.01)
    frame = last_frame(capsys.readouterr().err)
    assert frame.startswith("chatmany: 100%") and "3/3 [" in frame
    assert frame.endswith("prompt/s, 3 ok, 1 retries]")


def test_a_cached_run_shows_no_unknown_rate(server, capsys):
    chatmagic.chat_many(["a", "b"], base_url=server.base_url, progress=False)
    chatmagic.chat_many(["a", "b"], base_url=server.base_url, progress=True)
    frame = last_frame(capsys.readouterr().err)
    assert "?" not in frame and frame.endswith("2/2 [00:00, 2 ok, 2 from cache]")


@pytest.mark.parametrize("outcomes, how, state, postfix", [
    ([True, True], "done", "ok", "2 ok"),
    ([True, False], "done", "failed", "1 ok, 1 failed"),
    ([False, False], "done", "failed", "0 ok, 2 failed"),
    ([True], "interrupted", "stopped", "1 ok, interrupted"),
    ([True, True], "stopped", "stopped", "2 ok, stopped"),
])
def test_green_only_when_every_prompt_is_ok(outcomes, how, state, postfix, capsys):
    bar = TqdmProgress()
    bar.start(2)
    for ok in outcomes:
        bar.advance(ok)
    bar.close(how)
    assert bar.bar.state == state
    assert last_frame(capsys.readouterr().err).endswith(postfix + "]")
    text, html = bar.bar.final(state, progress.RATE)
    assert f'data-state="{state}"' in html and f"background:{COLOURS[state]}" in html
    assert postfix in text and postfix in html
