"""Keeping files and Grafana in step with the rules: on start, on reload, on demand."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sentinel.config import Config
from sentinel.logs import fields
from sentinel.outputs.grafana import GrafanaClient
from sentinel.rules.model import RuleSet

log = logging.getLogger("sentinel.dashboards")


def client(config: Config) -> GrafanaClient | None:
    dc = config.dashboards
    if not dc.push or not dc.grafana_url:
        return None
    token = dc.grafana_token.get_secret_value() if dc.grafana_token else None
    return GrafanaClient(dc.grafana_url, token, dc.folder_uid)


async def push(
    config: Config, dashboards: dict[str, dict[str, Any]], grafana: GrafanaClient | None = None
) -> dict[str, str]:
    grafana = grafana or client(config)
    if grafana is None:
        return {"-": "error: set dashboards.push: true and dashboards.grafana_url"}
    return await grafana.push_all(dashboards)


async def sync(config: Config, rules: RuleSet, grafana: GrafanaClient | None) -> None:
    """Render, write changed files, push changed dashboards. Never raises."""
    if not config.dashboards.output and grafana is None:
        return  # nothing to deliver to: do not even load Jinja2
    from sentinel.outputs.dashboards import render_all, write_all

    # Rendering and writing run in a worker thread: for 100 services they took ~1.1 s of
    # CPU and disk at every start and reload, and on the event loop the gate and the
    # health checks waited as long.
    try:
        dashboards = await asyncio.to_thread(render_all, rules, config)
    except Exception as exc:
        log.error(f"dashboards not rendered: {exc}")
        return
    if config.dashboards.output:
        output = config.resolve(config.dashboards.output)
        try:
            written = await asyncio.to_thread(write_all, dashboards, output)
        except OSError as exc:  # a full disk, a read-only mount: the files keep the last
            log.error(f"dashboards not written to {output}: {exc}")
        else:
            if written:
                log.info("dashboards written", extra=fields(files=[p.name for p in written]))
    if grafana is not None:
        results = await grafana.push_all(dashboards)
        changed = {uid: r for uid, r in results.items() if r != "unchanged"}
        if changed:
            log.info("dashboards pushed to Grafana", extra=fields(results=changed))
