"""Leader election among replicas sharing a PostgreSQL state store, and the result hook
that lets only the leader run alert transitions.

The leader holds a session-level advisory lock (`pg_try_advisory_lock`) on a dedicated
connection with TCP keepalives; every replica retries every `poll` seconds (half the
evaluation interval, at most 5 s), so leadership moves within about one `poll` after the
leader dies, and its first cycle follows within one interval. Losing the connection loses
the lock (PostgreSQL releases it with the session), and the replica's own next check, or
the fence in the store's commit, notices. Every replica also holds a liveness lock keyed
by itself on that connection: its outbox claims are honoured while it is held.

With SQLite there is one replica and it always leads (`SoleLeader`).

`LeaderCycle` is the alert manager's result hook on every replica. The leader steps the
state machines and commits; a follower adopts the alert states the leader committed
(the gate, the API, the UI and Alertmanager re-sends then answer alike on every replica).
A replica that becomes the leader loads the committed states first (reminders and
resolves continue with the same incident ids; nothing is paged again) unless it led
without interruption before. While PostgreSQL cannot be reached, the replica that led
last goes on stepping its alerts in memory (its commits are refused and held, as on a
full disk); when the server is back it gets a head start of one poll to take the lead
back and commits what it holds, with the times it happened. If another replica takes the
lead instead, the held changes are dropped (never sent) and that replica derives them
again from the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from sentinel.alerting.manager import AlertManager
from sentinel.alerting.store import ALERT_STATE
from sentinel.alerting.store_api import StateStore
from sentinel.errors import StateStoreError
from sentinel.evaluate.slo import SLOResult, rfc3339
from sentinel.logs import fields
from sentinel.rules.model import SLO, RuleGroup

log = logging.getLogger("sentinel.leader")


_assemblies = itertools.count(1)


def default_replica_id() -> str:
    """host:pid:token — unique per process; a restarted process is a new replica. The
    token because host:pid alone repeats: a container restarted in its pod keeps the
    hostname and PID 1, and two containers on host networking share the hostname and
    are both PID 1 (the same claims and liveness lock for two processes). A second
    daemon in one process (tests) gets a suffix."""
    n = next(_assemblies)
    token = secrets.token_hex(3)
    return f"{socket.gethostname()}:{os.getpid()}:{token}" + (f"/{n}" if n > 1 else "")


class Leadership(Protocol):
    replica: str

    @property
    def is_leader(self) -> bool: ...

    @property
    def acting(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class SoleLeader:
    """The only replica (SQLite): always the leader."""

    def __init__(self, replica: str, clock: Callable[[], float]) -> None:
        self.replica = replica
        self.since = clock()

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def acting(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {
            "backend": "sqlite",
            "is_leader": True,
            "holder": self.replica,
            "since": rfc3339(self.since),
        }

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class PostgresLeader:
    def __init__(
        self,
        dsn: str,
        replica: str,
        poll: float,
        clock: Callable[[], float] = time.time,
        connect_timeout: float = 3.0,
    ) -> None:
        from sentinel.alerting import pgstore

        self._pg = pgstore
        self.dsn = dsn
        self.replica = replica
        self.key = pgstore.replica_key(replica)
        self.poll = poll
        self.clock = clock
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._leader_pid: int | None = None
        self._connected_before = False
        # This replica led last, as far as it knows (nobody else seen holding the lock
        # since): while the server cannot be reached it goes on stepping the alerts in
        # memory (`acting`), and commits what it holds if it takes the lead back.
        self.led_last = False
        self.since: float | None = None
        self.holder: str | None = None
        self.holder_since: float | None = None
        self.error: str | None = None
        # Called on the event loop: (is_leader, continuous) after each change; continuous
        # is True when this replica led last, with nobody in between.
        self.on_change: list[Callable[[bool, bool], None]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self._leader_pid is not None

    @property
    def acting(self) -> bool:
        """Leads, or led last and cannot see anyone else leading (the server is down)."""
        return self.is_leader or (self.led_last and self.holder is None)

    def fence(self) -> int | None:
        """The backend pid of the leader connection while this replica leads."""
        return self._leader_pid

    def status(self) -> dict[str, Any]:
        return {
            "backend": "postgres",
            "is_leader": self.is_leader,
            "holder": self.holder,
            "since": rfc3339(self.holder_since) if self.holder_since else None,
            "replica": self.replica,
            "last_error": self.error,
        }

    async def start(self) -> None:
        """One attempt before the first cycle (so a lone replica leads at once), then
        every `poll` seconds."""
        await self.check()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="leader-election")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                await self.check()
            except Exception:  # never end the election loop
                log.exception("leader election check failed")

    async def check(self) -> None:
        was = self.is_leader
        continuous = await asyncio.to_thread(self._attempt)
        if self.is_leader != was:
            if self.is_leader:
                log.warning(f"this replica is now the leader ({self.replica})")
            else:
                log.warning(
                    f"this replica lost the leadership ({self.replica})",
                    extra=fields(error=self.error),
                )
            for callback in self.on_change:
                callback(self.is_leader, continuous)

    def _attempt(self) -> bool:
        """Runs in a worker thread. Returns whether a new leadership is continuous."""
        pg = self._pg
        try:
            reconnected = self._conn is None and self._connected_before
            conn = self._connection()
            continuous = False
            # Back after losing the server (a restart): the last leader, which may hold
            # changes made meanwhile, gets one poll's head start to take the lead back.
            waits = reconnected and not self.led_last
            if self._leader_pid is None and not waits:
                got = conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s) AS got", (pg.LEADER_CLASS, pg.LEADER_KEY)
                ).fetchone()
                if got and got["got"]:
                    continuous = self._take_over(conn)
                    self._leader_pid = conn.info.backend_pid
            elif self._leader_pid is not None:
                held = conn.execute(
                    "SELECT 1 FROM pg_locks WHERE locktype='advisory' AND classid=%s AND "
                    "objid=%s AND objsubid=2 AND pid=pg_backend_pid() AND granted",
                    (pg.LEADER_CLASS, pg.LEADER_KEY),
                ).fetchone()
                if held is None:
                    self._leader_pid = None
            self._read_holder(conn)
            self.error = None
            return continuous
        except Exception as exc:  # psycopg.Error, or a bug: leadership is lost either way
            self.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._drop()
            return False

    def _connection(self) -> Any:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop()
        conn = self._pg.connect(
            self.dsn, f"sentinel:{self.replica}", self.connect_timeout, self.connect_timeout
        )
        self._conn = conn
        self._connected_before = True
        conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self._pg.LIVENESS_CLASS, self.key))
        return conn

    def _take_over(self, conn: Any) -> bool:
        now = self.clock()
        with conn.transaction():
            prior = conn.execute("SELECT holder FROM sentinel_leader WHERE id=1").fetchone()
            conn.execute(
                "INSERT INTO sentinel_leader(id, holder, since) VALUES (1, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET holder=excluded.holder, since=excluded.since",
                (self.replica, now),
            )
        self.since = now
        self.led_last = True
        return bool(prior and prior["holder"] == self.replica)

    def _read_holder(self, conn: Any) -> None:
        row = conn.execute(
            "SELECT a.application_name AS app, l.pid, s.holder, s.since FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "LEFT JOIN sentinel_leader s ON s.id = 1 "
            "WHERE l.locktype='advisory' AND l.classid=%s AND l.objid=%s AND l.objsubid=2 "
            "AND l.granted",
            (self._pg.LEADER_CLASS, self._pg.LEADER_KEY),
        ).fetchone()
        if row is None:
            self.holder, self.holder_since = None, None
            return
        # This replica holds it when its own connection does. The holder's name comes
        # from its application_name, which PostgreSQL cuts at 63 bytes (a long pod name
        # with the id's pid and token): the table's holder gives it in full when it is
        # the same replica. Compared by name, a leader with a long name never saw itself.
        name = str(row["app"]).removeprefix("sentinel:")
        if row["pid"] == conn.info.backend_pid:
            name = self.replica
        elif row["holder"] is not None and str(row["holder"]).startswith(name):
            name = str(row["holder"])
        self.holder = name
        if name != self.replica:
            self.led_last = False
        self.holder_since = row["since"] if row["holder"] == name else None

    def _drop(self) -> None:
        self._leader_pid = None
        self.holder, self.holder_since = None, None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Closing the session releases the lock at once: the next replica takes over
        # within one poll instead of waiting for a timeout.
        await asyncio.to_thread(self._drop)


class LeaderCycle:
    """The alert manager's result hook on a replica of a shared store."""

    def __init__(
        self,
        leader: Leadership,
        manager: AlertManager,
        store: StateStore,
        on_leader: Callable[[], None] = lambda: None,
        slos: Callable[[], Sequence[SLO]] = lambda: (),
        failed: Callable[[str], Collection[str]] = lambda group: (),
    ) -> None:
        self.leader = leader
        self.manager = manager
        self.store = store
        self.on_leader = on_leader
        self.slos = slos
        # Keys of a group's SLOs whose answer failed in its latest cycle (the daemon's).
        self.failed = failed
        # Load the committed states before the next step (a new leadership).
        self._reload = False
        # Resolve the alerts of SLOs removed while no replica ran them, once per
        # leadership (the first step of this process included), before stepping.
        self._orphans_due = True

    def recheck_orphans(self) -> None:
        """Look for firing alerts of removed SLOs again at the next step (a reload could
        not resolve them: the store failed)."""
        self._orphans_due = True

    def _settle(self, group: RuleGroup) -> None:
        """Only after a step or an adopt of `group`: a step skipped (the states could not
        be loaded) has not stepped anything that would count instead of a restored alert."""
        self.manager.settle_restored(group, self.failed(group.name))

    def leadership_changed(self, is_leader: bool, continuous: bool) -> None:
        if is_leader:
            self._reload = not continuous
            self._orphans_due = True
            self.on_leader()

    async def observe(self, group: RuleGroup, results: Sequence[SLOResult], now: float) -> None:
        # The manager steps its instances in slices (other coroutines run in between):
        # the lock keeps this step, a probe's and another group's from interleaving, and a
        # follower's adopt from replacing the states in the middle of a step.
        async with self.manager.lock:
            await self._observe(group, results, now)

    async def _observe(self, group: RuleGroup, results: Sequence[SLOResult], now: float) -> None:
        if self.leader.acting and not self.leader.is_leader:
            # The server is unreachable and this replica led last: step on, in memory.
            # Its commits are refused (fenced) and held, in order, with their times, and
            # committed if it takes the lead back; dropped if another replica does.
            with contextlib.suppress(StateStoreError):
                await self.manager.observe_locked(group, results, now)
            self._settle(group)
            return
        if self.leader.is_leader:
            if self._reload:
                try:
                    alerts = self.store.load_alerts()
                except StateStoreError as exc:
                    log.error(f"new leader cannot load the alert states yet: {exc}")
                    return
                self.manager.adopt(alerts)
                self._reload = False
            if self._orphans_due:
                try:
                    # A follower's reload leaves the SLOs it removed in `slo_of` (only the
                    # leader retires them): those too, not only the loaded-at-start ones.
                    self.manager.retire_gone(self.slos(), now)
                    self._orphans_due = False
                except StateStoreError as exc:  # the incidents could not be read: next step
                    log.error(f"alerts of removed SLOs not resolved yet: {exc}")
            try:
                await self.manager.observe_locked(group, results, now)
            except StateStoreError as exc:  # a read the transitions need failed
                log.error(f"alert transitions postponed: {exc}")
            self._settle(group)  # stepped (`slo_of`) before any commit could fail
            return
        try:
            alerts = self.store.load_alerts()
        except StateStoreError:
            return  # unreachable: keep what we hold; health shows the store failing
        self.manager.adopt(alerts, group, results)
        self._settle(group)
        # Nothing of this replica's is left to save: the leader's commits stand.
        self.store.health.failing.pop(ALERT_STATE, None)
