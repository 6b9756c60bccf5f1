"""`workbench endpoints add|list|remove|test` and `workbench pools add`: the OpenAI-compatible endpoints in the config.
"""
from __future__ import annotations

import time
from pathlib import Path

from .. import endpoints as E
from ..config import save_config
from ..endpoint_values import duplicate_member
from ..names import name_problem
from ..llm import Client, LLMError, connection_failure
from .common import CliError, DataError, guard, load_cli_config, parse_kv, print_json
from . import numbers


# --- endpoints and pools -------------------------------------------------------------------------------------

def register(sub, common):
    p = sub.add_parser("endpoints", parents=[common], help="add, list and test LLM endpoints")
    es = p.add_subparsers(dest="endpoints_command", metavar="ACTION", required=True)
    add = es.add_parser("add", parents=[common], help="add or replace an OpenAI-compatible endpoint")
    add.add_argument("name")
    add.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    add.add_argument("--model", required=True)
    keys = add.add_mutually_exclusive_group()
    keys.add_argument("--api-key-env", default=None, metavar="NAME",
                      help="NAME of the environment variable holding the key (the key is never stored)")
    keys.add_argument("--api-key-file", default=None, metavar="PATH",
                      help="a file holding the key, readable by you only (chmod 600); its path is stored")
    add.add_argument("--max-concurrency", type=numbers.at_least(1), default=256,
                     help="a ceiling: how many requests go at once is found from the server's latency (default 256)")
    add.add_argument("--fixed-concurrency", action="store_true",
                     help="always send --max-concurrency requests at once instead of finding the level")
    add.add_argument("--rpm", type=numbers.at_least(0), default=0, help="requests per minute (0: no limit)")
    add.add_argument("--tpm", type=numbers.at_least(0), default=0, help="tokens per minute (0: no limit)")
    add.add_argument("--timeout", type=numbers.number_at_least(0, above=True), default=120.0, help="seconds per request")
    add.add_argument("--max-retries", type=numbers.at_least(0), default=6)
    add.add_argument("--max-reply-bytes", type=numbers.at_least(1), default=E.DEFAULT_MAX_REPLY_BYTES,
                     help="a longer reply fails its item as 'reply too large' (default 1 MiB)")
    add.add_argument("--json-mode", choices=E.JSON_MODES, default="json_schema",
                     help="response_format the server accepts for JSON replies")
    add.add_argument("--cost-in", type=numbers.number_at_least(0), default=0.0, help="cost per 1k prompt tokens")
    add.add_argument("--cost-out", type=numbers.number_at_least(0), default=0.0, help="cost per 1k completion tokens")
    add.add_argument("--batch-cost-factor", type=float, default=E.BATCH_COST_FACTOR, metavar="SHARE",
                     help="what a Batch API job (`run --batch`) pays, as a share of the costs above (default 0.5: "
                          "OpenAI's batch price)")
    add.add_argument("--param", action="append", metavar="K=V", help="default generation parameter")
    add.set_defaults(handler=guard(cmd_endpoints_add))
    ls = es.add_parser("list", parents=[common], help="configured endpoints and pools")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=guard(cmd_endpoints_list))
    rm = es.add_parser("remove", parents=[common], help="remove an endpoint from the config")
    rm.add_argument("name")
    rm.set_defaults(handler=guard(cmd_endpoints_remove))
    t = es.add_parser("test", parents=[common], help="send one tiny request; show latency and the server's models")
    t.add_argument("name")
    t.set_defaults(handler=guard(cmd_endpoints_test))

    pp = sub.add_parser("pools", parents=[common], help="group endpoints into a pool")
    ps = pp.add_subparsers(dest="pools_command", metavar="ACTION", required=True)
    padd = ps.add_parser("add", parents=[common], help="add or replace a pool")
    padd.add_argument("name")
    padd.add_argument("--endpoint", action="append", required=True, help="member endpoint (repeat)")
    padd.add_argument("--mode", choices=E.POOL_MODES, default="spread",
                      help="spread: least busy endpoint first; each: every model answers")
    padd.set_defaults(handler=guard(cmd_pools_add))


def _save(cfg: dict, args):
    return save_config(cfg, getattr(args, "config", None))


def _check_name(name: str, what: str) -> None:
    problem = name_problem(name, what)
    if problem:
        raise CliError(problem)


def cmd_endpoints_add(args) -> int:
    _check_name(args.name, "endpoint")
    cfg = load_cli_config(args)
    key_file = str(Path(args.api_key_file).expanduser().absolute()) if args.api_key_file else None
    if key_file:
        E.read_key_file(key_file, f"endpoint {args.name}")     # refused now (mode, missing, empty), not at run time
    ep = E.Endpoint(name=args.name, base_url=args.base_url, model=args.model, api_key_env=args.api_key_env,
                    api_key_file=key_file, max_concurrency=args.max_concurrency,
                    adaptive=not args.fixed_concurrency, rpm=args.rpm, tpm=args.tpm, timeout=args.timeout,
                    max_retries=args.max_retries, json_mode=args.json_mode, cost_per_1k_input=args.cost_in,
                    cost_per_1k_output=args.cost_out, params=parse_kv(args.param, "--param"),
                    max_reply_bytes=args.max_reply_bytes, batch_cost_factor=args.batch_cost_factor)
    path = _save(E.add_endpoint(cfg, ep), args)
    print(f"endpoint {args.name} saved to {path}")
    return 0


