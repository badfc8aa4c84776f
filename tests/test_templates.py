import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from chatmagic.core.prices import cost, estimate_tokens
from chatmagic.errors import ConfigError
from chatmagic.notebook.dryrun import dry_run_report
from chatmagic.notebook.prompts import split_sep
from chatmagic.notebook.stored import join_results
from chatmagic.notebook.templates import Template, render_over


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# split_sep


@pytest.mark.parametrize("text, sep, expected", [
    ("a\n---\nb", "---", ["a", "b"]),
    ("---\na\n---\nb\n---\n", "---", ["a", "b"]),                  # leading and trailing separators
    ("a\n---\n---\n\n---\nb", "---", ["a", "b"]),                   # empty prompts dropped
    ("line 1\n\nline 2\n---\nb", "---", ["line 1\n\nline 2", "b"]),  # blank lines inside are kept
    ("  a  \n   ---   \n\n  b\n  c\n\n", "---", ["a", "b\n  c"]),   # separator line and prompts stripped
    ("a\n--- not a separator\nb", "---", ["a\n--- not a separator\nb"]),
    ("a\n===\nb", " === ", ["a", "b"]),                             # sep itself is stripped
    ("x = {1}\n---\n{{y}}", "---", ["x = {1}", "{{y}}"]),           # braces kept as they are
    ("a\r\n---\r\nb", "---", ["a", "b"]),
    ("p1 line1\np1 line2\n\n\np2\n  \np3", "", ["p1 line1\np1 line2", "p2", "p3"]),  # blank sep: paragraphs
])
def test_split_sep(text, sep, expected):
    assert split_sep(text, sep) == expected


@pytest.mark.parametrize("text", ["", "\n\n", "---\n---", "  ---  \n\n---\n"])
def test_split_sep_without_prompts_is_an_error(text):
    with pytest.raises(ConfigError, match="no prompts") as info:
        split_sep(text, "---")
    assert "'---'" in one_line(info)


# ---------------------------------------------------------------------------------------------
# Template


@pytest.mark.parametrize("text, fields", [
    ("Hello {name}", ["name"]),
    ("{b} {a} {b}", ["b", "a"]),                           # in order of first use, unique
    ("{product name} costs {unit-price}", ["product name", "unit-price"]),
    ("{price ($)} and {3}", ["price ($)", "3"]),
    ("{{not a field}} {x}", ["x"]),
    ("no fields", []),
])
def test_template_fields(text, fields):
    assert Template(text).fields == fields


def test_template_strips_only_surrounding_blank_lines():
    t = Template("\n   \n  indented {x}\n\n  second\n  \n\n")
    assert t.text == "  indented {x}\n\n  second"
    assert t.render({"x": 1}) == "  indented 1\n\n  second"


def test_template_render_escapes_and_percent_signs_and_repeats():
    t = Template('100% {{"a": {item}}} {item}%')
    assert t.render({"item": 1}) == '100% {"a": 1} 1%'
    # values are never interpreted: braces and % in values stay as they are
    assert t.render({"item": "{x} %s"}) == '100% {"a": {x} %s} {x} %s%'


