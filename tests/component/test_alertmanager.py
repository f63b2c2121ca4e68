"""The Alertmanager notifier against a real two-member Alertmanager cluster (Debian's
`prometheus-alertmanager`, gossip on loopback) whose webhook receiver records what it is
sent. Two complete Sentinel assemblies (own state files, own outbox, own dispatcher)
stand for two replicas: both see the same breach and both notify the whole cluster."""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sentinel.alerting.silences import SilenceMatcher
from sentinel.config import AlertmanagerNotifierConfig, ServerConfig, load_config
from sentinel.daemon.assembly import Assembly, build_daemon
from sentinel.errors import ConfigError
from sentinel.evaluate.slo import SLOResult, Status, rfc3339
from sentinel.notify.alertmanager import AlertmanagerNotifier, am_alert, due_alerts
from sentinel.rules.loader import load_rules
from support.amcluster import BINARY, SLACK, AlertmanagerCluster, NotificationRecorder
from support.fakeslack import CHANNEL, TOKEN, FakeSlack
from support.promserver import find_binary, free_port

RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {service: chatbot-backend, env: prod}
slos:
  - name: chat-latency-p95
    description: 95 % of chat answers within 1.5 s.
    sli:
      latency: {histogram: chatbot_response_latency_seconds, quantile: 0.95}
    threshold: 1.5s
    window: 5m
    group_by: [model]
    runbook_url: https://runbooks.example.com/latency
    alert: {for: 0s, keep_firing_for: 0s}
