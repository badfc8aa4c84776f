"""The practice Anthropic server's rate limits: token buckets announced as Anthropic does.

    anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining,reset}, reset an
    RFC 3339 time; anthropic-ratelimit-tokens-* the tighter of input and output; a 429
    rate_limit_error with retry-after (whole seconds) when a bucket cannot pay for a request.
"""

from __future__ import annotations

import math

from aiohttp import web

from chatmagic.practice.anthropic_shapes import error, rfc3339
from chatmagic.practice.server import TokenBucket


def rate_limit(buckets: dict[str, TokenBucket], costs: dict[str, int]) -> tuple[web.Response | None, dict[str, str]]:
    """(a 429 or None, the limit headers for the answer) of a request costing ``costs`` (by
    bucket kind); the buckets are charged only when every one can pay."""
    if not buckets:
        return None, {}
    waits = {kind: b.wait_for(costs[kind]) for kind, b in buckets.items()}
    worst = max(waits, key=lambda k: waits[k])
    if waits[worst] == 0:
        for kind, bucket in buckets.items():
            bucket.take(costs[kind])
    headers = limit_headers(buckets)
    if waits[worst] == 0:
        return None, headers
    headers["retry-after"] = str(max(1, math.ceil(waits[worst])))
    kind = worst.replace("-", " ")
    limit = f"{buckets[worst].limit:g}"
    return error(429, f"This request would exceed the rate limit for your organization of {limit} "
                      f"{kind} per minute. Please reduce the prompt length or the maximum tokens "
                      "requested, or try again later.", headers=headers), headers


def limit_headers(buckets: dict[str, TokenBucket]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, bucket in buckets.items():
        level = bucket.level
        headers[f"anthropic-ratelimit-{kind}-limit"] = f"{bucket.limit:g}"
        headers[f"anthropic-ratelimit-{kind}-remaining"] = str(max(0, math.floor(level)))
        headers[f"anthropic-ratelimit-{kind}-reset"] = rfc3339(bucket.reset_in())
    tokens = [k for k in ("input-tokens", "output-tokens") if k in buckets]
    if tokens:  # the most restrictive of the two, as Anthropic sends tokens-*
        tight = min(tokens, key=lambda k: buckets[k].level)
        for part in ("limit", "remaining", "reset"):
            headers[f"anthropic-ratelimit-tokens-{part}"] = headers[f"anthropic-ratelimit-{tight}-{part}"]
    return headers
