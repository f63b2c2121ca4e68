"""The buttons of a Slack alert message: signed clicks posted to `/slack/interactions` of
the real assembly and API (real Prometheus with the scenario's latency breach, minutes
60-90; the protocol-faithful Slack server), acting through silences and the alert manager."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from sentinel.config import load_config
from sentinel.daemon.assembly import Assembly, build_daemon
from sentinel.notify.slack import SlackNotifier, _member
from sentinel.rules.loader import load_rules
from sentinel.web.alerts_api import create_silence
from sentinel.web.app import build_app
from sentinel.web.routes import api_routes
from support.fakeslack import (
    CHANNEL,
    SIGNING_SECRET,
    TOKEN,
    FakeSlack,
    Message,
    block_actions,
    signed,
)
from support.promserver import PrometheusServer
from support.scenario import at

RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot, service: chatbot-backend, env: prod}
slos:
  - name: chat-latency-p95
    sli:
      latency: {histogram: chatbot_response_latency_seconds, quantile: 0.95}
    threshold: 1.5s
    window: 5m
    alert: {for: 2m, keep_firing_for: 2m, repeat_interval: 5m}
"""


class Clock:
    def __init__(self) -> None:
        self.now = at(0)

    def __call__(self) -> float:
        return self.now


class Stack:
    def __init__(self, built: Assembly, clock: Clock, url: str, slack: FakeSlack) -> None:
        self.built, self.clock, self.url, self.slack = built, clock, url, slack

    async def replay(self, minutes: range) -> None:
        for minute in minutes:
            self.clock.now = at(minute)
            await self.built.daemon.run_group("chatbot", self.clock.now)
            await self.built.dispatcher.deliver_due()

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/slack/interactions", data=body, headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    async def click(self, action: str, user: str = "alice") -> tuple[int, Any]:
        return await self.post(*signed(block_actions(self.root(), action, user), self.clock.now))

    async def silences(self) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/api/v1/silences") as resp,
        ):
            data: list[dict[str, Any]] = await resp.json()
            return data

    def root(self) -> Message:
        (root,) = self.slack.roots()
        return root

    def reminders(self) -> list[Message]:
        return [m for m in self.slack.replies(self.root()) if m.text.startswith("🔁")]

    async def updated(self, text: str) -> str:
        """The root message's blocks once an update shows `text` (the update follows the
        answer to Slack, in the background)."""
        for _ in range(100):
            blocks = json.dumps(self.root().blocks, ensure_ascii=False)
            if text in blocks:
                return blocks
            await asyncio.sleep(0.05)
        raise AssertionError(f"message never showed {text!r}: {blocks}")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack().start()
    yield server
    server.stop()


