"""Server hints read from headers: retry-after, x-should-retry, x-ratelimit-*, Go durations."""

import email.utils

import pytest

from chatmagic.providers.hints import (
    NONE,
    Budget,
    Hints,
    parse,
    parse_duration,
    parse_retry_after,
    say,
)


@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1m26.4s", 86.4), ("0s", 0.0), ("2m59.56s", 179.56),
    ("1h2m3s", 3723.0), ("500us", 0.0005), ("300µs", 0.0003), ("7ns", 7e-9), ("1.5", 1.5), ("12", 12.0),
    (".5s", 0.5), ("", None), ("soon", None), ("1x", None), ("s", None), ("1s junk", None), (None, None),
    ("-1s", None), ("-3", None),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


NOW = 1_700_000_000.0


@pytest.mark.parametrize("headers, expected", [
    ({}, None),
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),      # ms wins
    ({"retry-after-ms": "junk", "retry-after": "2"}, 2.0),      # unreadable ms falls through
    ({"retry-after": email.utils.formatdate(NOW + 7, usegmt=True)}, 7.0),
    ({"retry-after": email.utils.formatdate(NOW - 100, usegmt=True)}, 0.0),  # past date
    ({"retry-after": "-5"}, None),
    ({"retry-after": "soon"}, None),
    ({"retry-after": ""}, None),
    ({"retry-after": "inf"}, None),
    ({"retry-after": "nan"}, None),
    ({"retry-after": "1e12"}, 1e12),   # enormous: parsed; the policy caps it
])
def test_parse_retry_after(headers, expected):
    got = parse_retry_after(headers, now=NOW)
    assert parse(headers, now=NOW).retry_after == got
    assert got == (pytest.approx(expected, abs=1) if expected else expected)




@pytest.mark.parametrize("headers, hints", [
    ({}, NONE),
    ({"content-type": "application/json"}, NONE),
    ({"x-should-retry": "true"}, Hints(should_retry=True)),
    ({"x-should-retry": "false"}, Hints(should_retry=False)),
    ({"x-should-retry": "maybe"}, Hints()),
    # OpenAI: all three for requests and tokens
    ({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599",
      "x-ratelimit-reset-requests": "100ms", "x-ratelimit-limit-tokens": "150000",
      "x-ratelimit-remaining-tokens": "149970", "x-ratelimit-reset-tokens": "12ms"},
     Hints(requests=Budget(600, 599, 0.1), tokens=Budget(150000, 149970, 0.012))),
    # Azure: remaining only
    ({"x-ratelimit-remaining-requests": "5"}, Hints(requests=Budget(remaining=5))),
    # unreadable parts are missing parts; nothing readable is no budget
    ({"x-ratelimit-limit-requests": "junk", "x-ratelimit-remaining-requests": "-1"}, NONE),
    ({"x-ratelimit-limit-requests": "60", "x-ratelimit-reset-requests": "soon"},
     Hints(requests=Budget(limit=60))),
    ({"retry-after": "2", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1h"},
     Hints(retry_after=2.0, tokens=Budget(remaining=0, reset=3600.0))),
])
def test_parse(headers, hints):
    assert parse(headers) == hints
    assert parse(headers).budgets == (hints.requests is not None or hints.tokens is not None)


def test_hints_are_plain_frozen_values():
    h = parse({"retry-after": "1"})
    with pytest.raises(AttributeError):
        h.retry_after = 5
    assert parse(None) is NONE and parse({}) is NONE


@pytest.mark.parametrize("seconds, text", [(3600, "1h"), (9000, "2.5h"), (600, "10 min"), (60, "60 s"),
                                           (1.5, "1.5 s")])
def test_say(seconds, text):
    assert say(seconds) == text
