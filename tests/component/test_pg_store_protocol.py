"""The state store interface (`StateStore`) against BOTH backends: the embedded SQLite
store and the shared PostgreSQL store (Debian's PostgreSQL on loopback, a fresh database
per test). Every behaviour a caller relies on is asserted on each, so they cannot drift.
Then what only the shared store does: claims, the leader fence, racing migrations, and
an unreachable server."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.alerting.silences import SilenceMatcher
from sentinel.alerting.state import Alert, AlertState
from sentinel.alerting.store import MIGRATIONS, NewNotification, Store
from sentinel.alerting.store_api import StateStore
from sentinel.errors import StateStoreReadError, StateStoreUnusable, StateStoreWriteError
from sentinel.evaluate.probe_check import ProbeRun
from support.pgserver import PostgresServer, require_postgres

NOW = 1_800_000_000.0
DAY = 86400.0


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    require_postgres()
    server = PostgresServer().start()
    yield server
    server.close()


def _pgstore(dsn: str, replica: str = "r1") -> Any:
    from sentinel.alerting.pgstore import PostgresStore

    return PostgresStore(dsn, lambda: NOW, replica)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        made: StateStore = Store(tmp_path / "state.db", clock=lambda: NOW)
    else:
        server = request.getfixturevalue("pg")
        made = _pgstore(server.fresh_database())
    yield made
    made.close()


def _incident(iid: str, service: str = "svc", started: float = NOW) -> dict[str, Any]:
    return {
        "id": iid,
        "alert_key": f"{service}/{iid}",
        "service": service,
        "slo": iid,
        "severity": "page",
        "labels": '{"env": "prod"}',
        "started_at": started,
        "last_value": 2.5,
        "threshold": 1.5,
    }


def _note(
    key: str, incident: str, kind: str = "firing", notifier: str = "oncall", service: str = "svc"
) -> NewNotification:
    payload = {"alerts": [{"incident_id": incident, "value": float("nan")}], "env": "prod"}
    return NewNotification(key, notifier, kind, service, payload, NOW - 5)


def test_a_fresh_store_is_at_the_latest_schema_version(store: StateStore) -> None:
    assert store.schema_version == len(MIGRATIONS)
    assert store.health.status == "healthy"


def test_a_cycle_commits_states_incidents_and_notifications_together(store: StateStore) -> None:
    alert = Alert("svc/lat", AlertState.FIRING, NOW - 60, "inc1", NOW - 60, repeats=2)
    store.commit_cycle([alert], [_incident("inc1")], [], [_note("k1", "inc1")], NOW)
    store.commit_cycle([alert], [_incident("inc1")], [], [_note("k1", "inc1")], NOW)  # again
    assert store.load_alerts() == {"svc/lat": alert}
    assert [i["id"] for i in store.incidents(open_only=True)] == ["inc1"]
    assert store.incidents()[0]["labels"] == {"env": "prod"}
    store.commit_cycle([], [], [("inc1", NOW + 60)], [_note("k2", "inc1", "resolved")], NOW + 60)
    assert store.incidents(open_only=True) == []
    assert store.incidents_for("svc", NOW + 30)[0]["resolved_at"] == NOW + 60
    assert store.incidents_for("svc", NOW + 61) == []
    assert store.outbox_stats() == {"pending": 2, "dead": 0, "delivered": 0}


def test_the_outbox_is_claimed_per_notifier(store: StateStore) -> None:
    """Each notifier's worker reads its own entries, the unconfigured worker the rest; an
    entry waits behind an earlier one of its notifier and service that waits to retry."""
    notes = [_note("a", "i1"), _note("b", "i1", notifier="rollback"), _note("c", "i1")]
    notes.append(_note("d", "i1", notifier="gone"))
    store.commit_cycle([], [_incident("i1")], [], notes, NOW)
    assert [e.idempotency_key for e in store.due(NOW, notifier="oncall")] == ["a", "c"]
    assert [e.idempotency_key for e in store.due(NOW, notifier="rollback")] == ["b"]
    assert [e.idempotency_key for e in store.due(NOW, limit=1, notifier="oncall")] == ["a"]
    others = store.due(NOW, except_notifiers=["oncall", "rollback"])
    assert [e.idempotency_key for e in others] == ["d"]
    assert [e.idempotency_key for e in store.due(NOW)] == ["a", "b", "c", "d"]
    # "a" waits for its retry: "c" (same notifier and service) waits behind it, the other
    # notifiers' entries do not, and a later service's entry does not either.
    store.mark_retry(store.due(NOW, notifier="oncall")[0].id, NOW + 30, "HTTP 429")
    store.commit_cycle([], [], [], [NewNotification("e", "oncall", "firing", "other", {})], NOW)
    assert [e.idempotency_key for e in store.due(NOW + 1, notifier="oncall")] == ["e"]
    assert [e.idempotency_key for e in store.due(NOW + 1)] == ["b", "d", "e"]
    assert [e.idempotency_key for e in store.due(NOW + 30, notifier="oncall")] == ["a", "c", "e"]


def test_the_outbox_is_delivered_oldest_first_with_retries_and_dead_entries(
    store: StateStore,
) -> None:
    store.commit_cycle([], [_incident("i1")], [], [_note("a", "i1"), _note("b", "i1")], NOW)
    due = store.due(NOW)
    assert [e.idempotency_key for e in due] == ["a", "b"]
    assert due[0].payload["alerts"][0]["value"] is None  # non-finite floats as null
    assert due[0].sending_since is None and due[0].created_at == NOW - 5
    store.mark_sending(due[0].id, NOW)
    store.mark_retry(due[0].id, NOW + 30, "HTTP 503")
    store.mark_sending(due[1].id, NOW)
    store.mark_delivered(due[1].id, NOW + 1)
    assert store.due(NOW + 1) == []
    again = store.due(NOW + 30)
    assert [(e.idempotency_key, e.attempts, e.last_error) for e in again] == [("a", 1, "HTTP 503")]
    store.mark_sending(again[0].id, NOW + 30)
    # A send in flight when the process died is seen as such on the next pass.
    assert store.due(NOW + 31)[0].sending_since == NOW + 30
    store.mark_dead(again[0].id, NOW + 31, "gave up")
    assert store.outbox_stats() == {"pending": 0, "dead": 1, "delivered": 1}
    assert store.last_rollback_at("oncall", "svc") == NOW - 5
    assert store.last_rollback_at("other", "svc") is None
    rows = store.deliveries(NOW - 10)
    assert {(r["incident_id"], r["kind"]) for r in rows} == {("i1", "firing")}
    assert store.deliveries(NOW) == []


def test_alert_rows_of_vanished_instances_are_deleted(store: StateStore) -> None:
    kept = Alert("svc/lat{pod=a}", AlertState.INACTIVE, NOW - 60)
    gone = Alert("svc/lat{pod=b}", AlertState.RESOLVED, NOW - 60, "inc1", NOW - 600)
    store.commit_cycle([kept, gone], [], [], [], NOW)
    store.delete_alerts([gone.key, "svc/never-saved"])
    assert store.load_alerts() == {kept.key: kept}


def test_the_alert_last_sent_to_each_notifier_is_found_per_incident(store: StateStore) -> None:
    """What a resolve without an SLO object is rendered from (an SLO removed from the rules
    while Sentinel was stopped): per incident and notifier, the latest firing or reminder;
    resolves and other incidents do not count."""
    notes = [
        _note("f1", "i1"),
        _note("f1-audit", "i1", notifier="audit"),
        _note("r1", "i1", "repeat"),
        _note("x1", "i1", "resolved"),
        _note("f2", "i2"),
    ]
    notes[2].payload["alerts"][0]["repeat"] = 1
    notes[3].payload["alerts"][0]["repeat"] = 9
    store.commit_cycle([], [_incident("i1"), _incident("i2")], [], notes, NOW)
    sent = store.sent_alerts(["i1", "nope"])
    assert sorted(sent) == ["i1"]
    assert sent["i1"]["oncall"]["repeat"] == 1  # the reminder, not the resolve
    assert sent["i1"]["audit"] == {"incident_id": "i1", "value": None}
    assert store.sent_alerts([]) == {}
    # A firing that ended dead was never posted: nothing to resolve there.
    (dead,) = [e for e in store.due(NOW) if e.idempotency_key == "f2"]
    store.mark_dead(dead.id, NOW, "HTTP 404 channel_not_found")
    assert store.sent_alerts(["i2"]) == {}
    # Past the outbox's retention, the Slack message's own record still says what it shows.
    store.save_slack_message("oncall", [{"incident_id": "i2", "slo": "i2"}], "C1", "1.0")
    assert store.sent_alerts(["i2"]) == {"i2": {"oncall": {"incident_id": "i2", "slo": "i2"}}}


def test_slack_references_keep_the_posting_order_and_the_latest_payload(
    store: StateStore,
) -> None:
    store.commit_cycle([], [_incident("i1"), _incident("i2")], [], [], NOW)
    store.save_slack_message("oncall", [{"incident_id": "i1", "n": 1}], "C1", "1.0")
    store.save_slack_message("oncall", [{"incident_id": "i2", "n": 1}], "C1", "1.0")
    store.update_slack_alerts("oncall", [{"incident_id": "i1", "n": 2}])
    assert store.slack_message("oncall", "i1") == ("C1", "1.0")
    assert store.slack_message("oncall", "nope") is None
    members = store.slack_members("oncall", "C1", "1.0")
    assert [(m.incident_id, m.alert) for m in members] == [
        ("i1", {"incident_id": "i1", "n": 2}),
        ("i2", {"incident_id": "i2", "n": 1}),
    ]
    assert members[0].incident is not None and members[0].incident["labels"] == {"env": "prod"}
    assert store.slack_message_incidents("C1", "1.0") == [("oncall", "i1"), ("oncall", "i2")]
    assert store.slack_threads(["i2", "x"]) == {"i2": ("C1", "1.0")}


def test_acknowledgements_and_silences(store: StateStore) -> None:
    assert store.acknowledge("i1", "alice", NOW) is True
    assert store.acknowledge("i1", "bob", NOW + 1) is False  # the first one stands
    assert store.acknowledgements(["i1", "i2"]) == {"i1": ("alice", NOW)}
    # A message's many incidents in one write: the first acknowledgement of each stands.
    assert store.acknowledge_many(["i1", "i2", "i3", "i2"], "carol", NOW + 2) == 2
    assert store.acknowledge_many([], "carol", NOW + 2) == 0
    assert store.acknowledgements(["i1", "i2", "i3"]) == {
        "i1": ("alice", NOW),
        "i2": ("carol", NOW + 2),
        "i3": ("carol", NOW + 2),
    }
    made = store.add_silence(
        [SilenceMatcher("service", "svc"), SilenceMatcher("slo", "lat.*", "=~")],
        NOW,
        NOW + 3600,
        "alice",
        "deploy",
    )
    assert store.silences() == [made]
    assert store.expire_silence(made.id, NOW + 10) is True
    assert store.expire_silence("nope", NOW) is False
    assert store.silences()[0].ends_at == NOW + 10


def test_probe_runs_are_kept_newest_first_and_pruned(store: StateStore) -> None:
    for i in range(3):
        store.record_probe_run(
            ProbeRun("p", NOW + i, 0.2, i != 1, ("boom",) if i == 1 else (), 200, 0.1)
        )
    runs = store.probe_runs("p", limit=2)
    assert [(r.at, r.success, r.reason) for r in runs] == [
        (NOW + 2, True, ""),
        (NOW + 1, False, "boom"),
    ]
    assert store.prune_probe_runs("p", NOW + 1) == 1
    assert len(store.probe_runs("p")) == 2


def test_gate_audit_is_stored_once_per_text_and_pruned_in_batches(store: StateStore) -> None:
    rows = [(NOW + i, "svc", "pass", '{"service": "svc"}', f'{{"n": {i % 2}}}') for i in range(6)]
    store.record_gates(rows)
    history = store.gate_history("svc", 10)
    assert [h["count"] for h in history] == [3, 3]
    assert history[0]["inputs"] == {"service": "svc"}
    assert store.gate_history("other") == []
    assert store.prune_gate_audit(NOW + 100, 100, limit=1) == 1
    assert store.prune_gate_audit(NOW + 100, 100, limit=1) == 1
    assert store.gate_history(None) == []
    store.record_gates(rows[:1])
    assert store.gate_history(None)[0]["result"] == {"n": 0}


def test_retention_deletes_what_finished_long_ago(store: StateStore) -> None:
    old = NOW - 40 * DAY
    store.commit_cycle(
        [], [_incident("old", started=old)], [("old", old + 60)], [_note("n", "old")], old
    )
    entry = store.due(NOW)[0]
    store.mark_sending(entry.id, old)
    store.mark_delivered(entry.id, old + 1)
    store.acknowledge("old", "alice", old)
    store.add_silence([SilenceMatcher("service", "svc")], old, old + 10, "a", "c")
    assert store.prune_history(NOW - 30 * DAY) == {"outbox": 1, "incidents": 1, "silences": 1}
    assert store.incidents() == [] and store.silences() == []
    assert store.acknowledgements(["old"]) == {}


# -- what only the shared store does --------------------------------------------------


def test_two_replicas_never_claim_the_same_outbox_entry(pg: PostgresServer) -> None:
    dsn = pg.fresh_database()
    first, second = _pgstore(dsn, "a"), _pgstore(dsn, "b")
    # Two services: a replica's claim also holds back the later entries of its service.
    notes = [_note(f"k{i}", "i", service="svc" if i < 4 else "svc2") for i in range(6)]
    first.commit_cycle([], [], [], notes, NOW)
    # Each replica holds its liveness lock, as the leader election does.
    locks = []
    for replica in (first, second):
        conn = _liveness(dsn, replica.replica_key)
        locks.append(conn)
    mine = first.due(NOW, limit=4)
    theirs = second.due(NOW, limit=4)
    assert [e.idempotency_key for e in mine] == ["k0", "k1", "k2", "k3"]
    assert [e.idempotency_key for e in theirs] == ["k4", "k5"]
    # The claim holds for a pass: the other replica cannot mark it sending.
    with pytest.raises(StateStoreWriteError, match="claimed by another replica"):
        second.mark_sending(mine[0].id, NOW)
    assert first.health.status == "healthy" and second.health.status == "healthy"
    # The first replica dies: its connection (and liveness lock) goes, its claims pass.
    locks[0].close()
    first.close()
    claimed: list[str] = []
    for _ in range(50):  # its server process releases the lock as it exits, a moment later
        claimed = [e.idempotency_key for e in second.due(NOW, limit=10)]
        if len(claimed) == 6:
            break
        time.sleep(0.1)
    assert claimed == ["k0", "k1", "k2", "k3", "k4", "k5"]
    locks[1].close()
    second.close()


def test_a_new_leader_does_not_send_past_what_the_old_one_still_holds(pg: PostgresServer) -> None:
    """Across a leader change the old leader, still alive, may be sending a FIRING (or
    recording its retry): the new one must not send the RESOLVED behind it meanwhile, but
    goes on with other services, and takes both in order once the old one is gone."""
    import psycopg

    dsn = pg.fresh_database()
    old, new = _pgstore(dsn, "a"), _pgstore(dsn, "b")
    notes = [_note("fire", "i1"), _note("resolve", "i1", kind="resolved")]
    notes.append(_note("other", "i2", service="svc2"))
    old.commit_cycle([], [], [], notes, NOW)
    locks = [_liveness(dsn, replica.replica_key) for replica in (old, new)]
    held = old.due(NOW, limit=1)
    assert [e.idempotency_key for e in held] == ["fire"]
    old.mark_sending(held[0].id, NOW)
    assert [e.idempotency_key for e in new.due(NOW)] == ["other"]
    # Its retry being written (the row locked by the old leader's transaction) holds too.
    writer = psycopg.connect(dsn)
    writer.execute("SELECT id FROM outbox WHERE id=%s FOR UPDATE", (held[0].id,))
    assert [e.idempotency_key for e in new.due(NOW)] == ["other"]
    writer.rollback()
    writer.close()
    locks[0].close()
    old.close()
    claimed: list[str] = []
    for _ in range(50):  # the lock goes as its server process exits, a moment later
        claimed = [e.idempotency_key for e in new.due(NOW)]
        if claimed[:1] == ["fire"]:
            break
        time.sleep(0.1)
    assert claimed == ["fire", "resolve", "other"]
    locks[1].close()
    new.close()


def test_a_follower_polls_without_a_round_trip_and_hands_its_claims_back(
    pg: PostgresServer,
) -> None:
    """A follower's outbox polls (every notifier's worker, every second) cost the server
    nothing once its claims are handed back; a claim of a send still in flight when it
    stopped leading goes back once the send is recorded, not never."""
    import psycopg

    dsn = pg.fresh_database()
    old, new = _pgstore(dsn, "a"), _pgstore(dsn, "b")
    notes = [_note("fire", "i1"), _note("resolve", "i1", kind="resolved")]
    old.commit_cycle([], [], [], notes, NOW)
    locks = [_liveness(dsn, replica.replica_key) for replica in (old, new)]
    fire, _ = old.due(NOW)
    old.mark_sending(fire.id, NOW)
    old.fence = lambda: None  # it no longer leads, mid-send
    assert old.due(NOW) == []  # hands "resolve" back, keeps "fire" (in flight)
    assert new.due(NOW) == []  # "resolve" waits behind "fire", which "a" still holds
    old.mark_delivered(fire.id, NOW + 1)
    assert old.due(NOW + 1) == []  # now "fire" is recorded: nothing of it left to hold
    assert [e.idempotency_key for e in new.due(NOW + 1)] == ["resolve"]

    watcher = psycopg.connect(dsn, autocommit=True)
    pid = old._conn.info.backend_pid

    def last_statement() -> Any:
        row = watcher.execute(
            "SELECT state_change FROM pg_stat_activity WHERE pid=%s", (pid,)
        ).fetchone()
        return row[0] if row else None

    before = last_statement()
    for _ in range(20):
        assert old.due(NOW + 2, notifier="oncall") == []
    assert last_statement() == before
    watcher.close()
    for conn in locks:
        conn.close()
    old.close()
    new.close()


def test_a_restarted_replica_hands_back_what_its_previous_process_was_sending(
    pg: PostgresServer,
) -> None:
    """The process of replica "a" died mid-send; "a" comes back as a follower with the
    same name (a StatefulSet pod): the entry is handed back, sending, so the leader
    resends it as uncertain instead of it holding its service's queue for ever."""
    dsn = pg.fresh_database()
    first = _pgstore(dsn, "a")
    first.commit_cycle([], [], [], [_note("fire", "i1")], NOW)
    (fire,) = first.due(NOW)
    first.mark_sending(fire.id, NOW)
    first.close()  # died: no liveness lock held meanwhile
    again, leader = _pgstore(dsn, "a"), _pgstore(dsn, "b")
    locks = [_liveness(dsn, replica.replica_key) for replica in (again, leader)]
    again.fence = lambda: None
    assert leader.due(NOW + 1) == []  # "a" is alive again: its claim holds
    assert again.due(NOW + 1) == []
    (resent,) = leader.due(NOW + 1)
    assert resent.idempotency_key == "fire" and resent.sending_since == NOW
    for conn in locks:
        conn.close()
    again.close()
    leader.close()


