"""The provider seam: profiles, routes (PROVIDER:MODEL, -m a,b), extra headers, Azure's auth, and
the error and limit shapes of every OpenAI-compatible provider, against servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

import chatmagic
from chatmagic.core.engine import Run
from chatmagic.errors import ConfigError, RequestError, RunAborted
from chatmagic.practice.server import FakeOpenAI
from chatmagic.providers.dialect import ABORT, FAIL, SLOW
from chatmagic.providers.hints import NONE, parse, parse_reset
from chatmagic.providers.profiles import PROFILES, split_model
from chatmagic.providers.shapes import read_failure
from chatmagic.settings import resolve, resolve_cell
from chatmagic.transport.client import Client, request_headers

KEY = "sk-test-Zq7Zq7Zq7Zq7"


# --- profiles and routes --------------------------------------------------------------------

@pytest.mark.parametrize("name, url", [
    ("openai", "https://api.openai.com/v1/chat/completions"),
    ("gemini", "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"),
    ("groq", "https://api.groq.com/openai/v1/chat/completions"),
    ("openrouter", "https://openrouter.ai/api/v1/chat/completions"),
    ("mistral", "https://api.mistral.ai/v1/chat/completions"),
    ("together", "https://api.together.xyz/v1/chat/completions"),
    ("deepseek", "https://api.deepseek.com/v1/chat/completions"),
])
def test_a_profile_gives_the_base_url_and_names_the_key(name, url):
    key_env = PROFILES[name].key_env
    s = resolve({"provider": name}, environ={key_env: KEY})
    assert (s.provider, s.url, s.api_key_env, s.api_key) == (name, url, key_env, KEY)
    with pytest.raises(ConfigError, match=rf"no API key: set \${key_env}"):
        resolve({"provider": name}, environ={})


def test_local_profiles_need_no_key_and_base_url_env_and_flag_override():
    assert resolve({"provider": "ollama"}, environ={}).url == "http://localhost:11434/v1/chat/completions"
    assert resolve({"provider": "vllm"}, environ={}).api_key is None
    env = {"GROQ_BASE_URL": "http://127.0.0.1:9/v1"}
    assert resolve({"provider": "groq"}, environ=env).base_url == "http://127.0.0.1:9/v1"
    assert resolve({"provider": "groq", "base_url": "http://127.0.0.1:8/v1"}, environ=env).base_url.endswith(":8/v1")
    assert resolve({}, environ={"CHATMAGIC_PROVIDER": "GROQ", **env}).provider == "groq"
    with pytest.raises(ConfigError, match="unknown provider 'nope'; known: openai, azure"):
        resolve({"provider": "nope"}, environ={})


@pytest.mark.parametrize("written, expected", [
    ("groq:llama-3.1-8b-instant", ("groq", "llama-3.1-8b-instant")),
    ("OpenRouter:meta-llama/llama-3-8b:free", ("openrouter", "meta-llama/llama-3-8b:free")),
    ("llama3:8b", (None, "llama3:8b")),  # Ollama's model names keep their colon
    ("gpt-4o-mini", (None, "gpt-4o-mini")),
    ("groq:", (None, "groq:")),
])
def test_provider_colon_model_only_for_known_profiles(written, expected):
    assert split_model(written) == expected


def test_provider_colon_model_routes_the_model():
    s = resolve({"model": "groq:llama-3.1-8b-instant"}, environ={"GROQ_API_KEY": KEY})
    assert (s.provider, s.model, s.api_key) == ("groq", "llama-3.1-8b-instant", KEY)
    assert s.dialect.head(s)["model"] == "llama-3.1-8b-instant"
    s = resolve({"model": "llama3:8b", "provider": "ollama"}, environ={})
    assert (s.provider, s.model) == ("ollama", "llama3:8b")


def test_models_of_several_providers_each_get_their_own_url_and_key():
    env = {"OPENAI_API_KEY": "sk-openai-1", "GROQ_API_KEY": "gsk-groq-1234"}
    s = resolve({"model": "openai:gpt-4o-mini, groq:llama,gpt-4o"}, environ=env)
    assert s.models == ["openai:gpt-4o-mini", "groq:llama", "gpt-4o"]
    a, b, c = (s.for_model(m) for m in s.models)
    assert (a.provider, a.model, a.api_key, a.url) == ("openai", "gpt-4o-mini", "sk-openai-1",
                                                       "https://api.openai.com/v1/chat/completions")
    assert (b.provider, b.model, b.api_key, b.url) == ("groq", "llama", "gsk-groq-1234",
                                                       "https://api.groq.com/openai/v1/chat/completions")
    assert (c.provider, c.model) == ("openai", "gpt-4o")
    # a --base-url in a cell mixing providers is the --provider's (openai here), not groq's
    s = resolve({"model": "gpt-4o-mini,groq:llama", "base_url": "http://127.0.0.1:7/v1"}, environ=env)
    assert s.for_model("gpt-4o-mini").base_url == "http://127.0.0.1:7/v1"
    assert s.for_model("groq:llama").base_url == "https://api.groq.com/openai/v1"
    with pytest.raises(ConfigError, match=r"no API key \(for groq:llama\): set \$GROQ_API_KEY"):
        resolve({"model": "gpt-4o-mini,groq:llama"}, environ={"OPENAI_API_KEY": "sk-1"})


def test_the_api_takes_one_model_per_call(server):
    with pytest.raises(ConfigError, match="a run sends to one model; call once per model"):
        chatmagic.chat_many(["a"], model="gpt-4o-mini,gpt-4o", base_url=server.base_url,
                            api_key=KEY, progress=False)
    assert server.stats.requests == 0


def test_azure_needs_a_base_url_and_sends_api_version_only_to_classic_deployments():
    env = {"AZURE_OPENAI_API_KEY": KEY}
    with pytest.raises(ConfigError, match=r"provider azure has no default base URL: give --base-url or "
                                          r"\$AZURE_OPENAI_BASE_URL"):
        resolve({"provider": "azure"}, environ=env)
    classic = "https://r.openai.azure.com/openai/deployments/gpt4o"
    s = resolve({"provider": "azure", "base_url": classic}, environ=env)
    assert s.url == classic + "/chat/completions?api-version=2024-10-21"
    assert request_headers(s) == {"api-key": KEY}
    s = resolve({"provider": "azure", "base_url": classic, "api_version": "2025-01-01-preview"}, environ=env)
    assert s.url.endswith("?api-version=2025-01-01-preview")
    s = resolve({"provider": "azure"}, environ={**env, "AZURE_OPENAI_BASE_URL": "https://r.openai.azure.com/openai/v1"})
    assert s.url == "https://r.openai.azure.com/openai/v1/chat/completions"
    with pytest.raises(ConfigError, match="--batch is not written for Azure yet; run without --batch"):
        resolve({"provider": "azure", "base_url": classic, "batch": True}, environ=env)


# --- extra headers ---------------------------------------------------------------------------

def test_header_flags_parse_and_their_values_are_never_shown():
    flags = {"headers": ["X-Title: my notebook", "HTTP-Referer: https://example.org"],
             "base_url": "http://127.0.0.1:1/v1"}
    s, _ = resolve_cell(flags, {}, environ={})
    assert s.headers == {"X-Title": "my notebook", "HTTP-Referer": "https://example.org"}
    assert "my notebook" not in repr(s) and "my notebook" not in repr(request_headers(s))
    with pytest.raises(ConfigError, match="--header expects 'Name: value'"):
        resolve_cell({"headers": ["no colon"]}, {}, environ={})
    with pytest.raises(ConfigError, match="header name 'Bad Name' is not a valid HTTP header name"):
        resolve({"headers": {"Bad Name": "x"}, "base_url": "http://127.0.0.1:1/v1"}, environ={})
    with pytest.raises(ConfigError, match=r"header X-A: the value must be printable ASCII text \(not shown\)") as e:
        resolve({"headers": {"X-A": "v\r\nX-Injected: 1"}, "base_url": "http://127.0.0.1:1/v1"}, environ={})
    assert "Injected" not in str(e.value)


def test_header_values_have_no_config_trait_that_percent_config_would_print():
    from chatmagic.notebook.magics import ChatMany
    assert "headers" not in ChatMany.class_trait_names(config=True)
    assert "provider" in ChatMany.class_trait_names(config=True)


def test_extra_headers_are_sent_and_scrubbed_from_what_the_server_echoes():
    seen: list[dict] = []
    results = asyncio.run(_echoing(seen))
    assert seen[0]["X-Gateway"] == "gw-secret-777" and seen[0]["X-Title"] == "nb"
    assert results[0].error == "400 invalid_request_error: bad gateway token ***"


async def _echoing(seen: list[dict]):

    async def echo(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"error": {"message": f"bad gateway token {request.headers.get('X-Gateway')}",
                                            "type": "invalid_request_error"}}, status=400)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        results = await chatmagic.achat_many(["a"], base_url=f"http://127.0.0.1:{port}/v1", progress=False,
                                             headers={"X-Gateway": "gw-secret-777", "X-Title": "nb"}, cache=False)
    finally:
        await runner.cleanup()
    return results


# --- Azure, end to end -----------------------------------------------------------------------

def test_classic_azure_works_end_to_end(server):
    server.auth = "api-key"
    base = server.base_url.removesuffix("/v1") + "/openai/deployments/gpt4o"
    results = chatmagic.chat_many(["a", "b"], provider="azure", base_url=base, api_key=KEY, progress=False)
    assert results.texts() == ["echo: a", "echo: b"]
    assert server.stats.api_versions == {"2024-10-21"} and server.stats.auth_headers == set()
    with pytest.raises(RunAborted, match="401"):  # the same server refuses a Bearer key, as Azure does
        chatmagic.chat_many(["c"], base_url=server.base_url, api_key=KEY, progress=False)


# --- error shapes, read -----------------------------------------------------------------------

GEMINI_DAILY = [{"error": {"code": 429, "message": "You exceeded your current quota", "status": "RESOURCE_EXHAUSTED",
                           "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                               {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
                               {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}]


@pytest.mark.parametrize("status, body, expected", [
    # (status, body, (code, action, retry_after, words in the reason))
    (429, GEMINI_DAILY, ("RESOURCE_EXHAUSTED", ABORT, 37.0, "daily quota is spent")),
    (429, [{"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}}],
     ("RESOURCE_EXHAUSTED", None, 1.5, None)),
    (400, [{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                      "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                                 "reason": "API_KEY_INVALID"}]}}],
     ("INVALID_ARGUMENT", ABORT, None, "bad API key (API_KEY_INVALID)")),
    (403, {"error": {"code": 403, "message": "Input flagged", "metadata": {"reasons": ["violence"],
                                                                           "flagged_input": "..."}}},
     ("moderation", FAIL, None, "input flagged (violence)")),
    (403, {"error": {"code": 403, "message": "Key disabled"}}, (None, None, None, None)),
    (429, {"error": {"message": "no money", "type": "insufficient_quota", "code": "credit_balance_exhausted"}},
     ("credit_balance_exhausted", ABORT, None, "no credit")),
    (500, {"error": {"code": 500, "message": "exceeds the context", "type": "exceed_context_size_error"}},
     ("exceed_context_size_error", FAIL, None, "too long")),
    (503, {"error": "server busy, please try again. maximum pending requests exceeded"}, (None, SLOW, None, None)),
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
     ("overloaded_error", SLOW, None, None)),
    (498, {"error": {"message": "capacity", "type": "capacity_exceeded"}}, ("capacity_exceeded", SLOW, None, None)),
    (400, {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400},
     ("BadRequestError", None, None, None)),
    (502, [1, 2], (None, None, None, None)),
    (500, "a string", (None, None, None, None)),
])
def test_every_error_shape_is_read(status, body, expected):
    f = read_failure(status, body, json.dumps(body).encode(), NONE)
    code, action, retry_after, reason = expected
    assert (f.code, f.action, f.retry_after) == (code, action, retry_after)
    assert (f.reason is None) if reason is None else (reason in f.reason)
    assert f.message


def test_a_429_with_a_limit_of_zero_ends_the_run():
    said = parse({"x-ratelimit-limit-req-minute": "0", "x-ratelimit-remaining-req-minute": "0"})
    f = read_failure(429, {"message": "Rate limit exceeded", "code": "1300"}, b"", said)
    assert (f.action, f.reason) == (ABORT, "the key's request limit is 0: its plan allows none")


def test_should_retry_false_keeps_its_say_over_overload():
    said = parse({"x-should-retry": "false"})
    assert read_failure(503, {"error": {"message": "x"}}, b"", said).action is None


# --- error shapes, against the practice server --------------------------------------------------

def _run(server, prompts, **kw):
    settings = resolve({"base_url": server.base_url, "progress": False, "cache": False, **kw}, environ={})
    run = Run(prompts, settings, sleep=_no_sleep)
    try:
        return asyncio.run(run.run()), run
    except RunAborted as e:
        return e, run


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.mark.parametrize("status", [503, 529, 498])
def test_an_overload_storm_slows_the_pace_like_a_429_and_recovers(server, status):
    server.storm_status, server.storm_s = status, 0.3
    results, run = _run(server, [f"q{i}" for i in range(40)], concurrency=8)
    assert results.texts() == [f"echo: q{i}" for i in range(40)]
    # every overload answer reached the throttle as a 429 without headers does (it paces all prompts)
    assert server.stats.by_status[status] > 0 and run._throttle.rejected == server.stats.by_status[status]
    assert results.retries == server.stats.by_status[status]  # each retried once the pace allowed


def test_gemini_retry_delay_in_the_body_is_the_wait(server):
    server.error_shape = "gemini"

    async def one():
        s = resolve({"base_url": server.base_url}, environ={})
        async with Client(s) as c:
            await c.complete(json.dumps(s.dialect.body(s.dialect.head(s), "x [[fail:429]] [[retry_after:3]]")).encode())
    with pytest.raises(RequestError) as e:
        asyncio.run(one())
    assert (e.value.status, e.value.code, e.value.retry_after, e.value.hints.retry_after) == (
        429, "RESOURCE_EXHAUSTED", 3.0, 3.0)
    assert "Scripted failure 429" in e.value.message


def test_a_long_gemini_retry_delay_is_capped_and_said(server):
    server.error_shape = "gemini"
    results, _ = _run(server, ["a [[fail:429:1]] [[retry_after:3600]]", "b"], max_retry_wait=0.2, concurrency=1)
    assert results.texts() == ["echo: a", "echo: b"] and results[0].attempts == 2
    assert results.notes == ["server asked to wait 1h; waited 0.2 s (max_retry_wait)"]


def test_a_spent_gemini_daily_quota_ends_the_run_at_once_saying_so(server):
    server.error_shape = "gemini"
    outcome, _ = _run(server, ["a [[fail:429]] [[daily]]"] + [f"b{i}" for i in range(30)], concurrency=1)
    assert isinstance(outcome, RunAborted)
    assert "the daily quota is spent (GenerateRequestsPerDayPerProjectPerModel-FreeTier)" in str(outcome)
    assert server.stats.requests == 1


def test_an_openrouter_moderation_403_fails_only_its_prompt(server):
    server.error_shape = "openrouter"
    results, _ = _run(server, ["a", "b [[fail:403]] [[flagged]]", "c"])
    assert results.texts() == ["echo: a", None, "echo: c"]
    assert results[1].error == "403 moderation: input flagged (harassment): Input flagged by moderation"
    assert results[1].attempts == 1
    outcome, _ = _run(server, ["d [[fail:403]]", "e"], concurrency=1)
    assert isinstance(outcome, RunAborted) and "403" in str(outcome)  # about the key: the run ends


def test_quota_by_type_ends_the_run_whatever_the_code(server):
    outcome, _ = _run(server, ["a [[fail:429]] [[code:credit_balance_exhausted]] [[type:insufficient_quota]]", "b"],
                      concurrency=1)
    assert isinstance(outcome, RunAborted) and "no credit or quota left" in str(outcome)
    assert server.stats.requests == 1


def test_a_context_size_500_fails_at_once(server):
    results, _ = _run(server, ["a", "b [[toolong]]"])
    assert results[0].ok and results[1].attempts == 1
    assert results[1].error.startswith("500 exceed_context_size_error: the prompt is too long for the model")


@pytest.mark.parametrize("shape, status, expected", [
    ("vllm", 400, "400 BadRequestError: Scripted failure 400."),
    ("ollama", 400, "400: Scripted failure 400."),
])
def test_vllm_and_ollama_error_bodies_are_read(server, shape, status, expected):
    server.error_shape = shape
    results, _ = _run(server, [f"x [[fail:{status}]]"])
    assert results[0].error == expected


# --- limit header families -------------------------------------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize("headers, requests, tokens", [
    ({"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
      "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:12Z",
      "anthropic-ratelimit-input-tokens-limit": "30000", "anthropic-ratelimit-input-tokens-remaining": "29000",
      "anthropic-ratelimit-input-tokens-reset": "2027-01-15T08:00:00+00:00"},
     (50, 49, 12.0), (30000, 29000, 0.0)),
    ({"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59", "x-ratelimit-reset": "1"}, (60, 59, 1.0), None),
    ({"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "3", "X-RateLimit-Reset": str(int((NOW + 42) * 1000))},
     (20, 3, 42.0), None),
    ({"x-ratelimit-limit": "20", "x-ratelimit-remaining": "3", "x-ratelimit-reset": str(int(NOW + 7))},
     (20, 3, 7.0), None),
    ({"x-ratelimit-limit-req-minute": "60", "x-ratelimit-remaining-req-minute": "59",  # Mistral: no reset
      "x-ratelimit-limit-tokens-minute": "50000", "x-ratelimit-remaining-tokens-minute": "47196",
      "x-ratelimit-limit-tokens-month": "4000000"}, (60, 59, None), (50000, 47196, None)),
])
def test_every_limit_header_family_is_read(headers, requests, tokens):
    from multidict import CIMultiDict
    now = 1_800_000_000.0 if "x-ratelimit-limit" in {k.lower() for k in headers} else _at("2027-01-15T08:00:00Z")
    h = parse(CIMultiDict(headers), now)
    assert (h.requests.limit, h.requests.remaining, h.requests.reset) == pytest.approx(requests)
    assert (None if h.tokens is None else (h.tokens.limit, h.tokens.remaining, h.tokens.reset)) == tokens


def _at(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("text, seconds", [("6m0s", 360.0), ("20ms", 0.02), ("1.5", 1.5),
                                           (str(NOW + 30), 30.0), (str(int((NOW - 5) * 1000)), 0.0),
                                           ("2027-01-15T08:00:00", None), ("soon", None)])
def test_a_reset_is_a_duration_or_a_time_never_decades(text, seconds):
    assert parse_reset(text, NOW) == seconds


@pytest.mark.parametrize("family", ["anthropic", "unsuffixed", "openrouter", "mistral"])
def test_a_run_paces_from_each_header_family_without_ending_as_a_quota(family):
    with FakeOpenAI(rpm=300, headers=family) as srv:
        results, run = _run(srv, [f"q{i}" for i in range(12)], concurrency=4)
    assert results.texts() == [f"echo: q{i}" for i in range(12)]
    assert run._throttle.requests.known  # the budget was read from that family's headers
    if family != "mistral":  # Mistral names no reset: its refill is learnt, not announced
        assert run._throttle.requests.fill > 1  # refills within seconds: the reset was read as a time, not decades


def test_the_practice_server_sends_each_family():
    from chatmagic.practice.provider_shapes import family_headers
    t = time.time()
    reset = family_headers("openrouter", "requests", 20, 3, 42, now=t)["x-ratelimit-reset"]
    assert int(reset) == pytest.approx((t + 42) * 1000, abs=1)  # a Unix time in ms, as OpenRouter sends
    assert family_headers("anthropic", "tokens", 10, 2, 1, now=0)["anthropic-ratelimit-tokens-reset"] == \
        "1970-01-01T00:00:01Z"


# --- several providers in one cell, in a real kernel ---------------------------------------------

@pytest.mark.kernel
def test_models_of_two_providers_side_by_side_in_a_real_kernel(server, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    with FakeOpenAI(model="groq-model") as groq:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("GROQ_BASE_URL", groq.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-side-1")
        monkeypatch.setenv("GROQ_API_KEY", "gsk-groq-side-2")
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(c) for c in (
            "%load_ext chatmagic",
            "%%chatmany -o out -m openai:gpt-4o-mini,groq:llama-3.1-8b-instant -q\nq1\nq2",
            "print(out[1])")]
        NotebookClient(nb, timeout=60, kernel_name="python3").execute()
        printed = "".join(o.get("text", "") for o in nb.cells[2].outputs if o.output_type == "stream")
        assert printed.strip() == "{'openai:gpt-4o-mini': 'echo: q2', 'groq:llama-3.1-8b-instant': 'echo: q2'}"
        assert server.stats.requests == 2 and groq.stats.requests == 2
        assert server.stats.auth_headers == {"Bearer sk-openai-side-1"}
        assert groq.stats.auth_headers == {"Bearer gsk-groq-side-2"}
