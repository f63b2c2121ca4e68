"""Two `sentinel run` replicas on one PostgreSQL (Debian's, on loopback) with the Slack
and rollback-webhook notifiers, a real Prometheus scraping the simulator, the fake Slack
and the webhook receiver in this process (they outlive every replica).

- 20 SIGKILLs of the current leader (each restarted) during an incident with reminders,
  then the resolve: every notification committed reaches Slack or the receiver exactly
  once, one incident only (no new leader pages again), and leadership moves within
  2 x the evaluation interval (the failover times are printed).
- PostgreSQL restarted mid-incident: no replica crashes, both answer 503 on
  /health/ready while it is down, recover, and the resolve that happened meanwhile is
  sent once.
- The gate answers the same from either replica.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.fakeslack import CHANNEL, TOKEN, FakeSlack
from support.livestack import RULES_HEADER, live_stack
from support.pgserver import PostgresServer, require_postgres
from support.procs import Proc, http, start_sentinel, wait_for
from support.promserver import free_port
from support.webhookrx import SECRET, WebhookReceiver

pytestmark = pytest.mark.e2e

INTERVAL = 1.0
RULES = (
    RULES_HEADER
    + "    notify: [oncall, rollback]\n"
    + "    alert: {for: 0s, keep_firing_for: 2s, repeat_interval: 5s, rollback: true}\n"
)
NOTIFIERS = """\
notifiers:
  oncall:
    type: slack
    token: ${{SENTINEL_TEST_SLACK_TOKEN}}
    channel: {channel}
    base_url: {slack}/api/
    charts: false
  rollback:
    type: webhook
    url: {hooks}/hooks/rollback
    secret: ${{SENTINEL_TEST_WEBHOOK_SECRET}}
    cooldown: 30m
