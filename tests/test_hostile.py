"""Hostile and broken servers on 127.0.0.1 (the practice server's hostile directives): bounded
memory, the key never shown, deterministic failures failing at once, odd answers handled."""

import asyncio
import logging
import warnings
from dataclasses import replace

import pytest

import chatmagic
from chatmagic import RunAborted
from chatmagic.core.engine import Run
from chatmagic.settings import resolve

#: A realistic project key: long, and echoed back by the hostile directives.
KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 5


def run(server, prompts, **options):
    options.setdefault("api_key", KEY)
    return chatmagic.chat_many(prompts, base_url=server.base_url, progress=False, **options)


def shows_key(text) -> bool:
    """True if any 8 characters of the key's secret part appear in ``text``."""
    secret = KEY[len("sk-proj-"):]
    return any(secret[i:i + 8] in str(text) for i in range(len(secret) - 7))


# --- memory is bounded ------------------------------------------------------------------

@pytest.mark.parametrize("directive", ["endless", "hugelength", "gzipbomb"])
def test_an_oversized_answer_fails_at_once_with_a_clear_reason(server, directive):
    prompt = f"big [[{directive}]]"
    results = run(server, [prompt, "fine"], timeout=5, retries=1)
    big, fine = results
    assert (big.status, big.attempts) == ("error", 1)
    assert big.error.startswith("too_large: answer over the 8 MB limit")
    assert fine.text == "echo: fine"
    assert server.stats.attempts[prompt] == 1  # not retried; cut at the cap (the reason), not at the timeout


def test_an_announced_length_over_the_cap_is_refused_before_reading(server):
    results = run(server, ["big [[hugelength]]"], timeout=5)
    assert "1,000 MB announced" in results[0].error


def test_the_cap_is_an_option(server):
    long = "x" * 3000  # echoed back: an answer of about 3 KB
    results = run(server, [long, "short"], max_response_mb=0.002)
    assert results[0].error.startswith("too_large: answer over the 0.002 MB limit")
    assert results[1].text == "echo: short"
    with pytest.raises(chatmagic.ConfigError, match="max_response_mb must be positive"):
        run(server, ["a"], max_response_mb=0)


# --- the key is never shown ---------------------------------------------------------------

def test_key_echoed_in_a_plain_text_error_is_scrubbed_before_it_is_cut(server):
    results = run(server, ["echo it [[keyecho:500]]"], retries=0)
    assert results[0].status == "error" and "credentials it saw were ***" in results[0].error
    assert not shows_key(results[0].error)


def test_key_echoed_in_a_401_does_not_reach_run_aborted(server):
    with pytest.raises(RunAborted) as caught:
        run(server, ["echo it [[keyecho:401]]", "other"], concurrency=1)
    assert "***" in str(caught.value)
    assert not shows_key(caught.value) and not any(shows_key(r.error) for r in caught.value.results)


def test_invalid_json_message_and_its_retry_log_line_are_scrubbed(server, caplog):
    caplog.set_level(logging.INFO, logger="chatmagic")
    results = run(server, ["answer [[badjsonkey]]"], json=True)
    r = results[0]
    assert (r.status, r.attempts) == ("error", 2) and r.error.startswith("200 invalid_json")
    assert "retry 1" in caplog.text and "***" in caplog.text
    assert not shows_key(r.error) and not shows_key(caplog.text)


