"""Alerting end to end in-process: real Prometheus (backfilled scenario), the real alert
manager, outbox and notifiers, a protocol-faithful Slack server and a webhook receiver.
Time is the scenario's: each step evaluates at an explicit minute."""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sentinel.alerting.manager import RETIRED_HOLD, AlertManager
from sentinel.config import load_config
from sentinel.daemon.assembly import Assembly, build_daemon
from sentinel.errors import StateStoreReadError
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.rules.loader import load_rules
from support.fakeslack import CHANNEL, TOKEN, Failure, FakeSlack
from support.promserver import PrometheusServer
from support.scenario import at
from support.webhookrx import SECRET, WebhookReceiver

RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot, service: chatbot-backend, env: prod}
slos:
  - name: chat-latency-p95
    description: 95 % of chat answers within 1.5 s.
    sli:
      latency: {histogram: chatbot_response_latency_seconds, quantile: 0.95}
    threshold: 1.5s
    window: 5m
    runbook_url: https://runbooks.example.com/latency
    notify: [oncall, rollback]
    alert: {for: 2m, keep_firing_for: 2m, rollback: true}
  - name: http-latency-p95
    sli:
      latency: {histogram: http_request_duration_seconds, quantile: 0.95}
    threshold: 2s
    window: 5m
    notify: [oncall]
    alert: {for: 2m, keep_firing_for: 2m}
"""


class Clock:
    def __init__(self) -> None:
        self.now = at(0)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack().start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
async def assembly(
    tmp_path: Path,
    prometheus: PrometheusServer,
    slack: FakeSlack,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Assembly, Clock]]:
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "chatbot.yaml").write_text(RULES)
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "{prometheus.url}"}}
            rules: [rules/*.yaml]
            state: {{path: state.db}}
            dashboards: {{grafana_url: "https://grafana.example.com"}}
            notifiers:
              oncall:
                type: slack
                token: ${{TEST_SLACK_TOKEN}}
                channel: {CHANNEL}
                base_url: {slack.url}/api/
              rollback:
                type: webhook
                url: {receiver.url}/hooks/rollback
                secret: ${{TEST_WEBHOOK_SECRET}}
                min_events: 100
                cooldown: 30m
            """
        )
    )
    config = load_config(tmp_path / "config.yaml")
    clock = Clock()
    built = await build_daemon(str(tmp_path / "config.yaml"), config, load_rules(config), clock)
    yield built, clock
    await built.cleanup()
    await built.daemon.stop()


async def replay(built: Assembly, clock: Clock, minutes: range) -> None:
    for minute in minutes:
        clock.now = at(minute)
        await built.daemon.run_group("chatbot", clock.now)
        await built.dispatcher.deliver_due()


