"""The outbox dispatcher keeps delivering when one notifier misbehaves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from sentinel.alerting.manager import AlertManager
from sentinel.alerting.store import NewNotification, OutboxEntry, Store
from sentinel.config import SlackNotifierConfig, WebhookNotifierConfig
from sentinel.errors import NotifyRetryable
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.health import DependencyHealth
from sentinel.notify.base import Notifier
from sentinel.notify.dispatcher import Dispatcher
from sentinel.notify.slack import SlackNotifier
from sentinel.notify.webhook import WebhookNotifier
from sentinel.rules.model import SLO, AlertPolicy, LatencySLI, RuleGroup, Selector
from sentinel.selfmetrics import SelfMetrics
from support.fakeslack import CHANNEL, TOKEN, Failure, FakeSlack
from support.webhookrx import SECRET, WebhookReceiver


class Recording:
    kind = "log"
    min_severity = "info"
    group_by = "service"

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


async def waited(done: Callable[[], bool], at_most: float) -> float:
    """Seconds until `done()` holds (polled every 20 ms), `at_most` at most."""
    started = time.monotonic()
    for _ in range(int(at_most / 0.02)):
        if done():
            break
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_slow_slack_does_not_hold_back_the_rollback_webhooks(tmp_path: Path) -> None:
    """Ten services breach in one cycle. Slack answers each post in 0.4 s (as a channel
    near Slack's rate limit does), so the ten messages take 3.6 s or more; every rollback
    webhook is sent at once all the same. With one queue for every notifier, the
    tenth rollback waited behind nine Slack posts (a 1,500-service storm: ~25 min)."""
    slack = FakeSlack().start()
    slack.fail_next("chat.postMessage", *[Failure(delay=0.4)] * 10)
    receiver = WebhookReceiver().start()
    store = Store(tmp_path / "state.db")
    now = float(int(time.time()))
    notifiers: dict[str, Notifier] = {
        "oncall": SlackNotifier(
            "oncall",
            SlackNotifierConfig(
                type="slack", token=SecretStr(TOKEN), channel=CHANNEL, base_url=f"{slack.url}/api/"
            ),
            store,
        ),
        "rollback": WebhookNotifier(
            "rollback",
            WebhookNotifierConfig.model_validate(
                {"type": "webhook", "url": f"{receiver.url}/hooks/rollback", "secret": SECRET}
            ),
        ),
    }
    services = [f"svc-{i:02d}" for i in range(10)]
    slos = tuple(
        SLO(
            s,
            "latency-p95",
            LatencySLI(Selector("h"), 0.95),
            1.5,
            300,
            alert=AlertPolicy(rollback=True),
            notify=("oncall", "rollback"),
        )
        for s in services
    )
    group = RuleGroup("all", "all.yaml", "svc-00", 60, slos)
    manager = AlertManager(store, notifiers, {})
    dispatcher = Dispatcher(store, notifiers, SelfMetrics(), lambda: now)
    breach = [
        SLOResult(
            s, "latency-p95", Status.BREACH, 2.4, 1.5, None, 300, now, kind="latency", events=500.0
        )
        for s in services
    ]
    try:
        manager.observe_sync(group, breach, now)
        dispatcher.start()
        rollbacks_took = await waited(lambda: len(receiver.deliveries) == len(services), 20)
        posted_by_then = sum(1 for m, _ in slack.calls if m == "chat.postMessage")
        slack_took = rollbacks_took + await waited(lambda: len(slack.roots()) == len(services), 30)
        assert len(receiver.deliveries) == len(services)
        assert sorted(d.body["service"] for d in receiver.deliveries) == services
        assert len(slack.roots()) == len(services) and slack_took >= 3.0
        # Every rollback went out while Slack was still on its first posts.
        assert rollbacks_took < 1.5 and posted_by_then <= 4, (rollbacks_took, posted_by_then)
    finally:
        await dispatcher.stop()
        for notifier in notifiers.values():
            await notifier.close()
        store.close()
        slack.stop()
        receiver.stop()


async def test_workers_follow_the_notifiers_a_reload_swaps_in_place(tmp_path: Path) -> None:
    """A reload replaces the notifiers in the shared dict: one it adds is delivered by a
    worker of its own, and the entries of one it removes are marked dead, not left
    pending for ever."""
    store = Store(tmp_path / "state.db")
    old, new = Recording("old"), Recording("new")
    notifiers: dict[str, Notifier] = {"old": old}
    dispatcher = Dispatcher(store, notifiers, SelfMetrics(), lambda: 100.0, poll=0.05)
    dispatcher.start()
    try:
        _enqueue(store, "old", "k1", 100.0)
        dispatcher.wake()
        for _ in range(100):
            if old.delivered:
                break
            await asyncio.sleep(0.02)
        assert old.delivered == ["k1"]
        notifiers.clear()  # the reload: "old" removed, "new" added
        notifiers["new"] = new
        _enqueue(store, "old", "k2", 100.0)
        _enqueue(store, "new", "k3", 100.0)
        for _ in range(100):
            if new.delivered and store.outbox_stats()["dead"]:
                break
            await asyncio.sleep(0.02)
        assert new.delivered == ["k3"] and old.delivered == ["k1"]
        row = store.db.execute(
            "SELECT dead_at, last_error FROM outbox WHERE idempotency_key='k2'"
        ).fetchone()
        assert row["dead_at"] is not None and "no longer configured" in row["last_error"]
    finally:
        await dispatcher.stop()
        store.close()


class RateLimitedOnce(Recording):
    """Answers its first delivery with a 429 and Retry-After 30 s, then delivers."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.refused = False

    async def deliver(self, entry: OutboxEntry, uncertain: bool) -> None:
        if not self.refused:
            self.refused = True
            raise NotifyRetryable(self.name, "HTTP 429 ratelimited", retry_after=30)
        await super().deliver(entry, uncertain)


async def test_a_resolved_never_overtakes_the_firing_being_retried(tmp_path: Path) -> None:
    """The FIRING got a 429 (retry in 30 s); its RESOLVED, due 5 s later, waits for it
    (delivered first, the channel would end on FIRING). Another service's message does
    not wait. Found by review: the old dispatcher sent the RESOLVED first."""
    store = Store(tmp_path / "state.db")
    slack = RateLimitedOnce("oncall")
    clock = {"now": 100.0}
    dispatcher = Dispatcher(store, {"oncall": slack}, SelfMetrics(), lambda: clock["now"])

    def enqueue(key: str, kind: str, service: str) -> None:
        note = NewNotification(key, "oncall", kind, service, {"alerts": []})
        store.commit_cycle([], [], [], [note], clock["now"])

    enqueue("checkout-firing", "firing", "checkout")
    assert await dispatcher.deliver_due() == 0  # the 429
    clock["now"] = 105.0
    enqueue("checkout-resolved", "resolved", "checkout")
    enqueue("search-firing", "firing", "search")
    assert await dispatcher.deliver_due() == 1
    assert slack.delivered == ["search-firing"]
    clock["now"] = 131.0
    assert await dispatcher.deliver_due() == 2
    assert slack.delivered == ["search-firing", "checkout-firing", "checkout-resolved"]
    store.close()


class Slow(Recording):
    """Takes 0.5 s to deliver."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.started = False

    async def deliver(self, entry: OutboxEntry, uncertain: bool) -> None:
        self.started = True
        await asyncio.sleep(0.5)
        await super().deliver(entry, uncertain)


async def test_a_notifier_removed_mid_delivery_finishes_it_and_it_stays_delivered(
    tmp_path: Path,
) -> None:
    """A reload removes the notifier while its worker is sending: the send completes and
    counts as delivered; the entry is not also marked dead as "no longer configured"
    (found by review: both, and /incidents said it was never sent)."""
    store = Store(tmp_path / "state.db")
    slow = Slow("oncall")
    notifiers: dict[str, Notifier] = {"oncall": slow}
    dispatcher = Dispatcher(store, notifiers, SelfMetrics(), lambda: 100.0, poll=0.02)
    dispatcher.start()
    try:
        _enqueue(store, "oncall", "k1", 100.0)
        dispatcher.wake()
        await waited(lambda: slow.started, 2)
        notifiers.clear()  # the reload
        dispatcher.wake()
        await waited(lambda: bool(slow.delivered), 2)
        await asyncio.sleep(0.3)  # the unconfigured worker's next polls
        row = store.db.execute("SELECT delivered_at, dead_at FROM outbox").fetchone()
        assert slow.delivered == ["k1"]
        assert row["delivered_at"] is not None and row["dead_at"] is None
    finally:
        await dispatcher.stop()
        store.close()


@pytest.mark.parametrize("reload", ["replaces", "removes"])
async def test_a_reload_lets_the_send_in_flight_through_the_old_notifier_finish(
    tmp_path: Path, reload: str
) -> None:
    """A reload swaps the rollback webhook's notifier while a rollback is on the wire:
    the old notifier's session is closed only once that send has its answer, so it is
    delivered once. Closed at once (as before), the send failed: retried as uncertain,
    or marked dead as "no longer configured" although the receiver had it."""
    receiver = WebhookReceiver(answer_after=0.5).start()
    store = Store(tmp_path / "state.db")
    config = WebhookNotifierConfig.model_validate(
        {"type": "webhook", "url": f"{receiver.url}/hooks/rollback", "secret": SECRET}
    )
    old = WebhookNotifier("rollback", config)
    notifiers: dict[str, Notifier] = {"rollback": old}
    dispatcher = Dispatcher(store, notifiers, SelfMetrics(), lambda: 100.0, poll=0.02)
    dispatcher.start()
    try:
        alert = {
            "incident_id": "i1",
            "slo": "latency-p95",
            "value": 2.4,
            "threshold": 1.5,
            "window": "5m",
            "started_at_text": "2026-11-27T02:00:00Z",
            "severity": "page",
        }
        note = NewNotification("k1", "rollback", "firing", "svc", {"alerts": [alert]})
        store.commit_cycle([], [], [], [note], 100.0)
        dispatcher.wake()
        await waited(lambda: len(receiver.deliveries) == 1, 5)
        notifiers.clear()  # the reload swaps the dict's content, then retires the old
        if reload == "replaces":
            notifiers["rollback"] = WebhookNotifier("rollback", config)
        dispatcher.retire([old])
        dispatcher.wake()

        def settled() -> bool:
            row = store.db.execute(
                "SELECT delivered_at, dead_at, last_error FROM outbox"
            ).fetchone()
            return bool(row["delivered_at"] or row["dead_at"] or row["last_error"])

        await waited(settled, 5)
        row = store.db.execute("SELECT * FROM outbox").fetchone()
        assert (row["delivered_at"], row["dead_at"], row["last_error"]) == (100.0, None, None)
        assert row["attempts"] == 1 and receiver.attempts == 1
    finally:
        await dispatcher.stop()
        for notifier in notifiers.values():
            await notifier.close()
        store.close()
        receiver.stop()
    assert old._session is None or old._session.closed  # retired: closed by the stop at last
