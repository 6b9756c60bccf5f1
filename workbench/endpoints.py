"""Named LLM endpoints and pools, stored in the TOML config.

    [endpoints.local]
    base_url = "http://127.0.0.1:8000/v1"
    model = "qwen2.5-7b-instruct"
    api_key_env = "LOCAL_LLM_KEY"      # the NAME of the environment variable; the key itself is never stored
    # api_key_file = "/home/me/.keys/local"   # or: a file holding the key, readable by its owner only (chmod 600)
    max_concurrency = 256              # a ceiling: the requests in flight are found by the program
    adaptive = true                    # false: always max_concurrency in flight
    rpm = 0                            # requests per minute, 0 = unlimited
    tpm = 0                            # tokens per minute, 0 = unlimited
    timeout = 120                      # seconds per request
    max_reply_bytes = 1048576          # a longer reply fails its item ("reply too large"), never stored whole
    max_retries = 6
    json_mode = "json_schema"          # json_schema | json_object | none (what response_format the server takes;
                                       # a server that refuses one is asked again with the next)
    cost_per_1k_input = 0.0
    cost_per_1k_output = 0.0
    batch_cost_factor = 0.5            # a Batch API job (`run --batch`) costs this share of the prices above
                                       # (OpenAI's and Anthropic's batch price is 50 % of the online one)
    [endpoints.local.params]           # default generation parameters
    temperature = 0.7

    [pools.mix]
    endpoints = ["local", "other"]
    mode = "spread"                    # spread: least busy first | each: one reply per model

The key is read from the environment (or the key file) only when a client is built, and is redacted from every
reply and error text before anything is stored or logged.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from urllib.parse import urlparse

from .endpoint_values import duplicate_member, endpoint_problem

JSON_MODES = ("json_schema", "json_object", "none")
POOL_MODES = ("spread", "each")
# A server that needs no key still gets a non-empty one: the openai client refuses to run without.
NO_KEY = "no-key"
DEFAULT_MAX_REPLY_BYTES = 1 << 20
BATCH_COST_FACTOR = 0.5             # OpenAI's (and Anthropic's) Batch API price: half the online one   # 1 MiB: far above any real completion, far below what freezes a screen
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# what keys look like: a provider prefix, or a long mix of lower case and digits (variable names are words)
KEY_PREFIX = re.compile(r"((sk|pk|rk|hf|ghp|gho|ghs|github_pat|glpat)[-_]|xox[abpr]-|AIza)[A-Za-z0-9]")
MIN_REDACT = 8   # shorter "keys" (test values, "no-key") are not searched for in replies: too many false hits
WHERE_KEYS_GO = ("put the key in an environment variable (export MY_LLM_KEY=...) and pass its NAME "
                 "(--api-key-env MY_LLM_KEY), or put it in a file only you can read (chmod 600) and pass "
                 "--api-key-file PATH")


class EndpointError(ValueError):
    """A user-fixable endpoint/pool configuration problem (never contains a key value)."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    api_key_file: str | None = None
    max_concurrency: int = 256
    adaptive: bool = True
    rpm: int = 0
    tpm: int = 0
    timeout: float = 120.0
    max_retries: int = 6
    json_mode: str = "json_schema"     # the schema states what the parser checks, so servers that decode under it
                                       # (llama.cpp, vLLM, SGLang, OpenAI) can only return readable values
    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    params: dict = field(default_factory=dict)
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    batch_cost_factor: float = BATCH_COST_FACTOR

    def api_key(self) -> str:
        if self.api_key_file:
            return read_key_file(self.api_key_file, f"endpoint {self.name}")
        if not self.api_key_env:
            return NO_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise EndpointError(f"endpoint {self.name}: environment variable {self.api_key_env} is not set")
        return key

    def cost(self, tokens_in: int, tokens_out: int, *, batch: bool = False) -> float:
        online = tokens_in / 1000 * self.cost_per_1k_input + tokens_out / 1000 * self.cost_per_1k_output
        return online * self.batch_cost_factor if batch else online

    def to_toml(self) -> dict:
        d = {"base_url": self.base_url, "model": self.model, "max_concurrency": self.max_concurrency,
             "adaptive": self.adaptive, "rpm": self.rpm, "tpm": self.tpm, "timeout": self.timeout, "max_retries": self.max_retries,
             "json_mode": self.json_mode, "cost_per_1k_input": self.cost_per_1k_input,
             "cost_per_1k_output": self.cost_per_1k_output, "max_reply_bytes": self.max_reply_bytes}
        if self.batch_cost_factor != BATCH_COST_FACTOR:
            d["batch_cost_factor"] = self.batch_cost_factor
        if self.api_key_env:
            d["api_key_env"] = self.api_key_env
        if self.api_key_file:
            d["api_key_file"] = self.api_key_file
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
        if not isinstance(ep.adaptive, bool):
            raise ValueError("adaptive must be true or false")
        ep = Endpoint(**{**ep.__dict__, "max_concurrency": int(ep.max_concurrency), "rpm": int(ep.rpm),
                         "tpm": int(ep.tpm), "timeout": float(ep.timeout), "max_retries": int(ep.max_retries),
                         "cost_per_1k_input": float(ep.cost_per_1k_input),
                         "cost_per_1k_output": float(ep.cost_per_1k_output), "params": dict(ep.params),
                         "max_reply_bytes": int(ep.max_reply_bytes),
                         "batch_cost_factor": float(ep.batch_cost_factor)})
    except (TypeError, ValueError) as e:
        raise EndpointError(f"{where}: {e}") from None
    check_endpoint(ep, where)
    return ep


