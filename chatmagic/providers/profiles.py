"""Provider profiles: a name -> its dialect, default base URL, key variable and auth style.

A provider that speaks a known dialect is one row of ``PROFILES``; a new dialect is one module
(see dialect.py) plus its name in ``DIALECTS``. ``<NAME>_BASE_URL`` and ``<NAME>_API_KEY``
override a profile's base URL and name its key (Azure: ``AZURE_OPENAI_...``, as its SDK).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import chatmagic.providers.openai  # noqa: F401  the default dialect, loaded with the transport (not mid-run)
from chatmagic.errors import ConfigError

if TYPE_CHECKING:
    from chatmagic.providers.dialect import Dialect

#: Dialect name -> the module whose ``DIALECT`` speaks it (imported on first use).
DIALECTS = {"openai": "chatmagic.providers.openai", "anthropic": "chatmagic.providers.anthropic"}

BEARER, API_KEY, X_API_KEY = "bearer", "api-key", "x-api-key"


@dataclass(frozen=True, slots=True)
class Profile:
    """One provider. ``base_url`` None: there is no public default (Azure: your resource's)."""

    name: str
    dialect: str
    base_url: str | None
    key_env: str
    base_env: str
    auth: str = BEARER
    api_version: str | None = None  # sent as ?api-version= unless the base URL is a /v1 one


def _row(name: str, dialect: str, base_url: str | None, auth: str = BEARER, api_version: str | None = None,
         env: str | None = None) -> Profile:
    prefix = env or name.upper()
    return Profile(name, dialect, base_url, f"{prefix}_API_KEY", f"{prefix}_BASE_URL", auth, api_version)


#: Every provider chatmagic knows by name (the README's provider table lists them).
PROFILES: dict[str, Profile] = {p.name: p for p in (
    _row("openai", "openai", "https://api.openai.com/v1"),
    # classic deployments: base https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT
    _row("azure", "openai", None, API_KEY, api_version="2024-10-21", env="AZURE_OPENAI"),
    _row("anthropic", "anthropic", "https://api.anthropic.com/v1", X_API_KEY),
    _row("gemini", "openai", "https://generativelanguage.googleapis.com/v1beta/openai"),
    _row("groq", "openai", "https://api.groq.com/openai/v1"),
    _row("openrouter", "openai", "https://openrouter.ai/api/v1"),
    _row("mistral", "openai", "https://api.mistral.ai/v1"),
    _row("together", "openai", "https://api.together.xyz/v1"),
    _row("deepseek", "openai", "https://api.deepseek.com/v1"),
    _row("ollama", "openai", "http://localhost:11434/v1"),
    _row("vllm", "openai", "http://localhost:8000/v1"),
)}
DEFAULT = "openai"


def profile(name: str) -> Profile:
    """The profile called ``name``, or one clear ConfigError."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown provider {name!r}; known: {', '.join(PROFILES)}") from None


def dialect(name: str) -> Dialect:
    """The dialect object of ``name`` (its module imported on first use)."""
    try:
        module = importlib.import_module(DIALECTS[name])
    except ModuleNotFoundError as e:
        if e.name != DIALECTS.get(name):
            raise
        raise ConfigError(f"the {name} dialect is not available in this version of chatmagic") from None
    found: Dialect = module.DIALECT
    return found


def split_model(model: str) -> tuple[str | None, str]:
    """``PROVIDER:MODEL`` into (provider, model) when PROVIDER is a profile's name; else
    (None, model): ``llama3:8b`` stays a model name."""
    prefix, sep, rest = model.partition(":")
    if sep and rest and prefix.strip().lower() in PROFILES:
        return prefix.strip().lower(), rest.strip()
    return None, model


def auth_headers(p: Profile, key: str | None) -> dict[str, str]:
    """The header that carries ``key`` in ``p``'s auth style (none without a key)."""
    if not key:
        return {}
    if p.auth == API_KEY:
        return {"api-key": key}
    if p.auth == X_API_KEY:
        return {"x-api-key": key}
    return {"Authorization": f"Bearer {key}"}


def wants_version(p: Profile, base_url: str) -> bool:
    """Azure's classic deployment URLs need ``?api-version=``; its v1 API does not."""
    return p.api_version is not None and "/openai/v1" not in base_url.rstrip("/") + "/"


@dataclass(frozen=True, slots=True)
class Route:
    """Where one model's prompts go: its provider, wire model name, base URL and key (the
    key given as an option; None: read from ``api_key_env`` by ``settings.resolve``)."""

    provider: str
    model: str
    base_url: str
    api_key_env: str
    api_key: str | None = field(repr=False)
    api_version: str | None


def route(model: str, given: dict[str, Any], environ: Mapping[str, str], *, mixed: bool) -> Route:
    """The route of ``model`` (maybe ``PROVIDER:MODEL``). ``given``: the user's ``provider``,
    ``base_url``, ``api_key_env``, ``api_key``, ``api_version`` (None: not set). In a cell
    mixing providers (``mixed``) they apply only to the models of the ``provider`` option
    (default openai); every other model uses its own profile."""
    prefix, wire = split_model(model)
    chosen = given.get("provider") or DEFAULT
    name = prefix or chosen
    p = profile(name)
    mine = not mixed or name == chosen
    base = (given.get("base_url") if mine else None) or environ.get(p.base_env) or p.base_url
    if base is None:
        raise ConfigError(f"provider {name} has no default base URL: give --base-url or ${p.base_env}")
    key_env = (given.get("api_key_env") if mine else None) or p.key_env
    key = given.get("api_key") if mine else None  # else read from ``key_env`` by settings.resolve
    version = given.get("api_version") if mine else None
    if version is None and wants_version(p, base):
        version = p.api_version
    return Route(name, wire, base, key_env, key, version)
