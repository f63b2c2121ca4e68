"""Pushing dashboards to Grafana's HTTP API (`POST /api/dashboards/db`), only on change.

The current version is read first (`GET /api/dashboards/uid/:uid`); an identical one is
left alone, so a restart or a no-op reload does not bump dashboard versions.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from sentinel.errors import GrafanaError
from sentinel.health import DependencyHealth
from sentinel.sources.http import _redact_url

VOLATILE = ("id", "version")


def _comparable(dashboard: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dashboard.items() if k not in VOLATILE}


class GrafanaClient:
    def __init__(self, url: str, token: str | None, folder_uid: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.folder_uid = folder_uid
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.health = DependencyHealth(name="grafana", target=_redact_url(self.url))

    async def push_all(self, dashboards: dict[str, dict[str, Any]]) -> dict[str, str]:
        """uid -> "unchanged" | "updated" | "error: ..."; errors also go to health."""
        out: dict[str, str] = {}
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(headers=self._headers, timeout=timeout) as session:
            for dashboard in dashboards.values():
                uid = dashboard["uid"]
                started = time.monotonic()
                try:
                    out[uid] = await self._push(session, dashboard)
                    self.health.record_success(time.monotonic() - started)
                except GrafanaError as exc:
                    out[uid] = f"error: {exc}"
                    self.health.record_failure(time.monotonic() - started, f"{uid}: {exc}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    out[uid] = f"error: {type(exc).__name__}: {exc}"
                    self.health.record_failure(time.monotonic() - started, f"{uid}: {exc}")
        return out

    async def _push(self, session: aiohttp.ClientSession, dashboard: dict[str, Any]) -> str:
        uid = dashboard["uid"]
        async with session.get(f"{self.url}/api/dashboards/uid/{uid}") as resp:
            if resp.status == 200:
                current = (await resp.json()).get("dashboard", {})
                if _comparable(current) == _comparable(dashboard):
                    return "unchanged"
            elif resp.status != 404:
                raise GrafanaError(f"GET dashboard: HTTP {resp.status}: {await _message(resp)}")
        body: dict[str, Any] = {
            "dashboard": {**dashboard, "id": None},
            "overwrite": True,
            "message": "Sentinel: rendered from rules",
        }
        if self.folder_uid:
            body["folderUid"] = self.folder_uid
        async with session.post(f"{self.url}/api/dashboards/db", json=body) as resp:
            if resp.status != 200:
                raise GrafanaError(f"save dashboard: HTTP {resp.status}: {await _message(resp)}")
        return "updated"


async def _message(resp: aiohttp.ClientResponse) -> str:
    try:
        data = await resp.json(content_type=None)
    except ValueError:
        return (await resp.text())[:200]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("status") or data)[:200]
    return str(data)[:200]
