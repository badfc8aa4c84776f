import email.utils

import pytest

from chatmagic.errors import RequestError
from chatmagic.retry import ABORT, FAIL, RETRY, classify, parse_retry_after


@pytest.mark.parametrize("status, code, action", [
    (None, "timeout", RETRY), (None, "connection", RETRY), (200, "bad_response", RETRY),
    (408, None, RETRY), (409, None, RETRY), (429, "rate_limit_exceeded", RETRY), (429, "429", RETRY),
    (429, None, RETRY), (500, None, RETRY), (502, None, RETRY), (503, None, RETRY),
    (400, "context_length_exceeded", FAIL), (400, None, FAIL), (413, None, FAIL), (422, None, FAIL),
    (401, "invalid_api_key", ABORT), (402, None, ABORT), (403, None, ABORT), (404, "model_not_found", ABORT),
    (429, "insufficient_quota", ABORT),
])
def test_classify(status, code, action):
    assert classify(RequestError("x", status=status, code=code)) == action


@pytest.mark.parametrize("status, code, retryable, action", [
    (500, None, False, FAIL), (400, None, True, RETRY), (409, None, False, FAIL),
    (401, None, True, ABORT), (429, "insufficient_quota", True, ABORT),  # hopeless whatever is said
])
def test_server_says_whether_to_retry(status, code, retryable, action):
    assert classify(RequestError("x", status=status, code=code, retryable=retryable)) == action


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
    assert got == (pytest.approx(expected, abs=1) if expected else expected)


def test_enormous_retry_after_is_capped_by_policy():
    from chatmagic.retry import ServerOrBackoff

    class Outcome:
        def __init__(self, e): self.e = e
        def exception(self): return self.e

    class State:
        attempt_number = 1
        outcome = Outcome(RequestError("x", status=429, retry_after=1e12))

    assert ServerOrBackoff(cap=60)(State()) == 60
    State.outcome = Outcome(RequestError("x", status=500))
    assert 0 <= ServerOrBackoff(cap=60)(State()) <= 20
