"""Prometheus Alertmanager as a notifier: alerts pushed to its v2 API
(`POST /api/v2/alerts`), to every Alertmanager listed.

Two paths feed it, because Alertmanager expects what the outbox does not model:

- **Transitions** (FIRING, RESOLVED, reminders) arrive through the outbox like for any
  notifier: routed, silenced, durable, retried. A firing alert is posted with `endsAt`
  four evaluation intervals ahead and `hold_at_least` (4m) at least, a resolved one with
  `endsAt` = the time it resolved.
- **Re-sends**: Alertmanager forgets an alert at its `endsAt`, so a client must keep
  re-sending it while it fires (Prometheus does every evaluation, with `endsAt` four
  intervals ahead). `resend_hook` runs after the alert manager on every cycle's
  results and re-posts, from the alert manager's *current state*, every alert routed
  here that fires, plus each one resolved in the last 15 minutes (Prometheus's resolved
  retention), so an Alertmanager that was down or restarted learns the resolve too.
  Being derived from state, not from rows, it needs no storage and survives a restart:
  the first cycle after it re-sends whatever still fires. If Sentinel dies, its alerts
  end in Alertmanager at `endsAt` by themselves.

Two Sentinel replicas post identical labels to the same Alertmanager cluster, which
deduplicates them (one alert per label set; the cluster gossips its notification log),
so the receiver gets one notification. A post counts as delivered when at least one
Alertmanager accepted it: the others catch up with the next re-send, and one
Alertmanager down must not stall the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp

from sentinel import jsonenc
from sentinel.alerting.manager import AlertManager
from sentinel.alerting.silences import alert_labels
from sentinel.alerting.state import AlertState
from sentinel.alerting.store import OutboxEntry
from sentinel.config import AlertmanagerNotifierConfig, ServerConfig
from sentinel.errors import NotifyRejected, NotifyRetryable
from sentinel.evaluate.slo import SLOResult, rfc3339
from sentinel.health import DependencyHealth
from sentinel.notify.base import summary_line
from sentinel.redact import redact_url
from sentinel.rules.model import RuleGroup, severity_at_least
from sentinel.units import format_duration

log = logging.getLogger("sentinel.alertmanager")

KIND = "alertmanager"
# Prometheus: endsAt = now + 4 x max(interval, resend delay); resolved alerts are re-sent
# for 15 minutes. Here: now + max(4 x interval, hold_at_least).
ENDS_AFTER_INTERVALS = 4
RESOLVED_RETENTION = 15 * 60.0


def am_labels(alert: dict[str, Any], service: str) -> dict[str, str]:
    """The identity of the alert in Alertmanager: the same from both paths and from every
    replica, or Alertmanager would see two alerts."""
    labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
    if alert.get("env") and "env" not in labels:
        labels["env"] = str(alert["env"])
    return {
        **labels,
        "alertname": str(alert["slo"]),
        **alert_labels(service, str(alert["slo"]), str(alert["severity"]), {}),
    }


def am_alert(
    alert: dict[str, Any], service: str, ends_at: float, generator_url: str
) -> dict[str, Any]:
    annotations = {
        "summary": f"{service}: {summary_line(alert)}",
        "description": alert.get("description") or "",
        "runbook_url": alert.get("runbook_url") or "",
        "dashboard_url": alert.get("dashboard_url") or "",
    }
    return {
        "labels": am_labels(alert, service),
        # Annotations are strings; an empty one would only be noise in templates.
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": rfc3339(float(alert["started_at"])),
        "endsAt": rfc3339(ends_at),
        "generatorURL": generator_url,
    }


def _state_payload(manager: AlertManager, result: SLOResult) -> dict[str, Any] | None:
    """The payload fields `am_alert` needs, from the manager's state (the re-send path)."""
    alert, slo = manager.alerts.get(result.key), manager.slo_of.get(result.key)
    if alert is None or slo is None or alert.fired_at is None:
        return None
    return {
        "slo": result.slo,
        "severity": result.severity,
        "labels": dict(result.labels),
        "env": dict(slo.labels).get("env"),
        "description": slo.description,
        "runbook_url": slo.runbook_url,
        "dashboard_url": manager.dashboard_link(result.service),
        "started_at": alert.fired_at,
        "value": result.value,
        "threshold": result.threshold,
        "sli_kind": result.kind,
        "good_when": result.good_when,
        "window_text": format_duration(result.window),
        "reason": result.explanation(),
    }


