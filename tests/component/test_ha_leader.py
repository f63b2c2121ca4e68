"""Leader election on a real PostgreSQL (sentinel/alerting/leader.py), the follower and
new-leader paths of the alert hook, and the `state` config: one replica leads, losing
its connection loses the lead, the next replica takes over with the committed alert
states, and the DSN never shows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.alerting.leader import LeaderCycle, PostgresLeader, SoleLeader
from sentinel.alerting.manager import AlertManager
from sentinel.alerting.state import Alert, AlertState
from sentinel.config import load_config
from sentinel.errors import ConfigError
from sentinel.redact import redact_text
from support.pgserver import PostgresServer, require_postgres
from support.webhookrx import SECRET, WebhookReceiver

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    require_postgres()
    server = PostgresServer().start()
    yield server
    server.close()


def _store(dsn: str, replica: str) -> Any:
    from sentinel.alerting.pgstore import PostgresStore

    return PostgresStore(dsn, lambda: NOW, replica)


def _terminate(dsn: str, pid: int) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))  # waits for it


async def test_one_replica_leads_and_the_next_takes_over_when_it_goes(pg: PostgresServer) -> None:
    dsn = pg.fresh_database()
    _store(dsn, "setup").close()  # the schema
    a, b = PostgresLeader(dsn, "host-a:1", 0.5), PostgresLeader(dsn, "host-b:2", 0.5)
    changes: list[tuple[str, bool, bool]] = []
    a.on_change.append(lambda lead, cont: changes.append(("a", lead, cont)))
    b.on_change.append(lambda lead, cont: changes.append(("b", lead, cont)))
    await a.check()
    await b.check()
    assert (a.is_leader, b.is_leader) == (True, False)
    assert b.status()["holder"] == "host-a:1" and b.status()["since"] is not None
    assert a.fence() is not None and b.fence() is None
    # The leader's connection dies (a network cut, PostgreSQL restarted): it notices at
    # its next check and the other replica takes over.
    _terminate(dsn, a.fence() or 0)
    await a.check()
    assert not a.is_leader and a.status()["last_error"]
    await _until_leads(b)
    assert b.status()["holder"] == "host-b:2"
    await a.check()
    assert not a.is_leader and a.status()["holder"] == "host-b:2"
    # b stops: a leads again, but not continuously (b led in between).
    await b.stop()
    await _until_leads(a)
    assert changes == [
        ("a", True, False),
        ("a", False, False),
        ("b", True, False),
        ("a", True, False),
    ]
    # Only a's own interruption, nobody in between: continuous (it keeps what it holds).
    _terminate(dsn, a.fence() or 0)
    await a.check()
    await _until_leads(a)
    assert changes[-2:] == [("a", False, False), ("a", True, True)]
    await a.stop()


async def _until_leads(leader: PostgresLeader) -> None:
    """Checks until it leads: a closed or terminated session's locks are released by its
    server process as it exits, a moment later."""
    for _ in range(50):
        await leader.check()
        if leader.is_leader:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{leader.replica} never led: {leader.status()}")


class Follows:
    """A replica's leadership, switched by the test: a follower until told otherwise."""

    replica = "b"
    is_leader = False
    acting = False

    def status(self) -> dict[str, Any]:
        return {}

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _Route:
    kind = "slack"
    min_severity = "info"
    group_by = "service"


