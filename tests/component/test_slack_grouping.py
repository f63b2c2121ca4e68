"""Alerts of one service that fire together share one Slack message; that message must
show the group's true state while its alerts resolve one by one. Real alert manager,
store, outbox and Slack notifier against the protocol-faithful Slack server."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from sentinel.alerting.manager import AlertManager
from sentinel.alerting.store import Store
from sentinel.config import SlackNotifierConfig
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.notify.dispatcher import Dispatcher
from sentinel.notify.slack import SlackNotifier
from sentinel.rules.model import SLO, LatencySLI, RuleGroup, Selector
from sentinel.selfmetrics import SelfMetrics
from support.fakeslack import CHANNEL, TOKEN, FakeSlack, Message

SERVICE = "chatbot-backend"
SLOS = ("chat-latency-p95", "http-latency-p95")


@dataclass
class Stack:
    manager: AlertManager
    dispatcher: Dispatcher
    store: Store
    group: RuleGroup
    now: float

    async def cycle(self, breaching: set[str]) -> None:
        """One evaluation a minute later: the named SLOs breach, the others are fine."""
        self.now += 60
        results = [
            SLOResult(
                SERVICE,
                name,
                Status.BREACH if name in breaching else Status.OK,
                2.4 if name in breaching else 0.9,
                1.5,
                None,
                300,
                self.now,
                kind="latency",
            )
            for name in SLOS
        ]
        self.manager.observe_sync(self.group, results, self.now)
        await self.dispatcher.deliver_due()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack().start()
    yield server
    server.stop()


@pytest.fixture
async def stack(tmp_path: Path, slack: FakeSlack) -> AsyncIterator[Stack]:
    store = Store(tmp_path / "state.db")
    config = SlackNotifierConfig(
        type="slack", token=SecretStr(TOKEN), channel=CHANNEL, base_url=f"{slack.url}/api/"
    )
    notifier = SlackNotifier("oncall", config, store)
    now = float(int(time.time()))
    stack = Stack(
        AlertManager(store, {"oncall": notifier}, {}),
        Dispatcher(store, {"oncall": notifier}, SelfMetrics(), lambda: stack.now),
        store,
        RuleGroup(
            "chatbot",
            "chatbot.yaml",
            SERVICE,
            60,
            tuple(SLO(SERVICE, name, LatencySLI(Selector("h"), 0.95), 1.5, 300) for name in SLOS),
        ),
        now,
    )
    yield stack
    await notifier.close()
    store.close()


def sections(message: Message) -> list[str]:
    return [b["text"]["text"] for b in message.blocks if b["type"] == "section"]


async def test_shared_message_stays_firing_until_the_last_of_its_alerts_resolves(
    stack: Stack, slack: FakeSlack
) -> None:
    await stack.cycle(set())
    await stack.cycle(set(SLOS))
    (root,) = slack.roots()
    assert root.text.startswith(f"🔴 FIRING: {SERVICE} — 2 SLOs")

    # http-latency-p95 resolves; chat-latency-p95 still pages.
    await stack.cycle({"chat-latency-p95"})
    (root,) = slack.roots()
    assert root.updates == 1
    assert root.text.startswith(f"🔴 FIRING: {SERVICE} — 1 of 2 SLOs still firing")
    assert "RESOLVED" not in root.text
    header = json.dumps(root.blocks[:2], ensure_ascii=False)
    assert "*Still firing:* chat-latency-p95" in header
    assert "*Resolved:* http-latency-p95" in header
    chat, http = sections(root)
    assert chat.startswith("🔴 *Still firing* · *chat-latency-p95*")
    assert http.startswith("✅ *Resolved* · *http-latency-p95*") and "Resolved at:" in http
    (reply,) = slack.replies(root)
    assert reply.text.splitlines() == [
        "✅ Resolved: http-latency-p95 = 0.9 s <= 1.5 s over 5m",
        "🔴 Still firing (1 of 2): chat-latency-p95",
    ]

    # Nothing changes while chat-latency-p95 keeps breaching.
    await stack.cycle({"chat-latency-p95"})
    assert root.updates == 1 and len(slack.replies(root)) == 1

    # The last one resolves: now the message is RESOLVED.
    await stack.cycle(set())
    (root,) = slack.roots()
    assert root.updates == 2
    assert root.text.startswith(f"✅ RESOLVED: {SERVICE} — 2 SLOs")
    assert all("Resolved at:" in text for text in sections(root))
    assert slack.replies(root)[-1].text.splitlines() == [
        "✅ Resolved: chat-latency-p95 = 0.9 s <= 1.5 s over 5m",
        "All 2 alerts of this message have resolved.",
    ]
    assert len(slack.roots()) == 1  # never a second top-level message
