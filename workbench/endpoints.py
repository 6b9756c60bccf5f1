"""Named LLM endpoints and pools, stored in the TOML config.

    [endpoints.local]
    base_url = "http://127.0.0.1:8000/v1"
    model = "qwen2.5-7b-instruct"
    api_key_env = "LOCAL_LLM_KEY"      # the NAME of the environment variable; the key itself is never stored
    max_concurrency = 64
    rpm = 0                            # requests per minute, 0 = unlimited
    tpm = 0                            # tokens per minute, 0 = unlimited
    timeout = 120                      # seconds per request
    max_reply_bytes = 1048576          # a longer reply fails its item ("reply too large"), never stored whole
    max_retries = 6
    json_mode = "json_object"          # json_schema | json_object | none (what response_format the server takes)
    cost_per_1k_input = 0.0
    cost_per_1k_output = 0.0
    [endpoints.local.params]           # default generation parameters
    temperature = 0.7

    [pools.mix]
    endpoints = ["local", "other"]
    mode = "spread"                    # spread: least busy first | each: one reply per model

The key is read from the environment only when a client is built, and is redacted from every error message.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

JSON_MODES = ("json_schema", "json_object", "none")
POOL_MODES = ("spread", "each")
# A server that needs no key still gets a non-empty one: the openai client refuses to run without.
NO_KEY = "no-key"
DEFAULT_MAX_REPLY_BYTES = 1 << 20   # 1 MiB: far above any real completion, far below what freezes a screen


class EndpointError(ValueError):
    """A user-fixable endpoint/pool configuration problem (never contains a key value)."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    max_concurrency: int = 16
    rpm: int = 0
    tpm: int = 0
    timeout: float = 120.0
    max_retries: int = 6
    json_mode: str = "json_object"
    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    params: dict = field(default_factory=dict)
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES

    def api_key(self) -> str:
        if not self.api_key_env:
            return NO_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise EndpointError(f"endpoint {self.name}: environment variable {self.api_key_env} is not set")
        return key

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return tokens_in / 1000 * self.cost_per_1k_input + tokens_out / 1000 * self.cost_per_1k_output

    def to_toml(self) -> dict:
        d = {"base_url": self.base_url, "model": self.model, "max_concurrency": self.max_concurrency,
             "rpm": self.rpm, "tpm": self.tpm, "timeout": self.timeout, "max_retries": self.max_retries,
             "json_mode": self.json_mode, "cost_per_1k_input": self.cost_per_1k_input,
             "cost_per_1k_output": self.cost_per_1k_output, "max_reply_bytes": self.max_reply_bytes}
        if self.api_key_env:
            d["api_key_env"] = self.api_key_env
        if self.params:
            d["params"] = dict(self.params)
        return d


@dataclass(frozen=True)
class PoolSpec:
    name: str
    endpoints: tuple[str, ...]
    mode: str = "spread"


def _endpoint_from(name: str, d: dict) -> Endpoint:
    where = f"config [endpoints.{name}]"
    if not isinstance(d, dict):
        raise EndpointError(f"{where} must be a table")
    for req in ("base_url", "model"):
        if not d.get(req):
            raise EndpointError(f"{where}: missing {req}")
    known = set(Endpoint.__dataclass_fields__) - {"name"}
    extra = sorted(set(d) - known)
    if extra:
        raise EndpointError(f"{where}: unknown field(s) {', '.join(extra)}")
    try:
        ep = Endpoint(name=name, **{k: v for k, v in d.items()})
        ep = Endpoint(**{**ep.__dict__, "max_concurrency": int(ep.max_concurrency), "rpm": int(ep.rpm),
                         "tpm": int(ep.tpm), "timeout": float(ep.timeout), "max_retries": int(ep.max_retries),
                         "cost_per_1k_input": float(ep.cost_per_1k_input),
                         "cost_per_1k_output": float(ep.cost_per_1k_output), "params": dict(ep.params),
                         "max_reply_bytes": int(ep.max_reply_bytes)})
    except (TypeError, ValueError) as e:
        raise EndpointError(f"{where}: {e}") from None
    check_endpoint(ep, where)
    return ep


