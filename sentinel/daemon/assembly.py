"""Composition root of the daemon: builds the store, notifiers, alert manager, outbox
dispatcher and gate around the daemon. Nothing else constructs these objects."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from sentinel.alerting.leader import (
    LeaderCycle,
    Leadership,
    PostgresLeader,
    SoleLeader,
    default_replica_id,
)
from sentinel.alerting.manager import AlertManager, RollbackGuard
from sentinel.alerting.store import Store
from sentinel.alerting.store_api import StateStore
from sentinel.config import Config, LogNotifierConfig, SlackNotifierConfig, WebhookNotifierConfig
from sentinel.daemon.probes import ProbeSchedule
from sentinel.daemon.retention import StateRetention
from sentinel.daemon.runner import Daemon
from sentinel.daemon.vanished import forget_hook
from sentinel.errors import StateStoreError, StateStoreUnusable
from sentinel.evaluate.probe_check import probe_slo
from sentinel.evaluate.wiring import build_engine, build_sources
from sentinel.gate.service import Gate
from sentinel.notify.base import Notifier
from sentinel.notify.chart import ChartMaker
from sentinel.notify.chart_worker import ChartWorker
from sentinel.notify.dispatcher import Dispatcher
from sentinel.notify.log import LogNotifier
from sentinel.outputs import dashboard_sync as dashboards_sync
from sentinel.outputs.links import dashboard_url
from sentinel.rules.model import SLO, RuleSet
from sentinel.selfmetrics import SelfMetrics

Cleanup = Callable[[], Awaitable[None]]

log = logging.getLogger("sentinel.daemon")


def build_notifiers(
    config: Config, store: StateStore, charts: ChartMaker | None = None
) -> dict[str, Notifier]:
    notifiers: dict[str, Notifier] = {}
    for name, nc in config.notifiers.items():
        # Imported only when used: slack-sdk and Jinja2 cost memory a log-only setup
        # does not need.
        if isinstance(nc, SlackNotifierConfig):
            from sentinel.notify.slack import SlackNotifier

            notifiers[name] = SlackNotifier(name, nc, store, charts)
        elif isinstance(nc, WebhookNotifierConfig):
            from sentinel.notify.webhook import WebhookNotifier

            notifiers[name] = WebhookNotifier(name, nc)
        elif isinstance(nc, LogNotifierConfig):
            notifiers[name] = LogNotifier(name, nc.min_severity)
        elif nc.type == "alertmanager":
            from sentinel.notify.alertmanager import AlertmanagerNotifier

            notifiers[name] = AlertmanagerNotifier(
                name, nc, config.server, config.evaluation.interval
            )
    if not notifiers:
        notifiers["log"] = LogNotifier("log")
    return notifiers


def rollback_guards(config: Config) -> dict[str, RollbackGuard]:
    return {
        name: RollbackGuard(nc.cooldown, nc.min_events)
        for name, nc in config.notifiers.items()
        if isinstance(nc, WebhookNotifierConfig)
    }


@dataclass
class Assembly:
    daemon: Daemon
    cleanup: Cleanup
    store: StateStore
    manager: AlertManager
    dispatcher: Dispatcher
    gate: Gate
    probes: ProbeSchedule | None = None
    leader: Leadership | None = None


async def build_daemon(
    config_path: str, config: Config, rules: RuleSet, clock: Callable[[], float] = time.time
) -> Assembly:
    # The store first: a state file or database that cannot be used stops the start
    # (StateStoreError) before anything else holds sockets or tasks.
    replica = default_replica_id()
    store = open_store(config, clock, replica)
    # Each component registers its own clean-up as it is built: `cleanup` undoes them in
    # reverse order (gate, dispatcher, notifiers, store), and a failure half-way through
    # building undoes what was already built.
    stack = contextlib.AsyncExitStack()
    stack.callback(store.close)
    if isinstance(store, Store):
        stack.push_async_callback(sqlite_checkpoints(store))
    daemon = Daemon(
        config_path,
        config,
        rules,
        engine=build_engine(config, daemon=True),
        metrics=SelfMetrics(),
        source_factory=build_sources,
        clock=clock,
    )
    # Slack alert charts: range queries through the daemon's current sources and rules,
    # drawn in a worker process (matplotlib stays out of the daemon, its CPU off the loop).
    chart_worker = ChartWorker()
    stack.push_async_callback(chart_worker.close)
    charts = ChartMaker(
        lambda source, expr, start, end, step: daemon.engine.sources[source].range(
            expr, start, end, step
        ),
        lambda: daemon.rules.slos,
        lambda: daemon.config.dashboards.deploy_marker,
        render=chart_worker,
    )
    notifiers = build_notifiers(config, store, charts)
    dispatcher = Dispatcher(store, notifiers, daemon.metrics, clock, spawn=daemon.tasks.spawn)
    manager = AlertManager(
        store,
        notifiers,
        rollback_guards(config),
        functools.partial(dashboard_url, config.dashboards.grafana_url),
        dispatcher.wake,
    )
    leader = build_leader(config, store, clock, replica)

    def current_slos() -> list[SLO]:
        """Every SLO that can produce results now: the rules' and the probes'."""
        probes = daemon.config.probes.items()
        return [*daemon.rules.slos, *(probe_slo(name, probe) for name, probe in probes)]

    # Firing alerts loaded from the store count for the gate from now on, before any cycle
    # has stepped them; matched again to the SLOs of each reload (every replica: each
    # answers the gate).
    manager.recognise(current_slos())

    async def recognise_restored() -> None:
        manager.recognise(current_slos())

    daemon.reload_hooks.append(recognise_restored)
    cycle = LeaderCycle(leader, manager, store, dispatcher.wake, current_slos, daemon.failed_slos)
    daemon.result_hooks.append(cycle.observe)
    # Alertmanager wants firing alerts re-sent every cycle (notify/alertmanager.py): after
    # the manager, from its state.
    from sentinel.notify.alertmanager import resend_hook

    resend_to_alertmanagers = resend_hook(notifiers, manager)
    daemon.result_hooks.append(resend_to_alertmanagers)
    daemon.result_hooks.append(
        forget_hook(
            lambda: daemon.config.evaluation.forget_after,
            lambda: daemon.engine,
            manager,
            lambda: leader.is_leader,
            lambda: all(group.name in daemon.results for group in daemon.rules.groups),
        )
    )

    async def close_notifiers() -> None:
        for notifier in notifiers.values():  # the current ones: a reload may swap them
            await notifier.close()

    stack.push_async_callback(close_notifiers)
    gate = Gate(daemon, manager, store)

    def outbox() -> dict[str, int] | None:
        try:
            return store.outbox_stats()
        except StateStoreError:  # a shared store that cannot be reached: health says so
            return None

    def health() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {
            "state_store": {
                **store.health.as_json(),
                "backend": store.backend,
                "outbox": outbox(),
                # Alert changes held in memory because their commit failed.
                "unsaved_alert_changes": len(manager.unsaved.alerts),
                "unsaved_notifications": len(manager.unsaved.notifications),
            }
        }
        for name, notifier in notifiers.items():
            out[f"notifier:{name}"] = {"kind": notifier.kind, **notifier.health.as_json()}
        return out

    daemon.health_providers.append(health)

    def gate_sources() -> dict[str, dict[str, Any]]:
        # The gate's own source clients (gate.max_in_flight): the outcome of its last
        # query, shown beside the scheduled cycles' clients. Informational: a query that
        # failed hours ago must not keep the daemon `degraded` while nobody asks the gate.
        return {
            f"gate:{name}": {**source.health.as_json(), "informational": True}
            for name, source in gate.engine.sources.items()
        }

    daemon.health_providers.append(gate_sources)
    daemon.health_providers.append(lambda: {"chart_worker": chart_worker.health_json()})
    daemon.readiness_checks.append(store.health.not_ready_reasons)
    dispatcher.start()
    stack.push_async_callback(dispatcher.stop)
    retention = StateRetention(store, lambda: daemon.config.state.retention, clock)
    retention.start()
    stack.push_async_callback(retention.stop)
    stack.push_async_callback(gate.close)

    grafana = dashboards_sync.client(config)
    if grafana is not None:
        daemon.health_providers.append(lambda: {"grafana": grafana.health.as_json()})

    async def sync_dashboards() -> None:
        await dashboards_sync.sync(daemon.config, daemon.rules, grafana)

    daemon.start_hooks.append(sync_dashboards)
    daemon.reload_hooks.append(sync_dashboards)

    async def reload_notifiers() -> None:
        # The dispatcher and the alert manager share this dict: swap its content in place.
        # Built before anything is replaced: a notifier that fails to build leaves the
        # running ones in place (the reload then shows as partial).
        fresh = build_notifiers(daemon.config, store, charts)
        old = dict(notifiers)
        notifiers.clear()
        notifiers.update(fresh)
        manager.guards = rollback_guards(daemon.config)
        dispatcher.retire(old.values())  # each closes once its send in flight has ended

    daemon.reload_hooks.append(reload_notifiers)

    # Synthetic probes: their runs take the evaluated SLOs' path (alerts, /api/v1/slos,
    # the gate's reasons, health); stopped before the store closes.
    probes = ProbeSchedule(config.probes, daemon.metrics, store, clock)
    probes.result_hooks.append(cycle.observe)
    probes.result_hooks.append(resend_to_alertmanagers)
    daemon.result_providers.append(probes.results)
    daemon.health_providers.append(probes.health)
    gate.probe_results = probes.gate_results

    async def start_probes() -> None:
        probes.start()

    async def reload_probes() -> None:
        await probes.reconfigure(daemon.config.probes)

    daemon.start_hooks.append(start_probes)
    daemon.reload_hooks.append(reload_probes)

    def judged() -> tuple[str, frozenset[tuple[str, str]]]:
        """What this replica judges: its rules, and the probes' SLOs (from the config)."""
        return daemon.rules.fingerprint, frozenset((s.service, s.name) for s in current_slos())

    rules_seen = [judged()]
    # A fresh process cannot tell whether its rules are older or newer than a removal
    # another replica made (an old pod restarted mid deploy looks like a new one): it
    # leaves retired alerts be for the hold (30 min); a reload that changes its rules
    # is known to be newer.
    manager.rules_changed_at = -math.inf

    async def note_rules_change() -> None:
        # Every replica, leader or not: when what it judges last changed (a reload that
        # changes only other config does not make old rules new; one that puts a probe
        # back does).
        now_judged = judged()
        if now_judged != rules_seen[0]:
            rules_seen[0] = now_judged
            manager.rules_changed_at = clock()

    daemon.reload_hooks.append(note_rules_change)

    async def retire_removed_slos() -> None:
        # An SLO (or probe) the reload removed gets no result again: its firing alert is
        # resolved now, or Slack would never hear of it and the gate would fail its
        # service for ever. The leader does it; followers adopt the result.
        if not leader.is_leader:
            return
        async with manager.lock:
            try:
                resolved = manager.retire_gone(current_slos(), clock())
            except StateStoreError as exc:  # a read the notifications need failed
                # They count for the gate no more; each cycle step tries again until
                # the store answers (resolved from the alert each notifier was sent).
                log.error(f"alerts of removed SLOs not resolved yet, retried each cycle: {exc}")
                cycle.recheck_orphans()
                return
        if resolved:
            dispatcher.wake()

    daemon.reload_hooks.append(retire_removed_slos)
    stack.push_async_callback(probes.stop)

    await leader.start()
    stack.push_async_callback(leader.stop)
    # The sends in flight end (within the dispatcher's grace) before the leadership and
    # its liveness lock go: released first, the next leader took their claims as a dead
    # replica's, resent them and could send what queued behind them first.
    stack.push_async_callback(dispatcher.stop)
    if isinstance(leader, PostgresLeader):
        leader.on_change.append(cycle.leadership_changed)
    daemon.leader_status = leader.status
    gauge = Gauge(
        "sentinel_leader",
        "1 while this replica leads (runs alert transitions and delivers notifications)",
        registry=daemon.metrics.registry,
    )
    gauge.set_function(lambda: float(leader.is_leader))

    return Assembly(daemon, stack.aclose, store, manager, dispatcher, gate, probes, leader)


