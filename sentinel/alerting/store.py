"""Durable state in one SQLite file (WAL): alert states, incidents, silences, the
notification outbox, Slack message references and the gate audit trail.

A state change and the notifications it causes are written in ONE transaction
(`commit_cycle`), then delivered; delivery marks them done. A crash at any point leaves
either nothing or both, and undelivered entries are picked up on the next start.
The schema is versioned; `MIGRATIONS[i]` upgrades version i to i+1.

The file is checked when opened (`PRAGMA quick_check`): a corrupt, foreign or too new
file stops the start with `StateStoreUnusable` and is never replaced. Every write goes
through one transaction helper that rolls back only a transaction still open (SQLite
rolls back itself on SQLITE_FULL and I/O errors, and "cannot rollback" must not hide the
real error), raises `StateStoreWriteError` with SQLite's message, and records the
outcome per operation in `health`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sentinel import jsonenc
from sentinel.alerting.silences import Silence, SilenceMatcher
from sentinel.alerting.state import Alert, AlertState, alerts_data
from sentinel.errors import StateStoreUnusable, StateStoreWriteError
from sentinel.evaluate.probe_check import ProbeRun

log = logging.getLogger("sentinel.store")

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE alerts (key TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at REAL NOT NULL);
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY, alert_key TEXT NOT NULL, service TEXT NOT NULL, slo TEXT NOT NULL,
        severity TEXT NOT NULL, labels TEXT NOT NULL, started_at REAL NOT NULL,
        resolved_at REAL, last_value REAL, threshold REAL
    );
    CREATE INDEX incidents_service ON incidents(service, resolved_at);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT NOT NULL UNIQUE,
        notifier TEXT NOT NULL, kind TEXT NOT NULL, service TEXT NOT NULL,
        payload TEXT NOT NULL, created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
        sending_since REAL, delivered_at REAL, dead_at REAL, last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox(delivered_at, dead_at, next_attempt_at);
    CREATE TABLE silences (
        id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at REAL NOT NULL,
        ends_at REAL NOT NULL, author TEXT NOT NULL, comment TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE slack_messages (
        notifier TEXT NOT NULL, incident_id TEXT NOT NULL, channel TEXT NOT NULL,
        ts TEXT NOT NULL, PRIMARY KEY (notifier, incident_id)
    );
    CREATE TABLE gate_decisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, service TEXT NOT NULL,
        decision TEXT NOT NULL, inputs TEXT NOT NULL, body TEXT NOT NULL
    );
    CREATE INDEX gate_service ON gate_decisions(service, at);
    """,
    # 2: gate bodies and inputs stored once (content-addressed): a fleet polling the gate
    # repeats the same verdict thousands of times a second.
    """
    CREATE TABLE gate_blobs (hash TEXT PRIMARY KEY, text TEXT NOT NULL);
    ALTER TABLE gate_decisions ADD COLUMN inputs_hash TEXT;
    ALTER TABLE gate_decisions ADD COLUMN body_hash TEXT;
    """,
    # 3: identical decisions arriving together (same inputs, same verdict) share a row with
    # a count and the time of the last one.
    """
    ALTER TABLE gate_decisions ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE gate_decisions ADD COLUMN last_at REAL;
    """,
    # 4: a Slack message shared by several incidents is re-rendered from all of them: keep
    # each incident's latest alert payload with its message reference.
    """
    ALTER TABLE slack_messages ADD COLUMN alert TEXT;
    """,
    # 5: gate audit retention finds the texts only pruned rows referred to by index.
    """
    CREATE INDEX gate_inputs_hash ON gate_decisions(inputs_hash);
    CREATE INDEX gate_body_hash ON gate_decisions(body_hash);
    """,
    # 6: synthetic probe runs (sentinel/daemon/probes.py), pruned per probe's retention.
    """
    CREATE TABLE probe_results (
        id INTEGER PRIMARY KEY AUTOINCREMENT, probe TEXT NOT NULL, at REAL NOT NULL,
        success INTEGER NOT NULL, duration REAL NOT NULL, latency REAL, status_code INTEGER,
        failure TEXT
    );
    CREATE INDEX probe_results_probe_at ON probe_results(probe, at);
    """,
    # 7: an incident acknowledged (from Slack's "Acknowledge" button): who and when; its
    # reminders stop.
    """
    CREATE TABLE incident_acks (
        incident_id TEXT PRIMARY KEY, actor TEXT NOT NULL, at REAL NOT NULL
    );
    """,
    # 8: state retention (`state.retention`) finds finished outbox entries, resolved
    # incidents and ended silences by index.
    """
    CREATE INDEX outbox_dead ON outbox(dead_at);
    CREATE INDEX incidents_resolved ON incidents(resolved_at);
    CREATE INDEX silences_ends ON silences(ends_at);
    """,
    # 9: outbox entries claimed by a replica of a shared store (pgstore.py); unused here.
    """
    ALTER TABLE outbox ADD COLUMN claimed_by INTEGER;
    """,
)