"""


def result(status: Status, value: float, now: float) -> SLOResult:
    return SLOResult(
        service="chatbot-backend",
        slo="chat-latency-p95",
        status=status,
        value=value,
        threshold=1.5,
        objective=None,
        window=300.0,
        evaluated_at=now,
        labels={"model": "gpt-small"},
        kind="latency",
        severity="page",
    )


@pytest.fixture
def recorder() -> Iterator[NotificationRecorder]:
    server = NotificationRecorder().start()
    yield server
    server.stop()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack().start()
    yield server
    server.stop()


@pytest.fixture
def cluster(
    tmp_path: Path, recorder: NotificationRecorder, slack: FakeSlack
) -> Iterator[AlertmanagerCluster]:
    if find_binary(BINARY) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{BINARY} missing: .ci/run must apt-get install prometheus-alertmanager")
        pytest.skip(f"Debian's {BINARY} is not installed")
    workdir = tmp_path / "alertmanager"
    workdir.mkdir()
    to_slack = SLACK.format(
        api_url=f"{slack.url}/api/chat.postMessage", channel=CHANNEL, token=TOKEN
    )
    am = AlertmanagerCluster(workdir, f"{recorder.url}/am", slack=to_slack).start()
    yield am
    am.stop()


async def replica(tmp_path: Path, name: str, urls: list[str], extra: str = "") -> Assembly:
    home = tmp_path / name
    (home / "rules").mkdir(parents=True)
    (home / "rules" / "chatbot.yaml").write_text(RULES)
    (home / "config.yaml").write_text(
        textwrap.dedent(
            f"""\
            rules: [rules/*.yaml]
            state: {{path: state.db}}
            evaluation: {{interval: 5s}}
            notifiers:
              alertmanager:
                type: alertmanager
                urls: {list(urls)}
                external_url: https://{name}.sentinel.example.com
            """
        )
        + extra
    )
    config = load_config(home / "config.yaml")
    return await build_daemon(str(home / "config.yaml"), config, load_rules(config))


@pytest.fixture
async def replicas(tmp_path: Path, cluster: AlertmanagerCluster) -> AsyncIterator[list[Assembly]]:
    built = [await replica(tmp_path, name, cluster.urls) for name in ("sentinel-a", "sentinel-b")]
    yield built
    for b in built:
        await b.cleanup()
        await b.daemon.stop()


async def cycle(built: Assembly, status: Status, value: float) -> None:
    """One evaluation's results through the daemon's result hooks (manager, re-send),
    then the outbox delivered."""
    now = time.time()
    group = built.daemon.rules.groups[0]
    for hook in built.daemon.result_hooks:
        await hook(group, [result(status, value, now)], now)
    await built.dispatcher.deliver_due()
    notifier = built.dispatcher.notifiers["alertmanager"]
    assert isinstance(notifier, AlertmanagerNotifier)
    await notifier.wait_resend()


async def wait_until(predicate: Callable[[], object], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {limit}s waiting for {what}")


async def test_two_replicas_breach_gives_one_firing_and_one_resolved_notification(
    replicas: list[Assembly], cluster: AlertmanagerCluster, recorder: NotificationRecorder
) -> None:
    # Both replicas see the breach over several cycles (first a transition, then
    # re-sends); every post goes to both Alertmanagers.
    for _ in range(3):
        for built in replicas:
            await cycle(built, Status.BREACH, 2.31)
        await asyncio.sleep(1.0)
    await wait_until(lambda: recorder.with_status("firing"), 20, "the firing notification")
    # Long enough for the second member to have notified too, had it not deduplicated
    # (its turn comes after the 3 s peer timeout, after group_wait).
    for _ in range(4):
        for built in replicas:
            await cycle(built, Status.BREACH, 2.31)
        await asyncio.sleep(1.5)
    firing = recorder.with_status("firing")
    assert len(firing) == 1, firing

    alerts = firing[0]["alerts"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["labels"] == {
        "alertname": "chat-latency-p95",
        "service": "chatbot-backend",
        "slo": "chat-latency-p95",
        "severity": "page",
        "env": "prod",
        "model": "gpt-small",
    }
    assert alert["annotations"]["runbook_url"] == "https://runbooks.example.com/latency"
    assert alert["annotations"]["description"] == "95 % of chat answers within 1.5 s."
    assert "chat-latency-p95 = 2.31 s > 1.5 s over 5m" in alert["annotations"]["summary"]
    assert alert["generatorURL"].endswith(".sentinel.example.com/api/v1/alerts")
    # Both members hold the alert, active, with endsAt ahead (re-sent while firing).
    for member in range(2):
        held = cluster.alerts(member)
        assert [a["status"]["state"] for a in held] == ["active"], held

    # Recovery: both replicas resolve; the receiver gets exactly one resolved
    # notification.
    for _ in range(2):
        for built in replicas:
            await cycle(built, Status.OK, 0.9)
    await wait_until(lambda: recorder.with_status("resolved"), 20, "the resolved notification")
    await asyncio.sleep(6.0)
    resolved = recorder.with_status("resolved")
    assert len(resolved) == 1, resolved
    assert resolved[0]["alerts"][0]["labels"]["slo"] == "chat-latency-p95"
    assert len(recorder.with_status("firing")) == 1


def slack_posts(slack: FakeSlack) -> list[dict[str, Any]]:
    """Alertmanager's Slack posts as they reached the Slack server (its messages carry
    attachments only, which the fake Slack does not keep as messages)."""
    return [params for method, params in slack.calls if method == "chat.postMessage"]


@pytest.mark.parametrize("killed", [0, 1])
async def test_alertmanager_killed_mid_incident_still_one_firing_and_one_resolved_message(
    replicas: list[Assembly],
    cluster: AlertmanagerCluster,
    recorder: NotificationRecorder,
    slack: FakeSlack,
    killed: int,
) -> None:
    for _ in range(2):
        for built in replicas:
            await cycle(built, Status.BREACH, 2.31)
    await wait_until(lambda: slack_posts(slack), 20, "the firing Slack message")
    await asyncio.sleep(4.0)  # the notification log gossiped to the other member
    cluster.kill(killed)
    for _ in range(3):
        for built in replicas:
            await cycle(built, Status.BREACH, 2.31)
        await asyncio.sleep(1.0)
    for built in replicas:
        await cycle(built, Status.OK, 0.9)
    await wait_until(lambda: recorder.with_status("resolved"), 25, "the resolved notification")
    await asyncio.sleep(5.0)
    posts = slack_posts(slack)
    assert [p["attachments"][0]["title"].split("]")[0] for p in posts] == [
        "[FIRING:1",
        "[RESOLVED",
    ], posts
    assert len(recorder.with_status("firing")) == 1
    assert len(recorder.with_status("resolved")) == 1


async def test_one_alertmanager_down_still_delivers_through_the_other(
    replicas: list[Assembly], cluster: AlertmanagerCluster, recorder: NotificationRecorder
) -> None:
    cluster.kill(0)
    built = replicas[0]
    await cycle(built, Status.BREACH, 2.31)
    # The outbox row counts as delivered (one member accepted it): nothing stays queued
    # behind the dead member.
    assert built.store.outbox_stats().get("pending", 0) == 0, built.store.outbox_stats()
    await wait_until(lambda: recorder.with_status("firing"), 25, "the firing notification")
    notifier = built.dispatcher.notifiers["alertmanager"]
    members = notifier.health.as_json()["alertmanagers"]
    dead, alive = members.values()
    assert alive == "ok"
    assert "ClientConnectorError" in dead


# The re-send path, from the alert manager's state (no Alertmanager needed: what would
# be posted is inspected).


@pytest.fixture(params=["", "    hold_at_least: 0s\n"], ids=["default-hold", "no-hold"])
async def lone(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Assembly, AlertmanagerNotifier]]:
    built = await replica(tmp_path, "sentinel-a", ["http://127.0.0.1:9"], request.param)
    notifier = built.dispatcher.notifiers["alertmanager"]
    assert isinstance(notifier, AlertmanagerNotifier)
    yield built, notifier
    await built.cleanup()
    await built.daemon.stop()


def observe(built: Assembly, status: Status, now: float) -> SLOResult:
    r = result(status, 2.31 if status is Status.BREACH else 0.9, now)
    built.manager.observe_sync(built.daemon.rules.groups[0], [r], now)
    return r


async def test_resend_carries_firing_alerts_ahead_and_resolved_ones_for_fifteen_minutes(
    lone: tuple[Assembly, AlertmanagerNotifier],
) -> None:
    built, notifier = lone
    t0 = 1_800_000_000.0
    r = observe(built, Status.BREACH, t0)
    [firing] = due_alerts(notifier, built.manager, [r], t0)
    assert firing["startsAt"] == rfc3339(t0)
    if notifier.config.hold_at_least:
        # Four 5 s intervals would end it 20 s after Sentinel stopped (a slow restart:
        # RESOLVED, then a new page); held at least 4 minutes, as Prometheus' 4 x 1m.
        assert firing["endsAt"] == rfc3339(t0 + 4 * 60)
    else:
        assert firing["endsAt"] == rfc3339(t0 + 4 * 5)  # four 5 s intervals ahead

    r = observe(built, Status.OK, t0 + 30)
    [resolved] = due_alerts(notifier, built.manager, [r], t0 + 30)
    assert resolved["endsAt"] == rfc3339(t0 + 30)
    assert due_alerts(notifier, built.manager, [r], t0 + 30 + 14 * 60) != []
    assert due_alerts(notifier, built.manager, [r], t0 + 30 + 16 * 60) == []


async def test_resend_and_outbox_give_alertmanager_the_same_alert_identity(
    lone: tuple[Assembly, AlertmanagerNotifier],
) -> None:
    built, notifier = lone
    t0 = 1_800_000_000.0
    r = observe(built, Status.BREACH, t0)
    [entry] = [e for e in built.store.due(t0 + 1) if e.notifier == "alertmanager"]
    from_outbox = am_alert(entry.payload["alerts"][0], entry.service, t0, "x")
    [from_state] = due_alerts(notifier, built.manager, [r], t0)
    # Alertmanager identifies an alert by its labels: one label more on either path
    # would make it two alerts (two notifications, one never resolved).
    assert from_outbox["labels"] == from_state["labels"]
    assert from_outbox["annotations"] == from_state["annotations"]
    assert from_outbox["startsAt"] == from_state["startsAt"]


async def test_alert_silenced_in_sentinel_is_not_resent(
    lone: tuple[Assembly, AlertmanagerNotifier],
) -> None:
    built, notifier = lone
    t0 = 1_800_000_000.0
    r = observe(built, Status.BREACH, t0)
    built.store.add_silence(
        [SilenceMatcher("model", "gpt-small")], t0, t0 + 3600, "oncall", "known issue"
    )
    assert due_alerts(notifier, built.manager, [r], t0 + 5) == []


async def test_resend_while_a_post_hangs_sends_the_latest_of_each_alert_afterwards() -> None:
    received: list[list[dict[str, Any]]] = []
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.json())
        if len(received) == 1:
            await release.wait()  # an Alertmanager stalling on the first post
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/api/v2/alerts", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = AlertmanagerNotifierConfig(type="alertmanager", urls=[f"http://127.0.0.1:{port}"])
    notifier = AlertmanagerNotifier("am", config, ServerConfig(), 5.0)
    try:

        def alert(slo: str, ends: str) -> dict[str, Any]:
            return {"labels": {"alertname": slo}, "endsAt": ends}

        notifier.resend([alert("a", "t1")])
        await wait_until(lambda: received, 5, "the first post")
        # Two cycles while the first post hangs: neither is dropped nor doubled.
        notifier.resend([alert("a", "t2"), alert("b", "t2")])
        notifier.resend([alert("a", "t3")])
        release.set()
        await notifier.wait_resend()
    finally:
        await notifier.close()
        await runner.cleanup()
    assert received[1:] == [[alert("a", "t3"), alert("b", "t2")]]


def test_alertmanager_notifier_mistakes_are_located_problems(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "rules: [rules/*.yaml]\n"
        "notifiers:\n"
        "  am:\n"
        "    type: alertmanager\n"
        "    urls: []\n"
        "  am2:\n"
        "    type: alertmanager\n"
        "    urls: [alertmanager:9093]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    problems = [str(p).removeprefix(f"{path}:") for p in caught.value.problems]
    assert len(problems) == 2, problems
    assert problems[0].startswith("5: notifiers.am.urls: List should have at least 1 item")
    assert problems[1].startswith("8: notifiers.am2.urls[0]: expected an http:// or https:// URL")