async def test_a_follower_adopts_the_leaders_states_and_a_new_leader_reloads_them(
    pg: PostgresServer,
) -> None:
    dsn = pg.fresh_database()
    leader_store, follower_store = _store(dsn, "a"), _store(dsn, "b")
    firing = Alert("svc/lat", AlertState.FIRING, NOW, incident_id="inc1", fired_at=NOW, repeats=3)
    leader_store.commit_cycle([firing], [], [], [], NOW)
    follower = AlertManager(follower_store, {"oncall": _Route()}, {})
    stale = Alert("svc/lat", AlertState.PENDING, NOW - 60)
    follower.alerts = {"svc/lat": stale}
    role = Follows()
    cycle = LeaderCycle(role, follower, follower_store)
    await cycle.observe(_group(), [], NOW + 1)
    assert follower.alerts == {"svc/lat": firing}
    assert follower._firing == {"svc": {"svc/lat"}}  # the gate sees it firing
    # It becomes the leader: the states it steps from are the committed ones.
    follower.alerts = {"svc/lat": stale}
    role.is_leader = role.acting = True
    cycle.leadership_changed(True, False)
    await cycle.observe(_group(), [], NOW + 2)
    assert follower.alerts["svc/lat"].incident_id == "inc1"
    assert follower.alerts["svc/lat"].repeats == 3
    leader_store.close()
    follower_store.close()


async def test_a_new_leader_resolves_what_a_follower_reload_removed(pg: PostgresServer) -> None:
    """A follower's reload removes an SLO whose alert fires (only the leader resolves such
    alerts, and the leader stopped before it did): when the follower takes the lead, its
    first step resolves it, where the firing went. Before, the follower still held the SLO
    (`slo_of`), so nothing resolved it and the gate counted it for ever."""
    from sentinel.alerting.store import NewNotification
    from sentinel.rules.model import SLO, LatencySLI, Selector

    dsn = pg.fresh_database()
    leader_store, follower_store = _store(dsn, "a"), _store(dsn, "b")
    firing = Alert("svc/lat", AlertState.FIRING, NOW, incident_id="inc1", fired_at=NOW)
    incident = {
        "id": "inc1", "alert_key": "svc/lat", "service": "svc", "slo": "lat",
        "severity": "page", "labels": "{}", "started_at": NOW, "last_value": 2.5,
        "threshold": 2.0,
    }  # fmt: skip
    sent = {"incident_id": "inc1", "slo": "lat", "labels": {}, "severity": "page"}
    note = NewNotification("oncall:firing:1", "oncall", "firing", "svc", {"alerts": [sent]}, NOW)
    leader_store.commit_cycle([firing], [incident], [], [note], NOW)
    follower = AlertManager(follower_store, {"oncall": _Route()}, {})
    lat = SLO(
        service="svc", name="lat", sli=LatencySLI(Selector("h"), 0.95), threshold=2.0, window=300
    )
    follower.slo_of["svc/lat"] = lat  # what adopting the leader's results records
    role = Follows()
    cycle = LeaderCycle(role, follower, follower_store, slos=lambda: [])  # `lat` removed
    await cycle.observe(_group(), [], NOW + 1)
    assert follower.alerts["svc/lat"].state is AlertState.FIRING
    role.is_leader = role.acting = True
    cycle.leadership_changed(True, False)
    await cycle.observe(_group(), [], NOW + 2)
    assert follower.alerts["svc/lat"].state is AlertState.RESOLVED
    assert follower_store.incidents(open_only=True) == []
    resolved = [e for e in follower_store.due(NOW + 3) if e.kind == "resolved"]
    assert [(e.notifier, e.payload["alerts"][0]["resolved_because"]) for e in resolved] == [
        ("oncall", "SLO lat removed from the rules")
    ]
    assert follower.firing("svc") == []
    leader_store.close()
    follower_store.close()


def _group() -> Any:
    from sentinel.rules.model import RuleGroup

    return RuleGroup(name="svc", file="svc.yaml", service="svc", interval=1.0, slos=())


def _config(tmp_path: Path, state: str) -> Path:
    path = tmp_path / "config.yaml"
    body = "".join(f"  {line}\n" for line in state.splitlines())
    path.write_text(f'prometheus: {{url: "http://127.0.0.1:9"}}\nrules: []\nstate:\n{body}')
    return path