def test_key_read_from_a_file_keeps_its_newline_and_still_works(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", KEY + "\n")
    results = run(server, ["hi"], api_key=None, api_key_env="MY_KEY")
    assert results.texts() == ["echo: hi"]
    assert server.stats.auth_headers == {f"Bearer {KEY}"}


@pytest.mark.parametrize("bad", [KEY[:20] + "\x01" + KEY[20:], KEY + "\r\nX-Evil: 1", KEY[:9] + "é"])
def test_key_with_a_control_character_is_one_line_without_the_key(server, bad):
    with pytest.raises(chatmagic.ConfigError) as caught:
        run(server, ["hi"], api_key=bad)
    assert "control or non-ASCII character" in str(caught.value) and not shows_key(caught.value)
    assert server.stats.requests == 0


@pytest.fixture
def verbose_shell(server):
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_cell("%xmode Verbose")
    shell.user_ns.update(chatmagic=chatmagic, KEY=KEY, url=server.base_url, Run=Run,
                         resolve=resolve, replace=replace, asyncio=asyncio)
    yield shell
    shell.run_cell("%xmode Context")


def test_verbose_traceback_of_a_bad_key_shows_no_key(verbose_shell, capsys):
    verbose_shell.run_cell("chatmagic.chat_many(['hi'], base_url=url, api_key=KEY + '\\x00', progress=False)")
    out = capsys.readouterr()
    assert "ConfigError: the API key (api_key) has a control" in out.out
    assert not shows_key(out.out + out.err) and len(out.out.strip().splitlines()) == 1


def test_nothing_escapes_the_http_call_so_no_verbose_frame_shows_the_key(verbose_shell, capsys, server):
    # past validation on purpose: a header aiohttp refuses, raising inside the HTTP call
    verbose_shell.run_cell(
        "settings = replace(resolve({'base_url': url, 'progress': False, 'cache': False}), api_key=KEY + '\\n')\n"
        "res = asyncio.run(Run(['hi'], settings).run())")
    out = capsys.readouterr()
    assert not shows_key(out.out + out.err)
    res = verbose_shell.user_ns["res"]
    assert (res[0].status, res[0].attempts) == ("error", 1)
    assert res[0].error.startswith("client_error: ValueError") and not shows_key(res[0].error)


def test_the_request_headers_hide_the_key_in_their_repr(server):
    from chatmagic.transport.client import Client

    async def headers_shown():
        async with Client(resolve({"base_url": server.base_url, "api_key": KEY})) as client:
            return repr(client._session.headers)
    shown = asyncio.run(headers_shown())
    assert "'Authorization': 'Bearer ***'" in shown and not shows_key(shown)


# --- deterministic failures fail at once ---------------------------------------------------

def test_redirect_loop_fails_at_once(server):
    results = run(server, ["loop [[redirectloop]]"])
    assert (results[0].status, results[0].attempts) == ("error", 1)
    assert results[0].error.startswith("redirects: TooManyRedirects")


def test_200_carrying_a_400_fails_at_once(server):
    results = run(server, ["long [[err200:400]]", "ok"])
    assert (results[0].status, results[0].attempts) == ("error", 1)
    assert results[0].error.startswith("400 400: not a completion: This model's maximum context length")
    assert results[1].status == "ok"


def test_200_carrying_a_502_is_still_retried(server):
    results = run(server, ["odd [[bad200:1]]"])
    assert (results[0].status, results[0].attempts) == ("ok", 2)


def test_untrusted_certificate_fails_at_once():
    import trustme
    from aiohttp import web

    async def main():
        ca = trustme.CA()  # never trusted by the client: a self-signed server
        ctx = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(ctx)
        hits = []

        async def handler(request):
            hits.append(1)
            return web.json_response({})
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
        port = runner.addresses[0][1]
        try:
            return await chatmagic.achat_many(["hi"], base_url=f"https://127.0.0.1:{port}/v1",
                                              progress=False, cache=False), hits
        finally:
            await runner.cleanup()
    results, hits = asyncio.run(main())
    assert (results[0].status, results[0].attempts) == ("error", 1)  # one attempt: not retried, at once
    assert results[0].error.startswith("certificate: ") and not hits


# --- every odd answer is handled -------------------------------------------------------------

def test_content_as_a_list_of_parts_is_joined_and_cached(server):
    prompts = [f"p{i} [[parts]]" if i == 3 else f"p{i}" for i in range(10)]
    first = run(server, prompts)
    assert first[3].text == "echo: p3 (parts)" and first[3].status == "ok"
    again = run(server, prompts)
    assert all(r.cached for r in again) and again.texts() == first.texts()
    assert server.stats.requests == 10  # every answer, the odd one too, reached the cache


def test_content_as_a_number_becomes_text(server):
    results = run(server, ["n [[numcontent]]"])
    assert (results[0].status, results[0].text) == ("ok", "42")


def test_token_counts_as_strings_are_coerced_and_the_summary_works(server):
    results = run(server, ["s [[strusage]]", "plain"])
    assert isinstance(results[0].prompt_tokens, int) and results[0].prompt_tokens > 0
    assert "2/2 ok" in results.summary()


def test_summary_never_raises_on_hand_made_records():
    from chatmagic.results import Result, Results
    odd = Result(0, "p", text="x", status="ok", prompt_tokens="12", completion_tokens=[3], model=5)
    odd.cost = "1"  # type: ignore[assignment]
    line = Results([odd, Result(1, "q", status="error", error=None)]).summary()
    assert line.startswith("1/2 ok, 1 failed (1 unknown)") and "tokens 0 in / 0 out, price unknown" in line


def test_one_odd_row_never_fails_a_cache_batch(tmp_path):
    from chatmagic.core.cache import Cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no CacheWarning: the cache stays on
        cache = Cache(tmp_path / "c.sqlite3")
        cache.put("good1", "a", "stop", 1, 2, "m")
        cache.put("list", ["a", "b"], "stop", 1, 2, "m")
        cache.put("surrogate", "bad \ud800", "stop", 1, 2, "m")
        cache.put("huge", "b", "stop", 2**70, "7", "m")
        cache.put("good2", "c", None, None, None, None)
        cache.close()
    assert cache.disabled is None
    reopened = Cache(tmp_path / "c.sqlite3")
    found = reopened.get_many(["good1", "list", "surrogate", "huge", "good2"])
    assert set(found) == {"good1", "surrogate", "good2"}  # a lone surrogate is stored (its bytes), read back equal
    assert found["surrogate"][0] == "bad \ud800"
    reopened.close()


def test_a_cached_answer_that_is_not_json_is_a_miss_under_json(server):
    fmt = {"response_format": {"type": "json_object"}}
    first = run(server, ["x [[badjson]]"], params=fmt)  # the same request body as json=True sends
    assert first[0].text == "not json {"
    again = run(server, ["x [[badjson]]"], json=True)
    assert (again[0].status, again[0].cached) == ("error", False)
    assert again[0].error.startswith("200 invalid_json") and server.stats.requests == 3

