"""Stable identifiers shared by alerts and dashboards (so a Slack link opens the right
dashboard): dashboard uids derive from the service name only.

A service name that is already a short slug keeps it (`sentinel-chatbot-backend`), so an
overview table can link rows with `d/sentinel-${__data.fields.service}`; anything else is
slugged and suffixed with a hash to stay unique within Grafana's 40-character limit.
"""

from __future__ import annotations

import hashlib
import re

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


def dashboard_uid(service: str) -> str:
    if SLUG.match(service):
        return f"sentinel-{service}"
    slug = re.sub(r"[^a-z0-9-]+", "-", service.lower()).strip("-")[:20] or "service"
    return f"sentinel-{slug}-{hashlib.sha256(service.encode()).hexdigest()[:8]}"


def dashboard_url(grafana_url: str | None, service: str) -> str | None:
    if not grafana_url:
        return None
    return f"{grafana_url.rstrip('/')}/d/{dashboard_uid(service)}"
