"""The few-shot framing of the local model (chatmagic.practice.fewshot), against a stand-in
llama.cpp on 127.0.0.1 that records what it was sent (the real model: test_local.py)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from chatmagic.practice import fewshot


def test_prompt_is_examples_then_the_conversation_as_one_line_turns():
    prompt = fewshot.prompt_of([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Classify this review.\n\nReview: Broke   in a week."},
        {"role": "assistant", "content": "negative"},
        {"role": "user", "content": [{"type": "text", "text": "And this one?"}, {"type": "image_url"}]},
    ])
    lines = prompt.split("\n")
    assert lines[0] == fewshot.HEADER and lines[1] == "Be brief."
    q, a = fewshot.EXAMPLES[0]
    assert lines[2:4] == [f"Q: {q}", f"A: {a}"]
    assert lines[-4:] == ["Q: Classify this review. Review: Broke in a week.", "A: negative",
                          "Q: And this one?", "A:"]


def test_completion_body_stops_at_the_line_and_keeps_sampling_fields():
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 9, "stop": "###", "seed": 3}
    body = fewshot.completion_body(chat, default_max_tokens=512)
    assert body["stop"] == ["\n", "###"] and body["n_predict"] == 9 and body["seed"] == 3
    assert body["temperature"] == 0.0 and "json_schema" not in body  # deterministic unless asked
    body = fewshot.completion_body({**chat, "temperature": 0.7, "max_tokens": None}, default_max_tokens=512)
    assert body["temperature"] == 0.7 and body["n_predict"] == 512


def test_a_schema_becomes_a_grammar_with_no_newline_stop():
    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}, "stars": {"type": "integer"}}}
    chat = {"messages": [{"role": "user", "content": "Hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    body = fewshot.completion_body(chat, default_max_tokens=8)
    assert body["json_schema"] == schema and "\n" not in body["stop"]
    body = fewshot.completion_body({**chat, "response_format": {"type": "json_object"}}, default_max_tokens=8)
    assert body["json_schema"] == {"type": "object"}


def test_a_one_label_schema_is_the_label_alone_on_the_line_then_wrapped():
    labels = ["Asia", "North America", 'say "hi"']
    schema = {"type": "object", "properties": {"continent": {"type": "string", "enum": labels}}}
    chat = {"messages": [{"role": "user", "content": "Which continent is Tokyo in?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    body = fewshot.completion_body(chat, default_max_tokens=8)
    assert body["grammar"] == 'root ::= " "? ("Asia" | "North America" | "say \\"hi\\"")' and "json_schema" not in body
    assert body["stop"] == ["\n"]
    assert fewshot.label_field(schema) == ("continent", ["Asia", "North America", 'say "hi"'])
    answer = fewshot.chat_answer({"content": " North America", "stop_type": "word"}, "m", "continent")
    assert json.loads(answer["choices"][0]["message"]["content"]) == {"continent": "North America"}
    for other in ({"type": "object", "properties": {"n": {"type": "integer"}}},  # no enum
                  {"type": "object", "properties": {"a": {"enum": ["x"]}, "b": {"enum": ["y"]}}},  # two fields
                  {"type": "object", "properties": {"a": {"enum": [1, 2]}}}):  # not strings
        assert fewshot.label_field(other) is None


def test_answer_is_in_the_chat_completions_shape():
    answer = fewshot.chat_answer({"content": " Paris", "tokens_evaluated": 120, "tokens_predicted": 2,
                                  "stop_type": "word"}, "gemma3-270m")
    assert answer["object"] == "chat.completion" and answer["model"] == "gemma3-270m"
    assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                                  "finish_reason": "stop"}]
    assert answer["usage"] == {"prompt_tokens": 120, "completion_tokens": 2, "total_tokens": 122}
    cut = fewshot.chat_answer({"content": "a b c", "stop_type": "limit"}, "m")
    assert cut["choices"][0]["finish_reason"] == "length"


@pytest.fixture
def proxied():
    """A stand-in llama.cpp and the proxy in front of it, on a loop in this thread."""
    loop = asyncio.new_event_loop()
    seen: list[tuple[str, object]] = []

    async def completion(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(("/completion", body))
        if "[[400]]" in body["prompt"]:
            return web.json_response({"error": {"code": 400, "message": "too long"}}, status=400)
        return web.json_response({"content": " Paris", "tokens_evaluated": 100, "tokens_predicted": 2,
                                  "stop_type": "word"})

    async def health(request: web.Request) -> web.Response:
        seen.append(("/health", None))
        return web.json_response({"status": "ok"})

    async def setup():
        backend = web.Application()
        backend.router.add_post("/completion", completion)
        backend.router.add_get("/health", health)
        runner = web.AppRunner(backend)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        proxy = await fewshot.serve(f"http://127.0.0.1:{port}", 0, "127.0.0.1", "gemma3-270m", 48)
        proxy_port = proxy.addresses[0][1]
        return runner, proxy, f"http://127.0.0.1:{proxy_port}"

    runner, proxy, url = loop.run_until_complete(setup())

    def call(method: str, path: str, body: object = None) -> tuple[int, object]:
        async def go():
            async with aiohttp.ClientSession() as s, s.request(method, url + path, data=body) as r:
                text = await r.text()
                return r.status, (json.loads(text) if text.startswith("{") else text)
        return loop.run_until_complete(go())

    yield call, seen
    loop.run_until_complete(proxy.cleanup())
    loop.run_until_complete(runner.cleanup())
    loop.close()


def test_proxy_frames_chat_and_forwards_the_rest(proxied):
    call, seen = proxied
    status, answer = call("POST", "/v1/chat/completions", json.dumps(
        {"model": "anything", "max_tokens": 5, "messages": [{"role": "user", "content": "Capital of France?"}]}))
    assert status == 200 and answer["choices"][0]["message"]["content"] == "Paris"
    path, sent = seen[-1]
    assert path == "/completion" and sent["prompt"].endswith("Q: Capital of France?\nA:") and sent["n_predict"] == 5
    assert call("GET", "/health") == (200, {"status": "ok"}) and seen[-1] == ("/health", None)


def test_proxy_passes_errors_on_and_refuses_what_is_not_a_chat(proxied):
    call, _ = proxied
    status, answer = call("POST", "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "[[400]]"}]}))
    assert status == 400 and answer["error"]["message"] == "too long"
    status, answer = call("POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and "not JSON" in answer["error"]["message"]
    status, answer = call("POST", "/v1/chat/completions", json.dumps({"messages": "hi"}))
    assert status == 400 and "list of messages" in answer["error"]["message"]