"""


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    require_postgres()
    server = PostgresServer().start()
    yield server
    server.close()


@dataclass
class Cluster:
    """Two replicas (a, b): same config but the listen port, one database."""

    slack: FakeSlack
    hooks: WebhookReceiver
    sim: str
    dsn: str
    configs: dict[str, Path]
    urls: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)

    def start(self, name: str, ready: bool = True) -> Proc:
        env = {
            "SENTINEL_TEST_SLACK_TOKEN": TOKEN,
            "SENTINEL_TEST_WEBHOOK_SECRET": SECRET,
            "SENTINEL_DB": self.dsn,
        }
        proc = start_sentinel(self.configs[name], env)
        self.procs[name] = proc
        if ready:
            wait_for(lambda: self.ready(name), 60, f"replica {name} ready")
        return proc

    def ready(self, name: str) -> bool:
        return http("GET", f"{self.urls[name]}/health/ready")[0] == 200

    def leader_of(self, name: str) -> dict[str, Any]:
        status, body, _ = http("GET", f"{self.urls[name]}/health/detailed")
        assert status == 200, body
        leader: dict[str, Any] = body["leader"]
        return leader

    def leader(self) -> str:
        def find() -> str | None:
            leads = [n for n in self.procs if self._alive(n) and self.leader_of(n)["is_leader"]]
            return leads[0] if len(leads) == 1 else None

        return wait_for(find, 20, "exactly one leader")

    def _alive(self, name: str) -> bool:
        return self.procs[name].process.poll() is None

    def db(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql.encode()).fetchall()


@pytest.fixture
def cluster(tmp_path: Path, pg: PostgresServer, prometheus_binaries: None) -> Iterator[Cluster]:
    slack, hooks = FakeSlack().start(), WebhookReceiver().start()
    dsn = pg.fresh_database()
    extra = NOTIFIERS.format(channel=CHANNEL, slack=slack.url, hooks=hooks.url)
    try:
        with live_stack(tmp_path, RULES, extra) as live:
            base = live.config.read_text()
            state_line = next(line for line in base.splitlines() if line.startswith("state:"))
            listen_line = next(line for line in base.splitlines() if "listen" in line)
            configs, urls = {}, {}
            for name in ("a", "b"):
                port = free_port()
                folder = tmp_path / name
                folder.mkdir()
                (folder / "rules").symlink_to(tmp_path / "rules")
                text = base.replace(
                    state_line, 'state: {backend: postgres, dsn: "${SENTINEL_DB}"}'
                ).replace(listen_line, f'server: {{listen: "127.0.0.1:{port}"}}')
                (folder / "config.yaml").write_text(text)
                configs[name], urls[name] = folder / "config.yaml", f"http://127.0.0.1:{port}"
            made = Cluster(slack, hooks, live.sim_url, dsn, configs, urls)
            try:
                yield made
            finally:
                for proc in made.procs.values():
                    proc.stop()
    finally:
        slack.stop()
        hooks.stop()


def keys_posted(slack: FakeSlack) -> list[str]:
    return [
        str(m.metadata["event_payload"]["idempotency_key"])
        for m in slack.messages
        if m.metadata and "event_payload" in m.metadata
    ]


def assert_each_notification_sent_once(cluster: Cluster) -> None:
    """Every outbox entry was delivered, none died, and each reached its receiver once."""
    rows = cluster.db(
        "SELECT idempotency_key, notifier, kind, delivered_at IS NOT NULL, dead_at IS NOT NULL "
        "FROM outbox ORDER BY id"
    )
    assert [r for r in rows if not r[3] or r[4]] == [], "undelivered or dead entries"
    slack_keys = [r[0] for r in rows if r[1] == "oncall"]
    kinds = [r[2] for r in rows if r[1] == "oncall"]
    assert kinds.count("firing") == 1 and kinds.count("resolved") == 1, kinds
    posted = keys_posted(cluster.slack)
    assert sorted(posted) == sorted(slack_keys), "Slack posts != committed notifications"
    hook_ids = [d.headers.get("Idempotency-Key") for d in cluster.hooks.deliveries]
    incidents = [r[0] for r in cluster.db("SELECT id FROM incidents")]
    assert hook_ids == incidents, "one rollback per incident"


def test_twenty_leader_kills_during_an_incident_lose_and_duplicate_nothing(
    cluster: Cluster,
) -> None:
    cluster.start("a")
    cluster.start("b")
    http("POST", f"{cluster.sim}/fault?mode=latency")
    wait_for(lambda: len(cluster.slack.roots()) == 1, 60, "the FIRING message")
    wait_for(lambda: len(cluster.hooks.deliveries) == 1, 30, "the rollback webhook")
    failovers: list[float] = []
    killing = time.monotonic()
    for _ in range(20):
        victim = cluster.leader()
        survivor = "b" if victim == "a" else "a"
        cluster.procs[victim].process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        cluster.procs[victim].process.wait()
        wait_for(lambda s=survivor: cluster.leader_of(s)["is_leader"], 30, "a new leader")  # type: ignore[misc]
        failovers.append(time.monotonic() - killed)
        assert cluster.leader_of(survivor)["holder"] is not None
        cluster.start(victim)
    # Reminders kept coming through the failovers, from the same thread.
    root = cluster.slack.roots()[0]
    reminders = len(cluster.slack.replies(root))
    elapsed = time.monotonic() - killing
    http("POST", f"{cluster.sim}/fault?mode=none")
    wait_for(
        lambda: cluster.db("SELECT COUNT(*) FROM incidents WHERE resolved_at IS NOT NULL")[0][0],
        60,
        "the resolve",
    )
    wait_for(
        lambda: (
            cluster.db(
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL"
            )[0][0]
            == 0
        ),
        30,
        "the outbox to drain",
    )
    p50, worst = statistics.median(failovers), max(failovers)
    print(
        f"\nHA failover over {len(failovers)} leader kills (interval {INTERVAL:g}s): "
        f"p50 {p50:.2f}s, max {worst:.2f}s; {reminders} reminders during the incident"
    )
    assert len(cluster.slack.roots()) == 1, "one incident, one message"
    assert cluster.db("SELECT COUNT(*) FROM incidents")[0][0] == 1, "no new leader paged again"
    # One reminder per repeat_interval (5 s) through the kills, less one for the phase;
    # at least two whatever the machine's speed (20 kills took 9-25 s).
    assert reminders >= max(2, int(elapsed // 5.0) - 1), (reminders, elapsed)
    assert_each_notification_sent_once(cluster)
    assert worst <= 2 * INTERVAL, f"leadership took {worst:.2f}s to move"


def test_postgres_down_holds_the_alert_changes_then_recovers_and_loses_nothing(
    cluster: Cluster, pg: PostgresServer
) -> None:
    cluster.start("a")
    cluster.start("b")
    last = cluster.leader()
    # The stack has just started: until Prometheus holds a window of the simulator's
    # traffic the gate is pending for lack of data, whatever the state store does.
    gate = f"{cluster.urls['b']}/api/v1/gate?service=chatbot-backend"
    wait_for(lambda: http("GET", gate)[0] == 200, 30, "the gate passing with PostgreSQL up")
    pg.stop()
    down = time.monotonic()
    wait_for(
        lambda: not cluster.ready("a") and not cluster.ready("b"),
        20,
        "503 while PostgreSQL is down",
    )
    unready_after = time.monotonic() - down
    status, body, _ = http("GET", f"{cluster.urls['a']}/health/ready")
    assert status == 503 and any("state store" in r for r in body["reasons"]), body
    for name in ("a", "b"):
        status, detailed, _ = http("GET", f"{cluster.urls[name]}/health/detailed")
        assert status == 200, detailed
        assert detailed["checks"]["state_store"]["status"] == "unhealthy"
        assert "postgresql://127.0.0.1" in detailed["checks"]["state_store"]["path"]
        wait_for(lambda n=name: not cluster.leader_of(n)["is_leader"], 10, "no leader")  # type: ignore[misc]
    # What needs the database says so; the gate answers from memory.
    status, body, _ = http("GET", f"{cluster.urls['b']}/api/v1/alerts")
    assert status == 503 and "state store unavailable" in body["error"], body
    assert http("GET", gate)[0] == 200
    # The incident begins while PostgreSQL is down: the replica that led last steps on
    # and holds the FIRING (nothing can be sent: it is not committed).
    http("POST", f"{cluster.sim}/fault?mode=latency")
    wait_for(lambda: "alert firing" in cluster.procs[last].log(), 30, "the held FIRING")
    fired = time.time()
    time.sleep(2)
    assert cluster.slack.roots() == []
    pg.start()
    up, up_wall = time.monotonic(), time.time()
    wait_for(lambda: cluster.ready("a") and cluster.ready("b"), 30, "readiness after the restart")
    recovered_after = time.monotonic() - up
    wait_for(lambda: len(cluster.slack.roots()) == 1, 30, "the FIRING message")
    # Committed by the last leader with the time it happened, not re-detected later.
    (started,) = cluster.db("SELECT started_at FROM incidents")[0]
    assert started < up_wall and abs(started - fired) < 5, (started, fired, up_wall)
    http("POST", f"{cluster.sim}/fault?mode=none")
    wait_for(
        lambda: cluster.db("SELECT COUNT(*) FROM incidents WHERE resolved_at IS NOT NULL")[0][0],
        60,
        "the resolve",
    )
    wait_for(
        lambda: (
            cluster.db(
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL"
            )[0][0]
            == 0
        ),
        30,
        "the outbox to drain",
    )
    print(
        f"\nPostgreSQL restart: unready {unready_after:.1f}s after it stopped, ready again "
        f"{recovered_after:.1f}s after it started"
    )
    assert all(p.process.poll() is None for p in cluster.procs.values()), "a replica crashed"
    assert len(cluster.slack.roots()) == 1
    assert_each_notification_sent_once(cluster)


def test_the_gate_answers_the_same_from_either_replica(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")

    def verdicts() -> tuple[int, int]:
        a = http("GET", f"{cluster.urls['a']}/api/v1/gate?service=chatbot-backend")
        b = http("GET", f"{cluster.urls['b']}/api/v1/gate?service=chatbot-backend")
        return a[0], b[0]

    wait_for(lambda: verdicts() == (200, 200), 30, "both replicas to pass the gate")
    http("POST", f"{cluster.sim}/fault?mode=latency")
    wait_for(lambda: len(cluster.slack.roots()) == 1, 60, "the FIRING message")
    wait_for(lambda: verdicts() == (412, 412), 10, "both replicas to fail the gate")
    a = http("GET", f"{cluster.urls['a']}/api/v1/gate?service=chatbot-backend")[1]
    b = http("GET", f"{cluster.urls['b']}/api/v1/gate?service=chatbot-backend")[1]
    assert a["decision"] == b["decision"] == "fail"
    assert a.get("firing_alerts") == b.get("firing_alerts")