@pytest.mark.parametrize("text, message", [
    ("{x:>10}", r"template field \{x:>10\}: format specs are not supported"),
    ("{x!r}", r"template field \{x!r\}: conversions such as !r are not supported"),
    ("{x!s:>3}", r"conversions such as !r are not supported"),
    ('Answer as {"label": "yes"}', r'format specs are not supported; write \{\{ and \}\} for literal braces'),
    ("{}", r"template field \{\} has no name"),
    ("{ }", r"has no name"),
    ("{x", r"bad template: expected '\}' before end of string; write \{\{ and \}\}"),
    ("a } b", r"bad template: Single '\}' encountered"),
    ("", "the template is empty"),
    (" \n\n  \n", "the template is empty"),
])
def test_bad_templates_are_one_clear_line(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        Template(text)
    one_line(info)


# ---------------------------------------------------------------------------------------------
# render_over: data kinds, labels, fields


STR_INDEX = pd.Index(["x", "y", "z"])
GAPPY_INDEX = pd.Index([10, 3, 7])


@pytest.mark.parametrize("data, labels", [
    ([1, 2, 3], [0, 1, 2]),
    ((1, 2, 3), [0, 1, 2]),
    (range(1, 4), [0, 1, 2]),
    (np.array([1, 2, 3]), [0, 1, 2]),
    (pd.Series([1, 2, 3]), [0, 1, 2]),
    (pd.Series([1, 2, 3], index=STR_INDEX), ["x", "y", "z"]),
    (pd.Series([1, 2, 3], index=GAPPY_INDEX), [10, 3, 7]),
])
def test_render_over_sequences_and_series(data, labels):
    prompts, got = render_over("n={item} at {index}", data)
    assert prompts == [f"n={v} at {label}" for v, label in zip([1, 2, 3], labels)]
    assert got == labels


@pytest.mark.parametrize("index, labels", [
    (None, [0, 1]),
    (pd.Index(["first", "second"]), ["first", "second"]),
    (pd.Index([100, 5]), [100, 5]),
])
def test_render_over_dataframe(index, labels):
    df = pd.DataFrame({"product name": ["tea", "cake"], "price": [2.5, 4]}, index=index)
    prompts, got = render_over("\n{product name} costs {price} (row {index})\n", df)
    assert prompts == [f"tea costs 2.5 (row {labels[0]})", f"cake costs 4.0 (row {labels[1]})"]
    assert got == labels


def test_render_over_escaped_braces():
    assert render_over('{{"a": {item}}}', [1])[0] == ['{"a": 1}']
    df = pd.DataFrame({"q": ["hi"]})
    assert render_over('Return {{"answer": ...}} for: {q}', df)[0] == ['Return {"answer": ...} for: hi']


def test_render_over_multiline_template_and_repeated_field():
    prompts, _ = render_over("Word: {item}\n\nDefine {item}.", ["cat"])
    assert prompts == ["Word: cat\n\nDefine cat."]


def test_render_over_template_without_fields_repeats_the_prompt():
    assert render_over("Tell a joke", [0, 0, 0]) == (["Tell a joke"] * 3, [0, 1, 2])


def test_render_over_a_column_named_index_wins_over_the_label():
    df = pd.DataFrame({"v": ["a", "b"]}, index=[7, 8]).rename_axis("id").reset_index()
    df.index = [70, 80]
    df = df.rename(columns={"id": "index"})
    prompts, labels = render_over("{index}:{v}", df)
    assert prompts == ["7:a", "8:b"] and labels == [70, 80]


def test_render_over_non_string_column_labels_and_odd_names():
    df = pd.DataFrame([[1, 2]])  # columns 0 and 1
    assert render_over("{1}-{0}", df)[0] == ["2-1"]
    df = pd.DataFrame({"a.b": [1], "a[0]": [2]})  # taken literally, never attribute access
    assert render_over("{a.b} {a[0]}", df)[0] == ["1 2"]


def test_render_over_values_use_str():
    df = pd.DataFrame({"x": pd.Series([None, "s"], dtype=object), "f": [float("nan"), 1.5],
                       "t": pd.to_datetime(["2024-01-02", "2024-03-04"])})
    assert render_over("{x}|{f}|{t}", df)[0] == ["None|nan|2024-01-02 00:00:00", "s|1.5|2024-03-04 00:00:00"]


def test_render_over_does_not_modify_data():
    df = pd.DataFrame({"a": [1, 2]}, index=["p", "q"])
    before = df.copy()
    render_over("{a}", df)
    pd.testing.assert_frame_equal(df, before)


# ---------------------------------------------------------------------------------------------
# render_over: errors


def test_missing_column_names_it_and_lists_columns():
    df = pd.DataFrame({"a": [1], "b": [2], "c": [3]})
    with pytest.raises(ConfigError) as info:
        render_over("{a} {colour} {also_missing}", df)
    assert one_line(info).startswith("template field {colour} is not a column; columns: a, b, c")
    assert "{index}" in str(info.value)


def test_missing_column_is_reported_before_anything_is_rendered():
    class Exploding:  # a value whose str() would fail: never reached
        def __str__(self):
            raise AssertionError("rendered")
    df = pd.DataFrame({"a": [Exploding()]})
    with pytest.raises(ConfigError, match=r"\{b\} is not a column"):
        render_over("{a} {b}", df)


@pytest.mark.parametrize("template, hint", [
    ("{ a }", r"did you mean \{a\}"),
    ("{row.a}", "attribute access and indexing are not supported"),
    ("{a[0]}", "attribute access and indexing are not supported"),
    ('{"a"}', r"write \{\{ and \}\} for literal braces"),
])
def test_missing_column_hints(template, hint):
    with pytest.raises(ConfigError, match=hint) as info:
        render_over(template, pd.DataFrame({"a": [1]}))
    one_line(info)


def test_many_columns_are_listed_shortened():
    df = pd.DataFrame({f"c{i}": [i] for i in range(50)})
    with pytest.raises(ConfigError, match=r"c29, \.\.\. \(20 more\)") as info:
        render_over("{nope}", df)
    assert "c30" not in one_line(info)


def test_duplicate_column_names_are_ambiguous_only_when_used():
    df = pd.DataFrame([[1, 2, 3]], columns=["a", "a", "b"])
    assert render_over("{b}", df)[0] == ["3"]
    with pytest.raises(ConfigError, match=r"\{a\} is ambiguous: 2 columns"):
        render_over("{a}", df)


@pytest.mark.parametrize("data, noun", [([1], "list"), ((1,), "list"), (pd.Series([1]), "Series")])
def test_unknown_field_for_list_or_series(data, noun):
    with pytest.raises(ConfigError) as info:
        render_over("{item} {colour}", data)
    assert one_line(info) == f"template field {{colour}} does not exist for a {noun}: use {{item}} and {{index}}"


@pytest.mark.parametrize("data, message", [
    (42, "--over xs must be a list, tuple, Series or DataFrame, got int"),
    (None, "got NoneType"),
    ("abc", "got str: for one prompt per line of a string, use s.splitlines()"),
    (b"abc", "got bytes"),
    ({"a": 1}, r"got dict: use list\(d.values\(\)\), or pd.Series\(d\) to keep the keys as \{index\}"),
    ({1, 2}, "got set: a set has no order"),
    ((x for x in [1]), r"got generator: use list\(xs\)"),
    (np.zeros((2, 2)), "must be one-dimensional, got a 2-D array"),
    ([], "--over xs is empty"),
    ((), "--over xs is empty"),
    (pd.Series([], dtype=object), "--over xs is empty"),
    (pd.DataFrame({"item": []}), "--over xs is empty"),
])
def test_bad_data_is_one_clear_line(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        render_over("{item}", data, name="xs")
    one_line(info)


def test_bad_data_without_a_name():
    with pytest.raises(ConfigError, match=r"^the data must be a list, tuple, Series or DataFrame, got int$"):
        render_over("{item}", 3)


def test_bad_data_is_reported_before_a_bad_template():
    with pytest.raises(ConfigError, match="got dict"):
        render_over("{x:>3}", {"a": 1})


def test_empty_template_over_data():
    with pytest.raises(ConfigError, match="the template is empty"):
        render_over("\n  \n", [1, 2])


def test_pandas_is_not_imported_with_the_module():
    code = "import sys, chatmagic.notebook.templates; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_100k_rows_timing():
    n = 100_000
    df = pd.DataFrame({"name": [f"item {i}" for i in range(n)], "price": np.arange(n) * 0.5,
                       "qty": np.arange(n)}, index=pd.RangeIndex(0, 2 * n, 2))
    start = time.perf_counter()
    prompts, labels = render_over("Row {index}: {name} costs {price} ({qty} left). {{json}}", df)
    elapsed = time.perf_counter() - start
    print(f"\nrender_over: {n:,} DataFrame rows x 4 fields in {elapsed * 1000:.0f} ms")
    assert len(prompts) == n and labels[-1] == 2 * (n - 1)
    assert prompts[3] == "Row 6: item 3 costs 1.5 (3 left). {json}"


# ---------------------------------------------------------------------------------------------
# estimate_tokens, cost


@pytest.mark.parametrize("text, tokens", [("", 1), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)])
def test_estimate_tokens(text, tokens):
    assert estimate_tokens(text) == tokens


PRICES = {"gpt-4o-mini": [0.15, 0.60], "big": (10, 30)}


@pytest.mark.parametrize("pt, ct, model, prices, expected", [
    (1_000_000, 0, "gpt-4o-mini", PRICES, 0.15),
    (0, 1_000_000, "gpt-4o-mini", PRICES, 0.60),
    (2000, 500, "big", PRICES, (2000 * 10 + 500 * 30) / 1e6),
    (None, 1000, "big", PRICES, 0.03),                                     # None counts as 0
    (1_000_000, 0, "gpt-4o-mini-2024-07-18", PRICES, 0.15),                # dated name -> base price
    (1_000_000, 0, "big-0125", PRICES, 10.0),
    (10, 10, "unknown", PRICES, None),
    (10, 10, "gpt-4o", PRICES, None),                                      # no loose prefix matching
    (10, 10, "gpt-4o-mini-turbo", PRICES, None),
    (10, 10, "big", None, None),
    (10, 10, "big", {}, None),
])
def test_cost(pt, ct, model, prices, expected):
    got = cost(pt, ct, model, prices)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("entry", [5, [1], [1, 2, 3, 4, 5], ["a", "b"], [-1, 2], [1, float("nan")]])
def test_cost_with_bad_price_entry(entry):
    with pytest.raises(ConfigError, match=r"prices\['m'\]") as info:
        cost(1, 1, "m", {"m": entry})
    one_line(info)


# ---------------------------------------------------------------------------------------------
# dry_run_report


def test_dry_run_report_without_prices():
    prompts = [f"prompt number {i}" for i in range(10)]
    report = dry_run_report(prompts, ["m1", "m2"])
    lines = report.splitlines()
    assert lines[0] == "dry run, nothing sent: 10 prompts × 2 models = 20 requests (m1, m2)"
    assert lines[1:5] == ["  [0] prompt number 0", "  [1] prompt number 1", "  [2] prompt number 2",
                          "  ... and 7 more"]
    per_model = sum(estimate_tokens(p) for p in prompts)
    assert f"~{per_model:,} in per model, ~{2 * per_model:,} in total" in report
    assert "output not counted" in report
    assert report.splitlines()[-1] == "cost: price unknown for m1, m2" and "$" not in report


def test_dry_run_report_with_prices_and_max_tokens():
    prompts = ["x" * 400] * 1000  # 100 tokens each
    report = dry_run_report(prompts, ["big", "gpt-4o-mini", "free?"], system="s" * 40, max_tokens=50,
                            prices=PRICES, show=1)
    assert "1,000 prompts × 3 models = 3,000 requests" in report
    assert "system: " + "s" * 40 in report
    assert "  [0] " + "x" * 200 + " …" in report and "[1]" not in report
    # 1000 × (100 + 10 system) = 110,000 in per model; 50,000 out per model
    assert "~110,000 in per model, ~330,000 in total; up to 150,000 out (50 per answer)" in report
    big_low, big_high = 110_000 * 10 / 1e6, (110_000 * 10 + 50_000 * 30) / 1e6
    mini_low, mini_high = 110_000 * 0.15 / 1e6, (110_000 * 0.15 + 50_000 * 0.6) / 1e6
    assert f"big ${big_low:.2f}–${big_high:.2f}" in report
    assert f"gpt-4o-mini ${mini_low:.4f}–${mini_high:.4f}" in report
    assert f"cost (estimate): ${big_low + mini_low:.2f}–${big_high + mini_high:.2f}" in report
    assert report.endswith("; price unknown for free?")


def test_dry_run_report_with_prices_without_max_tokens_assumes_an_output_and_says_so():
    report = dry_run_report(["abcd"] * 4000, ["big"], prices=PRICES)
    high = (4000 * 10 + 4000 * 256 * 30) / 1e6
    assert (f"cost (estimate): $0.0400–${high:,.2f} (output assumed at most 256 tokens per answer: "
            "no max_tokens)") in report


def test_dry_run_report_no_price_for_any_model():
    report = dry_run_report(["a"], ["m"], prices=PRICES)
    assert report.splitlines()[-1] == "cost: price unknown for m"


def test_dry_run_report_labels_and_long_multiline_prompts():
    long = "\n".join(f"line {i}" for i in range(20))
    report = dry_run_report(["short", long], ["m"], labels=["row-a", "row-b"], show=5)
    assert "  [row-a] short" in report
    assert "  [row-b] line 0\n      line 1\n" in report
    assert "line 5 …" in report and "line 6" not in report
    assert "more" not in report  # all prompts shown
    assert report.startswith("dry run, nothing sent: 2 prompts × 1 model = 2 requests (m)")


def test_dry_run_report_returns_text_and_prints_nothing(capsys):
    assert isinstance(dry_run_report(["a"], ["m"]), str)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------------------
# join_results


ANSWERS = pd.DataFrame({"response": ["r0", "r1", "r2"], "status": ["ok", "error", "ok"],
                        "prompt_tokens": [3, None, 4]})


@pytest.mark.parametrize("index", [None, pd.Index(["z", "a", "m"]), pd.Index([30, 1, 20]),
                                   pd.Index([5, 5, 6])])  # repeated labels too
def test_join_keeps_index_and_order_and_does_not_mutate(index):
    df = pd.DataFrame({"q": ["a", "b", "c"], "n": [1, 2, 3]}, index=index)
    before, answers_before = df.copy(), ANSWERS.copy()
    out = join_results(df, ANSWERS)
    assert out is not df
    assert list(out.index) == list(df.index)
    assert list(out.columns) == ["q", "n", "response", "status", "prompt_tokens"]
    assert list(out["q"]) == ["a", "b", "c"] and list(out["response"]) == ["r0", "r1", "r2"]
    pd.testing.assert_frame_equal(df, before)
    pd.testing.assert_frame_equal(ANSWERS, answers_before)
    out.loc[out.index[0], "q"] = "changed"
    assert df["q"].iloc[0] == "a"


def test_join_suffixes_clashing_answer_columns():
    df = pd.DataFrame({"response": [1, 2, 3], "status_llm": [0, 0, 0], "status": [9, 9, 9]})
    out = join_results(df, ANSWERS)
    assert list(out.columns) == ["response", "status_llm", "status", "response_llm", "status_llm2",
                                 "prompt_tokens"]
    assert list(out["response"]) == [1, 2, 3] and list(out["response_llm"]) == ["r0", "r1", "r2"]
    assert list(out["status_llm2"]) == ["ok", "error", "ok"]


def test_join_matches_by_position_not_by_the_answers_index():
    df = pd.DataFrame({"q": ["a", "b", "c"]}, index=[2, 1, 0])
    out = join_results(df, ANSWERS)
    assert list(out["response"]) == ["r0", "r1", "r2"]


def test_join_a_series():
    out = join_results(pd.Series([1, 2, 3], index=list("xyz"), name="word"), ANSWERS)
    assert list(out.columns[:2]) == ["word", "response"] and list(out.index) == list("xyz")
    assert join_results(pd.Series([1, 2, 3]), ANSWERS).columns[0] == "item"


@pytest.mark.parametrize("frame, answers, message", [
    (pd.DataFrame({"q": [1, 2]}), ANSWERS, "cannot join 3 answers onto 2 rows"),
    ([1, 2, 3], ANSWERS, "needs a DataFrame"),
    (pd.DataFrame({"q": [1, 2, 3]}), [1, 2, 3], "needs a DataFrame"),
])
def test_join_errors(frame, answers, message):
    with pytest.raises(ConfigError, match=message):
        join_results(frame, answers)


def test_dry_run_report_says_how_many_requests_a_cost_cap_lets_through():
    report = dry_run_report(["abcd"] * 100, ["big"], prices=PRICES, max_tokens=10, max_cost=0.01)
    per = (1 * 10 + 10 * 30) / 1e6  # the high estimate of one request: 1 token in, 10 out
    assert report.splitlines()[-1] == (f"--max-cost $0.0100: at the high estimate about {int(0.01 // per)} of 100 "
                                       "requests fit; the run stops sending there (usually later: answers cost "
                                       "less than their worst case)")
    fits = dry_run_report(["abcd"] * 100, ["big"], prices=PRICES, max_tokens=10, max_cost=5.0)
    assert fits.splitlines()[-1] == "--max-cost $5.00: every request fits, even at the high estimate"
