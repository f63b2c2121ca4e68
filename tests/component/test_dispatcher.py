"""The outbox dispatcher keeps delivering when one notifier misbehaves."""

from __future__ import annotations

from pathlib import Path

from sentinel.alerting.store import NewNotification, OutboxEntry, Store
from sentinel.health import DependencyHealth
from sentinel.notify.dispatcher import Dispatcher
from sentinel.selfmetrics import SelfMetrics


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
