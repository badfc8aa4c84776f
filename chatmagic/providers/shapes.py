"""The error shapes of OpenAI-compatible servers, read into one ``Failure`` (see dialect.py).

    {"error": {"message", "type", "code", "param"}}       OpenAI, Azure, Groq, Together, DeepSeek
    [{"error": {"code": 429, "status", "details": [..]}}]  Gemini's compatible layer: a JSON list;
        details: google.rpc.RetryInfo {"retryDelay": "37s"}, google.rpc.QuotaFailure
        {"violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
        google.rpc.ErrorInfo {"reason": "API_KEY_INVALID"} (a bad key, answered as a 400)
    {"error": {"code": 403, "message", "metadata": {"reasons", "flagged_input"}}}  OpenRouter
    {"object": "error", "message", "type", "code"}         vLLM
    {"error": "server busy, please try again. ..."}        Ollama
    {"error": {"type": "exceed_context_size_error", ...}}  llama.cpp (some builds as a 500)

Verdicts beyond the status: overload (503, 529, Groq's 498) is SLOW; no credit or quota
(``insufficient_quota`` as the code *or* the type) and a spent per-day quota are ABORT; a
moderation 403 and a context-size 5xx are FAIL. ``x-should-retry: false`` (openai-python's
header) keeps its say over SLOW.
"""

from __future__ import annotations

from typing import Any

from chatmagic.providers.dialect import ABORT, FAIL, SLOW, Action, Failure
from chatmagic.providers.hints import Hints, parse_duration

#: Statuses that mean "at capacity, try again later": pace down as for a 429 without headers.
OVERLOAD_STATUSES = frozenset({498, 503, 529})
#: Codes or types that mean no credit or quota is left: no wait fixes it.
QUOTA = frozenset({"insufficient_quota", "credit_balance_exhausted", "billing_hard_limit_reached"})
#: Codes or types that mean the prompt is too long for the model: no retry fixes it.
TOO_LONG = frozenset({"exceed_context_size_error", "context_length_exceeded"})
_RETRY_INFO, _QUOTA_FAILURE, _ERROR_INFO = "google.rpc.RetryInfo", "google.rpc.QuotaFailure", "google.rpc.ErrorInfo"


def read_failure(status: int, data: Any, raw: bytes, hints: Hints) -> Failure:
    """One error answer (any status, also a 200 that is no completion) as a ``Failure``."""
    err = error_object(data)
    if isinstance(err, dict):
        message = str(err.get("message") or err)
        code = _code(err)
    elif isinstance(err, str) and err:
        message, code = err, None
    else:
        message, code = raw.decode("utf-8", "replace") or "empty answer", None
    zero = _zero_allowance(status, hints)
    if zero is not None:
        return Failure(message, code, ABORT, zero)
    if not isinstance(err, dict):
        return Failure(message, code, _by_status(status, hints))
    if code == str(status):  # OpenRouter's and Gemini's numeric code repeats the status
        code = None
    names = {v for v in (err.get("code"), err.get("type"), err.get("status")) if isinstance(v, str)}
    retry_after, daily, key = _google_details(err.get("details"))
    if key is not None:  # Gemini answers a bad key with a 400
        return Failure(message, code, ABORT, f"bad API key ({key})")
    if daily is not None:
        return Failure(message, code, ABORT, f"the daily quota is spent ({daily}); it resets at "
                       "midnight Pacific time", retry_after)
    if names & QUOTA:
        return Failure(message, code, ABORT, "no credit or quota left", retry_after)
    if names & TOO_LONG and status >= 500:
        return Failure(message, code, FAIL, "the prompt is too long for the model")
    if status == 403 and _flagged(err):
        reasons = _reasons(err.get("metadata"))
        return Failure(message, code or "moderation", FAIL, "input flagged" + (f" ({reasons})" if reasons else ""))
    return Failure(message, code, _by_status(status, hints), retry_after=retry_after)


def _zero_allowance(status: int, hints: Hints) -> str | None:
    """A 429 whose announced limit is 0: this key's plan allows nothing (Mistral's free tier can
    answer so); no wait helps."""
    if status != 429:
        return None
    for kind, budget in (("request", hints.requests), ("token", hints.tokens)):
        if budget is not None and budget.limit == 0:
            return f"the key's {kind} limit is 0: its plan allows none"
    return None


def error_object(data: Any) -> Any:
    """The error inside an answer: ``data["error"]``, the first item of a list (Gemini), or
    ``data`` itself when it is the error (vLLM's ``{"object": "error"}``)."""
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        return data.get("error", data)
    return None


def _code(err: dict[str, Any]) -> str | None:
    """The code shown: a string code, else the type, else Gemini's status, else a number."""
    for value in (err.get("code"), err.get("type"), err.get("status")):
        if isinstance(value, str) and value:
            return value
    code = err.get("code")
    return None if code is None or isinstance(code, (dict, list)) else str(code)[:40]


def _by_status(status: int, hints: Hints) -> Action | None:
    if status in OVERLOAD_STATUSES and hints.should_retry is not False:
        return SLOW
    return None


def _google_details(details: Any) -> tuple[float | None, str | None, str | None]:
    """(the RetryInfo wait, the quotaId of a spent per-day quota, an ErrorInfo reason about the
    key such as API_KEY_INVALID) in Gemini's ``details``."""
    retry_after = daily = key = None
    if not isinstance(details, list):
        return None, None, None
    for item in details[:20]:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("@type", ""))
        if kind.endswith(_RETRY_INFO):
            retry_after = parse_duration(item.get("retryDelay")) if isinstance(item.get("retryDelay"), str) else None
        elif kind.endswith(_ERROR_INFO) and str(item.get("reason", "")).startswith("API_KEY_"):
            key = str(item["reason"])[:40]
        elif kind.endswith(_QUOTA_FAILURE) and isinstance(item.get("violations"), list):
            for v in item["violations"][:20]:
                quota = v.get("quotaId") if isinstance(v, dict) else None
                if isinstance(quota, str) and "perday" in quota.lower():
                    daily = quota[:100]
    return retry_after, daily, key


def _flagged(err: dict[str, Any]) -> bool:
    """A 403 about this input (OpenRouter's moderation), not about the key or the project."""
    meta = err.get("metadata")
    if isinstance(meta, dict) and ("reasons" in meta or "flagged_input" in meta):
        return True
    names = " ".join(str(err.get(k, "")) for k in ("code", "type")).lower()
    return "moderation" in names or "content_policy" in names or "content_filter" in names


def _reasons(meta: Any) -> str:
    reasons = meta.get("reasons") if isinstance(meta, dict) else None
    if isinstance(reasons, list):
        return ", ".join(str(r)[:40] for r in reasons[:5])
    return str(reasons)[:80] if isinstance(reasons, str) else ""