def check_endpoint(ep: Endpoint, where: str) -> None:
    u = urlparse(ep.base_url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise EndpointError(f"{where}: base_url must be an http(s) URL, got {ep.base_url!r}")
    if ep.max_concurrency < 1:
        raise EndpointError(f"{where}: max_concurrency must be >= 1")
    if ep.max_reply_bytes < 1:
        raise EndpointError(f"{where}: max_reply_bytes must be >= 1")
    if ep.json_mode not in JSON_MODES:
        raise EndpointError(f"{where}: json_mode must be one of {', '.join(JSON_MODES)}")
    if ep.api_key_env and not ep.api_key_env.replace("_", "").isalnum():
        raise EndpointError(f"{where}: api_key_env must be the NAME of an environment variable "
                            f"(letters, digits, _), not the key itself")


def endpoints(config: dict) -> dict[str, Endpoint]:
    return {name: _endpoint_from(name, d) for name, d in (config.get("endpoints") or {}).items()}


def pools(config: dict) -> dict[str, PoolSpec]:
    eps = config.get("endpoints") or {}
    out = {}
    for name, d in (config.get("pools") or {}).items():
        where = f"config [pools.{name}]"
        members = tuple(d.get("endpoints") or ())
        if not members:
            raise EndpointError(f"{where}: endpoints list is empty")
        missing = [m for m in members if m not in eps]
        if missing:
            raise EndpointError(f"{where}: unknown endpoint(s) {', '.join(missing)}")
        mode = d.get("mode", "spread")
        if mode not in POOL_MODES:
            raise EndpointError(f"{where}: mode must be one of {', '.join(POOL_MODES)}")
        out[name] = PoolSpec(name, members, mode)
    return out


def get_endpoint(config: dict, name: str) -> Endpoint:
    eps = endpoints(config)
    if name not in eps:
        raise EndpointError(f"no endpoint named {name!r}; configured: {', '.join(sorted(eps)) or 'none'} "
                            f"(add one with `workbench endpoints add`)")
    return eps[name]


def resolve(config: dict, name: str, *, is_pool: bool | None = None) -> tuple[list[Endpoint], str]:
    """An endpoint or pool name -> (member endpoints, mode). A lone endpoint is a pool of one (spread)."""
    eps = endpoints(config)
    pls = pools(config)
    if is_pool is not False and name in pls:
        spec = pls[name]
        return [eps[m] for m in spec.endpoints], spec.mode
    if is_pool is not True and name in eps:
        return [eps[name]], "spread"
    kind = "pool" if is_pool else "endpoint" if is_pool is False else "endpoint or pool"
    known = sorted(pls) if is_pool else sorted(eps) if is_pool is False else sorted({*eps, *pls})
    raise EndpointError(f"no {kind} named {name!r}; configured: {', '.join(known) or 'none'}")


def add_endpoint(config: dict, ep: Endpoint) -> dict:
    check_endpoint(ep, f"endpoint {ep.name}")
    config.setdefault("endpoints", {})[ep.name] = ep.to_toml()
    return config


def add_pool(config: dict, name: str, members: list[str], mode: str = "spread") -> dict:
    config.setdefault("pools", {})[name] = {"endpoints": list(members), "mode": mode}
    pools(config)  # validates
    return config


def key_available(ep: Endpoint) -> bool:
    return not ep.api_key_env or bool(os.environ.get(ep.api_key_env))


def secrets(config: dict) -> list[str]:
    """The key values currently in the environment for configured endpoints (for redaction only)."""
    out = []
    for d in (config.get("endpoints") or {}).values():
        var = d.get("api_key_env") if isinstance(d, dict) else None
        val = os.environ.get(var) if var else None
        if val and len(val) >= 4:
            out.append(val)
    return out


def redact(text: str, keys: list[str]) -> str:
    for k in keys:
        text = text.replace(k, "***")
    return text
