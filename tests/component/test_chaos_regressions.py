"""Defects the chaos run (reliability/chaos.py) found, each pinned against the real
protocol-faithful servers over loopback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.alerting.store import OutboxEntry, Store
from sentinel.config import SlackNotifierConfig
from sentinel.errors import NotifyRetryable
from sentinel.notify.slack import SlackNotifier
from support.fakeslack import CHANNEL, TOKEN, Failure, FakeSlack


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    server = FakeSlack().start()
    yield server
    server.stop()


def firing_entry() -> OutboxEntry:
    alert: dict[str, Any] = {
        "incident_id": "0123456789abcdef",
        "repeat": 0,
        "slo": "http-5xx-ratio",
        "description": "",
        "severity": "page",
        "sli_kind": "ratio",
        "good_when": "below",
        "value": 0.2,
        "threshold": 0.01,
        "objective": 0.99,
        "window": 60,
        "window_text": "1m",
        "events": 300,
        "labels": {},
        "env": "prod",
        "reason": "20 % > 1 %",
        "query": "sum(...)",
        "runbook_url": None,
        "dashboard_url": None,
        "started_at": 1795176000.0,
        "started_at_text": "2026-11-20T12:00:00Z",
        "resolved_at_text": None,
    }
    return OutboxEntry(
        1,
        "oncall:firing:abc",
        "oncall",
        "firing",
        "chatbot-backend",
        {"alerts": [alert], "env": "prod"},
        1795176000.0,
        0,
        None,
        None,
    )


async def test_slack_5xx_with_a_plain_text_body_is_a_retryable_http_500_not_a_crash(
    tmp_path: Path, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    # A proxy in front of Slack answers 500 with a text page, also to slack-sdk's two
    # retries. It used to raise AttributeError inside the error translation (the body is
    # a str, not a dict): logged as a notifier bug with a traceback, reported as
    # "internal error" in /health/detailed instead of Slack's HTTP status.
    config = SlackNotifierConfig(
        type="slack", token=TOKEN, channel=CHANNEL, base_url=f"{slack.url}/api/", charts=False
    )
    store = Store(tmp_path / "state.db")
    notifier = SlackNotifier("oncall", config, store)
    slack.fail_next("chat.postMessage", *[Failure(status=500)] * 3)
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(NotifyRetryable) as raised:
            await notifier.deliver(firing_entry(), uncertain=False)
        assert raised.value.detail == "Slack API error unknown_error (HTTP 500)"
        assert notifier.health.last_error == "Slack API error unknown_error (HTTP 500)"
        # The next attempt goes through: one message.
        await notifier.deliver(firing_entry(), uncertain=True)
        assert len(slack.roots()) == 1
    finally:
        await notifier.close()
        store.close()
