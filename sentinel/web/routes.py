"""Every API route of the daemon, from its assembled parts (health and metrics routes are
added by `build_app`)."""

from __future__ import annotations

from aiohttp import web

from sentinel.daemon.assembly import Assembly
from sentinel.web.alerts_api import alert_routes
from sentinel.web.gate_api import gate_routes
from sentinel.web.slack_api import slack_routes
from sentinel.web.ui import ui_routes


def api_routes(assembly: Assembly) -> list[web.RouteDef]:
    return (
        alert_routes(assembly.manager, assembly.store, assembly.daemon.clock)
        + gate_routes(assembly.gate)
        + ui_routes(assembly)
        + slack_routes(
            assembly.manager,
            assembly.store,
            lambda: assembly.daemon.config,
            lambda: assembly.dispatcher.notifiers,
            assembly.daemon.clock,
        )
    )