def check_endpoint(ep: Endpoint, where: str) -> None:
    problem = endpoint_problem(ep)       # types, ranges, URL syntax (bad-input branch)
    if problem:
        raise EndpointError(f"{where}: {problem}")
    u = urlparse(ep.base_url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise EndpointError(f"{where}: base_url must be an http(s) URL, got {ep.base_url!r}")
    if ep.max_concurrency < 1:
        raise EndpointError(f"{where}: max_concurrency must be >= 1")
    if ep.max_reply_bytes < 1:
        raise EndpointError(f"{where}: max_reply_bytes must be >= 1")
    if not 0 <= ep.batch_cost_factor <= 1:
        raise EndpointError(f"{where}: batch_cost_factor is the share of the online price a batch costs: give a "
                            f"number from 0 to 1 (0.5 = half), not {ep.batch_cost_factor!r}")
    if ep.json_mode not in JSON_MODES:
        raise EndpointError(f"{where}: json_mode must be one of {', '.join(JSON_MODES)}")
    if ep.api_key_env is not None:
        problem = key_env_problem(ep.api_key_env)
        if problem:
            done = "remove it from the config file" if where.startswith("config") else "the value given was not stored"
            raise EndpointError(f"{where}: api_key_env must be the NAME of an environment variable, not a key: "
                                f"{problem}; {WHERE_KEYS_GO}; {done}")
    if ep.api_key_env and ep.api_key_file:
        raise EndpointError(f"{where}: give api_key_env or api_key_file, not both")


def key_env_problem(name: str) -> str | None:
    """Why `name` cannot be an environment variable's name (it looks like a pasted key), or None. The message
    never repeats the value."""
    if not name:
        return "it is empty"
    if not ENV_NAME.fullmatch(name):
        return "it has characters a variable name cannot have (letters, digits and _ only, not first a digit)"
    if len(name) >= 12 and name not in os.environ and any(v == name for v in os.environ.values()):
        return "it is the value of an environment variable"
    if KEY_PREFIX.match(name) and len(name) >= 16 and not name.isupper():
        return "it starts like an API key"
    lower, upper, digits = (sum(map(f, name)) for f in (str.islower, str.isupper, str.isdigit))
    if len(name) >= 20 and digits >= 3 and lower and (upper or len(name) >= 32):
        return "it is long and mixes letters and digits like a key"
    return None


def read_key_file(path: str, where: str) -> str:
    """The key in `path` (first line, stripped). Refused if group or others may read or write it."""
    try:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise EndpointError(f"{where}: key file {path} is accessible by group or others (mode "
                                f"{stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`")
        with open(path, encoding="utf-8") as f:
            key = f.readline().strip()
    except OSError as e:
        raise EndpointError(f"{where}: cannot read key file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise EndpointError(f"{where}: key file {path} is not UTF-8 text") from None
    if not key:
        raise EndpointError(f"{where}: key file {path} is empty")
    return key


def _tables(config: dict, key: str) -> dict:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise EndpointError(f"config: {key} must be a table of [{key}.NAME] tables, not {type(value).__name__}")
    return value


def endpoints(config: dict) -> dict[str, Endpoint]:
    return {name: _endpoint_from(name, d) for name, d in _tables(config, "endpoints").items()}


def pools(config: dict) -> dict[str, PoolSpec]:
    eps = _tables(config, "endpoints")
    out = {}
    for name, d in _tables(config, "pools").items():
        where = f"config [pools.{name}]"
        if not isinstance(d, dict):
            raise EndpointError(f"{where} must be a table")
        members = d.get("endpoints") or ()
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise EndpointError(f"{where}: endpoints must be a list of endpoint names, not {members!r}")
        members = tuple(members)
        if not members:
            raise EndpointError(f"{where}: endpoints list is empty")
        missing = [m for m in members if m not in eps]
        if missing:
            raise EndpointError(f"{where}: unknown endpoint(s) {', '.join(missing)}")
        dup = duplicate_member(members, eps)
        if dup:
            raise EndpointError(f"{where}: {dup}")
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
    if ep.api_key_file:
        return os.path.isfile(ep.api_key_file)
    return not ep.api_key_env or bool(os.environ.get(ep.api_key_env))


def secrets(config: dict) -> list[str]:
    """The key values of configured endpoints (environment or key file), for redaction only."""
    out = []
    for d in (config.get("endpoints") or {}).values():
        if not isinstance(d, dict):
            continue
        var, path = d.get("api_key_env"), d.get("api_key_file")
        val = os.environ.get(var) if isinstance(var, str) and var else None
        if isinstance(path, str) and path:
            try:
                with open(path, encoding="utf-8") as f:
                    val = f.readline().strip()
            except (OSError, UnicodeDecodeError):
                val = None
        if val and len(val) >= MIN_REDACT and val != NO_KEY:
            out.append(val)
    return out


def redact(text, keys: list[str]):
    """`text` with every key replaced by ***, before it is stored, logged or shown (None stays None)."""
    if not text or not keys:
        return text
    for k in keys:
        if len(k) >= MIN_REDACT and k != NO_KEY and k in text:
            text = text.replace(k, "***")
    return text
