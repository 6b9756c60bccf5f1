"""What an endpoint's and a pool's values may be, beyond their types: the checks `endpoints add`, `pools add` and
the config loader share (workbench/endpoints.py raises them as EndpointError; each returns a reason or None).

Two pool members are the same server when they name the same endpoint, or when their base URLs are the same after
normalising (scheme and host case, the default port :80/:443, trailing slashes) and they serve the same model. A
pool of those would count one server's capacity twice. Host names are not resolved: `localhost` and `127.0.0.1`
are different servers here. The same URL with another model is another member (one server may serve several
models, and an `each` pool wants one answer per model).
"""
from __future__ import annotations

import math
import re
from urllib.parse import urlsplit

from .safe_text import UNSAFE

_DEFAULT_PORTS = {"http": 80, "https": 443}
_WHITESPACE = re.compile(r"\s")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def endpoint_problem(ep) -> str | None:
    """Why the endpoint's values cannot work (an Endpoint from the CLI or the config), or None."""
    for key in ("base_url", "model"):
        value = getattr(ep, key)
        if not isinstance(value, str) or not value.strip():
            return f"{key} must be a non-empty string, got {value!r}"
        if UNSAFE.search(value) or _WHITESPACE.search(value.strip()) or value != value.strip():
            return f"{key} {value!r} holds a space, a newline or a control character"
    try:
        urlsplit(ep.base_url).port          # ValueError on :99999 or :abc
    except ValueError as e:
        return f"base_url {ep.base_url!r}: {e}"
    if not (_finite(ep.timeout) and ep.timeout > 0):
        return f"timeout must be a number of seconds above 0, not {ep.timeout!r}"
    for key in ("rpm", "tpm", "max_retries"):
        if getattr(ep, key) < 0:
            return f"{key} must be >= 0 (0: {'no limit' if key != 'max_retries' else 'no retry'}), not {getattr(ep, key)}"
    for key in ("cost_per_1k_input", "cost_per_1k_output"):
        value = getattr(ep, key)
        if not (_finite(value) and value >= 0):
            return f"{key} must be a number >= 0, not {value!r}"
    for key, value in (ep.params or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"params.{key} = {value!r} is not a finite number"
    return None


def server_key(base_url: str, model: str) -> tuple[str, str]:
    """(normalised base URL, model): what makes two endpoints the same server for a pool."""
    u = urlsplit(base_url.strip())
    scheme = u.scheme.lower()
    host = (u.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"          # IPv6
    try:
        port = u.port
    except ValueError:
        port = None
    port = None if port == _DEFAULT_PORTS.get(scheme) else port
    url = f"{scheme}://{host}" + (f":{port}" if port else "") + u.path.rstrip("/") + (f"?{u.query}" if u.query else "")
    return url, model


def duplicate_member(members, endpoints: dict) -> str | None:
    """Why the pool's member list counts one server twice (see the module doc), or None. `endpoints`: the config's
    endpoint tables by name."""
    seen: dict[tuple, str] = {}
    for i, m in enumerate(members):
        if m in members[:i]:
            return f"endpoint {m!r} is listed twice (a pool would count its server twice)"
        d = endpoints.get(m)
        if not isinstance(d, dict) or not isinstance(d.get("base_url"), str):
            continue
        key = server_key(d["base_url"], d.get("model"))
        if key in seen:
            return (f"endpoints {seen[key]!r} and {m!r} are the same server and model ({key[0]}, {key[1]}): a pool "
                    f"would count it twice (URLs are compared without trailing slashes and default ports)")
        seen[key] = m
    return None
