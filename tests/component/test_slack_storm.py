"""A platform-wide breach with Slack's `group_by: slo`: every service's alerts of one SLO
that change together share one message, so on-call gets one message (not one per service,
posted at Slack's one message a second per channel), the message follows the storm as it
resolves, its alerts stay in order through a failed post, and its Silence button silences
exactly the services it shows. Real alert manager, store, outbox, dispatcher, Slack
notifier and interactions endpoint against the protocol-faithful Slack server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from sentinel.alerting.manager import AlertManager
from sentinel.alerting.silences import alert_labels
from sentinel.alerting.store import Store
from sentinel.config import SlackNotifierConfig, load_config
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.notify.dispatcher import Dispatcher
from sentinel.notify.slack import MAX_SERVICE_LINES, SlackNotifier
from sentinel.notify.slack_actions import ACK_ACTION
from sentinel.rules.model import SLO, RatioSLI, RuleGroup, Selector
from sentinel.selfmetrics import SelfMetrics
from sentinel.web.slack_api import slack_routes
from support.fakeslack import (
    CHANNEL,
    SIGNING_SECRET,
    TOKEN,
    Failure,
    FakeSlack,
    Message,
    block_actions,
    signed,
)

SLO_NAME = "http-5xx-ratio"
SERVICES = [f"svc-{n:04d}" for n in range(300)]
ERRORS = SLO(
    "platform",
    SLO_NAME,
    RatioSLI(Selector("bad"), Selector("total")),
    0.005,
    300,
    group_by=("service",),
)


@dataclass
class Stack:
    manager: AlertManager
    dispatcher: Dispatcher
    store: Store
    notifier: SlackNotifier
    now: float

    async def cycle(
        self,
        breaching: set[str],
        services: list[str] = SERVICES,
        tiers: tuple[str, ...] = (),
        extra: dict[str, str] | None = None,
    ) -> None:
        """One evaluation a minute later: the named services breach, the others are fine;
        with `tiers`, each service's result carries a `tier` label, one result per tier
        (`service/tier` in `breaching`: only that tier breaches)."""
        self.now += 60

        def breach(service: str, tier: str) -> bool:
            return service in breaching or f"{service}/{tier}" in breaching

        results = [
            SLOResult(
                service,
                SLO_NAME,
                Status.BREACH if breach(service, tier) else Status.OK,
                0.02 if breach(service, tier) else 0.001,
                0.005,
                None,
                300,
                self.now,
                {"service": service, **({"tier": tier} if tier else {}), **(extra or {})},
                events=1000.0,
                kind="ratio",
            )
            for service in services
            for tier in tiers or ("",)
        ]
        group = RuleGroup("platform", "platform.yaml", "platform", 60, (ERRORS,))
        self.manager.observe_sync(group, results, self.now)
        await self.deliver()

    async def deliver(self) -> None:
        while await self.dispatcher.deliver_due():  # a pass delivers a batch of the due
            pass


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack().start()
    yield server
    server.stop()


async def build(tmp_path: Path, slack: FakeSlack, group_by: str) -> Stack:
    store = Store(tmp_path / "state.db")
    config = SlackNotifierConfig(
        type="slack",
        token=SecretStr(TOKEN),
        channel=CHANNEL,
        base_url=f"{slack.url}/api/",
        signing_secret=SecretStr(SIGNING_SECRET),
        group_by=group_by,  # type: ignore[arg-type]
    )
    notifier = SlackNotifier("oncall", config, store)
    stack = Stack(
        AlertManager(store, {"oncall": notifier}, {}),
        Dispatcher(store, {"oncall": notifier}, SelfMetrics(), lambda: stack.now),
        store,
        notifier,
        float(int(time.time())),
    )
    return stack


@pytest.fixture
async def stack(tmp_path: Path, slack: FakeSlack) -> AsyncIterator[Stack]:
    built = await build(tmp_path, slack, "slo")
    yield built
    await built.notifier.close()
    built.store.close()


def text_of(message: Message) -> str:
    return json.dumps(message.blocks, ensure_ascii=False)


def title(message: Message) -> str:
    return str(message.blocks[0]["text"]["text"])


@pytest.mark.parametrize(("group_by", "roots"), [("service", 300), ("slo", 1)])
async def test_a_breach_of_every_service_is_one_message_when_grouped_by_slo(
    tmp_path: Path, slack: FakeSlack, group_by: str, roots: int
) -> None:
    stack = await build(tmp_path, slack, group_by)
    try:
        await stack.cycle(set())
        await stack.cycle(set(SERVICES))
        assert len(slack.roots()) == roots
        if group_by == "service":
            assert title(slack.roots()[0]) == f"🔴 FIRING: svc-0000 — {SLO_NAME}"
            return
        (root,) = slack.roots()
        assert title(root) == f"🔴 FIRING: {SLO_NAME} on 300 services"
        shown = text_of(root)
        assert "*Services:* 300" in shown
        assert "🔴 *svc-0000* · 2 % > 0.5 % over 5m" in shown  # the SLO is named once, above
        assert f"*svc-{MAX_SERVICE_LINES - 1:04d}*" in shown
        assert f"*svc-{MAX_SERVICE_LINES:04d}*" not in shown
        assert f"…and {300 - MAX_SERVICE_LINES} more" in shown
        assert len(root.blocks) <= 50  # Block Kit's limit per message
        assert all(len(b["text"]["text"]) <= 3000 for b in root.blocks if b["type"] == "section")
        # Every incident is tied to the one message (its resolve, its buttons).
        threads = stack.store.slack_message_incidents(root.channel, root.ts)
        assert len(threads) == 300
    finally:
        await stack.notifier.close()
        stack.store.close()


async def test_the_one_message_follows_the_storm_as_it_resolves(
    stack: Stack, slack: FakeSlack
) -> None:
    await stack.cycle(set())
    await stack.cycle(set(SERVICES))
    half = set(SERVICES[:150])
    await stack.cycle(half)  # svc-0150.. resolve: one update and one reply, not 150
    (root,) = slack.roots()
    assert root.updates == 1
    assert title(root) == f"🔴 FIRING: {SLO_NAME} on 300 services — 150 of 300 alerts still firing"
    (reply,) = slack.replies(root)
    assert reply.text.startswith(f"✅ Resolved: svc-0150: {SLO_NAME} = 0.1 % <= 0.5 % over 5m")
    assert reply.text.splitlines()[-1].startswith(
        "🔴 Still firing (150 of 300): svc-0000, svc-0001, "
    )
    shown = text_of(root)
    # Still firing ones are listed first: the lines shown are all of them.
    assert shown.count("🔴 *svc-") == MAX_SERVICE_LINES and "✅ *svc-" not in shown
    assert f"…and {300 - MAX_SERVICE_LINES} more" in shown
    await stack.cycle(set())
    (root,) = slack.roots()
    assert title(root) == f"✅ RESOLVED: {SLO_NAME} on 300 services"
    assert len(slack.replies(root)) == 2
    assert slack.replies(root)[1].text.splitlines()[-1] == (
        "All 300 alerts of this message have resolved."
    )


async def test_a_resolve_waits_for_its_firing_that_failed_to_post(
    stack: Stack, slack: FakeSlack
) -> None:
    """The firing message is refused for now (429, Retry-After 300 s): the next cycle's
    resolves of some of its services queue behind it, so Slack never sees the resolve
    first (a RESOLVED message, then a FIRING one left firing for ever)."""
    await stack.cycle(set())
    slack.fail_next("chat.postMessage", Failure(status=429, retry_after=300))
    await stack.cycle(set(SERVICES))
    assert slack.roots() == []
    await stack.cycle(set(SERVICES[:100]))  # 200 resolve while the firing waits to retry
    assert slack.roots() == []
    stack.now += 600  # past the retry's backoff
    await stack.deliver()
    (root,) = slack.roots()
    assert title(root) == f"🔴 FIRING: {SLO_NAME} on 300 services — 100 of 300 alerts still firing"
    (reply,) = slack.replies(root)
    assert reply.text.startswith("✅ Resolved:")


@pytest.fixture
async def interactions(stack: Stack, tmp_path: Path) -> AsyncIterator[TestServer]:
    """The real `/slack/interactions` endpoint over loopback, signing secret configured."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "prometheus: {url: 'http://127.0.0.1:9'}\n"
        "notifiers:\n"
        "  oncall:\n"
        "    type: slack\n"
        f"    token: {TOKEN}\n"
        f"    channel: {CHANNEL}\n"
        f"    signing_secret: {SIGNING_SECRET}\n"
        "    group_by: slo\n"
    )
    config = load_config(config_file)
    app = web.Application()
    app.add_routes(
        slack_routes(
            stack.manager,
            stack.store,
            lambda: config,
            lambda: {"oncall": stack.notifier},
            lambda: stack.now,
        )
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def click(server: TestServer, root: Message, action: str, now: float) -> None:
    body, headers = signed(block_actions(root, action), now)
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url("/slack/interactions"), data=body, headers=headers) as r,
    ):
        assert r.status == 200, await r.text()