# Write operations, as health and errors name them. A failure of the first two blocks
# readiness: both are retried on their own (every cycle, every dispatcher pass), so the
# failure clears as soon as the store is writable again.
ALERT_STATE, OUTBOX, SILENCES, GATE_AUDIT = "alert state", "outbox", "silences", "gate audit"
PROBE_RESULTS, RETENTION = "probe results", "retention"
# A shared store (PostgreSQL) that cannot be reached at all, for reads and writes alike.
CONNECTION = "connection"
WAL_LIMIT = 8 * 1024 * 1024  # bytes of WAL past which a checkpoint truncates it
TRUNCATE_WAIT_MS = 50  # the longest a truncation waits for the writer, then for readers
TRUNCATE_BACKOFF = 10.0  # seconds without truncation after a reader kept it from one
CACHE_KIB = 512  # SQLite's page cache per connection (PRAGMA cache_size), see `_open`
BLOCKS_READINESS = (ALERT_STATE, OUTBOX, CONNECTION)
INCIDENT_FIELDS = (
    "service",
    "slo",
    "severity",
    "labels",
    "started_at",
    "resolved_at",
    "last_value",
    "threshold",
)
SLACK_MEMBERS_SQL = (
    "SELECT m.incident_id, m.alert, i.id AS known, "
    + ", ".join(f"i.{k}" for k in INCIDENT_FIELDS)
    + " FROM slack_messages m LEFT JOIN incidents i ON i.id = m.incident_id"
    " WHERE m.notifier=? AND m.channel=? AND m.ts=? ORDER BY m.rowid"
)

MOVE_ASIDE = (
    "Sentinel does not replace it. Move it aside (with its -wal and -shm files, if any) to "
    "start with empty state; the alert states, incidents, silences and undelivered "
    "notifications in it would be lost. Or restore it from a backup."
)


@dataclass
class OperationFailure:
    since: float
    error: str
    failures: int = 1


@dataclass
class StoreHealth:
    """Whether the state DB takes writes: each failing operation with the time it started
    failing and SQLite's latest error. An operation's next success clears it."""

    path: str
    failing: dict[str, OperationFailure] = field(default_factory=dict)
    last_write_at: float | None = None
    clock: Callable[[], float] = field(default=time.time, repr=False)

    @property
    def status(self) -> str:
        return "unhealthy" if self.failing else "healthy"

    def record_success(self, operation: str) -> None:
        self.failing.pop(operation, None)
        self.last_write_at = self.clock()

    def record_failure(self, operation: str, error: str) -> None:
        current = self.failing.get(operation)
        if current is None:
            self.failing[operation] = OperationFailure(self.clock(), error)
        else:
            current.error = error
            current.failures += 1

    def not_ready_reasons(self) -> list[str]:
        return [
            f"state store cannot save {op} ({self.path}): {f.error}"
            for op, f in self.failing.items()
            if op in BLOCKS_READINESS
        ]

    def as_json(self) -> dict[str, Any]:
        failing = list(self.failing.items())
        latest = max(failing, key=lambda item: item[1].since, default=None)
        return {
            "status": self.status,
            "path": self.path,
            "last_error": f"{latest[0]}: {latest[1].error}" if latest else None,
            "failing_since": min((f.since for _, f in failing), default=None),
            "failing": {
                op: {"since": f.since, "error": f.error, "failures": f.failures}
                for op, f in failing
            },
            "last_write_at": self.last_write_at,
        }


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    idempotency_key: str
    notifier: str
    kind: str
    service: str
    payload: dict[str, Any]
    created_at: float
    attempts: int
    sending_since: float | None
    last_error: str | None


@dataclass(frozen=True)
class NewNotification:
    idempotency_key: str
    notifier: str
    kind: str
    service: str
    payload: dict[str, Any]
    # When the transition happened; a commit retried after a failure keeps this time.
    created_at: float | None = None
    # `jsonenc.dumps(payload)`, when its maker encoded it already (in slices: a storm's
    # message of 7,000 alerts is 4 MB of JSON, ~30 ms to encode in one piece).
    payload_json: str | None = None

    def payload_text(self) -> str:
        return self.payload_json if self.payload_json is not None else jsonenc.dumps(self.payload)


@dataclass(frozen=True)
class SlackMember:
    """One incident sharing a Slack message: its latest alert payload (None for rows of
    schema < 4) and its incident row (None if unknown)."""

    incident_id: str
    alert: dict[str, Any] | None
    incident: dict[str, Any] | None


