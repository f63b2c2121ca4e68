"""Stable identifiers shared by alerts and dashboards (so a Slack link opens the right
dashboard): dashboard uids derive from the service name only."""

from __future__ import annotations

import hashlib
import re


def dashboard_uid(service: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", service.lower()).strip("-")[:20] or "service"
    return f"sentinel-{slug}-{hashlib.sha256(service.encode()).hexdigest()[:8]}"


def dashboard_url(grafana_url: str | None, service: str) -> str | None:
    if not grafana_url:
        return None
    return f"{grafana_url.rstrip('/')}/d/{dashboard_uid(service)}"
