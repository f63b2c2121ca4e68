"""Durable state in one SQLite file (WAL): alert states, incidents, silences, the
notification outbox, Slack message references and the gate audit trail.

A state change and the notifications it causes are written in ONE transaction
(`commit_cycle`), then delivered; delivery marks them done. A crash at any point leaves
either nothing or both, and undelivered entries are picked up on the next start.
The schema is versioned; `MIGRATIONS[i]` upgrades version i to i+1.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sentinel import jsonenc
from sentinel.alerting.silences import Silence, SilenceMatcher
from sentinel.alerting.state import Alert, AlertState

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
)


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


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a process crash (kill -9) in WAL mode.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._blob_hashes: dict[str, str] = {}
        self.migrate()

    def close(self) -> None:
        self.db.close()

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        version = self.schema_version
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={target}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

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
    ) -> None:
        """State changes and their notifications, atomically."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO alerts(key, data, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET data=excluded.data, updated_at=excluded.updated_at",
                [(a.key, jsonenc.dumps(asdict(a)), now) for a in alerts],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO incidents(id, alert_key, service, slo, severity, labels, "
                "started_at, last_value, threshold) VALUES (:id, :alert_key, :service, :slo, "
                ":severity, :labels, :started_at, :last_value, :threshold)",
                list(incidents_opened),
            )
            self.db.executemany(
                "UPDATE incidents SET resolved_at=? WHERE id=?",
                [(at, iid) for iid, at in incidents_resolved],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO outbox(idempotency_key, notifier, kind, service, payload, "
                "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        n.idempotency_key,
                        n.notifier,
                        n.kind,
                        n.service,
                        jsonenc.dumps(n.payload),
                        now,
                        now,
                    )
                    for n in notifications
                ],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def incidents(self, open_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
        where = "WHERE resolved_at IS NULL" if open_only else ""
        rows = self.db.execute(
            f"SELECT * FROM incidents {where} ORDER BY started_at DESC LIMIT ?", (limit,)
        )
        return [{**dict(r), "labels": json.loads(r["labels"])} for r in rows]

    # -- outbox -------------------------------------------------------------------------

    def due(self, now: float, limit: int = 50) -> list[OutboxEntry]:
        rows = self.db.execute(
            "SELECT * FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL "
            "AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            (now, limit),
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
        self.db.execute("UPDATE outbox SET sending_since=? WHERE id=?", (now, entry_id))

    def mark_delivered(self, entry_id: int, now: float) -> None:
        self.db.execute(
            "UPDATE outbox SET delivered_at=?, attempts=attempts+1, last_error=NULL WHERE id=?",
            (now, entry_id),
        )

    def mark_retry(self, entry_id: int, next_at: float, error: str) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts=attempts+1, next_attempt_at=?, last_error=?, "
            "sending_since=NULL WHERE id=?",
            (next_at, error, entry_id),
        )

    def mark_dead(self, entry_id: int, now: float, error: str) -> None:
        self.db.execute(
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

    # -- slack message references -------------------------------------------------------

    def slack_message(self, notifier: str, incident_id: str) -> tuple[str, str] | None:
        row = self.db.execute(
            "SELECT channel, ts FROM slack_messages WHERE notifier=? AND incident_id=?",
            (notifier, incident_id),
        ).fetchone()
        return (row["channel"], row["ts"]) if row else None

    def save_slack_message(
        self, notifier: str, incident_ids: Iterable[str], channel: str, ts: str
    ) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO slack_messages(notifier, incident_id, channel, ts) "
            "VALUES (?, ?, ?, ?)",
            [(notifier, iid, channel, ts) for iid in incident_ids],
        )

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
            uuid.uuid4().hex[:12], tuple(matchers), starts_at, ends_at, author, comment, time.time()
        )
        self.db.execute(
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
        cur = self.db.execute(
            "UPDATE silences SET ends_at=MIN(ends_at, ?) WHERE id=?", (now, silence_id)
        )
        return cur.rowcount > 0

    # -- gate audit ---------------------------------------------------------------------

    def record_gates(
        self, rows: Sequence[tuple[float, str, str, str, str]], db: sqlite3.Connection | None = None
    ) -> None:
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
        db = db or self.db
        db.execute("BEGIN")
        try:
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
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _blob_hash(self, text: str, new: list[tuple[str, str]]) -> str:
        known = self._blob_hashes.get(text)
        if known is None:
            known = hashlib.sha256(text.encode()).hexdigest()
            if len(self._blob_hashes) > 10_000:
                self._blob_hashes.clear()
            self._blob_hashes[text] = known
            new.append((known, text))
        return known

    def writer_connection(self) -> sqlite3.Connection:
        """A second connection for batched writes from a worker thread (WAL allows it)."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

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
