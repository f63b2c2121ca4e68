"""Rollback webhook: one signed POST per incident, so a deploy system can run
`helm rollback` (GitHub repository_dispatch, a GitLab trigger, Argo/Flagger, a runner).

Signature: `X-Sentinel-Signature: sha256=HMAC(secret, "<timestamp>.<body>")` with
`X-Sentinel-Timestamp`; `Idempotency-Key` is the incident id, so the receiver can drop a
retry. 5xx, 429 (Retry-After) and timeouts are retried by the outbox; other 4xx are not.
Guard rails (one per incident, per-service cooldown, minimum traffic) are applied when
the notification is enqueued; `dry_run` logs what would be sent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

import aiohttp

from sentinel import jsonenc
from sentinel.alerting.store import OutboxEntry
from sentinel.config import WebhookNotifierConfig
from sentinel.errors import NotifyRejected, NotifyRetryable
from sentinel.health import DependencyHealth
from sentinel.logs import fields
from sentinel.sources.http import _redact_url

log = logging.getLogger("sentinel.webhook")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def _compile(text: str) -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False).from_string(text)


def default_body(entry: OutboxEntry) -> dict[str, Any]:
    alert = entry.payload["alerts"][0]
    return {
        "action": "rollback",
        "incident_id": alert["incident_id"],
        "service": entry.service,
        "env": entry.payload.get("env"),
        "slo": alert["slo"],
        "value": alert["value"],
        "threshold": alert["threshold"],
        "window": alert["window"],
        "started_at": alert["started_at_text"],
        "labels": alert.get("labels", {}),
        "severity": alert["severity"],
        "reason": alert.get("reason", ""),
    }


class WebhookNotifier:
    kind = "webhook"
    group_by = "service"  # a rollback is per service

    def __init__(self, name: str, config: WebhookNotifierConfig) -> None:
        self.name = name
        self.config = config
        self.min_severity: str = config.min_severity
        self.health = DependencyHealth(name=f"notifier:{name}", target=_redact_url(config.url))
        self._template = _compile(config.body_template) if config.body_template else None
        self._session: aiohttp.ClientSession | None = None

    def render(self, entry: OutboxEntry) -> bytes:
        body = default_body(entry)
        if self._template is None:
            return jsonenc.dumps(body).encode()
        return str(self._template.render(rollback=body, alert=entry.payload["alerts"][0])).encode()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, entry: OutboxEntry, uncertain: bool) -> None:
        body = self.render(entry)
        incident = entry.payload["alerts"][0]["incident_id"]
        if self.config.dry_run:
            log.warning(
                f"dry run: would POST rollback for {entry.service} to {self.health.target}",
                extra=fields(incident=incident, body=body.decode()),
            )
            return
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": incident,
            "X-Sentinel-Timestamp": timestamp,
            "User-Agent": "sentinel-slo",
        }
        if self.config.secret is not None:
            headers["X-Sentinel-Signature"] = sign(
                self.config.secret.get_secret_value(), timestamp, body
            )
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        started = time.monotonic()
        try:
            async with self._session.post(
                self.config.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            ) as resp:
                text = (await resp.text())[:200]
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.health.record_failure(time.monotonic() - started, detail)
            raise NotifyRetryable(self.name, detail) from exc
        elapsed = time.monotonic() - started
        if status == 429 or status >= 500:
            self.health.record_failure(elapsed, f"HTTP {status}")
            delay = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise NotifyRetryable(self.name, f"HTTP {status}: {text}", delay)
        if status >= 300:
            self.health.record_failure(elapsed, f"HTTP {status}")
            raise NotifyRejected(self.name, f"HTTP {status}: {text}")
        self.health.record_success(elapsed)
