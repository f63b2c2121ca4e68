"""Composition root of the daemon: builds the daemon and wires the optional features
(alerting, gate) onto it. Nothing else constructs these objects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from sentinel.config import Config
from sentinel.daemon import Daemon
from sentinel.model import RuleSet

Cleanup = Callable[[], Awaitable[None]]


async def build_daemon(
    config_path: str, config: Config, rules: RuleSet
) -> tuple[Daemon, list[web.RouteDef], Cleanup]:
    daemon = Daemon(config_path, config, rules)
    routes: list[web.RouteDef] = []

    async def cleanup() -> None:
        return None

    return daemon, routes, cleanup
