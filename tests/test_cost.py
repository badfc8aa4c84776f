"""What answers cost: every usage field kept and priced as genai-prices prices it, the user's
prices over the bundled data, "price unknown" rather than a wrong figure."""

import json
import random
import urllib.request
from decimal import Decimal

import genai_prices
import pytest

import chatmagic
from chatmagic.core.prices import COUNTED, Counts, Prices
from chatmagic.practice.anthropic import FakeAnthropic
from chatmagic.providers.answer import anthropic_usage, openai_usage
from chatmagic.results import Result, Results


def run(server, prompts, **options):
    options.setdefault("model", "gpt-4o-mini")
    return chatmagic.chat_many(prompts, base_url=server.base_url, progress=False, **options)


def post(url, body, headers=None):
    """The raw answer of one request, as the server sent it."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def genai(response, provider, flavor="default"):
    """genai-prices' own figure for a raw answer: its extraction, its calculation."""
    extracted = genai_prices.extract_usage(response, provider_id=provider, api_flavor=flavor)
    return float(extracted.calc_price().total_price)


def test_openai_usage_with_cached_and_reasoning_tokens_is_kept_and_priced_as_genai_prices(server):
    server.usage = "openai"
    prompt = "a prompt long enough to have some of it read from the prompt cache, " * 3
    results = run(server, [prompt], cache=False)
    r = results[0]
    raw = post(server.base_url + "/chat/completions",
               {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
    usage = raw["usage"]
    assert (r.prompt_tokens, r.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert r.cached_tokens == usage["prompt_tokens_details"]["cached_tokens"] > 0
    assert r.reasoning_tokens == usage["completion_tokens_details"]["reasoning_tokens"] > 0
    assert r.cost == genai(raw, "openai", "chat") and results.cost == r.cost
    # cached input is billed at the cache price: less than the same tokens uncached
    assert r.cost < Prices().bound(r.prompt_tokens, r.completion_tokens, "gpt-4o-mini")
    frame = results.to_pandas()
    assert frame.loc[0, "cached_tokens"] == r.cached_tokens and frame.loc[0, "cost"] == r.cost


def test_anthropic_usage_with_cache_read_and_creation_is_priced_as_genai_prices():
    with FakeAnthropic() as server:
        raw = post(server.base_url + "/messages",
                   {"model": "claude-3-5-haiku-latest", "max_tokens": 50,
                    "messages": [{"role": "user", "content": "hello [[cacheread:40]]" + " word" * 30}]},
                   {"anthropic-version": "2023-06-01"})
    usage = raw["usage"]
    usage["cache_creation_input_tokens"] = 25  # as a first request that writes the cache has it
    tokens = anthropic_usage(usage)
    assert tokens["prompt_tokens"] == usage["input_tokens"] + 40 + 25
    assert (tokens["cached_tokens"], tokens["cache_write_tokens"]) == (40, 25)
    record = Result(0, "p", status="ok", model=raw["model"], **tokens)
    priced = Prices(base_url="https://api.anthropic.com/v1").cost(record)
    assert priced == genai(raw, "anthropic") and priced > 0


@pytest.mark.parametrize("model, url", [
    ("gpt-4o-mini", "https://api.openai.com/v1"), ("o3-mini", "https://api.openai.com/v1"),
    ("gpt-4o-mini-2024-07-18", "http://127.0.0.1:8000/v1"),
    ("claude-sonnet-4-5-20250929", "https://api.anthropic.com/v1"),  # tiered: genai-prices computes it
    ("claude-3-5-haiku-latest", "https://api.anthropic.com/v1"), ("deepseek-reasoner", "https://api.deepseek.com"),
])
@pytest.mark.parametrize("batch", [False, True])
def test_every_figure_equals_genai_prices_own_calculation(model, url, batch):
    prices, rng = Prices(base_url=url, batch=batch), random.Random(model)
    provider = prices.rate(model).provider.id
    for _ in range(50):
        prompt, completion = rng.randrange(0, 400_000), rng.randrange(0, 20_000)
        read = rng.randrange(0, prompt + 1)
        write = rng.randrange(0, prompt - read + 1) if provider == "anthropic" else 0
        reasoning = rng.randrange(0, completion + 1)
        usage = genai_prices.Usage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=read,
                                   cache_write_tokens=write, output_reasoning_tokens=reasoning)
        calc = genai_prices.calc_price(usage, model, provider_id=provider,
                                       price_context={"processing": "batch"} if batch else None)
        own_batch = any(v.when == {"processing": "batch"} for v in calc.model.price_variants or ())
        expected = calc.total_price * (Decimal("0.5") if batch and not own_batch else 1)
        counts = Counts(prompt, completion, read, write, reasoning)
        assert prices.rate(model).cost(counts) == expected  # exactly, in Decimal
        assert prices.cost(Result(0, "p", model=model, **dict(zip(COUNTED, counts)))) == float(expected)


def test_an_unknown_model_is_price_unknown_never_a_figure(server):
    results = run(server, ["hello"], model="fake-model", cache=False)
    assert results[0].cost is None and results.cost is None
    assert ", price unknown, " in results.summary()


def test_a_known_model_shows_its_cost_in_the_summary(server):
    results = run(server, ["hello", "world"], cache=False)
    expected = sum(Prices().bound(r.prompt_tokens, r.completion_tokens, "gpt-4o-mini") for r in results)
    assert results.cost == pytest.approx(expected) and results.cost > 0
    assert f"out, {chatmagic.core.prices.money(results.cost)}, " in results.summary()


def test_the_users_prices_override_the_bundled_data_and_price_the_cache(server):
    server.usage = "openai"
    results = run(server, ["x" * 400], prices={"gpt-4o-mini": [1.0, 2.0, 0.5]}, cache=False)
    r = results[0]
    uncached = r.prompt_tokens - r.cached_tokens
    assert r.cost == pytest.approx((uncached * 1.0 + r.cached_tokens * 0.5 + r.completion_tokens * 2.0) / 1e6)
    results = run(server, ["x" * 400], prices={"fake-model": [1.0, 2.0]}, model="fake-model", cache=False)
    assert results[0].cost == pytest.approx((results[0].prompt_tokens + 2.0 * results[0].completion_tokens) / 1e6)


def test_a_model_the_server_answered_with_is_priced_as_itself(server):
    server.answer_model = "gemma3-270m"  # llama.cpp answers with its own model, whatever was asked
    try:
        results = run(server, ["hello"], cache=False)
    finally:
        server.answer_model = None
    assert results[0].model == "gemma3-270m" and results[0].cost is None  # not gpt-4o-mini's price


def test_answers_from_the_cache_cost_nothing_this_time(server):
    first = run(server, ["one", "two"])
    again = run(server, ["one", "two", "three"])
    assert first.cost > 0 and [r.cost for r in again[:2]] == [r.cost for r in first]  # what they cost then
    assert again.cost == again[2].cost and again[0].prompt_tokens == first[0].prompt_tokens  # not paid again
    assert run(server, ["one", "two"]).summary().count("$0.0000") == 1


def test_a_cached_rerun_has_the_first_runs_records_every_usage_field_and_string_too(server):
    server.usage = "openai"  # cached and reasoning tokens
    prompts = ["plain", "no [[refuse]]", "why [[think]]"]
    first = run(server, prompts)
    again = run(server, prompts)
    assert server.stats.requests == 3 and all(r.cached for r in again)
    fields = [f for f in Result.__dataclass_fields__ if f != "cached"]
    assert [[getattr(r, f) for f in fields] for r in again] == [[getattr(r, f) for f in fields] for r in first]
    assert first[0].request_id and first[0].cached_tokens and first[0].reasoning_tokens and first[1].refusal
    assert first[2].reasoning and first[0].cost > 0 and again.cost == 0.0


def test_a_cached_rerun_of_an_unpriced_model_is_price_unknown_as_the_first_run_was(server):
    first = run(server, ["a", "b"], model="my-local-model")
    again = run(server, ["a", "b"], model="my-local-model")
    assert all(r.cached for r in again)
    assert "price unknown" in first.summary() and "price unknown" in again.summary() and "$" not in again.summary()


def test_an_older_cache_row_without_the_new_fields_is_read_and_priced_again(server, tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.setenv("CHATMAGIC_CACHE_DIR", str(tmp_path / "old"))
    first = run(server, ["old one"])
    path = tmp_path / "old" / "answers.sqlite3"
    with sqlite3.connect(path) as db:  # as a version 2 file holds it: no extra column
        db.execute("ALTER TABLE answers DROP COLUMN extra")
        db.execute("PRAGMA user_version=2")
    db.close()
    again = run(server, ["old one"])
    assert again[0].cached and again[0].text == first[0].text and again[0].cost == first[0].cost
    assert again[0].request_id is None  # not stored then
    with sqlite3.connect(path) as db:  # upgraded: the column is back, empty for the old row
        assert db.execute("SELECT extra FROM answers").fetchall() == [(None,)]
    db.close()


def test_refusal_reasoning_and_request_id_are_kept_apart_from_the_text(server):
    results = run(server, ["no [[refuse]]", "why [[think]]"], cache=False)
    refused, thought = results
    assert refused.ok and refused.text == "" and refused.refusal == "I can't help with 'no'."
    assert thought.text == "echo: why" and thought.reasoning == "thinking about 'why'"
    assert refused.request_id.startswith("req_chatcmpl-fake") and refused.request_id != thought.request_id
    frame = results.to_pandas()
    assert frame.loc[0, "refusal"] == refused.refusal and frame.loc[1, "reasoning"] == thought.reasoning


def test_usage_a_server_made_up_gives_no_figure():
    record = Result(0, "p", status="ok", model="gpt-4o-mini", prompt_tokens=10, completion_tokens=5,
                    cached_tokens=11)
    assert Prices().cost(record) is None
    assert openai_usage({"prompt_tokens": "12", "completion_tokens": -1,
                         "prompt_tokens_details": {"cached_tokens": [3]}})["prompt_tokens"] == 12
    assert openai_usage({"prompt_tokens": "12", "completion_tokens": -1})["completion_tokens"] is None
    assert openai_usage("not a dict") == dict.fromkeys(openai_usage({}), None)


def test_request_id_from_the_servers_headers_is_cut_and_printable():
    from chatmagic.providers.answer import request_id
    assert request_id({"request-id": "req_01" + "\x1b[31m" + "x" * 500}) == "req_01[31m" + "x" * 189
    assert request_id({"x-request-id": 5}) is None and request_id(None) is None


def test_results_cost_sums_records_and_is_none_when_one_is_unknown():
    a = Result(0, "a", status="ok", cost=0.25)
    b = Result(1, "b", status="ok", cost=0.5)
    failed = Result(2, "c", status="error", error="400 x")
    assert Results([a, b, failed]).cost == 0.75
    assert Results([a, Result(3, "d", status="ok")]).cost is None
    assert ", $0.7500, " in Results([a, b, failed]).summary()


def test_batch_records_keep_the_request_id_and_every_usage_field_and_the_cache_keeps_them(server, monkeypatch):
    from chatmagic.batch import run as batchmod
    server.batch.reset()
    monkeypatch.setattr(batchmod, "POLL_FIRST", 0.01)
    server.usage = "openai"  # cached and reasoning tokens, in each result line's body
    prompts = ["batch one", "why [[think]]"]
    first = run(server, prompts, batch=True)
    assert [r.request_id for r in first] == ["req_fake0", "req_fake1"]  # each line's response.request_id
    assert all(r.cached_tokens is not None and r.reasoning_tokens for r in first) and first[1].reasoning
    assert first[0].cost > 0 and first.cost == first[0].cost + first[1].cost
    again = run(server, prompts, batch=True)
    assert server.batch.stats["requests"] == 2 and all(r.cached for r in again)
    fields = [f for f in Result.__dataclass_fields__ if f != "cached"]
    assert [[getattr(r, f) for f in fields] for r in again] == [[getattr(r, f) for f in fields] for r in first]
    # taken from the cache by a run that is not a batch: still what it cost then (the batch price)
    later = run(server, prompts)
    assert server.stats.requests == 0 and all(r.cached for r in later)
    assert [r.cost for r in later] == [r.cost for r in first]


def test_without_genai_prices_the_summary_says_once_how_to_get_built_in_prices(server, monkeypatch):
    import sys

    from chatmagic.errors import ConfigError
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # as if the extra were not installed
    line = run(server, ["a", "b"], cache=False).summary()
    assert "price unknown (pip install 'chatmagic[prices]' for built-in prices)" in line
    assert line.count("pip install") == 1
    priced = run(server, ["a"], cache=False, prices={"gpt-4o-mini": [1000.0, 2000.0]})  # the user's still work
    assert priced.cost > 0 and "price unknown" not in priced.summary()
    with pytest.raises(ConfigError, match=r"--max-cost needs a price .*pip install 'chatmagic\[prices\]'"):
        run(server, ["a"], max_cost=1.0)
    assert server.stats.requests == 3
    monkeypatch.undo()
    assert "price unknown" not in run(server, ["a"], cache=False).summary()  # installed: priced again


def test_genai_prices_is_the_prices_extra_not_a_runtime_dependency():
    import pathlib
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0] for d in project["dependencies"]]
    assert names == ["ipython", "aiohttp", "tenacity", "tqdm", "ipywidgets"]
    extras = project["optional-dependencies"]
    assert extras["prices"] == ["genai-prices>=0.2.3"]
    assert all("prices" in extras[e][0] for e in ("dev", "quickstart"))