class AlertmanagerNotifier:
    kind = KIND
    group_by = "service"  # Alertmanager groups by its own rules

    def __init__(
        self,
        name: str,
        config: AlertmanagerNotifierConfig,
        server: ServerConfig,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config
        self.min_severity: str = config.min_severity
        self.urls = [u.rstrip("/") + "/api/v2/alerts" for u in config.urls]
        targets = ", ".join(redact_url(u) for u in config.urls)
        self.health = DependencyHealth(name=f"notifier:{name}", target=targets)
        base = config.external_url or f"http://{socket.gethostname()}:{server.host_port[1]}"
        self.generator_url = base.rstrip("/") + "/api/v1/alerts"
        # The longest interval of the groups seen: endsAt must outlast the gap to the
        # next re-send of any of them.
        self.interval = interval
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._resend: asyncio.Task[None] | None = None
        self._backlog: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}

    def ends_at(self, now: float) -> float:
        # Four intervals alone made a 10 s interval's alerts end 40 s after Sentinel
        # stopped: a restart slower than that showed on-call a RESOLVED, then a new page.
        return now + max(ENDS_AFTER_INTERVALS * self.interval, self.config.hold_at_least)

    async def deliver(self, entry: OutboxEntry, uncertain: bool) -> None:
        # Posting twice is harmless (Alertmanager merges by labels): `uncertain` needs
        # no lookup.
        now = self.clock()
        alerts = []
        for alert in entry.payload["alerts"]:
            resolved = alert.get("resolved_at_text") if entry.kind == "resolved" else None
            ends = _parse_time(resolved) if resolved else self.ends_at(now)
            alerts.append(am_alert(alert, entry.service, ends, self.generator_url))
        await self.post(alerts)

    async def post(self, alerts: list[dict[str, Any]]) -> None:
        """POST to every Alertmanager at once; delivered when one accepted."""
        body = jsonenc.dumps(alerts).encode()
        started = time.monotonic()
        outcomes = await asyncio.gather(*(self._post_one(url, body) for url in self.urls))
        elapsed = time.monotonic() - started
        errors = [o for o in outcomes if o is not None]
        self.health.extra["alertmanagers"] = {
            redact_url(url): (o or "ok") for url, o in zip(self.config.urls, outcomes, strict=True)
        }
        if len(errors) < len(outcomes):
            self.health.record_success(elapsed)
            return
        detail = "; ".join(
            f"{redact_url(u)}: {e}" for u, e in zip(self.config.urls, errors, strict=True)
        )
        self.health.record_failure(elapsed, detail)
        if all(e.startswith("HTTP 4") and not e.startswith("HTTP 429") for e in errors):
            raise NotifyRejected(self.name, detail)
        raise NotifyRetryable(self.name, detail)

    async def _post_one(self, url: str, body: bytes) -> str | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", "User-Agent": "sentinel-slo"},
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            ) as resp:
                text = (await resp.text())[:200]
                if resp.status >= 300:
                    return f"HTTP {resp.status}: {text}"
                return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def resend(self, alerts: list[dict[str, Any]]) -> None:
        """Re-send in the background: a slow Alertmanager must not hold up the cycle.
        While a post is in flight, newer alerts wait in a backlog holding the latest
        version of each alert (so it stays bounded), sent as soon as the post ends."""
        for alert in alerts:
            self._backlog[tuple(sorted(alert["labels"].items()))] = alert
        if self._backlog and (self._resend is None or self._resend.done()):
            self._resend = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self._backlog:
            batch = list(self._backlog.values())
            self._backlog.clear()
            try:
                await self.post(batch)
            except (NotifyRetryable, NotifyRejected) as exc:
                # Not retried: the next cycle re-sends a fresher state anyway.
                log.warning(f"re-sending {len(batch)} alert(s) to Alertmanager failed: {exc}")

    async def wait_resend(self) -> None:
        if self._resend is not None:
            await asyncio.gather(self._resend, return_exceptions=True)

    async def close(self) -> None:
        if self._resend is not None:
            self._resend.cancel()
            await asyncio.gather(self._resend, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def _parse_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _routed(manager: AlertManager, name: str, result: SLOResult) -> bool:
    """The manager's routing for this notifier: the SLO's `notify`, else every
    non-webhook notifier; and its `min_severity`."""
    slo = manager.slo_of.get(result.key)
    notifier = manager.notifiers.get(name)
    if slo is None or notifier is None:
        return False
    if slo.notify and name not in slo.notify:
        return False
    return severity_at_least(result.severity, notifier.min_severity)


def due_alerts(
    notifier: AlertmanagerNotifier,
    manager: AlertManager,
    results: Sequence[SLOResult],
    now: float,
) -> list[dict[str, Any]]:
    """What to re-send after a cycle: firing alerts (endsAt ahead) and recently resolved
    ones (endsAt = when they resolved), routed here and not silenced in Sentinel."""
    silences = None
    out = []
    for result in results:
        alert = manager.alerts.get(result.key)
        if alert is None or not _routed(manager, notifier.name, result):
            continue
        if alert.state is AlertState.FIRING:
            ends = notifier.ends_at(now)
        elif alert.state is AlertState.RESOLVED and now - alert.since <= RESOLVED_RETENTION:
            ends = alert.since
        else:
            continue
        payload = _state_payload(manager, result)
        if payload is None:
            continue
        if silences is None:  # read only when something is due
            silences = [s for s in manager.store.silences() if s.active(now)]
        labels = alert_labels(result.service, result.slo, result.severity, result.labels)
        if any(s.matches(labels) for s in silences):
            continue
        out.append(am_alert(payload, result.service, ends, notifier.generator_url))
    return out


ResultHook = Callable[[RuleGroup, Sequence[SLOResult], float], Awaitable[None]]


def resend_hook(notifiers: Mapping[str, object], manager: AlertManager) -> ResultHook:
    """A result hook (registered after the alert manager's) re-sending to every
    Alertmanager notifier currently configured (`notifiers` is swapped on reload)."""

    async def hook(group: RuleGroup, results: Sequence[SLOResult], now: float) -> None:
        for notifier in list(notifiers.values()):
            if isinstance(notifier, AlertmanagerNotifier):
                notifier.interval = max(notifier.interval, group.interval)
                notifier.resend(due_alerts(notifier, manager, results, now))

    return hook
