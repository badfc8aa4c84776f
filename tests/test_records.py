"""A run's records are rows of columns (core/columns.py): they must behave as the Result objects
they replace -- sequence, fields, equality, repr, pickling, DataFrame, summary -- and hold
whatever is written to them exactly, in a few bytes a prompt."""

from __future__ import annotations

import copy
import gc
import math
import pickle

import pytest

from chatmagic.core.columns import Table
from chatmagic.providers.dialect import Answer
from chatmagic.results import FIELDS, Result, Results, Row


def filled(records: list[Result]) -> Results:
    """The same records as a run holds them: rows of a Table, every field written through a Row."""
    table = Table([r.prompt for r in records])
    for r in records:
        row = Row(table, r.index)
        for name in FIELDS:
            if name not in ("index", "prompt"):
                setattr(row, name, getattr(r, name))
    return Results(table, elapsed_s=1.5, model="m")


def sample() -> list[Result]:
    return [Result(0, "a", text="A", status="ok", attempts=1, latency_s=0.25, prompt_tokens=3,
                   completion_tokens=4, cost=0.5, finish_reason="stop", model="m", request_id="req_1", data={"x": 1}),
            Result(1, "b", status="error", error="429 rate_limit_exceeded: slow down", attempts=7),
            Result(2, "c"),
            Result(3, "d", text="D", status="ok", finish_reason="length", model="m-2024-07-18", cached=True, cost=0.0,
                   refusal="no", reasoning="hm", cached_tokens=1, cache_write_tokens=2, reasoning_tokens=3)]


def test_rows_read_back_every_field_and_compare_equal_to_the_records_they_replace():
    records = sample()
    results = filled(records)
    assert len(results) == 4 and all(isinstance(r, Result) for r in results)
    assert list(results) == records and results[1] == records[1] and results[-1] == records[3]
    assert results[1:3] == records[1:3] and results[::-1] == records[::-1]
    assert results[0] != records[1] and results[0] != "a"
    with pytest.raises(IndexError):
        results[4]
    with pytest.raises(IndexError):
        results[-5]
    assert [r.index for r in results] == [0, 1, 2, 3] and results[2].status == "cancelled"
    assert results[0].ok and not results[1].ok and results[3].flagged


def test_a_row_prints_pickles_and_copies_as_a_result():
    record, row = sample()[0], filled(sample())[0]
    assert repr(row) == repr(record)
    for back in (pickle.loads(pickle.dumps(row)), copy.copy(row), copy.deepcopy(row)):
        assert type(back) is Result and back == record
    with pytest.raises(TypeError):
        hash(row)


def test_writing_a_row_writes_the_run_and_take_fills_an_answer():
    results = filled([Result(0, "p"), Result(1, "q")])
    row = results[1]
    row.take(Answer("hi", "stop", 5, 6, "gpt"), 0.25, "req_9")
    row.attempts += 1
    again = results[1]
    assert (again.text, again.status, again.model, again.finish_reason, again.prompt_tokens) == ("hi", "ok", "gpt",
                                                                                                "stop", 5)
    assert (again.cost, again.request_id, again.attempts) == (0.25, "req_9", 1)
    assert results[0] == Result(0, "p")  # its neighbour untouched
    with pytest.raises(AttributeError):
        row.index = 5


@pytest.mark.parametrize("name, value", [
    ("prompt_tokens", "12"), ("completion_tokens", [3]), ("prompt_tokens", -1), ("prompt_tokens", 2**40),
    ("prompt_tokens", True), ("attempts", None), ("attempts", 300), ("model", 5), ("model", ["x"]),
    ("cached", 1), ("cost", 0), ("cost", math.inf), ("latency_s", "slow"), ("request_id", "réq"),
    ("request_id", ""), ("request_id", 7), ("status", "weird"), ("text", b"bytes")])