def test_a_send_whose_outcome_was_never_recorded_passes_to_the_leader(
    pg: PostgresServer,
) -> None:
    """The old leader, alive, sent the FIRING but could not record the outcome (a
    database blip that also cost it the leadership): the row stays `sending` under its
    claim. The new leader waits out the longest a send can take, then resends it as
    uncertain, and the entries behind it follow, instead of the service's queue holding
    for as long as that replica lives."""
    from sentinel.alerting.pgstore import STALE_SEND

    dsn = pg.fresh_database()
    old, new = _pgstore(dsn, "a"), _pgstore(dsn, "b")
    old.commit_cycle([], [], [], [_note("fire", "i1"), _note("resolve", "i1")], NOW)
    locks = [_liveness(dsn, replica.replica_key) for replica in (old, new)]
    fire, _ = old.due(NOW)
    old.mark_sending(fire.id, NOW)
    old.fence = lambda: None  # the outcome's write failed; then it stopped leading
    assert old.due(NOW + 1) == []
    assert new.due(NOW + 60) == []  # it may still be sending
    taken = new.due(NOW + STALE_SEND + 1)
    assert [(e.idempotency_key, e.sending_since) for e in taken] == [
        ("fire", NOW),  # sending since NOW: resent as uncertain
        ("resolve", None),
    ]
    for conn in locks:
        conn.close()
    old.close()
    new.close()


