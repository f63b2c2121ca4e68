"""The state store interface every caller types against (`StateStore`), satisfied by the
embedded SQLite store (`store.Store`, the default) and the shared PostgreSQL store
(`pgstore.PostgresStore`, for two or more replicas).

It is synchronous and called on the event loop: each call is one short local
transaction (SQLite) or round trip (PostgreSQL, bounded by connect and statement
timeouts). A write that fails raises `StateStoreWriteError` and is recorded in `health`;
a read that fails raises `StateStoreReadError`. The same component suite
(tests/component/test_pg_store_protocol.py) runs against both, so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any, Protocol

from sentinel.alerting.silences import Silence, SilenceMatcher
from sentinel.alerting.state import Alert
from sentinel.alerting.store import NewNotification, OutboxEntry, SlackMember, StoreHealth
from sentinel.evaluate.probe_check import ProbeRun


class StateStore(Protocol):
    # Where the state lives, as health and errors name it (a file, or a DSN without
    # credentials), and whether it takes writes.
    path: str
    health: StoreHealth

    @property
    def backend(self) -> str: ...

    @property
    def schema_version(self) -> int: ...

    def close(self) -> None: ...

    # -- alerts and incidents
    def load_alerts(self) -> dict[str, Alert]: ...

    def commit_cycle(
        self,
        alerts: Sequence[Alert],
        incidents_opened: Iterable[dict[str, Any]],
        incidents_resolved: Iterable[tuple[str, float]],
        notifications: Sequence[NewNotification],
        now: float,
        alert_rows: Sequence[str] | None = None,
    ) -> None: ...

    def delete_alerts(self, keys: Sequence[str]) -> None:
        """Forget the state rows of instances that vanished (their alerts quiet)."""
        ...

    def incidents(self, open_only: bool = False, limit: int = 200) -> list[dict[str, Any]]: ...

    def incidents_for(
        self, service: str, since: float, limit: int = 200
    ) -> list[dict[str, Any]]: ...

    # -- outbox
    def due(
        self,
        now: float,
        limit: int = 50,
        notifier: str | None = None,
        except_notifiers: Collection[str] = (),
    ) -> list[OutboxEntry]:
        """The entries due at `now`, oldest first: only `notifier`'s when given, and none
        of `except_notifiers`' (each notifier is delivered by its own worker)."""
        ...

    def mark_sending(self, entry_id: int, now: float) -> None: ...

    def mark_delivered(self, entry_id: int, now: float) -> None: ...

    def mark_retry(self, entry_id: int, next_at: float, error: str) -> None: ...

    def mark_dead(self, entry_id: int, now: float, error: str) -> None: ...

    def outbox_stats(self) -> dict[str, int]: ...

    def last_rollback_at(self, notifier: str, service: str) -> float | None: ...

    def deliveries(self, since: float, limit: int = 5000) -> list[dict[str, Any]]: ...

    def sent_alerts(self, incident_ids: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """incident id -> notifier -> the alert as last notified to it (its latest firing
        or reminder outbox entry that did not end dead; else, for Slack, the alert its
        message shows), for the incidents asked."""
        ...

    # -- Slack message references
    def slack_threads(self, incident_ids: Sequence[str]) -> dict[str, tuple[str, str]]: ...

    def slack_message(self, notifier: str, incident_id: str) -> tuple[str, str] | None: ...

    def save_slack_message(
        self, notifier: str, alerts: Sequence[dict[str, Any]], channel: str, ts: str
    ) -> None: ...

    def update_slack_alerts(self, notifier: str, alerts: Sequence[dict[str, Any]]) -> None: ...

    def slack_members(self, notifier: str, channel: str, ts: str) -> list[SlackMember]: ...

    def slack_message_incidents(self, channel: str, ts: str) -> list[tuple[str, str]]: ...

    # -- acknowledgements and silences
    def acknowledge(self, incident_id: str, actor: str, at: float) -> bool: ...

    def acknowledge_many(self, incident_ids: Sequence[str], actor: str, at: float) -> int: ...

    def acknowledgements(self, incident_ids: Iterable[str]) -> dict[str, tuple[str, float]]: ...

    def add_silence(
        self,
        matchers: Sequence[SilenceMatcher],
        starts_at: float,
        ends_at: float,
        author: str,
        comment: str,
    ) -> Silence: ...

    def silences(self) -> list[Silence]: ...

    def expire_silence(self, silence_id: str, now: float) -> bool: ...

    # -- probe results
    def record_probe_run(self, run: ProbeRun) -> None: ...

    def probe_runs(self, probe: str, limit: int = 100) -> list[ProbeRun]: ...

    def prune_probe_runs(self, probe: str, older_than: float) -> int: ...

    # -- gate audit and retention
    def record_gates(self, rows: Sequence[tuple[float, str, str, str, str]]) -> None: ...

    def gate_history(self, service: str | None, limit: int = 100) -> list[dict[str, Any]]: ...

    def prune_gate_audit(self, older_than: float, max_rows: int, limit: int = 1000) -> int: ...

    def prune_history(self, older_than: float, limit: int = 500) -> dict[str, int]: ...