async def test_silence_on_the_message_silences_exactly_its_services(
    stack: Stack, slack: FakeSlack, interactions: TestServer
) -> None:
    await stack.cycle(set())
    firing = set(SERVICES[:120])
    await stack.cycle(firing)
    (root,) = slack.roots()
    await click(interactions, root, "sentinel_silence_1h", stack.now)
    (silence,) = stack.store.silences()  # one, not 120
    assert silence.ends_at == pytest.approx(stack.now + 3600)
    await click(interactions, root, "sentinel_silence_1h", stack.now)  # a double click
    assert len(stack.store.silences()) == 2
    for _ in range(100):  # the message is updated after the answer
        if root.updates >= 2:
            break
        await asyncio.sleep(0.05)
    shown = text_of(root)
    assert shown.count("🔕") == 1 and "(120 of 120 alerts)" in shown

    def silenced(service: str) -> bool:
        return silence.matches(alert_labels(service, SLO_NAME, "page", {"service": service}))

    assert all(silenced(s) for s in firing)
    assert not silenced("svc-0120")  # fine when clicked: not silenced
    assert not silenced("svc-00001")  # a prefix of a silenced name is another service
    assert not silence.matches(alert_labels("svc-0001", "other-slo", "page", {}))
    # The next breaches: silenced ones send nothing, a new one is a new message.
    await stack.cycle(firing | {"svc-0200"})
    assert len(slack.roots()) == 2
    assert title(slack.roots()[1]) == f"🔴 FIRING: svc-0200 — {SLO_NAME}"


