"""Which proxy a run's requests go through, decided once per run.

The ``proxy`` option wins ("" or "none" for no proxy). Otherwise the standard variables, as curl
and openai-python read them: ``HTTPS_PROXY`` / ``HTTP_PROXY`` by the URL's scheme (lower case
too, and ``ALL_PROXY``), skipped for hosts in ``NO_PROXY`` and for loopback hosts (a local
server is never behind the corporate proxy). aiohttp's ``trust_env`` would read the
environment again on every request; here it is read once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from ipaddress import ip_address
from urllib.parse import urlsplit

from chatmagic.errors import ConfigError


def proxy_for(url: str, option: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy URL for requests to ``url``, or None to connect directly. ``option`` is the
    ``proxy`` setting: None to read the environment, "none" for no proxy, else the proxy."""
    if option is not None:
        return None if option.strip().lower() in ("", "none") else check_proxy(option)
    environ = os.environ if environ is None else environ
    if is_loopback(url):
        return None
    scheme, host = urlsplit(url).scheme, (urlsplit(url).hostname or "").lower()
    if _bypassed(host, urlsplit(url).port, _env(environ, "no_proxy")):
        return None
    chosen = _env(environ, f"{scheme}_proxy") or _env(environ, "all_proxy")
    return check_proxy(chosen, f"${scheme.upper()}_PROXY") if chosen else None


def check_proxy(proxy: str, where: str = "proxy") -> str:
    """An http:// proxy URL (a bare host:port gets http://), or a ConfigError."""
    proxy = proxy.strip()
    if "://" not in proxy:
        proxy = "http://" + proxy
    parts = urlsplit(proxy)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: expected a proxy like http://host:port, got a "
                          f"{parts.scheme or 'malformed'} URL")
    return proxy


def _env(environ: Mapping[str, str], name: str) -> str:
    """The lower-case variable, else the upper-case one, as curl does."""
    return (environ.get(name) or environ.get(name.upper()) or "").strip()


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """``NO_PROXY``: ``*``, or names that match the host or a domain of it (``.corp`` and
    ``corp`` both match ``api.corp``), optionally with ``:port``."""
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and (not entry_port.isdigit() or int(entry_port) != port):
            continue
        name = name.lstrip(".").strip("[]")
        if host == name or host.endswith("." + name):
            return True
    return False


def is_loopback(url: str) -> bool:
    """True for local servers (localhost, 127.0.0.0/8, ::1), which need no API key."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