def test_the_dsn_is_a_secret_and_postgres_needs_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"state: .*backend postgres needs `dsn`"):
        load_config(_config(tmp_path, "backend: postgres"))
    dsn = "postgresql://sentinel:hunter2-pw@db.internal:5432/sentinel"
    config = load_config(
        _config(tmp_path, 'backend: postgres\ndsn: "${SENTINEL_DB}"'), {"SENTINEL_DB": dsn}
    )
    assert config.state.dsn is not None and config.state.dsn.get_secret_value() == dsn
    assert "hunter2" not in repr(config)
    line = f"connect to {dsn} failed: password authentication failed (hunter2-pw)"
    assert "hunter2" not in redact_text(line)
    assert "db.internal" not in redact_text(line)
    from sentinel.alerting.pgstore import safe_dsn

    assert safe_dsn(dsn) == "postgresql://db.internal:5432/sentinel"
    assert safe_dsn("host=db port=5433 dbname=s password=x") == "postgresql://db:5433/s"


def test_a_lone_sqlite_daemon_leads() -> None:
    sole = SoleLeader("host:1", lambda: NOW)
    assert sole.is_leader and sole.status()["backend"] == "sqlite"


RULES = """\
version: sentinel/v1
service: svc
slos:
  - name: lat
    sli:
      latency: {histogram: http_request_duration_seconds, quantile: 0.95}
    threshold: 2s
    window: 5m
"""


async def _assembly(tmp_path: Path, name: str, state: str, extra: str = "") -> Any:
    from sentinel.daemon.assembly import build_daemon
    from sentinel.rules.loader import load_rules

    folder = tmp_path / name
    (folder / "rules").mkdir(parents=True)
    (folder / "rules" / "svc.yaml").write_text(RULES)
    path = _config(folder, state)
    path.write_text(path.read_text().replace("rules: []", "rules: [rules/*.yaml]") + extra)
    config = load_config(path, {"SENTINEL_DB": state, "HOOK_SECRET": SECRET})
    return await build_daemon(str(path), config, load_rules(config), lambda: NOW)


def _leader_gauge(built: Any) -> str:
    from prometheus_client import generate_latest

    text = generate_latest(built.daemon.metrics.registry).decode()
    return next(line for line in text.splitlines() if line.startswith("sentinel_leader "))


async def test_health_and_metrics_say_who_leads(tmp_path: Path, pg: PostgresServer) -> None:
    sole = await _assembly(tmp_path, "sqlite", "path: state.db")
    try:
        assert sole.daemon.leader_status() == {
            "backend": "sqlite",
            "is_leader": True,
            "holder": sole.leader.replica,
            "since": sole.daemon.leader_status()["since"],
        }
        assert _leader_gauge(sole) == "sentinel_leader 1.0"
    finally:
        await sole.cleanup()
    dsn = pg.fresh_database()
    state = f'backend: postgres\ndsn: "{dsn}"'
    first = await _assembly(tmp_path, "a", state)
    second = await _assembly(tmp_path, "b", state)
    try:
        one, two = first.daemon.leader_status(), second.daemon.leader_status()
        assert (one["is_leader"], two["is_leader"]) == (True, False)
        assert one["backend"] == two["backend"] == "postgres"
        assert one["holder"] == two["holder"] == first.leader.replica != second.leader.replica
        assert (_leader_gauge(first), _leader_gauge(second)) == (
            "sentinel_leader 1.0",
            "sentinel_leader 0.0",
        )
        assert first.store.health.as_json()["path"].startswith("postgresql://127.0.0.1:")
    finally:
        await first.cleanup()
        await second.cleanup()


