"""`kill -9` between a state change and its delivery loses nothing and sends nothing twice.

Real `sentinel run` processes, a real Prometheus scraping the simulator, and the fake
Slack server in this process (so it survives the daemon's death)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fakeslack import CHANNEL, TOKEN, Failure, FakeSlack
from support.livestack import RULES_HEADER, live_stack
from support.procs import Proc, http, start_sentinel, wait_for

pytestmark = pytest.mark.e2e

RULES = RULES_HEADER + "    notify: [oncall]\n"

SLACK_NOTIFIER = """\
notifiers:
  oncall:
    type: slack
    token: ${{SENTINEL_TEST_SLACK_TOKEN}}
    channel: {channel}
    base_url: {url}/api/
"""


@pytest.fixture
def env(tmp_path: Path, prometheus_binaries: None) -> Iterator[dict[str, object]]:
    slack = FakeSlack().start()
    procs: list[Proc] = []
    try:
        with live_stack(
            tmp_path, RULES, SLACK_NOTIFIER.format(channel=CHANNEL, url=slack.url)
        ) as live:
            try:
                yield {
                    "slack": slack,
                    "sim": live.sim_url,
                    "config": live.config,
                    "procs": procs,
                    "url": live.url,
                }
            finally:
                for proc in procs:
                    proc.stop()
    finally:
        slack.stop()


def start(env: dict[str, object]) -> Proc:
    proc = start_sentinel(Path(str(env["config"])), {"SENTINEL_TEST_SLACK_TOKEN": TOKEN})
    procs = env["procs"]
    assert isinstance(procs, list)
    procs.append(proc)
    url = str(env["url"])
    # Generous: the first cycle waits for Prometheus to scrape the simulator, slow on a
    # loaded 2-core CI machine.
    wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 60, "readiness")
    return proc


def chat_posts(slack: FakeSlack) -> list[dict[str, object]]:
    return [p for m, p in slack.calls if m == "chat.postMessage" and "chat-latency" in str(p)]


def test_kill_after_state_change_before_delivery(env: dict[str, object]) -> None:
    slack = env["slack"]
    assert isinstance(slack, FakeSlack)
    # Slack is down (500s) when the incident opens: the notification waits in the outbox.
    slack.fail_next("chat.postMessage", *[Failure(500)] * 200)
    first = start(env)
    http("POST", f"{env['sim']}/fault?mode=latency")
    wait_for(lambda: len(chat_posts(slack)) >= 1, 40, "a delivery attempt")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    assert slack.messages == []

    slack.failures.clear()  # Slack is back
    second = start(env)
    wait_for(lambda: len(slack.roots()) == 1, 30, "the notification after restart")
    time.sleep(3)
    assert len(slack.roots()) == 1
    assert "FIRING" in slack.roots()[0].text
    # The restart did not re-page: the alert state survived in SQLite.
    _, alerts, _ = http("GET", f"{env['url']}/api/v1/alerts")
    assert [a["state"] for a in alerts["alerts"]] == ["firing"]
    assert len(alerts["incidents"]) == 1
    # No secret in the logs or health output.
    _, detailed, _ = http("GET", f"{env['url']}/health/detailed")
    assert TOKEN not in json.dumps(detailed)
    assert TOKEN not in first.log() and TOKEN not in second.log()
    assert detailed["checks"]["notifier:oncall"]["status"] == "healthy"


def test_kill_while_slack_holds_the_request_sends_once(env: dict[str, object]) -> None:
    slack = env["slack"]
    assert isinstance(slack, FakeSlack)
    # Slack records the message but answers only after 30 s: Sentinel cannot know it landed.
    slack.fail_next("chat.postMessage", Failure(delay=30))
    first = start(env)
    http("POST", f"{env['sim']}/fault?mode=latency")
    wait_for(lambda: len(slack.roots()) == 1, 40, "the message to reach Slack")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()

    start(env)
    wait_for(lambda: any(m == "conversations.history" for m, _ in slack.calls), 20, "dedupe lookup")
    time.sleep(3)
    assert len(slack.roots()) == 1
    assert len(chat_posts(slack)) == 1
