"""The Anthropic Messages dialect as pure functions: URL, headers, body, answers, errors."""
from __future__ import annotations

import json

import pytest

from chatmagic.providers import anthropic
from chatmagic.providers.anthropic import DEFAULT_MAX_TOKENS, DIALECT, api_base
from chatmagic.providers.dialect import ABORT, FAIL, RETRY, SLOW
from chatmagic.providers.hints import NONE, Hints
from chatmagic.settings import resolve


def settings(**options):
    return resolve({"base_url": "http://127.0.0.1:9/v1", "model": "claude-haiku-4-5", "api_key": "k", **options})


@pytest.mark.parametrize("base, url", [
    ("https://api.anthropic.com/v1", "https://api.anthropic.com/v1/messages"),
    ("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),      # the SDK's spelling
    ("https://api.anthropic.com/", "https://api.anthropic.com/v1/messages"),
    ("http://gw.local/anthropic/v1/", "http://gw.local/anthropic/v1/messages"),
])
def test_url_adds_v1_when_missing(base, url):
    assert DIALECT.url(settings(base_url=base)) == url
    assert api_base(base) + "/messages" == url


def test_headers_name_the_version():
    assert DIALECT.headers(settings()) == {"anthropic-version": "2023-06-01"}


def test_body_system_top_level_and_max_tokens_always():
    s = settings(system="Be brief.", temperature=0.3, params={"stop": "###", "top_k": 5})
    body = DIALECT.body(DIALECT.head(s), "Hi")
    assert body == {"model": "claude-haiku-4-5", "max_tokens": DEFAULT_MAX_TOKENS, "system": "Be brief.",
                    "temperature": 0.3, "stop_sequences": ["###"], "top_k": 5,
                    "messages": [{"role": "user", "content": "Hi"}]}
    plain = DIALECT.body(DIALECT.head(settings(max_tokens=20)), "Hi")
    assert plain == {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}
    assert DIALECT.head(settings(params={"stop": ["a", "b"]}))["stop_sequences"] == ["a", "b"]


def test_schema_and_json_force_a_tool():
    s = settings(schema="label: yes|no, n int")
    head = DIALECT.head(s)
    (tool,) = head["tools"]
    assert head["tool_choice"] == {"type": "tool", "name": tool["name"]}
    assert tool["input_schema"] == s.schema.json_schema
    assert "response_format" not in head
    assert head["system"] == s.schema.instruction()  # the instruction still goes with it
    head = DIALECT.head(settings(json=True))
    assert head["tools"][0]["input_schema"] == {"type": "object"}
    assert head["tool_choice"] == {"type": "tool", "name": anthropic.JSON_TOOL}


def test_body_is_head_plus_one_user_message():
    head = DIALECT.head(settings(system="S"))
    body = DIALECT.body(head, "P")
    assert {k: v for k, v in body.items() if k != "messages"} == {k: v for k, v in head.items() if k != "messages"}
    assert body["messages"] == [{"role": "user", "content": "P"}] and head["messages"] == []


def message(content, stop_reason="end_turn", **usage):
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, **usage}}


@pytest.mark.parametrize("stop, finish", [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                                          ("tool_use", "stop"), ("refusal", "content_filter"),
                                          ("pause_turn", "pause_turn"), (None, None), (7, None)])
def test_stop_reason_becomes_finish_reason(stop, finish):
    assert DIALECT.answer(message([{"type": "text", "text": "x"}], stop)).finish_reason == finish


def test_answer_joins_text_blocks_and_counts_cache_tokens():
    done = DIALECT.answer(message([{"type": "text", "text": "Hello, "}, {"type": "thinking", "thinking": "hm"},
                                   {"type": "text", "text": "world"}, "junk"],
                                  cache_read_input_tokens=100, cache_creation_input_tokens=7))
    assert (done.text, done.prompt_tokens, done.completion_tokens) == ("Hello, world", 117, 5)
    assert done.model == "claude-haiku-4-5-20251001"


def test_answer_of_a_forced_tool_is_its_input_as_json():
    done = DIALECT.answer(message([{"type": "tool_use", "id": "t", "name": "answer",
                                    "input": {"label": "yes", "n": 3}}], "tool_use"))
    assert json.loads(done.text) == {"label": "yes", "n": 3}


@pytest.mark.parametrize("data", [None, [], "text", {"type": "error"}, {"content": "x"}, {"content": None}])
def test_no_message_is_no_answer(data):
    assert DIALECT.answer(data) is None


def test_odd_usage_is_dropped_not_trusted():
    done = DIALECT.answer({"content": [], "usage": {"input_tokens": "12", "output_tokens": -3}, "model": 5})
    assert (done.text, done.prompt_tokens, done.completion_tokens, done.model) == ("", 12, None, None)


def error(kind, message="m", **extra):
    return {"type": "error", "error": {"type": kind, "message": message, **extra}, "request_id": "req_1"}


@pytest.mark.parametrize("status, kind, action", [
    (429, "rate_limit_error", SLOW), (529, "overloaded_error", SLOW), (500, "api_error", RETRY),
    (401, "authentication_error", ABORT), (403, "permission_error", ABORT), (402, "billing_error", ABORT),
    (404, "not_found_error", ABORT), (400, "invalid_request_error", FAIL), (413, "request_too_large", FAIL),
    (418, "a_new_type", None),
])
def test_errors_by_type(status, kind, action):
    failure = DIALECT.failure(status, error(kind, "said"), b"", NONE)
    assert (failure.action, failure.code, failure.message) == (action, kind, "said")
    if action == ABORT:
        assert failure.reason


@pytest.mark.parametrize("status, body", [
    (400, error("invalid_request_error", "Your credit balance is too low to access the Anthropic API.")),
    (400, error("invalid_request_error", "You have reached your specified API usage limits. You will regain "
                "access on 2026-01-01 at 00:00 UTC.")),
    (429, error("rate_limit_error", "m", details={"error_code": "enforced_spend_limit_reached"})),
])
def test_money_gone_ends_the_run(status, body):
    failure = DIALECT.failure(status, body, b"", NONE)
    assert failure.action == ABORT and "credit" in failure.reason


def test_should_retry_false_keeps_its_say():
    assert DIALECT.failure(529, error("overloaded_error"), b"", Hints(should_retry=False)).action == FAIL


def test_a_body_of_another_shape_is_still_read():
    failure = DIALECT.failure(502, None, b"<html>Bad gateway</html>", NONE)
    assert "Bad gateway" in failure.message
    failure = DIALECT.failure(400, {"error": {"message": "proxy says no", "code": "x"}}, b"", NONE)
    assert failure.message == "proxy says no"


@pytest.mark.parametrize("message, action", [
    ("temperature: Input should be less than or equal to 1", ABORT),
    ("seed: Extra inputs are not permitted", ABORT),
    ("max_tokens: 100000 > 64000, which is the maximum allowed number of output tokens for claude-x", ABORT),
    ("tools.0.input_schema: JSON schema is invalid", ABORT),
    ("messages.0.content.1.image.source.base64: image exceeds 5 MB maximum", FAIL),
    ("prompt is too long: 201234 tokens > 200000 maximum", FAIL),
    ("Something else went wrong with this one.", FAIL),
])
def test_an_invalid_request_about_the_whole_body_ends_the_run_one_about_a_prompt_fails_it(message, action):
    failure = DIALECT.failure(400, error("invalid_request_error", message), b"", NONE)
    assert failure.action == action
    if action == ABORT:
        assert "every prompt would be" in failure.reason