def test_an_odd_value_set_by_hand_reads_back_exactly(name, value):
    results = filled([Result(0, "p"), Result(1, "q")])
    setattr(results[0], name, value)
    got = getattr(results[0], name)
    assert got == value and type(got) is type(value)
    assert getattr(results[1], name) == getattr(Result(1, "q"), name)  # the other row keeps the default
    setattr(results[0], name, getattr(Result(0, "p"), name))  # and back
    assert results[0] == Result(0, "p")


def test_counts_widen_as_larger_ones_come_and_every_earlier_one_reads_back():
    values = [None, 0, 3, 254, 255, None, 65_534, 65_535, 2**31 - 2, 7]
    results = filled([Result(i, "p") for i in range(len(values) + 1)])
    for i, v in enumerate(values):
        results[i].prompt_tokens = results[i].attempts = v
        assert [r.prompt_tokens for r in results][:i + 1] == values[:i + 1]
    assert [r.attempts for r in results] == [*values, 0] and results[-1].prompt_tokens is None
    assert results._records.columns["attempts"].codes.typecode == "i"  # 4 bytes a row only now


def test_request_ids_keep_their_shared_prefix_once_and_read_back_exactly():
    ids = ["req_abc", "req_", "other-9", "req_abc", "abc", None, "", "req_req_x"]
    results = filled([Result(i, "p") for i in range(len(ids))])
    for i, v in enumerate(ids):
        results[i].request_id = v
    assert [r.request_id for r in results] == ids
    column = results._records.columns["request_id"]
    assert column.prefix == "req_" and bytes(column.data) == b"abc" b"other-9" b"abc" b"abc" b"req_x"


def test_a_nan_cost_is_kept_as_nan_not_read_as_missing():
    results = filled([Result(0, "p")])
    results[0].cost = math.nan
    assert results[0].cost is not None and math.isnan(results[0].cost)


def test_many_distinct_models_each_read_back():
    n = 70_000  # past one byte of codes, and past two
    results = filled([Result(i, "p") for i in range(n)])
    for i in range(n):
        results[i].model = f"m{i}"
    assert [r.model for r in results] == [f"m{i}" for i in range(n)]


def test_summary_counts_texts_values_and_cost_match_records_made_by_hand():
    by_hand, rows = Results(sample(), elapsed_s=1.5, model="m"), filled(sample())
    assert rows.summary() == by_hand.summary()
    assert rows.counts() == by_hand.counts() and rows.texts() == by_hand.texts() == ["A", None, None, "D"]
    assert rows.values() == by_hand.values() and rows.cost == by_hand.cost == 0.5
    assert repr(rows) == repr(by_hand) and rows._repr_html_() == by_hand._repr_html_()


def test_the_dataframe_is_the_same_as_from_records_made_by_hand():
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(filled(sample()).to_pandas(), Results(sample()).to_pandas())


def test_a_run_of_rows_holds_a_few_bytes_a_prompt_and_no_object_per_prompt():
    n = 100_000
    prompts = [f"prompt {i}" for i in range(n)]
    answers = [f"answer {i}" for i in range(n)]  # made before counting: they are the answers' own
    answer = Answer("", "stop", 17, 18, "fake-model")
    gc.collect()
    tracked = len(gc.get_objects())
    table = Table(prompts)
    results = Results(table)
    for i, row in enumerate(results):
        row.take(answer, None, f"req_{i:020d}")
        row.text, row.attempts, row.latency_s = answers[i], 1, 0.01
    gc.collect()
    assert len(gc.get_objects()) - tracked < 100  # the collector has nothing new to walk per prompt
    # text and prompt pointers, status, model, finish_reason, two token counts, attempts,
    # latency, request id (24 bytes + 6): about 64 bytes; a Result object was ~200 plus its strings
    assert table.nbytes / n < 80
    assert results[n - 1].request_id == f"req_{n - 1:020d}" and results.texts()[-1] == answers[-1]