async def test_breach_pages_once_rolls_back_once_and_resolves_in_thread(
    assembly: tuple[Assembly, Clock],
    slack: FakeSlack,
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    built, clock = assembly
    caplog.set_level(logging.DEBUG)
    await replay(built, clock, range(50, 62))
    assert slack.messages == []  # breach seen at 61, still pending (for: 2m)
    await replay(built, clock, range(62, 100))

    # One message per incident (the two SLOs fired in different cycles), each updated in
    # place once when resolved, with exactly one resolve reply in its thread.
    roots = {m.text.split(" — ")[1].split(":")[0]: m for m in slack.roots()}
    assert sorted(roots) == ["chat-latency-p95", "http-latency-p95"], [
        m.text for m in slack.messages
    ]
    root = roots["chat-latency-p95"]
    text = json.dumps(root.blocks, ensure_ascii=False)
    assert "https://runbooks.example.com/latency" in text
    assert "histogram_quantile(0.95" in text
    assert "https://grafana.example.com/d/sentinel-chatbot-backend|" in text
    assert "*Severity:* page" in text and "*Env:* prod" in text
    for message in roots.values():
        assert message.updates == 1 and "RESOLVED" in message.text
        (reply,) = slack.replies(message)
        assert reply.text.startswith("✅ Resolved:") and "<=" in reply.text

    assert len(receiver.deliveries) == 1
    delivery = receiver.deliveries[0]
    assert delivery.signature_ok
    incident = next(i for i in built.store.incidents() if i["slo"] == "chat-latency-p95")
    assert delivery.headers["Idempotency-Key"] == delivery.body["incident_id"] == incident["id"]
    assert delivery.body["action"] == "rollback"
    assert delivery.body["slo"] == "chat-latency-p95"
    assert delivery.body["service"] == "chatbot-backend"
    assert delivery.body["env"] == "prod"
    assert delivery.body["value"] > 1.5
    assert {i["slo"] for i in built.store.incidents()} == {"chat-latency-p95", "http-latency-p95"}
    assert all(i["resolved_at"] is not None for i in built.store.incidents())
    assert incident["started_at"] == at(63)  # breach from 61, held for 2m

    # Nothing more is sent when the data stays healthy.
    await replay(built, clock, range(100, 110))
    assert len(slack.messages) == 4 and len(receiver.deliveries) == 1
    # Secrets never reach the logs.
    assert TOKEN not in caplog.text and SECRET not in caplog.text


async def test_slack_429_and_500_are_retried_and_the_message_arrives_once(
    assembly: tuple[Assembly, Clock], slack: FakeSlack
) -> None:
    built, clock = assembly
    slack.fail_next("chat.postMessage", Failure(429, retry_after=1), Failure(500))
    await replay(built, clock, range(58, 66))
    posts = [
        c for c in slack.calls if c[0] == "chat.postMessage" and "chat-latency" in c[1]["text"]
    ]
    assert len(posts) == 3  # 429, then 500, then delivered
    assert len([m for m in slack.roots() if "chat-latency-p95" in m.text]) == 1


async def test_permanent_slack_error_is_surfaced_not_retried_forever(
    assembly: tuple[Assembly, Clock], slack: FakeSlack
) -> None:
    built, clock = assembly
    slack.fail_next("chat.postMessage", Failure(error="channel_not_found"))
    await replay(built, clock, range(58, 66))
    health = built.daemon.extra_health()
    assert "channel_not_found" in health["notifier:oncall"]["last_error"]
    assert health["state_store"]["outbox"]["dead"] == 1
    assert TOKEN not in json.dumps(health)


async def test_silenced_alert_changes_state_but_sends_nothing(
    assembly: tuple[Assembly, Clock], slack: FakeSlack, receiver: WebhookReceiver
) -> None:
    built, clock = assembly
    from sentinel.alerting.silences import parse_matchers

    built.store.add_silence(
        parse_matchers({"service": "chatbot-backend"}), at(0), at(120), "test", "maintenance"
    )
    await replay(built, clock, range(58, 70))
    assert slack.messages == [] and receiver.deliveries == []
    states = {a["slo"]: a["state"] for a in built.manager.to_json()}
    assert states["chat-latency-p95"] == "firing"
    # Nobody was shown the firing, so nobody is sent its resolve either.
    await replay(built, clock, range(70, 100))
    states = {a["slo"]: a["state"] for a in built.manager.to_json()}
    assert states["chat-latency-p95"] == "resolved"
    assert slack.messages == [] and receiver.deliveries == []


async def test_rollback_webhook_retries_5xx_and_never_sends_twice(
    assembly: tuple[Assembly, Clock], receiver: WebhookReceiver
) -> None:
    built, clock = assembly
    receiver.planned = [503, 429]
    await replay(built, clock, range(58, 66))
    for _ in range(3):  # let the outbox's backoff elapse on the scenario clock
        clock.now += 10
        await built.dispatcher.deliver_due()
    assert receiver.attempts == 3
    assert len(receiver.deliveries) == 1 and receiver.deliveries[0].signature_ok


def test_alerts_of_one_service_firing_in_one_cycle_are_one_message(tmp_path: Path) -> None:
    from sentinel.alerting.manager import AlertManager
    from sentinel.alerting.store import Store
    from sentinel.evaluate.slo import SLOResult, Status
    from sentinel.notify.log import LogNotifier
    from sentinel.rules.model import SLO, LatencySLI, RuleGroup, Selector

    store = Store(tmp_path / "s.db")
    manager = AlertManager(store, {"log": LogNotifier("log")}, {})
    slos = tuple(
        SLO(service="svc", name=n, sli=LatencySLI(Selector("h"), 0.95), threshold=1, window=60)
        for n in ("a", "b")
    )
    group = RuleGroup("g", "g.yaml", "svc", 30, slos)
    results = [
        SLOResult("svc", n, Status.BREACH, 2.0, 1.0, None, 60, 0.0, kind="latency")
        for n in ("a", "b")
    ]
    manager.observe_sync(group, results, now=100.0)
    (entry,) = store.due(now=100.0)
    assert [a["slo"] for a in entry.payload["alerts"]] == ["a", "b"]
    manager.observe_sync(group, results, now=160.0)  # still firing: nothing new
    assert len(store.due(now=160.0)) == 1
    store.close()


async def test_sighup_reload_picks_up_notifier_changes(
    assembly: tuple[Assembly, Clock], tmp_path: Path
) -> None:
    built, _ = assembly
    config = tmp_path / "config.yaml"
    text = config.read_text()
    config.write_text(text[: text.index("  rollback:")] + "  audit-log:\n    type: log\n")
    (tmp_path / "rules" / "chatbot.yaml").write_text(
        RULES.replace("notify: [oncall, rollback]", "notify: [oncall]")
    )
    assert await built.daemon.reload()
    assert sorted(built.manager.notifiers) == ["audit-log", "oncall"]
    assert sorted(built.dispatcher.notifiers) == ["audit-log", "oncall"]
    assert "notifier:audit-log" in built.daemon.extra_health()


async def test_a_reload_that_removes_a_firing_slo_resolves_its_alert(
    assembly: tuple[Assembly, Clock], slack: FakeSlack, tmp_path: Path
) -> None:
    """Deleting an SLO from the rules while its alert fires: the SIGHUP resolves it (Slack
    says why), the gate stops counting it, and the SLOs that stay are untouched. Before,
    nothing ever resolved it: no result would come again."""
    built, clock = assembly
    await replay(built, clock, range(50, 70))
    firing = {slo.name for _, slo in built.manager.firing("chatbot-backend")}
    assert firing == {"chat-latency-p95", "http-latency-p95"}

    kept = RULES.split("  - name: http-latency-p95")[0]
    (tmp_path / "rules" / "chatbot.yaml").write_text(kept)
    clock.now = at(70)
    assert await built.daemon.reload()
    await built.dispatcher.deliver_due()

    assert [slo.name for _, slo in built.manager.firing("chatbot-backend")] == ["chat-latency-p95"]
    removed = next(i for i in built.store.incidents() if i["slo"] == "http-latency-p95")
    assert removed["resolved_at"] == at(70)
    kept_incident = next(i for i in built.store.incidents() if i["slo"] == "chat-latency-p95")
    assert kept_incident["resolved_at"] is None
    root = next(m for m in slack.roots() if "http-latency-p95" in m.text)
    assert "RESOLVED" in root.text and root.updates == 1
    (reply,) = slack.replies(root)
    assert "http-latency-p95 removed from the rules" in reply.text, reply.text
    assert "last measured" in reply.text
    # The alert is gone for good: later cycles send nothing more about it.
    sent = len(slack.calls)
    await replay(built, clock, range(71, 75))
    assert not [c for c in slack.calls[sent:] if "http-latency-p95" in json.dumps(c[1])]

    # Put back (a rolled-back deploy): rules changed after the removal, so the SLO is
    # judged again here, and while it still breaches a new incident pages.
    (tmp_path / "rules" / "chatbot.yaml").write_text(RULES)
    clock.now = at(75)
    assert await built.daemon.reload()
    await replay(built, clock, range(75, 80))
    again = [i for i in built.store.incidents() if i["slo"] == "http-latency-p95"]
    assert len(again) == 2 and [i["resolved_at"] for i in again].count(None) == 1
    assert len([m for m in slack.roots() if "http-latency-p95" in m.text]) == 2


async def test_an_slo_removed_while_sentinel_was_stopped_is_resolved_where_it_paged(
    assembly: tuple[Assembly, Clock], slack: FakeSlack, tmp_path: Path
) -> None:
    """Sentinel stopped while two alerts fire, one SLO deleted from the rules, Sentinel
    started again: its first step resolves the deleted SLO's incident in the Slack message
    that announced it (no SLO object is left: the message is the one last sent), the
    other alert keeps firing without a second page, and nothing more is sent about the
    deleted one. Before, the incident stayed open in Slack and in the store for ever."""
    built, clock = assembly
    await replay(built, clock, range(50, 70))
    assert {slo.name for _, slo in built.manager.firing("chatbot-backend")} == {
        "chat-latency-p95",
        "http-latency-p95",
    }
    await built.cleanup()
    root = next(m for m in slack.roots() if "http-latency-p95" in m.text)
    kept_root = next(m for m in slack.roots() if "chat-latency-p95" in m.text)
    assert "RESOLVED" not in root.text
    roots, kept_updates = len(slack.roots()), kept_root.updates

    (tmp_path / "rules" / "chatbot.yaml").write_text(RULES.split("  - name: http-latency-p95")[0])
    config = load_config(tmp_path / "config.yaml")
    again = await build_daemon(str(tmp_path / "config.yaml"), config, load_rules(config), clock)
    try:
        await replay(again, clock, range(70, 71))

        assert [s.name for _, s in again.manager.firing("chatbot-backend")] == ["chat-latency-p95"]
        removed = next(i for i in again.store.incidents() if i["slo"] == "http-latency-p95")
        assert removed["resolved_at"] == at(70)
        kept = next(i for i in again.store.incidents() if i["slo"] == "chat-latency-p95")
        assert kept["resolved_at"] is None
        assert "RESOLVED" in root.text and root.updates == 1
        (reply,) = slack.replies(root)
        assert "http-latency-p95: SLO http-latency-p95 removed from the rules" in reply.text
        # No second page: the kept alert's message untouched, no new message at all.
        assert len(slack.roots()) == roots and kept_root.updates == kept_updates
        sent = len(slack.calls)
        await replay(again, clock, range(71, 75))
        assert not [c for c in slack.calls[sent:] if "http-latency-p95" in json.dumps(c[1])]
    finally:
        await again.cleanup()


async def test_a_removed_slo_the_reload_could_not_resolve_is_resolved_at_the_next_cycle(
    assembly: tuple[Assembly, Clock],
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reload that removes a firing SLO cannot read the store (a shared PostgreSQL
    going away): the alert is not resolved then, but the next cycle step resolves it in
    its Slack message once the store answers. Before, it waited for the next SIGHUP."""
    built, clock = assembly
    await replay(built, clock, range(50, 70))
    (tmp_path / "rules" / "chatbot.yaml").write_text(RULES.split("  - name: http-latency-p95")[0])
    answers = built.store.silences

    def unreachable() -> list[object]:
        raise StateStoreReadError("state.db", "cannot be read: server closed the connection")

    monkeypatch.setattr(built.store, "silences", unreachable)
    clock.now = at(70)
    assert await built.daemon.reload()
    removed = next(i for i in built.store.incidents() if i["slo"] == "http-latency-p95")
    assert removed["resolved_at"] is None
    assert [s.name for _, s in built.manager.firing("chatbot-backend")] == ["chat-latency-p95"]

    monkeypatch.setattr(built.store, "silences", answers)
    await replay(built, clock, range(71, 72))
    removed = next(i for i in built.store.incidents() if i["slo"] == "http-latency-p95")
    assert removed["resolved_at"] == at(71)
    root = next(m for m in slack.roots() if "http-latency-p95" in m.text)
    assert "RESOLVED" in root.text
    (reply,) = slack.replies(root)
    assert "SLO http-latency-p95 removed from the rules" in reply.text


class RollingDeploy:
    """Replicas of one SLO `a` sharing one state store, each with the time its rules last
    changed (AlertManager.rules_changed_at)."""

    def __init__(self, path: Path) -> None:
        from sentinel.alerting.store import Store
        from sentinel.rules.model import SLO, LatencySLI, RuleGroup, Selector

        self.store = Store(path)
        sli = LatencySLI(Selector("h"), 0.95)
        slo = SLO(service="svc", name="a", sli=sli, threshold=1, window=60)
        self.group = RuleGroup("g", "g.yaml", "svc", 30, (slo,))

    def replica(self, rules_changed_at: float) -> AlertManager:
        from sentinel.notify.log import LogNotifier

        manager = AlertManager(self.store, {"log": LogNotifier("log")}, {})
        manager.rules_changed_at = rules_changed_at
        return manager

    def observe(self, manager: AlertManager, status: Status, at: float) -> None:
        value = 2.0 if status is Status.BREACH else 0.5
        result = SLOResult("svc", "a", status, value, 1.0, None, 60, at, kind="latency")
        manager.observe_sync(self.group, [result], at)

    def sent(self) -> list[str]:
        return [e.kind for e in self.store.due(100_000.0, limit=100)]


def test_an_slo_a_newer_leader_removed_is_not_paged_again_by_an_older_replica(
    tmp_path: Path,
) -> None:
    """Mid rolling deploy: a replica on the new rules leads and resolves the alert of an
    SLO the deploy removed; then a replica still on the old rules leads again (the new
    one restarted) and still evaluates that SLO. It used to step the resolved alert to a
    new incident and page again; it now leaves it be for a deploy's length (30 min) —
    after that it judges it as any (an old replica never replaced must page again)."""
    deploy = RollingDeploy(tmp_path / "s.db")
    old = deploy.replica(rules_changed_at=0.0)
    deploy.observe(old, Status.BREACH, 100.0)
    assert deploy.sent() == ["firing"]

    new = deploy.replica(rules_changed_at=150.0)  # its rules have no SLO `a`
    assert new.retire_gone([], 200.0) == 1
    assert deploy.sent() == ["firing", "resolved"]

    old.adopt(deploy.store.load_alerts())  # the old replica leads again
    for minute in range(5):
        deploy.observe(old, Status.BREACH, 300.0 + 60 * minute)
    assert deploy.sent() == ["firing", "resolved"]  # was: a second firing, a new incident
    assert [a["state"] for a in old.to_json()] == ["resolved"]

    deploy.observe(old, Status.BREACH, 200.0 + RETIRED_HOLD)  # the hold is over
    assert deploy.sent() == ["firing", "resolved", "firing"]


def test_an_slo_a_rolled_back_deploy_brings_back_pages_as_usual(tmp_path: Path) -> None:
    """Rules loaded after the removal that have the SLO again (a rolled-back deploy) judge
    it as any; once one of them has, even a replica on rules older than the removal does
    (the mark is cleared in the store, also by a quiet, ok step)."""
    deploy = RollingDeploy(tmp_path / "s.db")
    old = deploy.replica(rules_changed_at=0.0)
    deploy.observe(old, Status.BREACH, 100.0)
    assert deploy.replica(rules_changed_at=150.0).retire_gone([], 200.0) == 1

    rolled_back = deploy.replica(rules_changed_at=700.0)  # loaded after the removal
    deploy.observe(rolled_back, Status.OK, 800.0)  # ok: no transition, the mark cleared
    old.adopt(deploy.store.load_alerts())  # an old replica never replaced leads
    deploy.observe(old, Status.BREACH, 900.0)
    assert deploy.sent() == ["firing", "resolved", "firing"]
    assert len({i["id"] for i in deploy.store.incidents()}) == 2
