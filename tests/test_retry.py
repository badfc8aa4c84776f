import pytest

from chatmagic.core.retry import ABORT, FAIL, RETRY, classify
from chatmagic.errors import RequestError


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


def test_enormous_retry_after_is_capped_by_policy():
    from chatmagic.core.retry import ServerOrBackoff

    class Outcome:
        def __init__(self, e): self.e = e
        def exception(self): return self.e

    class State:
        attempt_number = 1
        outcome = Outcome(RequestError("x", status=429, retry_after=1e12))

    assert ServerOrBackoff(cap=60)(State()) == 60
    State.outcome = Outcome(RequestError("x", status=500))
    assert 0 <= ServerOrBackoff(cap=60)(State()) <= 20