async def test_a_stopping_leader_hands_over_only_after_its_send_in_flight(
    tmp_path: Path, pg: PostgresServer
) -> None:
    """SIGTERM while a rollback is on the wire: the leadership (and the liveness lock
    that keeps the claim) goes only once the send has its answer. Released first, the
    next leader took the claim as a dead replica's and resent it, or sent the entries
    behind it first, while this one was still sending."""
    import psycopg

    from sentinel.alerting.pgstore import LEADER_CLASS, LEADER_KEY
    from sentinel.alerting.store import NewNotification

    receiver = WebhookReceiver(answer_after=1.0).start()
    hook = f"notifiers:\n  rollback:\n    type: webhook\n    url: {receiver.url}/hooks/rollback\n"
    hook += "    secret: ${HOOK_SECRET}\n"
    dsn = pg.fresh_database()
    built = await _assembly(tmp_path, "a", f'backend: postgres\ndsn: "{dsn}"', hook)
    watcher = psycopg.connect(dsn, autocommit=True)
    try:
        assert built.leader.is_leader
        alert = {
            "incident_id": "i1",
            "slo": "lat",
            "value": 2.4,
            "threshold": 2.0,
            "window": "5m",
            "started_at_text": "2027-01-15T08:00:00Z",
            "severity": "page",
        }
        note = NewNotification("k1", "rollback", "firing", "svc", {"alerts": [alert]})
        built.store.commit_cycle([], [], [], [note], NOW)
        built.dispatcher.wake()
        for _ in range(250):
            if receiver.deliveries:
                break
            await asyncio.sleep(0.02)
        assert receiver.deliveries, "the rollback was not sent"
        stopping = asyncio.create_task(built.cleanup())

        def delivered_when_leadership_went() -> Any:
            held = watcher.execute(
                "SELECT 1 FROM pg_locks WHERE locktype='advisory' AND classid=%s AND objid=%s "
                "AND objsubid=2 AND granted",
                (LEADER_CLASS, LEADER_KEY),
            ).fetchone()
            if held is not None:
                return None
            row = watcher.execute("SELECT delivered_at FROM outbox").fetchone()
            return ("released", row[0])

        seen = None
        for _ in range(400):
            seen = delivered_when_leadership_went()
            if seen is not None:
                break
            await asyncio.sleep(0.01)
        await stopping
        assert seen == ("released", NOW)  # delivered before the lock went
        assert receiver.attempts == 1
    finally:
        watcher.close()
        receiver.stop()


def test_a_restarted_container_is_a_new_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container restarted in its pod keeps its hostname and is PID 1 again (as are two
    containers on host networking): host:pid alone gave both processes one replica id,
    and so one claim key and one liveness lock."""
    import itertools

    from sentinel.alerting import leader

    monkeypatch.setattr(leader.os, "getpid", lambda: 1)
    monkeypatch.setattr(leader.socket, "gethostname", lambda: "sentinel-0")
    ids = []
    for _ in range(2):  # each a fresh process: its first daemon
        monkeypatch.setattr(leader, "_assemblies", itertools.count(1))
        ids.append(leader.default_replica_id())
    assert ids[0] != ids[1]
    assert all(i.startswith("sentinel-0:1:") for i in ids)


async def test_a_leader_with_a_long_name_knows_it_leads(pg: PostgresServer) -> None:
    """A replica id longer than PostgreSQL keeps of an application_name (63 bytes: a
    long pod name with its pid and token) is still recognised: by the leader itself,
    which then keeps acting through a database outage as the last leader, and by the
    others, which show its whole name."""
    dsn = pg.fresh_database()
    _store(dsn, "setup").close()  # the schema
    pod = "sentinel-slo-daemon-production-7c9d8f6b4d-x8k2p"
    a, b = (
        PostgresLeader(dsn, f"{pod}:1:a1b2c3", 0.5),
        PostgresLeader(dsn, f"{pod}-b:1:d4e5f6", 0.5),
    )
    await a.check()
    await b.check()
    assert (a.is_leader, b.is_leader) == (True, False)
    assert a.status()["holder"] == b.status()["holder"] == a.replica
    assert b.status()["since"] is not None
    _terminate(dsn, a.fence() or 0)  # its connection is cut
    await a.check()
    assert not a.is_leader and a.acting  # it led last: it goes on stepping alerts
    await a.stop()
    await b.stop()