async def test_silence_keeps_the_instance_labels_the_message_shows(
    stack: Stack, slack: FakeSlack, interactions: TestServer
) -> None:
    """Burn tiers: a message of both tiers' alerts silences each tier of exactly the
    services it shows that tier firing for (as the per-alert silences of a one-service
    message do), not the other tier of the others."""
    services = SERVICES[:40]
    tiers = ("page-quick", "ticket-slow")
    await stack.cycle(set(), services, tiers=tiers)
    breaching = {f"{s}/ticket-slow" for s in services} | {f"{s}/page-quick" for s in services[:10]}
    await stack.cycle(breaching, services, tiers=tiers)
    (root,) = slack.roots()
    assert "`tier=ticket-slow`" in text_of(root) and "`tier=page-quick`" in text_of(root)
    await click(interactions, root, "sentinel_silence_4h", stack.now)
    assert len(stack.store.silences()) == 2  # one per tier, not 50

    def silenced(service: str, tier: str) -> bool:
        labels = {"service": service, "tier": tier}
        return any(
            s.matches(alert_labels(service, SLO_NAME, "page", labels))
            for s in stack.store.silences()
        )

    assert all(silenced(s, "ticket-slow") for s in services)
    assert all(silenced(s, "page-quick") for s in services[:10])
    assert not any(silenced(s, "page-quick") for s in services[10:])


@pytest.mark.parametrize("services", [SERVICES[:30], SERVICES[:1]])
async def test_silence_of_an_alert_with_a_label_named_slo_or_severity_silences_it(
    stack: Stack, slack: FakeSlack, interactions: TestServer, services: list[str]
) -> None:
    """`group_by: [service, slo]`: the alert's own SLO name and severity are what a
    silence sees under those names, so the button must not match on the labels' values
    (a silence that matches nothing answers 200 and silences nothing). Both the
    multi-service message and a one-service message's per-alert silences."""
    extra = {"slo": "checkout", "severity": "low"}
    await stack.cycle(set(), services, extra=extra)
    await stack.cycle(set(services), services, extra=extra)
    (root,) = slack.roots()
    await click(interactions, root, "sentinel_silence_1h", stack.now)
    labels = {"service": services[0], **extra}
    assert any(
        s.matches(alert_labels(services[0], SLO_NAME, "page", labels))
        for s in stack.store.silences()
    )
    # Silenced: the next reminder-free cycles stay quiet, a new breach of it sends nothing.
    await stack.cycle(set(), services, extra=extra)
    posted = len(slack.messages)
    await stack.cycle(set(services), services, extra=extra)
    assert len(slack.messages) == posted