@pytest.fixture
async def stack(
    tmp_path: Path, prometheus: PrometheusServer, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_SLACK_SIGNING_SECRET", SIGNING_SECRET)
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
                signing_secret: ${{TEST_SLACK_SIGNING_SECRET}}
                channel: {CHANNEL}
                base_url: {slack.url}/api/
                charts: false
            """
        )
    )
    config = load_config(tmp_path / "config.yaml")
    clock = Clock()
    built = await build_daemon(str(tmp_path / "config.yaml"), config, load_rules(config), clock)
    server = TestServer(build_app(built.daemon, api_routes(built)), host="127.0.0.1")
    await server.start_server()
    yield Stack(built, clock, str(server.make_url("")).rstrip("/"), slack)
    await server.close()
    await built.cleanup()
    await built.daemon.stop()


async def test_the_firing_message_carries_the_four_buttons(stack: Stack) -> None:
    await stack.replay(range(55, 66))
    (actions,) = [b for b in stack.root().blocks if b["type"] == "actions"]
    assert [e["text"]["text"] for e in actions["elements"]] == [
        "Silence 1h",
        "Silence 4h",
        "Acknowledge",
        "Open dashboard",
    ]
    assert actions["elements"][3]["url"].startswith("https://grafana.example.com/d/")


async def test_a_signed_silence_click_silences_the_alert_and_its_next_reminder(
    stack: Stack,
) -> None:
    await stack.replay(range(55, 66))  # fired at 63
    status, _ = await stack.click("sentinel_silence_1h", user="alice")
    assert status == 200
    (silence,) = await stack.silences()
    assert silence["author"] == "alice" and silence["status"] == "active"
    assert silence["ends_at"] == stack.clock.now + 3600
    assert {m["name"]: m["value"] for m in silence["matchers"]} == {
        "service": "chatbot-backend",
        "slo": "chat-latency-p95",
    }
    blocks = await stack.updated("silenced by alice until")
    assert "2026-11-20T14:05:00Z" in blocks  # 13:05 + 1h
    await stack.replay(range(66, 85))  # reminders would be due at 68, 73, 78, 83
    assert stack.reminders() == []


async def test_an_alert_silenced_while_it_fires_still_shows_its_resolve_where_it_paged(
    stack: Stack,
) -> None:
    """A silence stops the reminders, not the end of what on-call was shown: without the
    resolve the message said FIRING for ever (and the incident was closed everywhere
    else)."""
    await stack.replay(range(55, 66))  # fired at 63
    status, _ = await stack.click("sentinel_silence_4h", user="alice")
    assert status == 200
    await stack.updated("silenced by alice until")
    await stack.replay(range(66, 100))  # resolves inside the silence
    assert stack.reminders() == []
    assert "RESOLVED" in stack.root().text  # the message that paged, no new one
    # Who silenced it stays on the resolved message, as an acknowledgement does.
    assert "silenced by alice until" in json.dumps(stack.root().blocks)


async def test_a_silence_made_after_a_resolve_is_not_shown_on_the_resolved_alert(
    stack: Stack,
) -> None:
    """A message re-rendered later (a button on another alert of the group) must not
    claim a silence made after this alert resolved was on it."""
    await stack.replay(range(55, 100))  # fired at 63, resolved before 100
    assert "RESOLVED" in stack.root().text
    create_silence(
        stack.built.store,
        {"matchers": {"service": "chatbot-backend"}, "duration": "2h", "author": "carol"},
        stack.clock.now,
    )
    notifier = stack.built.dispatcher.notifiers["oncall"]
    assert isinstance(notifier, SlackNotifier)
    members = [
        m
        for m in map(
            _member,
            stack.built.store.slack_members("oncall", stack.root().channel, stack.root().ts),
        )
        if m
    ]
    assert members and {state for _, state in members} == {"resolved"}
    notes = notifier.notes("chatbot-backend", members, stack.clock.now + 60)
    assert not [n for n in notes if "silenced by carol" in n]


async def test_acknowledge_stops_the_reminders_and_the_message_says_who_and_when(
    stack: Stack,
) -> None:
    await stack.replay(range(55, 69))  # fired at 63; the first reminder at 68
    assert len(stack.reminders()) == 1
    status, _ = await stack.click("sentinel_ack", user="bob")
    assert status == 200
    await stack.updated("acknowledged by bob at 2026-11-20T13:08:00Z")
    await stack.replay(range(69, 89))  # still breaching: reminders would be due at 73..88
    assert len(stack.reminders()) == 1
    await stack.replay(range(89, 100))  # the resolve is still sent, the note kept
    assert "RESOLVED" in stack.root().text
    assert "acknowledged by bob" in json.dumps(stack.root().blocks)


async def test_open_dashboard_click_is_accepted_and_changes_nothing(stack: Stack) -> None:
    await stack.replay(range(55, 66))
    status, _ = await stack.click("sentinel_open_dashboard")
    assert status == 200
    assert await stack.silences() == [] and stack.root().updates == 0


async def test_without_a_signing_secret_messages_have_no_buttons_and_clicks_are_refused(
    stack: Stack,
) -> None:
    notifier = stack.built.dispatcher.notifiers["oncall"]
    config = stack.built.daemon.config.notifiers["oncall"]
    object.__setattr__(config, "signing_secret", None)
    notifier.buttons = False  # type: ignore[attr-defined]  # as built from that config
    await stack.replay(range(55, 66))
    assert not [b for b in stack.root().blocks if b["type"] == "actions"]
    status, _ = await stack.click("sentinel_ack")
    assert status == 404
    assert (
        stack.built.store.acknowledgements([i["id"] for i in stack.built.store.incidents()]) == {}
    )


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("signed with another secret", 401),
        ("replayed: timestamp 6 minutes old", 401),
        ("timestamp from the future", 401),
        ("timestamp not a number", 401),
        ("no signature", 401),
        ("body changed after signing", 401),
        ("unknown action", 400),
        ("not a block_actions payload", 400),
        ("a message Sentinel did not send", 400),
    ],
)
async def test_a_forged_replayed_or_unknown_click_is_refused_and_changes_nothing(
    stack: Stack, case: str, status: int
) -> None:
    await stack.replay(range(55, 66))
    now = stack.clock.now
    payload = block_actions(stack.root(), "sentinel_silence_4h")
    body, headers = signed(payload, now)
    if case == "signed with another secret":
        body, headers = signed(payload, now, secret="not-the-secret")
    elif case == "replayed: timestamp 6 minutes old":
        body, headers = signed(payload, now - 360)
    elif case == "timestamp from the future":
        body, headers = signed(payload, now + 360)
    elif case == "timestamp not a number":
        headers["X-Slack-Request-Timestamp"] = "1e9"
    elif case == "no signature":
        del headers["X-Slack-Signature"]
    elif case == "body changed after signing":
        body = body.replace(b"alice", b"mallory")
    elif case == "unknown action":
        body, headers = signed(block_actions(stack.root(), "sentinel_delete_everything"), now)
    elif case == "not a block_actions payload":
        body, headers = signed({**payload, "type": "view_submission"}, now)
    elif case == "a message Sentinel did not send":
        payload["container"]["message_ts"] = "1.000001"
        body, headers = signed(payload, now)
    got, answer = await stack.post(body, headers)
    assert (got, "error" in answer) == (status, True)
    await asyncio.sleep(0.2)  # an update, if one had been started, would have landed
    assert await stack.silences() == []
    assert (
        stack.built.store.acknowledgements([i["id"] for i in stack.built.store.incidents()]) == {}
    )
    assert stack.root().updates == 0
