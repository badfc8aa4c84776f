"""Message Batches read into the batch engine's names, as pure functions."""
from __future__ import annotations

import asyncio
import json

import pytest

from chatmagic.batch.anthropic import _wire, read_batch, read_result, request_item, results_path


def batch(state, **counts):
    return {"id": "msgbatch_1", "type": "message_batch", "processing_status": state,
            "request_counts": {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0, **counts}}


@pytest.mark.parametrize("state, counts, status", [
    ("in_progress", {"processing": 5}, "in_progress"), ("canceling", {"processing": 2}, "cancelling"),
    ("ended", {"succeeded": 5}, "completed"), ("ended", {"succeeded": 4, "errored": 1}, "completed"),
    ("ended", {"succeeded": 3, "canceled": 2}, "cancelled"), ("ended", {"succeeded": 3, "expired": 2}, "expired"),
    ("something_new", {}, "in_progress"),
])
def test_processing_status_in_the_engines_names(state, counts, status):
    assert read_batch(batch(state, **counts))["status"] == status


def test_counts_in_the_engines_names_and_hostile_values_dropped():
    read = read_batch(batch("ended", succeeded=3, errored=1, canceled=1, expired=2))
    assert read["request_counts"] == {"total": 7, "completed": 3, "failed": 4}
    odd = read_batch({"id": 7, "processing_status": "ended", "request_counts": {"succeeded": "x", "errored": -1}})
    assert odd["request_counts"] == {"total": 0, "completed": 0, "failed": 0} and odd["id"] == ""
    # an id goes into URL paths and the store: one that could leave its path is no id
    assert [read_batch({"id": i})["id"] for i in ("msgbatch_01Ab-c", "../admin", "a?b=1", "x" * 201)] == [
        "msgbatch_01Ab-c", "", "", ""]
    assert read_batch(None)["status"] == "in_progress"


def test_result_lines_of_every_type():
    message = {"type": "message", "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
               "model": "claude-x", "usage": {"input_tokens": 3, "output_tokens": 1}}
    cid, answer, why = read_result({"custom_id": "0-ab", "result": {"type": "succeeded", "message": message}}, "b1")
    assert (cid, answer.text, answer.finish_reason, answer.prompt_tokens, why) == ("0-ab", "hi", "stop", 3, None)
    errored = {"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error",
                                                                        "message": "max_tokens: Field required"}}}
    assert read_result({"custom_id": "1-cd", "result": errored}, "b1") == (
        "1-cd", None, "400 invalid_request_error: max_tokens: Field required")
    assert read_result({"custom_id": "2", "result": {"type": "canceled"}}, "b1")[2] == (
        "batch_cancelled: not run (batch b1 cancelled)")
    assert read_result({"custom_id": "3", "result": {"type": "expired"}}, "b1")[2].startswith("batch_expired")
    assert read_result({"custom_id": "4", "result": {"type": "succeeded", "message": "x"}}, "b1")[2].startswith(
        "bad_response")
    with pytest.raises(ValueError, match="not an object"):  # unreadable: the engine fails what it leaves unanswered
        read_result(["not", "a", "dict"], "b1")
    assert read_result({"custom_id": 5, "result": "x"}, "b1")[0] == ""


@pytest.mark.parametrize("base, url, path", [
    ("http://127.0.0.1:5/v1", "http://127.0.0.1:5/v1/messages/batches/b/results", "/messages/batches/b/results"),
    ("http://127.0.0.1:5/v1", "http://127.0.0.1:5/v1/elsewhere/r", "/elsewhere/r"),
    # another host, or a look-alike prefix, would receive the key: the documented path instead
    ("http://127.0.0.1:5/v1", "http://evil.example/v1/messages/batches/b/results", "/messages/batches/b/results"),
    ("http://127.0.0.1:5/v1", "http://127.0.0.1:5/v1.evil/x", "/messages/batches/b/results"),
    ("http://127.0.0.1:5", None, "/v1/messages/batches/b/results"),
    ("https://api.anthropic.com/v1", 42, "/messages/batches/b/results"),
])
def test_results_are_read_only_from_the_server_asked(base, url, path):
    assert results_path(base, {"id": "b", "results_url": url}) == path


def test_the_wire_body_is_the_requests_as_json(tmp_path):
    items = [request_item(f"{i}-x", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": p}]})
             for i, p in enumerate(["a", "b,\nc", "é"])]
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b"".join(items))
    size = path.stat().st_size

    async def collect():
        return b"".join([chunk async for chunk in _wire(str(path), size)])
    sent = asyncio.run(collect())
    assert len(sent) == size - 1 + len(b'{"requests":[') + len(b"]}")
    assert json.loads(sent) == {"requests": [json.loads(i) for i in items]}
