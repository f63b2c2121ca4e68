"""Sub-commands that run the daemon or talk to a running one (`run`, `gate`, `silence`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from typing import Any

from aiohttp import web

from sentinel.config import load_config
from sentinel.errors import ConfigError, StateStoreError
from sentinel.logs import fields, setup_logging
from sentinel.rules.loader import load_rules

log = logging.getLogger("sentinel")


def add_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("--log-format", choices=("console", "json"), default="console")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=cmd_run)

    gate = sub.add_parser("gate", help="ask a running sentinel whether a release may be promoted")
    gate.add_argument("--url", default=os.environ.get("SENTINEL_URL", "http://127.0.0.1:8080"))
    gate.add_argument("--service", required=True)
    gate.add_argument("--env")
    gate.add_argument("--since", help="deploy start: RFC 3339 or Unix seconds")
    gate.add_argument("--slo", help="comma-separated SLO names (default: the gate SLOs)")
    gate.add_argument("--release")
    gate.add_argument("--wait", default="0s", help="keep polling while pending, up to this long")
    gate.add_argument("--interval", default="30s")
    gate.add_argument("--label", action="append", default=[], help="extra matcher name=value")
    gate.add_argument(
        "--canary", help="canary mode: the canary's series, label:value[,label:value]"
    )
    gate.add_argument("--baseline", help="canary mode: the baseline's series (label:value)")
    gate.add_argument(
        "--mode", choices=("absolute", "canary"), help="canary: compare with the baseline"
    )
    gate.set_defaults(func=cmd_gate)

    silence = sub.add_parser("silence", help="manage silences of a running sentinel")
    silence.add_argument("--url", default=os.environ.get("SENTINEL_URL", "http://127.0.0.1:8080"))
    ssub = silence.add_subparsers(dest="action", required=True)
    add = ssub.add_parser("add", help="silence matching alerts")
    add.add_argument(
        "matchers", nargs="+", help="name=value or name=~regex (service, slo, severity, ...)"
    )
    add.add_argument("--duration", default="2h")
    add.add_argument("--author", default=os.environ.get("USER", "unknown"))
    add.add_argument("--comment", required=True)
    ssub.add_parser("list", help="list silences")
    expire = ssub.add_parser("expire", help="end a silence now")
    expire.add_argument("id")
    silence.set_defaults(func=cmd_silence)


def cmd_gate(args: argparse.Namespace) -> int:
    from sentinel.cli.client import gate
    from sentinel.units import parse_duration

    params = {"service": args.service}
    for key in ("env", "since", "slo", "release", "canary", "baseline", "mode"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    for label in args.label:
        name, sep, value = label.partition("=")
        if not sep:
            print(f"--label: expected name=value, got {label!r}", file=sys.stderr)
            return 2
        params[name] = value
    try:
        wait, interval = parse_duration(args.wait), parse_duration(args.interval)
    except ValueError as exc:
        print(f"--wait/--interval: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(gate(args.url, params, wait, interval))


def cmd_silence(args: argparse.Namespace) -> int:
    from sentinel.cli.client import silence

    payload = None
    if args.action == "add":
        matchers = []
        for raw in args.matchers:
            regex = "=~" in raw
            name, _, value = raw.partition("=~" if regex else "=")
            if not value:
                print(f"matcher {raw!r}: expected name=value or name=~regex", file=sys.stderr)
                return 2
            matchers.append({"name": name, "value": value, "isRegex": regex})
        payload = {
            "matchers": matchers,
            "duration": args.duration,
            "author": args.author,
            "comment": args.comment,
        }
    return asyncio.run(silence(args.url, args.action, payload, getattr(args, "id", None)))


def cmd_run(args: argparse.Namespace) -> int:
    from sentinel.daemon import allocator
    from sentinel.daemon.scheduling import schedule_jobs

    setup_logging(args.log_format, args.log_level)
    tuned = allocator.tune()
    if tuned:  # an operator's own setting is left alone, and not logged as ours
        made = " ".join(f"{name}={allocator.VALUES[name]}" for name in tuned)
        log.info(f"malloc: {made}", extra=fields(malloc=made))
    try:
        config = load_config(args.config)
        rules = load_rules(config)
        schedule_jobs(rules)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        log.error("invalid configuration; not starting", extra=fields(problems=len(exc.problems)))
        return 2
    from sentinel.daemon import collector

    collector.tune()
    return asyncio.run(serve(args.config, config, rules))


async def serve(config_path: str, config: Any, rules: Any) -> int:
    """Run the daemon until a stop signal. One exit stack owns shutdown, in this order:
    the daemon lets running cycles finish (or is forced by a second signal or
    `shutdown_timeout`), the HTTP server stops, then the assembled parts close (gate,
    dispatcher, notifiers, store)."""
    from sentinel.daemon.assembly import build_daemon
    from sentinel.web.app import build_app, build_runner
    from sentinel.web.routes import api_routes

    try:
        assembly = await build_daemon(config_path, config, rules)
    except StateStoreError as exc:  # corrupt, foreign or unreadable state file: refuse
        print(f"error: state store: {exc}", file=sys.stderr)
        log.error("state store unusable; not starting", extra=fields(path=exc.path))
        return 2
    daemon = assembly.daemon
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(assembly.cleanup)
        app_runner = build_runner(build_app(daemon, api_routes(assembly)))
        await app_runner.setup()
        stack.push_async_callback(app_runner.cleanup)
        # Handlers stay installed while the daemon stops: a second signal forces it.
        daemon.install_signal_handlers()
        stack.callback(daemon.remove_signal_handlers)
        stack.push_async_callback(daemon.stop)
        host, port = config.server.host_port
        try:
            await web.TCPSite(app_runner, host, port).start()
        except OSError as exc:
            log.error(f"cannot listen on {host}:{port}: {exc.strerror}")
            return 2
        log.info(f"listening on http://{host}:{port}")
        code = 0
        try:
            await daemon.start()
        except ConfigError as exc:  # a group that cannot be scheduled (checked in cmd_run)
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            daemon.request_stop("invalid schedule")
            code = 2
        await daemon.wait_stopped()
    log.info("stopped")
    return code