def test_a_follower_retries_a_release_whose_commit_failed(pg: PostgresServer) -> None:
    """The release of its claims fails at COMMIT (the connection dropped then): the
    claims are still its own, so it hands them back on a later poll instead of holding
    the service's queue for as long as it lives."""
    import psycopg

    dsn = pg.fresh_database()
    old, new = _pgstore(dsn, "a"), _pgstore(dsn, "b")
    old.commit_cycle([], [], [], [_note("fire", "i1"), _note("resolve", "i1")], NOW)
    locks = [_liveness(dsn, replica.replica_key) for replica in (old, new)]
    assert len(old.due(NOW)) == 2  # claimed as leader, nothing sent yet
    admin = psycopg.connect(dsn, autocommit=True)
    admin.execute(  # the next COMMIT that updated the outbox fails
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'commit failed'; END $$"
    )
    admin.execute(
        "CREATE CONSTRAINT TRIGGER refuse AFTER UPDATE ON outbox DEFERRABLE INITIALLY "
        "DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    old.fence = lambda: None  # it lost the leadership
    assert old.due(NOW + 1) == []  # its release is refused at COMMIT
    admin.execute("DROP TRIGGER refuse ON outbox")
    assert new.due(NOW + 2) == []  # still held by "a", alive
    assert old.due(NOW + 3) == []  # released now
    assert [e.idempotency_key for e in new.due(NOW + 4)] == ["fire", "resolve"]
    admin.close()
    for conn in locks:
        conn.close()
    old.close()
    new.close()


def test_a_former_leaders_outbox_failure_does_not_keep_it_unready(pg: PostgresServer) -> None:
    """A database blip failed the leader's outbox poll and cost it the leadership: once
    the database answers again and it holds no claim, it is ready, though as a follower
    it writes nothing to the outbox that would clear the failure."""
    dsn = pg.fresh_database()
    store = _pgstore(dsn, "a")
    store.fence = lambda: None  # a follower first: nothing held
    assert store.due(NOW) == []
    store.fence = lambda: 4242  # then the leader, with an empty outbox
    assert store._conn is not None
    store._conn.close()  # the blip
    with pytest.raises(StateStoreWriteError):
        store.due(NOW)
    assert "outbox" in store.health.failing
    store.fence = lambda: None  # the blip also cost it the leadership
    for _ in range(100):  # it reconnects in the background
        with contextlib.suppress(StateStoreReadError):
            store.outbox_stats()
        if not store.health.failing.get("connection"):
            break
        time.sleep(0.1)
    assert store.due(NOW + 1) == []
    assert store.health.not_ready_reasons() == []
    store.close()


def test_a_follower_that_polls_without_round_trips_still_sees_the_database_go(
    pg: PostgresServer,
) -> None:
    """Its outbox polls no longer touch the server, but they were its probe of it: a
    replica with nothing else to write (the last leader, no alert change to commit) is
    still unready within a few polls once the database cannot be reached."""
    store = _pgstore(pg.fresh_database(), "a")
    store.fence = lambda: None
    store.PROBE_EVERY = 0.2
    assert store.due(NOW) == []  # hands its claims back: nothing held
    assert store.health.not_ready_reasons() == []
    store.dsn = "postgresql://sentinel@127.0.0.1:9/none?connect_timeout=1"  # unreachable
    assert store._conn is not None
    store._conn.close()
    for _ in range(30):
        assert store.due(NOW) == []
        if store.health.not_ready_reasons():
            break
        time.sleep(0.1)
    assert any("cannot save connection" in r for r in store.health.not_ready_reasons())
    store.close()


def _liveness(dsn: str, key: int) -> Any:
    import psycopg

    from sentinel.alerting.pgstore import LIVENESS_CLASS

    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (LIVENESS_CLASS, key))
    return conn


