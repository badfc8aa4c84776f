"""Where users work: proxies (a real forward proxy on 127.0.0.1) and the open-file limit (a
child process with a low ``ulimit -n``)."""

import asyncio
import json
import socket
import subprocess
import sys
import textwrap

import aiohttp
import pytest
from aiohttp import web

import chatmagic
from chatmagic import ChatmagicWarning, ConfigError
from chatmagic.transport.proxies import proxy_for

KEY = "sk-test-" + "k" * 40
#: A name only the proxy knows; the client must never look it up or connect to it itself.
REMOTE = "http://chat.example.test/v1"


@pytest.fixture(autouse=True)
def no_lookups_of_the_remote_name(monkeypatch):
    real = socket.getaddrinfo

    def guarded(host, *args, **kw):
        if "example.test" in str(host):
            raise AssertionError(f"the client looked up {host} instead of using the proxy")
        return real(host, *args, **kw)
    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    monkeypatch.setattr("chatmagic.transport.client._warned_clear", set())  # each test sees its own warning
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class ForwardProxy:
    """An HTTP forward proxy that relays every request to the practice server and remembers
    the absolute URLs it was asked for, as a corporate proxy sees them."""

    def __init__(self, upstream: str):
        self.upstream, self.seen, self.auth = upstream, [], set()

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(str(request.url))
        self.auth.add(request.headers.get("Authorization"))
        async with aiohttp.ClientSession() as session, session.post(
                self.upstream, data=await request.read(), headers={"Content-Type": "application/json"}) as resp:
            return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")

    async def __aenter__(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc):
        await self._runner.cleanup()


def via_proxy(server, monkeypatch, prompts, runs=1, env=None, **options):
    """Start a forward proxy, set ``env`` variables (value "PROXY" is its URL), run ``prompts``
    ``runs`` times; return (list of results, proxy)."""
    async def main():
        async with ForwardProxy(server.base_url + "/chat/completions") as proxy:
            for name, value in (env or {}).items():
                monkeypatch.setenv(name, proxy.url if value == "PROXY" else value)
            opts = {k: proxy.url if v == "PROXY" else v for k, v in options.items()}
            opts.setdefault("base_url", REMOTE)
            return [await chatmagic.achat_many(prompts, progress=False, cache=False, api_key=KEY, **opts)
                    for _ in range(runs)], proxy
    return asyncio.run(main())


def test_http_proxy_variable_routes_every_request_and_warns_once_about_plain_http(server, monkeypatch):
    with pytest.warns(ChatmagicWarning, match="sent unencrypted to chat.example.test") as caught:
        (first, second), proxy = via_proxy(server, monkeypatch, ["a", "b", "c"], runs=2,
                                           env={"HTTP_PROXY": "PROXY"}, concurrency=2)
    assert first.texts() == second.texts() == ["echo: a", "echo: b", "echo: c"]
    assert proxy.seen == [f"{REMOTE}/chat/completions"] * 6 and server.stats.requests == 6
    assert proxy.auth == {f"Bearer {KEY}"}
    assert len([w for w in caught if issubclass(w.category, ChatmagicWarning)]) == 1


def test_proxy_option_wins_over_the_environment_and_reaches_loopback_too(server, monkeypatch):
    (results,), proxy = via_proxy(server, monkeypatch, ["a"], env={"HTTP_PROXY": "http://127.0.0.1:9"},
                                  proxy="PROXY", base_url=server.base_url)
    assert results.texts() == ["echo: a"] and len(proxy.seen) == 1


def test_loopback_servers_and_no_proxy_hosts_skip_the_environment_proxy(server, monkeypatch):
    (results,), proxy = via_proxy(server, monkeypatch, ["a", "b"], env={"HTTP_PROXY": "PROXY"},
                                  base_url=server.base_url)
    assert results.texts() == ["echo: a", "echo: b"] and proxy.seen == []


@pytest.mark.filterwarnings("ignore::chatmagic.ChatmagicWarning")
def test_the_environment_is_read_once_per_run_not_per_request(server, monkeypatch):
    import chatmagic.transport.client
    calls = []
    real = chatmagic.transport.client.proxy_for
    monkeypatch.setattr(chatmagic.transport.client, "proxy_for", lambda *a, **k: calls.append(a) or real(*a, **k))
    (results,), proxy = via_proxy(server, monkeypatch, [f"p{i}" for i in range(40)],
                                  env={"HTTP_PROXY": "PROXY"}, concurrency=8)
    assert results.texts()[-1] == "echo: p39" and len(proxy.seen) == 40
    assert len(calls) == 1


