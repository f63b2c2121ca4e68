"""Two `sentinel run` replicas, each on its own SQLite file (nothing shared between them),
both with the `alertmanager` notifier pointed at a two-member Alertmanager cluster (Debian's
`prometheus-alertmanager`, gossip on loopback) whose receiver posts to the fake Slack
server; a real Prometheus scrapes the simulator, whose latency fault the test switches on
and off. The fake Slack, the cluster's webhook recorder and the cluster outlive every
replica.

One replica is SIGKILLed mid-incident (after the FIRING Slack message, before the
recovery), then the other must carry the incident to its end: exactly one FIRING and one
RESOLVED Slack message, in that order, the resolve being the survivor's (the resolved
alert's `endsAt` is when the survivor saw it resolve, not when a re-send ran out). Two
moments for the recovery:

- `hold`: the incident outlasts the `endsAt` the dead replica last posted (four 1 s
  intervals ahead): the survivor's re-sends alone keep it open, no early RESOLVED.
- `recover`: the service recovers right after the kill (interval 5 s for the notifier,
  so the dead replica's last `endsAt` is 20 s ahead): the survivor's resolve ends the
  alert at once, not held back until that `endsAt` and not doubled when it passes.

The times from the kill to the RESOLVED Slack message are printed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from support.amcluster import BINARY, SLACK, AlertmanagerCluster, NotificationRecorder
from support.fakeslack import CHANNEL, TOKEN, FakeSlack
from support.livestack import live_stack
from support.procs import Proc, http, start_sentinel, wait_for
from support.promserver import find_binary, free_port

pytestmark = pytest.mark.e2e

RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot, service: chatbot-backend, env: prod}
interval: 1s
slos:
  - name: chat-latency-p95
    sli:
      latency: {histogram: chatbot_response_latency_seconds, quantile: 0.95}
    threshold: 1.5s
    window: 6s
    notify: [alertmanager]
    alert: {for: 0s, keep_firing_for: 0s}
"""

NOTIFIER = """\
notifiers:
  alertmanager:
    type: alertmanager
    urls: [{urls}]
    external_url: https://sentinel.example.com
    hold_at_least: 0s
"""

# The notifier's interval is the longest of `evaluation.interval` and the groups' (1 s):
# it sets how far ahead a firing alert's endsAt is (four intervals), not how often the
# rules are evaluated. `hold_at_least: 0s` lifts the 4m floor, so a test sees the dead
# replica's endsAt pass within seconds.
NOTIFIER_INTERVAL = {"hold": 1.0, "recover": 5.0}
ENDS_AHEAD = 4


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Stack:
    slack: FakeSlack
    recorder: NotificationRecorder
    cluster: AlertmanagerCluster
    sim: str
    configs: dict[str, Path]
    urls: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)

    def start(self, name: str) -> None:
        self.procs[name] = start_sentinel(self.configs[name])

    def ready(self, name: str) -> bool:
        return http("GET", f"{self.urls[name]}/health/ready")[0] == 200

    def alerts(self, name: str) -> dict[str, Any]:
        status, body, _ = http("GET", f"{self.urls[name]}/api/v1/alerts")
        assert status == 200, body
        return dict(body)

    def firing(self, name: str) -> bool:
        return [a["state"] for a in self.alerts(name)["alerts"]] == ["firing"]

    def slack_titles(self) -> list[str]:
        """Alertmanager's Slack posts as they reached Slack: `[FIRING:1`, `[RESOLVED`."""
        return [
            str(params["attachments"][0]["title"]).split("]")[0]
            for method, params in self.slack.calls
            if method == "chat.postMessage"
        ]

    def held(self) -> list[list[dict[str, Any]]]:
        """The active alerts each Alertmanager member holds."""
        return [self.cluster.alerts(m) for m in range(len(self.cluster.members))]