def test_only_the_leader_commits_transitions_and_claims_the_outbox(pg: PostgresServer) -> None:
    import psycopg

    from sentinel.alerting.pgstore import LEADER_CLASS, LEADER_KEY

    dsn = pg.fresh_database()
    store = _pgstore(dsn)
    lock = psycopg.connect(dsn, autocommit=True)
    lock.execute("SELECT pg_advisory_lock(%s, %s)", (LEADER_CLASS, LEADER_KEY))
    pid = lock.info.backend_pid
    store.fence = lambda: pid
    alert = Alert("svc/lat", AlertState.FIRING, NOW, "inc1", NOW)
    store.commit_cycle([alert], [], [], [_note("k", "inc1")], NOW)
    assert len(store.due(NOW)) == 1
    # The leader's lock connection is gone: the fence refuses, nothing is written, and
    # the store itself is not failing (readiness is not affected).
    lock.close()
    later = Alert("svc/lat", AlertState.RESOLVED, NOW + 60, "inc1", NOW)
    with pytest.raises(StateStoreWriteError, match="lost the leadership"):
        store.commit_cycle([later], [], [], [], NOW + 60)
    assert store.load_alerts() == {"svc/lat": alert}
    assert store.due(NOW + 60) == []
    assert store.health.status == "healthy"
    store.fence = lambda: None
    with pytest.raises(StateStoreWriteError, match="not the leader"):
        store.commit_cycle([later], [], [], [], NOW + 60)
    with pytest.raises(StateStoreWriteError, match="not the leader"):
        store.delete_alerts(["svc/lat"])  # forgetting a vanished instance is the leader's
    assert store.load_alerts() == {"svc/lat": alert}
    store.close()


