"""The log notifier: the default when nothing is configured, so the demo shows alerts."""

from __future__ import annotations

import logging

from sentinel.alerting.store import OutboxEntry
from sentinel.health import DependencyHealth
from sentinel.logs import fields
from sentinel.notify.base import summary_line

log = logging.getLogger("sentinel.alerts")


class LogNotifier:
    kind = "log"
    group_by = "service"

    def __init__(self, name: str, min_severity: str = "info") -> None:
        self.name = name
        self.min_severity = min_severity
        self.health = DependencyHealth(name=f"notifier:{name}", target="log", status="healthy")

    async def deliver(self, entry: OutboxEntry, uncertain: bool) -> None:
        for alert in entry.payload["alerts"]:
            level = logging.INFO if entry.kind == "resolved" else logging.WARNING
            log.log(
                level,
                f"[{entry.kind.upper()}] {entry.service}: {summary_line(alert)}",
                extra=fields(
                    incident=alert["incident_id"],
                    severity=alert["severity"],
                    runbook=alert.get("runbook_url"),
                ),
            )

    async def close(self) -> None:
        return None
