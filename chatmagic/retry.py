"""The retry policy: which failures retry, how long to wait, when to stop.

Composed from tenacity strategies. The server's own wait (``retry-after-ms``, ``retry-after``)
wins over our backoff, up to ``max_retry_wait``.
"""

from __future__ import annotations

import logging
import random

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from .errors import RequestError

log = logging.getLogger("chatmagic")

RETRY, FAIL, ABORT = "retry", "fail", "abort"

#: Failures that no retry and no other prompt can fix: the whole run stops.
ABORT_STATUSES = {401: "bad API key", 402: "out of credits", 403: "forbidden",
                  404: "not found (unknown model or wrong base URL)"}


def classify(err: RequestError) -> str:
    """RETRY (transient), FAIL (this prompt only) or ABORT (the whole run)."""
    status = err.status
    if err.retryable is not None and err.status not in ABORT_STATUSES and err.code != "insufficient_quota":
        return RETRY if err.retryable else FAIL  # x-should-retry, or our own say
    if status is None or status == 200:  # timeout, connection error, or a 200 that is no completion
        return RETRY
    if status == 429:
        return ABORT if err.code == "insufficient_quota" else RETRY
    if status in ABORT_STATUSES:
        return ABORT
    if status in (408, 409) or status >= 500:
        return RETRY
    return FAIL  # 400 (context_length_exceeded and the like), 413, 422


class ServerOrBackoff:
    """tenacity wait: the server's retry-after if it gave one (capped), else jittered backoff."""

    def __init__(self, cap: float, backoff=None):
        self.cap = cap
        self.backoff = backoff or wait_random_exponential(multiplier=0.5, max=min(20.0, cap))

    def __call__(self, state) -> float:
        err = state.outcome.exception()
        asked = getattr(err, "retry_after", None)
        if asked is not None:
            return min(asked, self.cap)
        if getattr(err, "code", None) == "timeout":
            return random.uniform(0, 0.5)  # the timeout itself was the wait; don't add a long one
        return self.backoff(state)


def policy(retries: int, max_retry_wait: float, sleep=None) -> AsyncRetrying:
    """The tenacity policy for one prompt; ``retries`` counts attempts after the first."""
    kwargs = {"sleep": sleep} if sleep is not None else {}
    return AsyncRetrying(
        stop=stop_after_attempt(retries + 1),
        wait=ServerOrBackoff(max_retry_wait),
        retry=retry_if_exception(lambda e: isinstance(e, RequestError) and classify(e) == RETRY),
        before_sleep=_log_retry,
        reraise=True,
        **kwargs,
    )


def _log_retry(state) -> None:
    log.info("retry %d in %.2fs after %s", state.attempt_number, state.upcoming_sleep,
             state.outcome.exception())