class Store:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self.health = StoreHealth(self.path, clock=clock)
        self._blob_hashes: dict[str, str] = {}
        # The connection of `checkpoint` (a worker thread's), and who may use it.
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()
        # The WAL's size past which `checkpoint` truncates it (SQLite's own automatic
        # checkpoint, off here, runs at 1,000 pages: 4 MB).
        self.wal_limit = WAL_LIMIT
        self.truncate_backoff = TRUNCATE_BACKOFF
        self._truncate_after = 0.0  # monotonic: no truncation tried before this
        self.db = self._open()
        try:
            self.migrate()
        except StateStoreWriteError as exc:
            self.db.close()
            raise StateStoreUnusable(
                self.path,
                f"cannot be prepared: {exc.detail}. If the disk is full, free space; if this is "
                "not a Sentinel state database, point state.path at another file.",
            ) from exc
        except BaseException:
            self.db.close()
            raise

    def _open(self) -> sqlite3.Connection:
        """Connect and check the file before anything writes to it (WAL mode rewrites the
        header): a file that is not a healthy Sentinel database is refused, never replaced."""
        if self.path != ":memory:":
            target = Path(self.path)
            if target.is_dir():
                raise StateStoreUnusable(
                    self.path, "is a directory, not a database file. Point state.path at a file."
                )
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateStoreUnusable(
                    self.path, f"cannot create its directory: {exc.strerror or exc}"
                ) from exc
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._unopenable(exc) from exc
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=5000")
            # SQLite's own page cache (2 MiB by default) held what the kernel's page cache
            # holds anyway: the daemon reads the file once at start and writes rows by
            # key. 512 KiB keeps a write's B-tree path (~1.8 MB less resident; a cycle's
            # 100 changed rows 0.9 -> 1.0 ms, a storm of 7,000 rows ~23 ms either way).
            db.execute(f"PRAGMA cache_size={-CACHE_KIB}")
            problems = [str(row[0]) for row in db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                first = problems[0].replace("*** in database main ***\n", "").strip()
                raise StateStoreUnusable(
                    self.path, f"is corrupt (integrity check: {first}). {MOVE_ASIDE}"
                )
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StateStoreUnusable(
                    self.path,
                    f"has schema version {version}, newer than this Sentinel knows "
                    f"({len(MIGRATIONS)}): it was written by a newer release. Run that "
                    "release, or point state.path at another file.",
                )
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a process crash (kill -9) in WAL mode.
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise self._unopenable(exc) from exc
        except BaseException:
            db.close()
            raise
        return db

    def _unopenable(self, exc: sqlite3.Error) -> StateStoreUnusable:
        code = getattr(exc, "sqlite_errorname", "")
        if code in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            return StateStoreUnusable(
                self.path, f"is not a usable SQLite database ({exc}). {MOVE_ASIDE}"
            )
        return StateStoreUnusable(
            self.path,
            f"cannot be opened ({exc}). Check that the file and its directory exist and are "
            "readable and writable by this user.",
        )

    def close(self) -> None:
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        self.db.close()

    def checkpoints_in_background(self) -> None:
        """From now on the caller runs `checkpoint` in a worker thread, regularly; this
        connection stops checkpointing itself. SQLite's automatic checkpoint runs inside
        the commit that passes 1,000 WAL pages, and it syncs the database file: under a
        busy disk that took 250-400 ms, in the event loop, holding every gate request
        (the gate's audit rows fill the WAL within seconds under load)."""
        if self.path != ":memory:":
            self.db.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> int:
        """Copy the WAL into the database file (PASSIVE: never waits for, nor blocks,
        readers and writers); returns SQLite's count of WAL frames copied since the WAL
        last started over. Runs in a worker thread, on its
        own connection; SQLite releases the GIL meanwhile. A failure is logged and
        returns 0: the WAL still holds the data, and the next checkpoint tries again.

        A PASSIVE checkpoint copies the WAL but never shortens it: SQLite starts the WAL
        over only when a write begins after every frame was copied, which writes that
        never pause (a 10,000-service cycle's alert-state chunks, the soak's cycles back
        to back) never allow: the soak's WAL grew 94 MB in 68 s. Past `wal_limit` the WAL
        is truncated: as soon as a PASSIVE pass left nothing to copy, or past four times the
        limit anyway. It copies what was committed since the PASSIVE pass (usually little
        or nothing) and syncs the files, holding the event loop's commits that long (~20 ms
        measured under fsync load). It waits at most 50 ms for the writer of the moment and
        for readers; when it cannot get in (a writer that holds on, or a reader that stays:
        a backup, `sqlite3` left in a transaction) it is not tried again for 10 s: only a
        reader that never ends lets the WAL grow, as it would SQLite's own checkpoints."""
        copied = 0
        with self._checkpoint_lock:
            try:
                if self._checkpointer is None:
                    self._checkpointer = sqlite3.connect(
                        self.path, isolation_level=None, check_same_thread=False
                    )
                    # PASSIVE never waits anyway; TRUNCATE must not wait holding the
                    # write lock while the loop's commits queue behind it.
                    self._checkpointer.execute("PRAGMA busy_timeout=0")
                busy, frames, done = self._checkpointer.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)"
                ).fetchone()
                copied = max(0, int(done))
                wal = self._wal_bytes()
                if (
                    wal > self.wal_limit
                    and ((busy == 0 and frames == done) or wal > 4 * self.wal_limit)
                    and time.monotonic() >= self._truncate_after
                ):
                    # Waits at most TRUNCATE_WAIT for the writer of the moment (holding
                    # nothing), and as long for readers once it holds the write lock.
                    self._checkpointer.execute(f"PRAGMA busy_timeout={TRUNCATE_WAIT_MS}")
                    try:
                        blocked = self._checkpointer.execute(
                            "PRAGMA wal_checkpoint(TRUNCATE)"
                        ).fetchone()[0]
                    finally:
                        self._checkpointer.execute("PRAGMA busy_timeout=0")
                    if blocked:  # a writer holding on, or a reader that stays: back off
                        self._truncate_after = time.monotonic() + self.truncate_backoff
            except sqlite3.Error as exc:
                log.warning(f"state store checkpoint failed (retried): {exc}")
        return copied

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0

    @property
    def backend(self) -> str:
        return "sqlite"

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    @contextlib.contextmanager
    def _transaction(
        self, operation: str, db: sqlite3.Connection | None = None
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole or not at all. On failure the original
        SQLite error is raised as StateStoreWriteError and recorded in `health`."""
        db = db or self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            self.health.record_failure(operation, str(exc))
            raise StateStoreWriteError(self.path, operation, str(exc)) from exc
        except BaseException:
            self._rollback(db)
            raise
        self.health.record_success(operation)

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        # SQLite may have rolled back already (SQLITE_FULL, I/O errors): a second ROLLBACK
        # would raise "cannot rollback - no transaction is active" over the real error.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def _write(self, operation: str, sql: str, params: Sequence[Any]) -> int:
        with self._transaction(operation) as db:
            return db.execute(sql, params).rowcount

    def migrate(self) -> None:
        version = self.schema_version
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction(f"schema migration to version {target}") as db:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={target}")

    # -- alerts and incidents -----------------------------------------------------------

    def load_alerts(self) -> dict[str, Alert]:
        out = {}
        for row in self.db.execute("SELECT key, data FROM alerts"):
            data = json.loads(row["data"])
            data["state"] = AlertState(data["state"])
            out[row["key"]] = Alert(**data)
        return out

    def commit_cycle(
        self,
        alerts: Sequence[Alert],
        incidents_opened: Iterable[dict[str, Any]],
        incidents_resolved: Iterable[tuple[str, float]],
        notifications: Sequence[NewNotification],
        now: float,
        alert_rows: Sequence[str] | None = None,
    ) -> None:
        """State changes and their notifications, atomically (or StateStoreWriteError).
        `alert_rows[i]`, when given, is `alert_data(alerts[i])`, encoded by the caller."""
        rows = [
            (a.key, data, now)
            for a, data in zip(alerts, alerts_data(alerts, alert_rows), strict=True)
        ]
        with self._transaction(ALERT_STATE) as db:
            db.executemany(
                "INSERT INTO alerts(key, data, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET data=excluded.data, updated_at=excluded.updated_at",
                rows,
            )
            db.executemany(
                "INSERT OR IGNORE INTO incidents(id, alert_key, service, slo, severity, labels, "
                "started_at, last_value, threshold) VALUES (:id, :alert_key, :service, :slo, "
                ":severity, :labels, :started_at, :last_value, :threshold)",
                list(incidents_opened),
            )
            db.executemany(
                "UPDATE incidents SET resolved_at=? WHERE id=?",
                [(at, iid) for iid, at in incidents_resolved],
            )
            db.executemany(
                "INSERT OR IGNORE INTO outbox(idempotency_key, notifier, kind, service, payload, "
                "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        n.idempotency_key,
                        n.notifier,
                        n.kind,
                        n.service,
                        n.payload_text(),
                        now if n.created_at is None else n.created_at,
                        now,
                    )
                    for n in notifications
                ],
            )

    def delete_alerts(self, keys: Sequence[str]) -> None:
        with self._transaction(ALERT_STATE) as db:
            db.executemany("DELETE FROM alerts WHERE key=?", [(k,) for k in keys])

    def incidents(self, open_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
        where = "WHERE resolved_at IS NULL" if open_only else ""
        rows = self.db.execute(
            f"SELECT * FROM incidents {where} ORDER BY started_at DESC LIMIT ?", (limit,)
        )
        return [{**dict(r), "labels": json.loads(r["labels"])} for r in rows]

    # -- outbox -------------------------------------------------------------------------

    def due(
        self,
        now: float,
        limit: int = 50,
        notifier: str | None = None,
        except_notifiers: Collection[str] = (),
    ) -> list[OutboxEntry]:
        where, args = notifier_filter("?", notifier, except_notifiers)
        rows = self.db.execute(
            f"{waiting('?', where)} SELECT o.* FROM outbox o {BEHIND_WAITING} WHERE "
            "o.delivered_at IS NULL AND o.dead_at IS NULL "
            f"AND o.next_attempt_at <= ?{where} AND {NOT_BEHIND} ORDER BY o.id LIMIT ?",
            (now, *args, now, *args, limit),
        )
        return [
            OutboxEntry(
                id=r["id"],
                idempotency_key=r["idempotency_key"],
                notifier=r["notifier"],
                kind=r["kind"],
                service=r["service"],
                payload=json.loads(r["payload"]),
                created_at=r["created_at"],
                attempts=r["attempts"],
                sending_since=r["sending_since"],
                last_error=r["last_error"],
            )
            for r in rows
        ]

    def mark_sending(self, entry_id: int, now: float) -> None:
        self._write(OUTBOX, "UPDATE outbox SET sending_since=? WHERE id=?", (now, entry_id))

    def mark_delivered(self, entry_id: int, now: float) -> None:
        self._write(
            OUTBOX,
            "UPDATE outbox SET delivered_at=?, attempts=attempts+1, last_error=NULL WHERE id=?",
            (now, entry_id),
        )

    def mark_retry(self, entry_id: int, next_at: float, error: str) -> None:
        self._write(
            OUTBOX,
            "UPDATE outbox SET attempts=attempts+1, next_attempt_at=?, last_error=?, "
            "sending_since=NULL WHERE id=?",
            (next_at, error, entry_id),
        )

    def mark_dead(self, entry_id: int, now: float, error: str) -> None:
        self._write(
            OUTBOX,
            "UPDATE outbox SET attempts=attempts+1, dead_at=?, last_error=?, sending_since=NULL "
            "WHERE id=?",
            (now, error, entry_id),
        )

    def outbox_stats(self) -> dict[str, int]:
        row = self.db.execute(
            "SELECT SUM(delivered_at IS NULL AND dead_at IS NULL) AS pending, "
            "SUM(dead_at IS NOT NULL) AS dead, SUM(delivered_at IS NOT NULL) AS delivered "
            "FROM outbox"
        ).fetchone()
        return {k: int(row[k] or 0) for k in ("pending", "dead", "delivered")}

    def last_rollback_at(self, notifier: str, service: str) -> float | None:
        row = self.db.execute(
            "SELECT MAX(created_at) FROM outbox WHERE notifier=? AND service=? AND kind='firing'",
            (notifier, service),
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    # -- read-only views for the status UI ------------------------------------------------

    def incidents_for(self, service: str, since: float, limit: int = 200) -> list[dict[str, Any]]:
        """Incidents of one service still open at `since` or later, newest first."""
        rows = self.db.execute(
            "SELECT * FROM incidents WHERE service=? AND (resolved_at IS NULL OR resolved_at >= ?)"
            " ORDER BY started_at DESC LIMIT ?",
            (service, since, limit),
        )
        return [{**dict(r), "labels": json.loads(r["labels"])} for r in rows]

    def deliveries(self, since: float, limit: int = 5000) -> list[dict[str, Any]]:
        """Outbox entries created at `since` or later, one row per incident each carries
        (newest first): notifier, kind, attempts, delivered/dead times, last error."""
        rows = self.db.execute(
            "SELECT json_extract(a.value, '$.incident_id') AS incident_id, o.id, o.notifier, "
            "o.kind, o.created_at, o.attempts, o.delivered_at, o.dead_at, o.last_error "
            "FROM outbox o, json_each(o.payload, '$.alerts') a WHERE o.created_at >= ? "
            "ORDER BY o.id DESC LIMIT ?",
            (since, limit),
        )
        return [dict(r) for r in rows]

    def sent_alerts(self, incident_ids: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        ids = list(dict.fromkeys(incident_ids))
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            # Slack's own record of the message first (kept while the incident is open,
            # past the outbox's retention), then the latest entry each notifier was sent
            # that did not end dead (a dead firing was never posted).
            for r in self.db.execute(
                "SELECT notifier, incident_id, alert FROM slack_messages "
                f"WHERE alert IS NOT NULL AND incident_id IN ({marks})",
                chunk,
            ):
                out.setdefault(r["incident_id"], {})[r["notifier"]] = json.loads(r["alert"])
            for r in self.db.execute(
                "SELECT o.notifier, a.value AS alert FROM outbox o, "
                "json_each(o.payload, '$.alerts') a WHERE o.kind IN ('firing', 'repeat') "
                f"AND o.dead_at IS NULL AND json_extract(a.value, '$.incident_id') IN ({marks}) "
                "ORDER BY o.id",
                chunk,
            ):
                alert = json.loads(r["alert"])
                out.setdefault(alert["incident_id"], {})[r["notifier"]] = alert
        return out

    def slack_threads(self, incident_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """incident id -> (channel, ts) of the Slack message that shows it, when known."""
        out: dict[str, tuple[str, str]] = {}
        ids = list(incident_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            sql = "SELECT incident_id, channel, ts FROM slack_messages WHERE incident_id IN "
            for r in self.db.execute(f"{sql}({marks})", chunk):
                out[r["incident_id"]] = (r["channel"], r["ts"])
        return out

    # -- slack message references -------------------------------------------------------

    def slack_message(self, notifier: str, incident_id: str) -> tuple[str, str] | None:
        row = self.db.execute(
            "SELECT channel, ts FROM slack_messages WHERE notifier=? AND incident_id=?",
            (notifier, incident_id),
        ).fetchone()
        return (row["channel"], row["ts"]) if row else None

    def save_slack_message(
        self, notifier: str, alerts: Sequence[dict[str, Any]], channel: str, ts: str
    ) -> None:
        """The message (channel, ts) now shows these alerts (payload dicts)."""
        with self._transaction(OUTBOX) as db:
            db.executemany(
                "INSERT OR REPLACE INTO slack_messages(notifier, incident_id, channel, ts, alert) "
                "VALUES (?, ?, ?, ?, ?)",
                [(notifier, a["incident_id"], channel, ts, jsonenc.dumps(a)) for a in alerts],
            )

    def update_slack_alerts(self, notifier: str, alerts: Sequence[dict[str, Any]]) -> None:
        """Keep each incident's latest payload (values, resolve time) with its message."""
        with self._transaction(OUTBOX) as db:
            db.executemany(
                "UPDATE slack_messages SET alert=? WHERE notifier=? AND incident_id=?",
                [(jsonenc.dumps(a), notifier, a["incident_id"]) for a in alerts],
            )

    def slack_members(self, notifier: str, channel: str, ts: str) -> list[SlackMember]:
        """Every incident shown by one Slack message, in the order it was posted."""
        rows = self.db.execute(SLACK_MEMBERS_SQL, (notifier, channel, ts))
        out = []
        for r in rows:
            incident = None
            if r["known"] is not None:
                incident = {k: r[k] for k in INCIDENT_FIELDS}
                incident["labels"] = json.loads(r["labels"])
            alert = json.loads(r["alert"]) if r["alert"] else None
            out.append(SlackMember(r["incident_id"], alert, incident))
        return out

    def slack_message_incidents(self, channel: str, ts: str) -> list[tuple[str, str]]:
        """(notifier, incident id) of every incident a Slack message shows."""
        rows = self.db.execute(
            "SELECT notifier, incident_id FROM slack_messages WHERE channel=? AND ts=? "
            "ORDER BY rowid",
            (channel, ts),
        )
        return [(r["notifier"], r["incident_id"]) for r in rows]

    # -- acknowledgements ---------------------------------------------------------------

    def acknowledge(self, incident_id: str, actor: str, at: float) -> bool:
        """Record who acknowledged an incident; the first acknowledgement stands."""
        return self.acknowledge_many([incident_id], actor, at) == 1

    def acknowledge_many(self, incident_ids: Sequence[str], actor: str, at: float) -> int:
        """`acknowledge` for many incidents in one transaction; how many were new."""
        # Written like a silence: an operator's action, which a failure never blocks
        # readiness for (it is not retried on its own).
        rows = [(i, actor, at) for i in dict.fromkeys(incident_ids)]
        if not rows:
            return 0
        with self._transaction(SILENCES) as db:
            return db.executemany(
                "INSERT OR IGNORE INTO incident_acks(incident_id, actor, at) VALUES (?, ?, ?)",
                rows,
            ).rowcount

    def acknowledgements(self, incident_ids: Iterable[str]) -> dict[str, tuple[str, float]]:
        """incident id -> (who, when) for those acknowledged."""
        ids = list(incident_ids)
        out: dict[str, tuple[str, float]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT incident_id, actor, at FROM incident_acks WHERE incident_id IN ({marks})"
            for r in self.db.execute(sql, chunk):
                out[r["incident_id"]] = (r["actor"], r["at"])
        return out

    # -- silences -----------------------------------------------------------------------

    def add_silence(
        self,
        matchers: Sequence[SilenceMatcher],
        starts_at: float,
        ends_at: float,
        author: str,
        comment: str,
    ) -> Silence:
        silence = Silence(
            uuid.uuid4().hex[:12],
            tuple(matchers),
            starts_at,
            ends_at,
            author,
            comment,
            self.clock(),
        )
        self._write(
            SILENCES,
            "INSERT INTO silences VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                silence.id,
                json.dumps([asdict(m) for m in silence.matchers]),
                starts_at,
                ends_at,
                author,
                comment,
                silence.created_at,
            ),
        )
        return silence

    def silences(self) -> list[Silence]:
        out = []
        for r in self.db.execute("SELECT * FROM silences ORDER BY created_at"):
            matchers = tuple(SilenceMatcher(**m) for m in json.loads(r["matchers"]))
            out.append(
                Silence(
                    r["id"],
                    matchers,
                    r["starts_at"],
                    r["ends_at"],
                    r["author"],
                    r["comment"],
                    r["created_at"],
                )
            )
        return out

    def expire_silence(self, silence_id: str, now: float) -> bool:
        changed = self._write(
            SILENCES, "UPDATE silences SET ends_at=MIN(ends_at, ?) WHERE id=?", (now, silence_id)
        )
        return changed > 0

    # -- probe results ------------------------------------------------------------------

    def record_probe_run(self, run: ProbeRun) -> None:
        self._write(
            PROBE_RESULTS,
            "INSERT INTO probe_results(probe, at, success, duration, latency, status_code, "
            "failure) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run.probe,
                run.at,
                int(run.success),
                run.duration,
                run.latency,
                run.status,
                run.reason or None,
            ),
        )

    def probe_runs(self, probe: str, limit: int = 100) -> list[ProbeRun]:
        """The latest runs of one probe, newest first."""
        rows = self.db.execute(
            "SELECT * FROM probe_results WHERE probe=? ORDER BY at DESC, id DESC LIMIT ?",
            (probe, limit),
        )
        return [
            ProbeRun(
                r["probe"],
                r["at"],
                r["duration"],
                bool(r["success"]),
                (r["failure"],) if r["failure"] else (),
                r["status_code"],
                r["latency"],
            )
            for r in rows
        ]

    def prune_probe_runs(self, probe: str, older_than: float) -> int:
        """Delete one probe's runs that started before `older_than` (by index)."""
        return self._write(
            PROBE_RESULTS, "DELETE FROM probe_results WHERE probe=? AND at < ?", (probe, older_than)
        )

    # -- retention ----------------------------------------------------------------------

    def prune_history(self, older_than: float, limit: int = 500) -> dict[str, int]:
        """Delete what finished before `older_than`, at most `limit` rows of each kind,
        oldest first: delivered and dead outbox entries; resolved incidents (with their
        Slack message references and acknowledgement) once no undelivered entry created
        before their resolve is left (a pending RESOLVED message re-renders from its
        incident row); silences that ended. Returns rows deleted per kind; `limit` of one
        kind means there may be more to delete."""
        with self._transaction(RETENTION) as db:
            outbox = db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE delivered_at < ? "
                "UNION ALL SELECT id FROM outbox WHERE dead_at < ? ORDER BY id LIMIT ?)",
                (older_than, older_than, limit),
            ).rowcount
            ids = [
                str(r[0])
                for r in db.execute(
                    "SELECT id FROM incidents i WHERE resolved_at < ? AND NOT EXISTS (SELECT 1 "
                    "FROM outbox o WHERE o.delivered_at IS NULL AND o.dead_at IS NULL AND "
                    "o.created_at <= i.resolved_at) ORDER BY resolved_at LIMIT ?",
                    (older_than, limit),
                )
            ]
            if ids:
                marks = ",".join("?" * len(ids))
                for table, column in (
                    ("slack_messages", "incident_id"),
                    ("incident_acks", "incident_id"),
                    ("incidents", "id"),
                ):
                    db.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids)
            silences = db.execute(
                "DELETE FROM silences WHERE id IN (SELECT id FROM silences WHERE ends_at < ? "
                "ORDER BY ends_at LIMIT ?)",
                (older_than, limit),
            ).rowcount
        return {"outbox": outbox, "incidents": len(ids), "silences": silences}

    # -- gate audit ---------------------------------------------------------------------

    def record_gates(self, rows: Sequence[tuple[float, str, str, str, str]]) -> None:
        """(at, service, decision, inputs JSON, body JSON) rows, in one transaction. Each
        distinct text is stored once in gate_blobs; identical decisions of the batch share
        a row with their count and first/last time."""
        if not rows:
            return
        grouped: dict[tuple[str, str, str, str], list[float]] = {}
        for at, service, decision, inputs, body in rows:
            span = grouped.get((service, decision, inputs, body))
            if span is None:
                grouped[(service, decision, inputs, body)] = [at, at, 1]
            else:
                span[1] = at
                span[2] += 1
        try:
            self._record_gates(grouped)
        except StateStoreWriteError:
            # The hash cache says "stored" for the texts of the batch that was not.
            self._blob_hashes.clear()
            raise

    def _record_gates(self, grouped: dict[tuple[str, str, str, str], list[float]]) -> None:
        with self._transaction(GATE_AUDIT) as db:
            blobs: list[tuple[str, str]] = []
            decisions = [
                (
                    first,
                    service,
                    decision,
                    self._blob_hash(inputs, blobs),
                    self._blob_hash(body, blobs),
                    int(count),
                    last,
                )
                for (service, decision, inputs, body), (first, last, count) in grouped.items()
            ]
            db.executemany("INSERT OR IGNORE INTO gate_blobs(hash, text) VALUES (?, ?)", blobs)
            db.executemany(
                "INSERT INTO gate_decisions(at, service, decision, inputs, body, inputs_hash, "
                "body_hash, count, last_at) VALUES (?, ?, ?, '', '', ?, ?, ?, ?)",
                decisions,
            )

    def _blob_hash(self, text: str, new: list[tuple[str, str]]) -> str:
        known = self._blob_hashes.get(text)
        if known is None:
            known = hashlib.sha256(text.encode()).hexdigest()
            if len(self._blob_hashes) > 10_000:
                self._blob_hashes.clear()
            self._blob_hashes[text] = known
            new.append((known, text))
        return known

    def gate_history(self, service: str | None, limit: int = 100) -> list[dict[str, Any]]:
        select = (
            "SELECT d.id, d.at, d.service, d.decision, d.count, COALESCE(d.last_at, d.at) "
            "AS last_at, COALESCE(i.text, d.inputs) AS inputs, "
            "COALESCE(b.text, d.body) AS body FROM gate_decisions d "
            "LEFT JOIN gate_blobs i ON i.hash = d.inputs_hash "
            "LEFT JOIN gate_blobs b ON b.hash = d.body_hash "
        )
        if service:
            rows = self.db.execute(
                select + "WHERE d.service=? ORDER BY d.id DESC LIMIT ?", (service, limit)
            )
        else:
            rows = self.db.execute(select + "ORDER BY d.id DESC LIMIT ?", (limit,))
        return [
            {
                "id": r["id"],
                "at": r["at"],
                "service": r["service"],
                "decision": r["decision"],
                "count": r["count"],
                "last_at": r["last_at"],
                "inputs": json.loads(r["inputs"]),
                "result": json.loads(r["body"]),
            }
            for r in rows
        ]

    def prune_gate_audit(self, older_than: float, max_rows: int, limit: int = 1000) -> int:
        """Delete the gate decisions last seen before `older_than` and the oldest beyond
        `max_rows` (at most `limit` rows, oldest first), then the texts only they referred
        to. Returns rows deleted; `limit` of them means there may be more to delete.

        Rows are appended in time order, so both cuts are an id, and the texts are found
        by index: the work is proportional to what is deleted, not to the table."""
        db = self.db
        bottom = db.execute("SELECT MIN(id) FROM gate_decisions").fetchone()[0]
        top = db.execute("SELECT MAX(id) FROM gate_decisions").fetchone()[0]
        if top is None:
            return 0
        first_kept = db.execute(
            "SELECT id FROM gate_decisions WHERE COALESCE(last_at, at) >= ? ORDER BY id LIMIT 1",
            (older_than,),
        ).fetchone()
        cut = max(top - max_rows + 1, first_kept[0] if first_kept else top + 1)
        cut = min(cut, bottom + limit)
        if cut <= bottom:
            return 0
        with self._transaction(GATE_AUDIT) as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS gate_prune (hash TEXT PRIMARY KEY)")
            db.execute("DELETE FROM temp.gate_prune")
            db.execute(
                "INSERT OR IGNORE INTO temp.gate_prune SELECT inputs_hash FROM gate_decisions "
                "WHERE id < ? AND inputs_hash IS NOT NULL UNION SELECT body_hash FROM "
                "gate_decisions WHERE id < ? AND body_hash IS NOT NULL",
                (cut, cut),
            )
            deleted = db.execute("DELETE FROM gate_decisions WHERE id < ?", (cut,)).rowcount
            db.execute(
                "DELETE FROM gate_blobs WHERE hash IN (SELECT hash FROM temp.gate_prune p "
                "WHERE NOT EXISTS (SELECT 1 FROM gate_decisions WHERE inputs_hash = p.hash) "
                "AND NOT EXISTS (SELECT 1 FROM gate_decisions WHERE body_hash = p.hash))"
            )
        if deleted:
            # The cache says "already stored" for texts that may just have been deleted.
            self._blob_hashes.clear()
        return deleted