@pytest.mark.parametrize("url, env, expected", [
    ("https://api.openai.com/v1", {"HTTPS_PROXY": "proxy:3128"}, "http://proxy:3128"),
    ("https://api.openai.com/v1", {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"}, "http://low:1"),
    ("https://api.openai.com/v1", {"HTTP_PROXY": "http://p:1"}, None),          # by scheme
    ("http://gw.corp/v1", {"HTTP_PROXY": "http://p:1"}, "http://p:1"),
    ("http://gw.corp/v1", {"ALL_PROXY": "http://all:1"}, "http://all:1"),
    ("https://api.corp/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "corp"}, None),
    ("https://api.corp/v1", {"HTTPS_PROXY": "http://p:1", "no_proxy": ".corp,other"}, None),
    ("https://api.corp/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
    ("https://api.corp/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "notcorp,api.corp:444"}, "http://p:1"),
    ("https://api.corp:444/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.corp:444"}, None),
    ("https://xcorp/v1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "corp"}, "http://p:1"),
    ("http://localhost:8080/v1", {"HTTP_PROXY": "http://p:1"}, None),
    ("http://[::1]:8080/v1", {"HTTP_PROXY": "http://p:1"}, None),
])
def test_which_proxy_the_environment_chooses(url, env, expected):
    assert proxy_for(url, None, env) == expected


def test_proxy_none_means_direct_and_a_bad_proxy_is_one_line(server, monkeypatch):
    assert proxy_for(REMOTE, "none", {"HTTP_PROXY": "http://p:1"}) is None
    with pytest.raises(ConfigError, match="expected a proxy like http://host:port"):
        chatmagic.chat_many(["a"], base_url=server.base_url, proxy="ftp://p:1", progress=False)
    monkeypatch.setenv("HTTP_PROXY", "socks5://p:1")
    with pytest.raises(ConfigError, match=r"\$HTTP_PROXY: expected a proxy"):
        chatmagic.chat_many(["a"], base_url=REMOTE, api_key=KEY, progress=False, cache=False)
    assert server.stats.requests == 0


# --- the open-file limit -------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, json, os, resource, sys, warnings
    import chatmagic, chatmagic.batch.run, chatmagic.core.engine, chatmagic.transport.client  # before fds run out
    chatmagic.core.prices.Prices().rate("gpt-4o-mini")  # the price data too
    url, prompts, concurrency, starve = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256 if hard == resource.RLIM_INFINITY else min(256, hard), hard))

    async def main():
        held = []
        if starve:  # every descriptor taken; they come back 0.3 s later, as finished requests would
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            asyncio.get_running_loop().call_later(0.3, lambda: [os.close(fd) for fd in held])
        return await chatmagic.achat_many([f"p{i}" for i in range(prompts)], base_url=url,
                                          concurrency=concurrency, progress=False, cache=False)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = asyncio.run(main())
    print(json.dumps({"ok": sum(r.ok for r in results), "retries": results.retries,
                      "attempts": max(r.attempts for r in results),
                      "errors": sorted({r.error for r in results if r.error})[:3],
                      "warnings": [str(w.message) for w in caught if "open-file" in str(w.message)]}))
""")


def run_child(server, prompts, concurrency, starve=False) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, server.base_url, str(prompts), str(concurrency),
                          "1" if starve else "0"], capture_output=True, text=True, timeout=100, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE")
def test_concurrency_is_kept_within_the_open_file_limit(server):
    server.latency = 0.3  # connections pile up to the cap
    got = run_child(server, prompts=1500, concurrency=1500)
    assert (got["ok"], got["retries"], got["errors"]) == (1500, 0, [])
    assert len(got["warnings"]) == 1 and "concurrency 1500 lowered to" in got["warnings"][0]
    assert server.stats.peak_in_flight < 256


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE")
def test_running_out_of_descriptors_is_waited_out_not_retried_as_a_server_fault(server):
    got = run_child(server, prompts=20, concurrency=4, starve=True)
    assert (got["ok"], got["retries"], got["attempts"], got["errors"]) == (20, 0, 1, [])