@pytest.fixture
def stack(
    tmp_path: Path, prometheus_binaries: None, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    if find_binary(BINARY) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{BINARY} missing: .ci/run must apt-get install prometheus-alertmanager")
        pytest.skip(f"Debian's {BINARY} is not installed")
    moment = request.node.callspec.params["moment"]
    slack, recorder = FakeSlack().start(), NotificationRecorder().start()
    workdir = tmp_path / "alertmanager"
    workdir.mkdir()
    to_slack = SLACK.format(
        api_url=f"{slack.url}/api/chat.postMessage", channel=CHANNEL, token=TOKEN
    )
    cluster = AlertmanagerCluster(workdir, f"{recorder.url}/am", slack=to_slack)
    try:
        cluster.start()
        extra = NOTIFIER.format(urls=", ".join(cluster.urls))
        with live_stack(tmp_path, RULES, extra) as live:
            base = live.config.read_text()
            lines = base.splitlines()
            state_line = next(line for line in lines if line.startswith("state:"))
            listen_line = next(line for line in lines if "listen" in line)
            eval_line = next(line for line in lines if line.startswith("evaluation:"))
            configs, urls = {}, {}
            for name in ("a", "b"):
                port = free_port()
                folder = tmp_path / name
                folder.mkdir()
                (folder / "rules").symlink_to(tmp_path / "rules")
                text = (
                    base.replace(state_line, f'state: {{path: "{folder / "state.db"}"}}')
                    .replace(listen_line, f'server: {{listen: "127.0.0.1:{port}"}}')
                    .replace(
                        eval_line,
                        f"evaluation: {{interval: {NOTIFIER_INTERVAL[moment]:g}s, "
                        "shutdown_timeout: 5s}",
                    )
                )
                (folder / "config.yaml").write_text(text)
                configs[name], urls[name] = folder / "config.yaml", f"http://127.0.0.1:{port}"
            made = Stack(slack, recorder, cluster, live.sim_url, configs, urls)
            try:
                yield made
            finally:
                for proc in made.procs.values():
                    proc.stop()
    finally:
        cluster.stop()
        recorder.stop()
        slack.stop()


@pytest.mark.parametrize("moment", ["hold", "recover"])
@pytest.mark.parametrize("victim", ["a", "b"])
def test_replica_killed_mid_incident_still_one_firing_and_one_resolved_slack_message(
    stack: Stack, victim: str, moment: str
) -> None:
    survivor = "b" if victim == "a" else "a"
    stack.start("a")
    stack.start("b")
    # Generous: the first cycle waits for Prometheus to scrape the simulator.
    wait_for(lambda: stack.ready("a") and stack.ready("b"), 60, "both replicas ready")

    http("POST", f"{stack.sim}/fault?mode=latency")
    wait_for(lambda: stack.slack_titles(), 60, "the FIRING Slack message")
    # Both replicas fire and re-send: the victim's last posts are in both members.
    wait_for(lambda: stack.firing("a") and stack.firing("b"), 20, "both replicas firing")
    time.sleep(2.0)

    stack.procs[victim].process.send_signal(signal.SIGKILL)
    stack.procs[victim].process.wait()
    killed, killed_wall = time.monotonic(), time.time()
    # The latest endsAt any replica had posted (the members merge posts by labels and
    # keep the latest endsAt): the dead replica's last one is at most this.
    [alert] = stack.cluster.alerts(0)
    posted_until = parse_time(alert["endsAt"])
    interval = NOTIFIER_INTERVAL[moment]
    assert posted_until > killed_wall + (ENDS_AHEAD - 1) * interval - 2.0, alert

    if moment == "hold":
        # Past every endsAt the dead replica posted: the survivor's re-sends alone keep
        # the alert open in both members, and nobody was told it resolved.
        time.sleep(max(0.0, posted_until - time.time()) + 2.0)
        held = stack.held()
        assert [[a["status"]["state"] for a in member] for member in held] == [
            ["active"],
            ["active"],
        ], held
        assert all(parse_time(m[0]["endsAt"]) > time.time() for m in held), held
        assert stack.slack_titles() == ["[FIRING:1"]
        assert stack.recorder.with_status("resolved") == []

    recovered = time.monotonic()
    http("POST", f"{stack.sim}/fault?mode=none")
    wait_for(lambda: "[RESOLVED" in stack.slack_titles(), 60, "the RESOLVED Slack message")
    delivered, delivered_wall = time.monotonic(), time.time()
    [incident] = stack.alerts(survivor)["incidents"]
    resolved_at = incident["resolved_at"]
    assert resolved_at is not None, incident
    print(
        f"\nAlertmanager HA ({moment}, {victim} killed): RESOLVED in Slack "
        f"{delivered - killed:.1f}s after the kill, {delivered - recovered:.1f}s after "
        f"the recovery, {delivered_wall - resolved_at:.1f}s after the survivor resolved"
    )
    if moment == "recover":
        # Not held back until the dead replica's endsAt.
        assert delivered_wall < posted_until, (delivered_wall, posted_until)

    # Long enough for a double to show: past the dead replica's endsAt, then a group
    # interval (5 s) and the second member's peer-timeout wait (3 s).
    time.sleep(max(0.0, posted_until - time.time()) + 8.0)
    assert stack.slack_titles() == ["[FIRING:1", "[RESOLVED"]
    [firing] = stack.recorder.with_status("firing")
    [resolved] = stack.recorder.with_status("resolved")
    assert [a["labels"]["slo"] for a in firing["alerts"]] == ["chat-latency-p95"]
    # The survivor's resolve, sent with the time it resolved (whole seconds), not an
    # alert that ran out at the endsAt of a last re-send.
    ends = parse_time(resolved["alerts"][0]["endsAt"])
    assert 0.0 <= resolved_at - ends < 1.0, (resolved_at, resolved["alerts"][0])
    assert stack.procs[survivor].process.poll() is None