def cmd_endpoints_remove(args) -> int:
    cfg = load_cli_config(args)
    if args.name not in (cfg.get("endpoints") or {}):
        raise CliError(f"no endpoint named {args.name!r}")
    users = [p for p, d in (cfg.get("pools") or {}).items() if args.name in (d.get("endpoints") or [])]
    if users:
        raise CliError(f"endpoint {args.name} is used by pool(s) {', '.join(users)}")
    del cfg["endpoints"][args.name]
    _save(cfg, args)
    print(f"endpoint {args.name} removed")
    return 0


def cmd_endpoints_list(args) -> int:
    cfg = load_cli_config(args)
    eps = E.endpoints(cfg)
    pls = E.pools(cfg)
    rows = [{"name": ep.name, "base_url": ep.base_url, "model": ep.model, "api_key_env": ep.api_key_env,
             "api_key_file": ep.api_key_file,
             "key_set": E.key_available(ep), "max_concurrency": ep.max_concurrency, "rpm": ep.rpm, "tpm": ep.tpm,
             "json_mode": ep.json_mode} for ep in eps.values()]
    if args.json:
        print_json({"endpoints": rows, "pools": [{"name": p.name, "endpoints": list(p.endpoints), "mode": p.mode}
                                                 for p in pls.values()]})
        return 0
    if not rows:
        print("no endpoints; add one with `workbench endpoints add NAME --base-url URL --model M`")
    for r in rows:
        key = f"key file {r['api_key_file']}" if r["api_key_file"] else \
            "no key" if not r["api_key_env"] else f"key ${r['api_key_env']}"
        key += "" if r["key_set"] else (" (missing)" if r["api_key_file"] else " (unset)")
        print(f"{r['name']:<16} {r['model']:<32} {r['base_url']:<36} x{r['max_concurrency']:<4} {key}")
    for p in pls.values():
        print(f"pool {p.name:<11} {p.mode:<6} {', '.join(p.endpoints)}")
    return 0


def cmd_endpoints_test(args) -> int:
    import asyncio
    cfg = load_cli_config(args)
    ep = E.get_endpoint(cfg, args.name)
    client = Client(ep, E.secrets(cfg))

    async def probe():
        try:
            try:
                t0 = time.monotonic()
                models = [m.id async for m in client.client.models.list()]
                list_s = time.monotonic() - t0
            except Exception as e:  # the model list is optional on some servers; report and go on
                import openai
                why = connection_failure(e, ep.base_url, ep.timeout).message \
                    if isinstance(e, openai.APIConnectionError) else f"{type(e).__name__}: {e}"
                models, list_s = None, E.redact(why, client.secrets)
            t0 = time.monotonic()
            try:
                c = await client.chat([{"role": "user", "content": "Reply with the single word: ok"}],
                                      {**ep.params, "max_tokens": 5})
            except LLMError as e:
                served = f"; the server lists: {', '.join(models[:20])}" if models else ""
                raise DataError(f"endpoint {ep.name} failed: {e}{served}") from None
            return models, list_s, c, time.monotonic() - t0
        finally:
            await client.close()

    models, list_s, c, latency = asyncio.run(probe())
    print(f"endpoint {ep.name}: ok, {latency * 1000:.0f} ms, model {c.model}, reply {c.text[:40]!r}, "
          f"tokens {c.prompt_tokens}+{c.completion_tokens}")
    if models is None:
        print(f"model list unavailable: {list_s}")
    else:
        print(f"server models ({len(models)}): {', '.join(models[:20])}" + (" ..." if len(models) > 20 else ""))
        if ep.model not in models:
            print(f"note: {ep.model} is not in the server's model list")
    return 0


def cmd_pools_add(args) -> int:
    _check_name(args.name, "pool")
    cfg = load_cli_config(args)
    known = E.endpoints(cfg)
    for m in args.endpoint:       # the command line's members first: a bad one is usage (2), not a bad config
        if m not in known:
            raise CliError(f"--endpoint {m}: no endpoint named {m!r}; configured: {', '.join(sorted(known)) or 'none'}")
    dup = duplicate_member(args.endpoint, {n: {"base_url": ep.base_url, "model": ep.model} for n, ep in known.items()})
    if dup:
        raise CliError(f"pool {args.name}: {dup}")
    path = _save(E.add_pool(cfg, args.name, args.endpoint, args.mode), args)
    print(f"pool {args.name} saved to {path}")
    return 0
