"""Sub-commands that run the daemon or talk to a running one (`run`, `gate`, `silence`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from aiohttp import web

from sentinel.config import load_config
from sentinel.errors import ConfigError
from sentinel.loader import load_rules
from sentinel.logs import fields, setup_logging

log = logging.getLogger("sentinel")


def add_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("--log-format", choices=("console", "json"), default="console")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    setup_logging(args.log_format, args.log_level)
    try:
        config = load_config(args.config)
        rules = load_rules(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        log.error("invalid configuration; not starting", extra=fields(problems=len(exc.problems)))
        return 2
    return asyncio.run(serve(args.config, config, rules))


async def serve(config_path: str, config: Any, rules: Any) -> int:
    from sentinel.app import build_daemon
    from sentinel.web import build_app

    assembly = await build_daemon(config_path, config, rules)
    daemon, routes, cleanup = assembly.daemon, assembly.routes, assembly.cleanup
    app_runner = web.AppRunner(build_app(daemon, routes), access_log=None, handle_signals=False)
    await app_runner.setup()
    host, port = config.server.host_port
    site = web.TCPSite(app_runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        log.error(f"cannot listen on {host}:{port}: {exc.strerror}")
        await cleanup()
        await daemon.stop()
        return 2
    log.info(f"listening on http://{host}:{port}")
    daemon.install_signal_handlers()
    await daemon.start()
    try:
        await daemon.wait_stopped()
    finally:
        await daemon.stop()
        await app_runner.cleanup()
        await cleanup()
        daemon.remove_signal_handlers()
    log.info("stopped")
    return 0
