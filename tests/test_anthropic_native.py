"""Native Anthropic Messages end to end: the engine against the practice Anthropic server on
127.0.0.1 (bodies, schema through a forced tool, errors by type, pacing from
anthropic-ratelimit-*, a 529 storm that slows and recovers)."""
from __future__ import annotations

from collections import Counter

import pytest

import chatmagic
from chatmagic.core.timeline import WAITS
from chatmagic.errors import RunAborted
from chatmagic.practice.server import TokenBucket

KEY = "sk-ant-native-test-key"


@pytest.fixture
def srv(anthropic):
    return anthropic(KEY)


def waits(results) -> dict[str, int]:
    """The waits the run chose, by kind (backoff, cooldown, pace): its decisions, not a stopwatch."""
    return dict(Counter(WAITS[k] for k in results.timeline.wait_kinds))


def run(srv, prompts, **options):
    options.setdefault("progress", False)
    options.setdefault("model", "claude-haiku-4-5")
    return chatmagic.chat_many(prompts, provider="anthropic", base_url=srv.base_url, api_key=KEY, **options)


def test_round_trip_with_a_schema_through_a_forced_tool(srv):
    results = run(srv, ["Is water wet?", "Is fire cold?"], schema="verdict: yes|no, confidence float",
                  system="Answer carefully.")
    assert [r.status for r in results] == ["ok", "ok"]
    for value in results.values():
        assert value["verdict"] in ("yes", "no") and isinstance(value["confidence"], float)
    sent = srv.stats.params
    assert sent["tool_choice"] == {"type": "tool", "name": sent["tools"][0]["name"]}
    assert sent["tools"][0]["input_schema"]["properties"]["verdict"]["enum"] == ["yes", "no"]
    assert sent["system"].startswith("Answer carefully.") and sent["max_tokens"] == 4096
    assert srv.stats.keys == {KEY} and srv.stats.versions == {"2023-06-01"}
    assert results[0].finish_reason == "stop" and results[0].model == "claude-haiku-4-5"


def test_a_tool_answer_that_breaks_the_schema_is_retried_once_then_failed(srv):
    results = run(srv, ["x [[badschema]]"], schema="verdict: yes|no")
    assert results[0].status == "error" and "schema_mismatch" in results[0].error
    assert srv.stats.attempts["x [[badschema]]"] == 2


def test_text_answers_stop_reasons_and_usage(srv):
    results = run(srv, ["hello", "a b c d e f g h i j k l m n o p"], max_tokens=3, params={"stop": ["zzz"]})
    assert results[0].text == "echo: hello" and results[0].finish_reason == "stop"
    assert results[1].finish_reason == "length"  # max_tokens cut it
    assert results[0].prompt_tokens and results[0].completion_tokens
    assert srv.stats.params["stop_sequences"] == ["zzz"] and "stop" not in srv.stats.params


def test_cache_read_tokens_count_as_input(srv):
    results = run(srv, ["long prompt [[cacheread:500]]"])
    assert results[0].prompt_tokens >= 500


def test_json_through_a_forced_tool(srv):
    results = run(srv, ["give me json"], json=True)
    assert results[0].status == "ok" and isinstance(results.values()[0], dict)


def test_a_bad_key_ends_the_run_in_one_line(srv):
    with pytest.raises(RunAborted) as caught:
        chatmagic.chat_many(["a", "b"], provider="anthropic", base_url=srv.base_url, api_key="wrong",
                            model="claude-haiku-4-5", progress=False)
    assert "authentication_error" in str(caught.value) and "bad API key" in str(caught.value)
    assert "wrong" not in str(caught.value)


def test_an_invalid_request_fails_only_its_prompt(srv):
    results = run(srv, ["fine", "bad [[fail:400]]", "also fine"])
    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert results[1].error.startswith("400 invalid_request_error: Scripted failure 400.")
    assert srv.stats.attempts["bad [[fail:400]]"] == 1  # not retried


def test_api_errors_are_retried(srv):
    results = run(srv, ["flaky [[fail:500:2]]"])
    assert results[0].status == "ok" and results[0].attempts == 3


def test_an_unknown_model_ends_the_run(srv):
    srv.unknown_models = {"claude-nope"}
    with pytest.raises(RunAborted) as caught:
        run(srv, [f"p{i}" for i in range(20)], model="claude-nope", concurrency=2)
    assert "not_found_error" in str(caught.value)
    assert srv.stats.requests < 20  # not one 404 per prompt


def test_pacing_from_anthropic_ratelimit_headers(srv):
    # a bucket of 20 requests that refills at 2 a second: 20 at once, then paced at the refill
    srv.buckets["requests"] = TokenBucket(120, 20)
    results = run(srv, [f"p{i}" for i in range(30)], concurrency=30)
    assert [r.status for r in results] == ["ok"] * 30
    assert srv.stats.by_status[429] <= 3, srv.stats.by_status  # paced by the headers, not by 429s
    assert waits(results).get("pace", 0) >= 1, results.summary()  # the last 10 paced at the refill


@pytest.mark.timeout(30)  # recovered at once: no crawl at the storm's pace after it ends
def test_a_529_storm_slows_the_run_and_it_recovers(srv):
    srv.overload_s, srv.latency = 2.0, 0.02
    results = run(srv, [f"p{i}" for i in range(40)], concurrency=16)
    assert [r.status for r in results] == ["ok"] * 40
    # at most a few requests a second while overloaded (without slowing: 16 at a time, every 0.5-8 s)
    assert srv.stats.by_status[529] <= 20, srv.stats.by_status
    assert waits(results).get("cooldown", 0) + waits(results).get("pace", 0) >= 1  # it slowed down


def test_an_image_row_goes_as_an_anthropic_image_block(srv):
    from pathlib import Path
    image = sorted((Path(__file__).parent.parent / "notebooks" / "data" / "images").glob("*.png"))[0]
    results = run(srv, ["What is this?", "Plain text"], images=[str(image), None])
    assert results.texts()[0].startswith("echo: What is this? [media=1: ") and "image/png" in results.texts()[0]
    assert results.texts()[1] == "echo: Plain text"


def test_the_dry_run_shows_what_anthropic_is_sent(ip, capsys):
    ip.run_cell("%%chatmany --dry-run -m anthropic:claude-haiku-4-5 --schema 'label: yes|no'\nIs it?")
    out = capsys.readouterr().out
    assert 'tool_choice: {"type": "tool", "name": "answer"}' in out and '"input_schema": {' in out
    assert "response_format" not in out
    assert "up to 4,096 out (4,096 per answer)" in out  # max_tokens is always sent to Anthropic


def test_a_field_the_api_refuses_ends_the_run_after_one_request(srv):
    with pytest.raises(RunAborted) as caught:
        run(srv, [f"p{i}" for i in range(20)], params={"seed": 42})
    assert "seed" in str(caught.value) and "every prompt would be" in str(caught.value)
    assert srv.stats.requests < 20  # not one refused request per prompt
    assert all(r.error.startswith("not sent: the run stopped") for r in caught.value.results if r.status == "cancelled")