async def test_acknowledge_on_the_message_acknowledges_every_incident_it_shows(
    stack: Stack, slack: FakeSlack, interactions: TestServer
) -> None:
    await stack.cycle(set())
    await stack.cycle(set(SERVICES))
    (root,) = slack.roots()
    await click(interactions, root, ACK_ACTION, stack.now)
    incidents = [i for _, i in stack.store.slack_message_incidents(root.channel, root.ts)]
    acked = stack.store.acknowledgements(incidents)
    assert len(acked) == 300 and {who for who, _ in acked.values()} == {"alice"}
    # The message says so once, with how many of its alerts (not 300 lines cut short).
    for _ in range(100):
        if root.updates:
            break
        await asyncio.sleep(0.05)
    shown = text_of(root)
    assert shown.count("✋") == 1 and "acknowledged by alice" in shown
    assert "(300 of 300 alerts)" in shown


async def test_rate_limited_posts_all_arrive_once_and_in_order(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """Slack holding posts to one a second per channel (429 + Retry-After): per-service
    messages of a small storm each arrive once, none lost to the 429s."""
    slack.post_interval = 1.0
    stack = await build(tmp_path, slack, "service")
    try:
        services = SERVICES[:3]
        await stack.cycle(set(), services)
        await stack.cycle(set(services), services)
        for _ in range(200):
            if len(slack.roots()) == 3:
                break
            await asyncio.sleep(0.05)
            await stack.deliver()
        assert sorted(title(m) for m in slack.roots()) == [
            f"🔴 FIRING: {s} — {SLO_NAME}" for s in services
        ]
        refused = [c for c in slack.calls if c[0] == "chat.postMessage"]
        assert len(refused) > 3  # some were answered 429 and sent again
    finally:
        await stack.notifier.close()
        stack.store.close()


async def test_a_message_posted_before_the_upgrade_still_names_its_service(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """A one-service message whose stored alerts predate payloads naming their service,
    resolved after the notifier was switched to `group_by: slo`: still that service's
    message (not "2 services", one of them the SLO's queue)."""
    before = await build(tmp_path, slack, "service")
    two = ("svc-a",)
    await before.cycle(set(), list(two), tiers=("page-quick", "ticket-slow"))
    await before.cycle(set(two), list(two), tiers=("page-quick", "ticket-slow"))
    (root,) = slack.roots()
    assert title(root) == "🔴 FIRING: svc-a — 2 SLOs"
    with before.store.db:  # what an older release stored: alerts without their service
        before.store.db.execute("UPDATE slack_messages SET alert = json_remove(alert, '$.service')")
    await before.notifier.close()
    after = await build(tmp_path, slack, "slo")
    after.now = before.now
    before.store.close()
    try:
        # ticket-slow resolves
        await after.cycle({"svc-a/page-quick"}, list(two), tiers=("page-quick", "ticket-slow"))
        (root,) = slack.roots()
        assert title(root) == "🔴 FIRING: svc-a — 1 of 2 SLOs still firing"
        (reply,) = slack.replies(root)
        assert "slo:" not in reply.text
    finally:
        await after.notifier.close()
        after.store.close()


@pytest.mark.parametrize("group_by", ["service", "slo"])
async def test_hostile_label_values_reach_slack_as_text_not_mentions_or_links(
    tmp_path: Path, slack: FakeSlack, group_by: str
) -> None:
    """A service label `<!channel>` (any value a scrape target can set) must not notify the
    whole channel, nor `<https://…|…>` become a link: Slack's mrkdwn takes `<…>` as a
    control sequence unless `&`, `<` and `>` are escaped. Messages, updates and replies."""
    hostile = ["<!channel>", "<https://evil.example|click here> & co"]
    stack = await build(tmp_path, slack, group_by)
    try:
        await stack.cycle(set(), hostile, extra={"region": "<!here>"})
        await stack.cycle(set(hostile), hostile, extra={"region": "<!here>"})
        await stack.cycle({hostile[0]}, hostile, extra={"region": "<!here>"})  # one resolves
        assert slack.roots() and any(slack.replies(m) for m in slack.roots())
        shown: list[str] = []
        for message in slack.messages:
            mrkdwn = [message.text] + [
                e["text"]
                for b in message.blocks
                for e in ([b["text"]] if "text" in b else b.get("elements", []))
                if isinstance(e, dict) and e.get("type") == "mrkdwn"
            ]
            for text in mrkdwn:
                assert "<!channel>" not in text and "<!here>" not in text, text
                assert "<https://evil" not in text, text
            shown.append(" ".join(mrkdwn))
        assert any("&lt;!channel&gt;" in text for text in shown)  # still said, as text
    finally:
        await stack.notifier.close()
        stack.store.close()
