"""The outbox dispatcher keeps delivering when one notifier misbehaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.alerting.store import NewNotification, OutboxEntry, Store
from sentinel.config import WebhookNotifierConfig
from sentinel.health import DependencyHealth
from sentinel.notify.dispatcher import Dispatcher
from sentinel.notify.webhook import WebhookNotifier
from sentinel.selfmetrics import SelfMetrics
from support.webhookrx import SECRET, WebhookReceiver


class Recording:
    kind = "log"
    min_severity = "info"

    def __init__(self, name: str, fail_with: Exception | None = None) -> None:
        self.name = name
        self.fail_with = fail_with
        self.health = DependencyHealth(name=name, target="test", status="healthy")
        self.delivered: list[str] = []

    async def deliver(self, entry: OutboxEntry, uncertain: bool) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.delivered.append(entry.idempotency_key)

    async def close(self) -> None:
        return None


def _enqueue(store: Store, notifier: str, key: str, now: float) -> None:
    store.commit_cycle(
        [], [], [], [NewNotification(key, notifier, "firing", "svc", {"alerts": []})], now
    )


async def test_a_notifier_that_raises_a_bug_does_not_stop_the_others(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    broken = Recording("broken", RuntimeError("template exploded: token=xoxb-secret-123456"))
    good = Recording("good")
    _enqueue(store, "broken", "k1", 100.0)
    _enqueue(store, "good", "k2", 100.0)
    dispatcher = Dispatcher(store, {"broken": broken, "good": good}, SelfMetrics(), lambda: 100.0)

    delivered = await dispatcher.deliver_due()

    assert delivered == 1 and good.delivered == ["k2"]
    row = store.db.execute(
        "SELECT attempts, last_error, dead_at FROM outbox WHERE idempotency_key='k1'"
    ).fetchone()
    # Retried later like a transient failure, with the cause recorded for /incidents.
    assert row["attempts"] == 1 and row["dead_at"] is None
    assert "RuntimeError: template exploded" in row["last_error"]
    store.close()


@pytest.mark.parametrize("header", ["99999999999", "9" * 400])
async def test_a_receivers_huge_retry_after_parks_a_rollback_an_hour_at_most(
    tmp_path: Path, header: str
) -> None:
    # A 400-digit Retry-After parses as +Inf: stored as the next attempt time, the
    # rollback would never be due again.
    receiver = WebhookReceiver(planned=[429], retry_after=header).start()
    store = Store(tmp_path / "state.db")
    config = WebhookNotifierConfig.model_validate(
        {"type": "webhook", "url": f"{receiver.url}/hooks/rollback", "secret": SECRET}
    )
    hook = WebhookNotifier("rollback", config)
    alert = {
        "incident_id": "inc-1",
        "slo": "chat-latency-p95",
        "value": 2.4,
        "threshold": 2.0,
        "window": "5m",
        "started_at_text": "2026-11-25T10:00:00Z",
        "severity": "page",
    }
    store.commit_cycle(
        [], [], [], [NewNotification("k1", "rollback", "firing", "svc", {"alerts": [alert]})], 100.0
    )
    dispatcher = Dispatcher(store, {"rollback": hook}, SelfMetrics(), lambda: 100.0)
    try:
        assert await dispatcher.deliver_due() == 0
        row = store.db.execute(
            "SELECT attempts, next_attempt_at FROM outbox WHERE idempotency_key='k1'"
        ).fetchone()
        assert row["attempts"] == 1
        assert 100.0 < row["next_attempt_at"] <= 100.0 + 3600.0
        # Due again an hour later, and delivered.
        dispatcher.clock = lambda: 3700.0
        assert await dispatcher.deliver_due() == 1
        assert len(receiver.deliveries) == 1 and receiver.deliveries[0].signature_ok
    finally:
        await hook.close()
        receiver.stop()
        store.close()
