"""The practice Anthropic server speaks the Messages and Message Batches shapes of Anthropic's
API reference: what it accepts, refuses, and answers (checked over real HTTP on 127.0.0.1)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest

from chatmagic.practice.anthropic import FakeAnthropic

KEY = "sk-ant-practice"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture
def srv():
    with FakeAnthropic(api_key=KEY) as server:
        yield server


def call(srv, path="/messages", body=None, *, headers=None, method="POST"):
    """(status, headers, parsed JSON or the raw bytes) of one request."""
    data = None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(HEADERS if headers is None else headers)}
    req = urllib.request.Request(srv.base_url + path, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw, status, said = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as err:
        raw, status, said = err.read(), err.code, err.headers
    try:
        return status, said, json.loads(raw)
    except ValueError:
        return status, said, raw


def ask(text="hello", **params):
    return {"model": "claude-fake", "max_tokens": 64, "messages": [{"role": "user", "content": text}], **params}


def test_a_message_in_anthropic_shape(srv):
    status, _, body = call(srv, body=ask("hello", system="be brief", temperature=0.2))
    assert status == 200
    assert body["type"] == "message" and body["role"] == "assistant" and body["model"] == "claude-fake"
    assert body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": "echo: [system=be brief] hello"}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert set(body["usage"]) == {"input_tokens", "output_tokens", "cache_creation_input_tokens",
                                  "cache_read_input_tokens"}
    assert srv.stats.params == {"model": "claude-fake", "max_tokens": 64, "system": "be brief", "temperature": 0.2}
    assert srv.stats.keys == {KEY} and srv.stats.versions == {"2023-06-01"}


@pytest.mark.parametrize("change, status, kind, says", [
    ({"headers": {"anthropic-version": "2023-06-01"}}, 401, "authentication_error", "x-api-key header is required"),
    ({"headers": {"x-api-key": "wrong", "anthropic-version": "2023-06-01"}}, 401, "authentication_error", "invalid"),
    ({"headers": {"x-api-key": KEY}}, 400, "invalid_request_error", "anthropic-version"),
    ({"drop": "max_tokens"}, 400, "invalid_request_error", "max_tokens: Field required"),
    ({"body": {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]}},
     400, "invalid_request_error", 'Unexpected role "system"'),
    ({"body": {"stop": ["x"]}}, 400, "invalid_request_error", "stop: Extra inputs"),
    ({"body": {"max_tokens": 0}}, 400, "invalid_request_error", "max_tokens"),
])
def test_refused_as_the_real_api_refuses(srv, change, status, kind, says):
    body = {**ask(), **change.get("body", {})}
    body.pop(change.get("drop", ""), None)
    got, _, answer = call(srv, body=body, headers=change.get("headers"))
    assert got == status
    assert answer["type"] == "error" and answer["error"]["type"] == kind
    assert says in answer["error"]["message"]
    assert answer["request_id"].startswith("req_")


def test_stop_sequences_and_max_tokens_cut_the_answer(srv):
    _, _, body = call(srv, body=ask("one ### two", stop_sequences=["###"]))
    assert body["content"][0]["text"] == "echo: one "
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "###")
    _, _, body = call(srv, body=ask("x" * 100, max_tokens=3))
    assert body["stop_reason"] == "max_tokens" and len(body["content"][0]["text"]) == 12


def test_a_forced_tool_answers_with_input_that_fits_its_schema(srv):
    schema = {"type": "object", "properties": {"label": {"enum": ["yes", "no"]}, "n": {"type": "integer"}},
              "required": ["label", "n"]}
    tools = [{"name": "answer", "description": "the answer", "input_schema": schema}]
    _, _, body = call(srv, body=ask("is it?", tools=tools, tool_choice={"type": "tool", "name": "answer"}))
    (block,) = body["content"]
    assert block["type"] == "tool_use" and block["name"] == "answer" and block["id"].startswith("toolu_")
    assert block["input"]["label"] in ("yes", "no") and isinstance(block["input"]["n"], int)
    assert body["stop_reason"] == "tool_use"
    _, _, bad = call(srv, body=ask("is it? [[badschema]]", tools=tools, tool_choice={"type": "tool", "name": "answer"}))
    assert "label" not in bad["content"][0]["input"]


def test_rate_limit_headers_count_down_and_429_says_retry_after(srv):
    limited = FakeAnthropic(rpm=3, itpm=10_000, otpm=1_000).start()
    try:
        answers = [call(limited, body=ask()) for _ in range(4)]
    finally:
        limited.stop()
    remaining = [int(h["anthropic-ratelimit-requests-remaining"]) for _, h, _ in answers[:3]]
    assert remaining == [2, 1, 0]
    _, said, _ = answers[0]
    assert said["anthropic-ratelimit-requests-limit"] == "3"
    assert said["anthropic-ratelimit-output-tokens-remaining"] == str(1000 - 64)
    reset = datetime.fromisoformat(said["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00"))
    assert 0 < (reset - datetime.now(timezone.utc)).total_seconds() <= 61
    # tokens-* is the tighter of input and output: output here
    assert said["anthropic-ratelimit-tokens-remaining"] == said["anthropic-ratelimit-output-tokens-remaining"]
    status, said, body = answers[3]
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(said["retry-after"]) <= 20  # one request of 3 a minute comes back in 20 s
    assert said["anthropic-ratelimit-requests-remaining"] == "0"


def test_overload_storm_then_healthy(srv):
    srv.overload_s = 0.3
    status, _, body = call(srv, body=ask())
    assert status == 529 and body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    deadline = time.monotonic() + 5
    while call(srv, body=ask())[0] == 529:  # polls: the storm ends 0.3 s after it began
        assert time.monotonic() < deadline
    srv.overload_s = 0


def test_scripted_failures_in_anthropic_shape(srv):
    status, _, body = call(srv, body=ask("x [[fail:500:1]]"))
    assert status == 500 and body["error"]["type"] == "api_error"
    assert call(srv, body=ask("x [[fail:500:1]]"))[0] == 200  # only the first attempt
    status, _, body = call(srv, body=ask("y [[fail:413]]"))
    assert status == 413 and body["error"]["type"] == "request_too_large"


# ---- Message Batches ------------------------------------------------------------------


def wait_ended(srv, batch_id):
    deadline = time.monotonic() + 10
    while True:
        _, _, batch = call(srv, f"/messages/batches/{batch_id}", method="GET")
        if batch["processing_status"] == "ended":
            return batch
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_message_batch_from_creation_to_results(srv):
    requests = [{"custom_id": f"r-{i}", "params": ask(f"p{i}")} for i in range(3)]
    requests.append({"custom_id": "bad", "params": {"model": "claude-fake", "messages": []}})
    requests.append({"custom_id": "fails", "params": ask("q [[fail:400]]")})
    status, _, batch = call(srv, "/messages/batches", {"requests": requests})
    assert status == 200 and batch["type"] == "message_batch" and batch["id"].startswith("msgbatch_")
    assert batch["processing_status"] == "in_progress" and batch["results_url"] is None
    assert batch["request_counts"] == {"processing": 5, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    ended = wait_ended(srv, batch["id"])
    assert ended["request_counts"] == {"processing": 0, "succeeded": 3, "errored": 2, "canceled": 0, "expired": 0}
    assert ended["results_url"] == f"{srv.base_url}/messages/batches/{batch['id']}/results"
    _, _, raw = call(srv, f"/messages/batches/{batch['id']}/results", method="GET")
    lines = [json.loads(line) for line in raw.splitlines()]
    by_id = {line["custom_id"]: line["result"] for line in lines}
    assert [line["custom_id"] for line in lines] != sorted(by_id)  # not in request order
    assert by_id["r-1"]["type"] == "succeeded" and by_id["r-1"]["message"]["content"][0]["text"] == "echo: p1"
    assert by_id["bad"]["type"] == "errored"
    assert by_id["bad"]["error"]["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in by_id["bad"]["error"]["error"]["message"]
    assert by_id["fails"]["error"] == {"type": "error", "error": {"type": "invalid_request_error",
                                                                   "message": "Scripted failure 400."}}


@pytest.mark.parametrize("requests, says", [
    ([], "non-empty"),
    ([{"custom_id": "has space", "params": ask()}], "pattern"),
    ([{"custom_id": "a", "params": ask()}, {"custom_id": "a", "params": ask()}], "not unique"),
])
def test_a_bad_request_list_is_refused_at_once(srv, requests, says):
    status, _, body = call(srv, "/messages/batches", {"requests": requests})
    assert status == 400 and says in body["error"]["message"]
    assert srv.batches.stats["batches"] == 0


def test_cancel_and_expiry_leave_the_rest_canceled_or_expired(srv):
    srv.batches.reset(pace=0.05)
    requests = [{"custom_id": f"r{i}", "params": ask(f"p{i}")} for i in range(200)]
    _, _, batch = call(srv, "/messages/batches", {"requests": requests})
    _, _, canceling = call(srv, f"/messages/batches/{batch['id']}/cancel", {})
    assert canceling["processing_status"] == "canceling" and canceling["cancel_initiated_at"]
    counts = wait_ended(srv, batch["id"])["request_counts"]
    assert counts["canceled"] > 0 and counts["canceled"] + counts["succeeded"] == 200 and counts["processing"] == 0
    srv.batches.reset(expire_after=2)
    _, _, batch = call(srv, "/messages/batches", {"requests": requests[:5]})
    assert wait_ended(srv, batch["id"])["request_counts"]["expired"] == 3
    _, _, raw = call(srv, f"/messages/batches/{batch['id']}/results", method="GET")
    kinds = sorted(json.loads(line)["result"]["type"] for line in raw.splitlines())
    assert kinds == ["expired"] * 3 + ["succeeded"] * 2


def test_listing_newest_first_and_unknown_batches(srv):
    for _ in range(3):
        call(srv, "/messages/batches", {"requests": [{"custom_id": "a", "params": ask()}]})
    _, _, listing = call(srv, "/messages/batches?limit=2", method="GET")
    assert [b["id"] for b in listing["data"]] == ["msgbatch_fake0003", "msgbatch_fake0002"]
    assert listing["has_more"] is True and listing["first_id"] == "msgbatch_fake0003"
    status, _, body = call(srv, "/messages/batches/msgbatch_nope", method="GET")
    assert status == 404 and body["error"]["type"] == "not_found_error"
    assert call(srv, "/messages/batches", method="GET", headers={"anthropic-version": "2023-06-01"})[0] == 401
