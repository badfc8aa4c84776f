"""The retry policy: which failures retry, how long to wait, when to stop.

Composed from tenacity strategies. The server's own wait (``retry-after-ms``, ``retry-after``)
wins over our backoff, up to ``max_retry_wait``. Pacing across prompts (429s) is the
throttle's job (ratelimit.py); this policy only spaces one prompt's own attempts.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from chatmagic.core.timeline import Sleep
from chatmagic.errors import RequestError
from chatmagic.providers.dialect import ABORT, FAIL, RETRY, SLOW, Action

log = logging.getLogger("chatmagic")

__all__ = ["ABORT", "FAIL", "RETRY", "classify", "policy", "slows"]

#: Failures that no retry and no other prompt can fix: the whole run stops.
ABORT_STATUSES = {401: "bad API key", 402: "out of credits", 403: "forbidden",
                  404: "not found (unknown model or wrong base URL)"}


#: 429 codes that no wait within the run fixes: no credit left, or a quota that resets hours away
#: (the throttle names the latter).
QUOTA_CODES = ("insufficient_quota", "quota_exhausted")


def classify(err: RequestError) -> Action:
    """RETRY (transient), FAIL (this prompt only) or ABORT (the whole run). The dialect's
    verdict (``err.action``, see providers/dialect.py) wins; SLOW is a RETRY that also paces."""
    if err.action is not None:
        return RETRY if err.action == SLOW else err.action
    status = err.status
    if err.retryable is not None and err.status not in ABORT_STATUSES and err.code not in QUOTA_CODES:
        return RETRY if err.retryable else FAIL  # x-should-retry, or our own say
    if status is None or status == 200:  # timeout, connection error, or a 200 that is no completion
        return RETRY
    if status == 429:
        return ABORT if err.code in QUOTA_CODES else RETRY
    if status in ABORT_STATUSES:
        return ABORT
    if status in (408, 409) or status >= 500:
        return RETRY
    return FAIL  # 400 (context_length_exceeded and the like), 413, 422


def slows(err: RequestError) -> bool:
    """The server is at capacity (a 429, an overload): retried, and every prompt is paced down."""
    return classify(err) == RETRY and (err.action == SLOW or err.status == 429)


#: Backoff after a transient fault (5xx, connection): 0.5 s, doubling, at most 8 s, as
#: openai-python, each shortened by up to a quarter at random so retries do not come in waves.
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 8.0


class ServerOrBackoff:
    """tenacity wait for one prompt: the server's retry-after if it gave one (capped); none
    after a timeout (the timeout was the wait) or a 429 without one (the throttle paces those);
    else a short jittered exponential backoff."""

    def __init__(self, cap: float):
        self.cap = cap

    def __call__(self, state: RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome is not None else None
        asked = getattr(err, "retry_after", None)
        if asked is not None:
            return min(float(asked), self.cap)
        if getattr(err, "code", None) == "timeout" or (isinstance(err, RequestError) and slows(err)):
            return 0.0
        backoff = min(FIRST_BACKOFF * 2.0 ** (state.attempt_number - 1), MAX_BACKOFF, self.cap)
        return backoff * (1 - 0.25 * random.random())


def policy(retries: int, max_retry_wait: float, sleep: Sleep | None = None) -> AsyncRetrying:
    """The tenacity policy for one prompt; ``retries`` counts attempts after the first."""
    kwargs: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
    return AsyncRetrying(
        stop=stop_after_attempt(retries + 1),
        wait=ServerOrBackoff(max_retry_wait),
        retry=retry_if_exception(lambda e: isinstance(e, RequestError) and classify(e) == RETRY),
        before_sleep=_log_retry,
        reraise=True,
        **kwargs,
    )


def _log_retry(state: RetryCallState) -> None:
    log.info("retry %d in %.2fs after %s", state.attempt_number, state.upcoming_sleep,
             state.outcome.exception() if state.outcome is not None else None)