def test_replicas_starting_together_migrate_once(pg: PostgresServer) -> None:
    dsn = pg.fresh_database()
    errors: list[BaseException] = []
    stores: list[Any] = []

    def start() -> None:
        try:
            stores.append(_pgstore(dsn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [s.schema_version for s in stores] == [len(MIGRATIONS)] * 4
    for made in stores:
        made.close()


def test_a_database_of_a_newer_release_is_refused(pg: PostgresServer) -> None:
    dsn = pg.fresh_database()
    _pgstore(dsn).close()
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO sentinel_schema(version) VALUES (99)")
    with pytest.raises(StateStoreUnusable, match="schema version 99, newer"):
        _pgstore(dsn)


def test_an_unreachable_server_fails_fast_marks_the_store_unready_and_recovers(
    tmp_path: Path,
) -> None:
    require_postgres()
    server = PostgresServer().start()
    try:
        dsn = server.fresh_database()
        store = _pgstore(dsn)
        store.RECONNECT_EVERY = 0.0
        server.stop()
        with pytest.raises(StateStoreWriteError, match="alert state not saved"):
            store.commit_cycle([], [_incident("i")], [], [], NOW)
        with pytest.raises(StateStoreReadError):
            store.incidents()
        assert store.health.status == "unhealthy"
        assert any("cannot save connection" in r for r in store.health.not_ready_reasons())
        assert "password" not in str(store.health.as_json())
        server.start()
        # Reconnected in the background: calls fail at once meanwhile, never block.
        waits: list[str] = []
        for _ in range(100):
            try:
                store.commit_cycle([], [_incident("i")], [], [], NOW)
                break
            except StateStoreWriteError as exc:
                waits.append(str(exc))
                time.sleep(0.1)
        assert all("reconnecting" in w for w in waits), waits
        assert [i["id"] for i in store.incidents()] == ["i"]
        assert store.health.status == "healthy"
        store.close()
    finally:
        server.close()


def test_an_acknowledgement_made_just_before_an_outage_is_known_during_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Reminders skip acknowledged incidents: one acknowledged a moment before the database
    # went away must not be reminded of for as long as it is away.
    require_postgres()
    server = PostgresServer().start()
    try:
        store = _pgstore(server.fresh_database())
        store.commit_cycle([], [_incident(i) for i in ("i1", "i2", "i3")], [], [], NOW)
        assert store.acknowledge_many(["i1"], "bob", NOW - 60) == 1
        assert store.acknowledge_many(["i1", "i2"], "alice", NOW) == 1
        # The server goes away between the write and its read-back.
        with monkeypatch.context() as patch:

            def gone(*args: Any) -> Any:
                raise StateStoreReadError("state store", "server closed the connection")

            patch.setattr(store, "_read", gone)
            assert store.acknowledge_many(["i3"], "carol", NOW + 1) == 1
        server.stop()
        # i1 keeps its first acknowledgement (the store's), not this click's.
        assert store.acknowledgements(["i1", "i2", "i3"]) == {
            "i1": ("bob", NOW - 60),
            "i2": ("alice", NOW),
            "i3": ("carol", NOW + 1),
        }
        store.close()
    finally:
        server.close()
