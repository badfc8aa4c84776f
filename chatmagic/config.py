"""One resolved, validated settings object.

Precedence, highest first: a flag or keyword argument > a ``%config ChatMany.<name>`` default >
an environment variable > the built-in default. Every layer uses None for "not set".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from ipaddress import ip_address
from urllib.parse import urlsplit

from .errors import ConfigError

OPENAI_BASE_URL = "https://api.openai.com/v1"

#: Built-in defaults. Timeout: a long completion from a busy hosted API can take a minute or
#: two, so 120 s per attempt; a stalled connection is cut at that point and retried.
DEFAULTS = {
    "model": "gpt-4o-mini",
    "concurrency": 16,
    "timeout": 120.0,
    "connect_timeout": 10.0,
    "retries": 6,
    "max_retry_wait": 60.0,
    "system": None,
    "temperature": None,
    "max_tokens": None,
    "params": None,
    "base_url": OPENAI_BASE_URL,
    "api_key_env": "OPENAI_API_KEY",
    "rpm": None,
    "tpm": None,
    "progress": True,
    "json": False,
    "cache": True,
    "refresh": False,
    "batch": False,
    "wait": True,
}

#: Environment variables that supply a default when no flag or %config sets one.
ENVIRONMENT = {"model": "CHATMAGIC_MODEL", "base_url": "OPENAI_BASE_URL"}

#: Body fields the engine builds itself; ``params`` may not override them.
RESERVED_PARAMS = {"messages": "prompts come from the cell", "stream": "streaming is not supported",
                   "n": "one answer per prompt is collected"}


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, validated. The API key is kept out of the repr."""

    model: str
    concurrency: int
    timeout: float
    connect_timeout: float
    retries: int
    max_retry_wait: float
    system: str | None
    temperature: float | None
    max_tokens: int | None
    params: dict
    base_url: str
    api_key_env: str
    rpm: float | None
    tpm: float | None
    progress: bool
    json: bool
    cache: bool
    refresh: bool
    batch: bool
    wait: bool
    api_key: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def body_params(self) -> dict:
        """Request body fields other than ``messages``."""
        body = {"model": self.model}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.json:
            body["response_format"] = {"type": "json_object"}
        body.update(self.params)
        return body


def resolve(*layers: dict, environ=None) -> Settings:
    """Merge option layers (highest precedence first) with the environment and defaults."""
    environ = os.environ if environ is None else environ
    unknown = {k for layer in layers for k in layer} - set(DEFAULTS) - {"api_key"}
    if unknown:
        raise ConfigError(f"unknown option: {', '.join(sorted(unknown))}")
    merged = {}
    for name in [*DEFAULTS, "api_key"]:
        value = next((layer[name] for layer in layers if layer.get(name) is not None), None)
        if value is None and name in ENVIRONMENT:
            value = environ.get(ENVIRONMENT[name]) or None
        merged[name] = DEFAULTS.get(name) if value is None else value
    settings = _validate(merged)
    if settings.api_key is None:
        key = environ.get(settings.api_key_env) or None
        if key is None and not is_loopback(settings.base_url):
            raise ConfigError(f"no API key: set ${settings.api_key_env}, or point --base-url at a "
                              "local server (which needs none)")
        settings = _replace_key(settings, key)
    return settings


def _replace_key(settings: Settings, key: str | None) -> Settings:
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    return Settings(**{**values, "api_key": key})


def _validate(v: dict) -> Settings:
    if not isinstance(v["model"], str) or not v["model"].strip():
        raise ConfigError("model must be a non-empty name")
    v["concurrency"] = _number(v, "concurrency", int, minimum=1)
    v["retries"] = _number(v, "retries", int, minimum=0)
    for name in ("timeout", "connect_timeout", "max_retry_wait"):
        v[name] = _number(v, name, float, positive=True)
    for name in ("rpm", "tpm"):
        v[name] = None if v[name] is None else _number(v, name, float, positive=True)
    v["temperature"] = None if v["temperature"] is None else _number(v, "temperature", float, minimum=0)
    v["max_tokens"] = None if v["max_tokens"] is None else _number(v, "max_tokens", int, minimum=1)
    v["params"] = _params(v["params"])
    for name in ("json", "cache", "refresh", "batch", "wait"):
        if not isinstance(v[name], bool):
            raise ConfigError(f"{name} must be True or False, got {v[name]!r}")
    scheme = urlsplit(str(v["base_url"])).scheme
    if scheme not in ("http", "https") or not urlsplit(str(v["base_url"])).netloc:
        raise ConfigError(f"base URL must start with http:// or https://, got {v['base_url']!r}")
    if v["api_key"] is not None and not isinstance(v["api_key"], str):
        raise ConfigError("api_key must be a string")
    return Settings(**v)


def _number(v: dict, name: str, kind: type, *, minimum=None, positive=False):
    value = v[name]
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {'a whole' if kind is int else 'a'} number, got {value!r}") from None
    if (positive and not number > 0) or (minimum is not None and number < minimum):
        bound = "positive" if positive else f"at least {minimum}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")
    return number


def _params(params) -> dict:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError("params must be a dict of request body fields")
    for key, why in RESERVED_PARAMS.items():
        if key in params:
            raise ConfigError(f"param {key!r} cannot be set: {why}")
    return dict(params)


def parse_param(text: str) -> tuple[str, object]:
    """``KEY=JSON`` from ``-p`` into a (key, value) pair."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"-p {text!r}: expected KEY=JSON, e.g. -p seed=42")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"-p {text!r}: the value is not JSON (quote strings: {key.strip()}='\"{raw}\"')") from None


def is_loopback(url: str) -> bool:
    """True for local servers (localhost, 127.0.0.0/8, ::1), which need no API key."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def check_identifier(name: str) -> str:
    """A variable name for ``-o``."""
    import keyword
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigError(f"-o {name!r} is not a valid Python variable name")
    return name