# How often the SQLite store's WAL is copied into the database file, in a worker thread.
CHECKPOINT_SECONDS = 1.0


def sqlite_checkpoints(store: Store) -> Cleanup:
    """Checkpoint the SQLite store off the event loop every CHECKPOINT_SECONDS (its own
    automatic checkpoint syncs the file inside a commit, on the loop); returns the stop."""
    store.checkpoints_in_background()

    async def run() -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                await asyncio.to_thread(store.checkpoint)
            except Exception:  # never end the checkpoints
                log.exception("state store checkpoint crashed")

    task = asyncio.get_running_loop().create_task(run(), name="sqlite-checkpoint")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


def open_store(config: Config, clock: Callable[[], float], replica: str) -> StateStore:
    state = config.state
    if state.backend == "postgres":
        assert state.dsn is not None  # the config requires it
        try:
            from sentinel.alerting.pgstore import PostgresStore
        except ImportError as exc:
            raise StateStoreUnusable(
                "state.dsn",
                f"backend postgres needs psycopg ({exc}): pip install 'sentinel-slo[postgres]'",
            ) from exc
        return PostgresStore(
            state.dsn.get_secret_value(),
            clock,
            replica,
            state.connect_timeout,
            state.statement_timeout,
        )
    return Store(config.resolve(state.path), clock)


def build_leader(
    config: Config, store: StateStore, clock: Callable[[], float], replica: str
) -> Leadership:
    """SQLite: the one replica leads. PostgreSQL: elected; checked every half interval
    (at most 5 s), so leadership moves within one interval of the leader's death."""
    state = config.state
    if state.backend != "postgres" or state.dsn is None:
        return SoleLeader(replica, clock)
    from sentinel.alerting.pgstore import PostgresStore

    poll = min(5.0, config.evaluation.interval / 2)
    leader = PostgresLeader(
        state.dsn.get_secret_value(), replica, poll, clock, state.connect_timeout
    )
    if isinstance(store, PostgresStore):
        store.fence = leader.fence
    return leader