# An entry waits while an earlier one for the same notifier and service waits for its
# retry: a RESOLVED must not reach Slack before the FIRING it ends (the FIRING's 429 was
# retried 30 s later, after the RESOLVED had gone). Other services' entries go on.
# Grouped once per query, not a subquery per row: during a storm with Slack down (1,500
# services, each with a FIRING waiting to retry and a RESOLVED behind it) the correlated
# form took 200 ms of the event loop per poll.
def waiting(mark: str, where: str, held: str = "") -> str:
    """The CTE of the first entry per notifier and service that others wait behind: one
    waiting for its retry time, or (`held`, the shared store) one another replica holds.
    `where` is the same notifier condition as the outer query's."""
    return (
        "WITH waiting AS (SELECT o.notifier, o.service, MIN(o.id) AS first FROM outbox o "
        f"WHERE o.delivered_at IS NULL AND o.dead_at IS NULL AND (o.next_attempt_at > {mark}"
        f"{held}){where} GROUP BY o.notifier, o.service)"
    )


BEHIND_WAITING = "LEFT JOIN waiting w ON w.notifier = o.notifier AND w.service = o.service"
NOT_BEHIND = "(w.first IS NULL OR o.id < w.first)"


def notifier_filter(
    mark: str, notifier: str | None, except_notifiers: Collection[str]
) -> tuple[str, list[str]]:
    """The outbox query's notifier condition (`mark` is the driver's placeholder)."""
    where, args = "", []
    if notifier is not None:
        where += f" AND o.notifier = {mark}"
        args.append(notifier)
    if except_notifiers:
        where += f" AND o.notifier NOT IN ({', '.join([mark] * len(except_notifiers))})"
        args.extend(sorted(except_notifiers))
    return where, args
