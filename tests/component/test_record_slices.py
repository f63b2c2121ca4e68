"""The daemon's record step after a cycle (status-change logs, SLO gauges, alert state
machines, the commit of thousands of still-firing alerts) runs in slices that let the
event loop answer requests in between, without changing what is logged, exposed, fired,
resolved or saved; and the loop's lag is measured and shown. In-process, with a real
SQLite state store; slices are made as short as possible (`SLICE_SECONDS = 0`) so every
yield point gives the loop a turn."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from sentinel import slicing
from sentinel.alerting import state
from sentinel.alerting.manager import QUIET_CHUNK, AlertManager
from sentinel.alerting.state import Alert, AlertState
from sentinel.alerting.store import Store
from sentinel.config import load_config
from sentinel.daemon.runner import Daemon
from sentinel.evaluate.engine import CycleReport
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.evaluate.wiring import build_sources
from sentinel.notify.log import LogNotifier
from sentinel.rules.loader import load_rules
from sentinel.rules.model import SLO, AlertPolicy, LatencySLI, RuleGroup, Selector
from sentinel.selfmetrics import SelfMetrics
from sentinel.web.app import build_app

RULES = """\
version: sentinel/v1
service: shop
interval: 60s
slos:
  - name: latency
    sli:
      latency: {histogram: shop_latency_seconds, quantile: 0.95}
    threshold: 1.5s
    window: 5m
    group_by: [pod]
"""


@pytest.fixture(autouse=True)
def shortest_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slicing, "SLICE_SECONDS", 0.0)


class Turns:
    """A coroutine that counts the event-loop turns it gets while something else runs."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    def __enter__(self) -> Turns:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


class FixedEngine:
    """The evaluation stands in for Prometheus: each cycle returns the given results."""

    def __init__(self) -> None:
        self.sources: dict[str, object] = {}
        self.results: list[SLOResult] = []

    async def evaluate_once(self, slos: object, at: float) -> CycleReport:
        return CycleReport(at, list(self.results), 0.0, 0, {})

    def forget(self, slos: object) -> None:
        return None


def pods(n: int, status: Status, at: float = 0.0) -> list[SLOResult]:
    value = 2.0 if status is Status.BREACH else 0.5
    return [
        SLOResult(
            "shop",
            "latency",
            status,
            value,
            1.5,
            None,
            300,
            at,
            {"pod": f"p{i:05d}"},
            kind="latency",
        )
        for i in range(n)
    ]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, FixedEngine]]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shop.yaml").write_text(RULES)
    config_path = tmp_path / "config.yaml"
    config_path.write_text('prometheus: {url: "http://127.0.0.1:9"}\nrules: [rules/*.yaml]\n')
    config = load_config(config_path)
    engine = FixedEngine()
    built = Daemon(
        str(config_path),
        config,
        load_rules(config),
        engine=engine,  # type: ignore[arg-type]
        metrics=SelfMetrics(),
        source_factory=build_sources,
    )
    yield built, engine
    await built.stop()


async def test_recording_5000_results_lets_a_concurrent_coroutine_run_in_between(
    daemon: tuple[Daemon, FixedEngine], caplog: pytest.LogCaptureFixture
) -> None:
    built, engine = daemon
    group = built.rules.groups[0].name
    engine.results = pods(5000, Status.OK)
    await built.run_group(group)
    engine.results = pods(5000, Status.OK)
    engine.results[4321] = pods(5000, Status.BREACH)[4321]
    caplog.clear()
    with Turns() as turns:
        await built.run_group(group)
    # The other coroutine (a gate request, say) ran between the slices of the record step.
    assert turns.count >= 100
    # and the step did all of its work: results, gauges, the one status change logged.
    assert len(built.latest()) == 5000
    registry = built.metrics.registry
    labels = {"service": "shop", "slo": "latency"}
    assert registry.get_sample_value("sentinel_slo_breached", {**labels, "instance": "pod=p04321"})
    assert (
        registry.get_sample_value("sentinel_slo_breached", {**labels, "instance": "pod=p04999"})
        == 0.0
    )
    changes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SLO ")]
    assert changes == ["SLO shop/latency{pod=p04321} ok -> breach"]


def manager_and_groups(
    tmp_path: Path, alert: AlertPolicy | None = None
) -> tuple[AlertManager, Store, RuleGroup, RuleGroup]:
    """`alert`: the policy of `shop`'s SLO (default: the default policy)."""
    store = Store(tmp_path / "state.db")
    manager = AlertManager(store, {"log": LogNotifier("log")}, {})
    slo = SLO(
        service="shop",
        name="latency",
        sli=LatencySLI(Selector("h"), 0.95),
        threshold=1.5,
        window=300,
        alert=alert or AlertPolicy(),
    )
    other = SLO(
        service="cart",
        name="latency",
        sli=LatencySLI(Selector("h"), 0.95),
        threshold=1.5,
        window=300,
    )
    return (
        manager,
        store,
        RuleGroup("shop", "shop.yaml", "shop", 60, (slo,)),
        RuleGroup("cart", "cart.yaml", "cart", 60, (other,)),
    )


def cart(results: list[SLOResult]) -> list[SLOResult]:
    return [
        SLOResult(
            "cart",
            r.slo,
            r.status,
            r.value,
            r.threshold,
            None,
            r.window,
            r.evaluated_at,
            r.labels,
            kind=r.kind,
        )
        for r in results
    ]


async def test_alerts_fire_and_resolve_once_in_order_when_two_groups_steps_overlap(
    tmp_path: Path,
) -> None:
    manager, store, shop, cart_group = manager_and_groups(tmp_path)
    try:
        for now, status in ((100.0, Status.BREACH), (160.0, Status.BREACH), (220.0, Status.OK)):
            with Turns() as turns:
                await asyncio.gather(
                    manager.observe(shop, pods(2000, status, now), now),
                    manager.observe(cart_group, cart(pods(2000, status, now)), now),
                )
            assert turns.count >= 100  # the steps were sliced: other work ran in between
        entries = store.due(now=300.0)
        # One FIRING and then one RESOLVED per service (one message each, 2,000 alerts),
        # nothing twice, the still-firing cycle in between added nothing.
        assert [(e.service, e.kind) for e in entries] == [
            ("shop", "firing"),
            ("cart", "firing"),
            ("shop", "resolved"),
            ("cart", "resolved"),
        ]
        assert all(len(e.payload["alerts"]) == 2000 for e in entries)
        # Everything is saved, and what is saved is what the manager holds.
        assert not manager.unsaved
        assert store.load_alerts() == manager.alerts
        assert all(a.state is AlertState.RESOLVED for a in manager.alerts.values())
    finally:
        store.close()


async def test_thousands_of_still_firing_alerts_are_saved_in_chunks_with_turns_between(
    tmp_path: Path,
) -> None:
    """Held by keep_firing_for, a firing alert's row is written at each breach (its last
    breach decides when it resolves, also after a restart): thousands of them are
    written in chunks. Without keep_firing_for they are not written again at all
    (tests/component/test_firing_rows.py)."""
    manager, store, shop, _ = manager_and_groups(tmp_path, AlertPolicy(keep_firing_for=600))
    firing = 3 * QUIET_CHUNK
    try:
        await manager.observe(shop, pods(firing, Status.BREACH, 100.0), 100.0)
        seen: list[int] = []

        async def watch() -> None:
            while True:
                saved = store.load_alerts().values()
                seen.append(sum(1 for a in saved if a.last_breach_at == 160.0))
                await asyncio.sleep(0)

        watcher = asyncio.get_running_loop().create_task(watch())
        await manager.observe(shop, pods(firing, Status.BREACH, 160.0), 160.0)
        watcher.cancel()
        # Between two chunks another coroutine ran and saw part of the rows saved...
        assert any(0 < n < firing for n in seen)
        # ...and at the end every row is, with no notification: still firing.
        assert not manager.unsaved
        assert store.load_alerts() == manager.alerts
        assert all(a.last_breach_at == 160.0 for a in store.load_alerts().values())
        assert [e.kind for e in store.due(now=200.0)] == ["firing"]
    finally:
        store.close()


async def test_event_loop_lag_shows_in_metrics_and_detailed_health(
    daemon: tuple[Daemon, FixedEngine],
) -> None:
    built, engine = daemon
    engine.results = pods(3, Status.OK)
    await built.start()
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # something holds the event loop
    await asyncio.sleep(0.05)
    server = TestServer(build_app(built), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.make_url("/metrics")) as resp:
                metrics = await resp.text()
            async with session.get(server.make_url("/health/detailed")) as resp:
                health = await resp.json()
    finally:
        await server.close()
    assert 'sentinel_event_loop_lag_seconds_bucket{le="0.25"}' in metrics
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("sentinel_event_loop_lag_seconds_count")
    )
    assert count >= 2
    loop = health["checks"]["event_loop"]
    assert loop["max_lag_seconds_1m"] >= 0.25
    assert loop["max_lag_seconds"] >= 0.25
    # A loop held for a quarter of a second says so, without making the daemon unhealthy.
    assert loop["status"] == "degraded"
    assert health["status"] == "healthy"


def test_commits_leave_the_wal_to_the_background_checkpoint(tmp_path: Path) -> None:
    """SQLite's own checkpoint syncs the database file inside the commit that passes
    1,000 WAL pages, on the event loop; the daemon checkpoints in a worker thread instead.
    (keep_firing_for: each breach writes the firing rows again.)"""
    manager, store, shop, _ = manager_and_groups(tmp_path, AlertPolicy(keep_firing_for=30))
    try:
        store.checkpoints_in_background()
        for minute in range(1, 41):
            now = 60.0 * minute
            manager.observe_sync(shop, pods(1000, Status.BREACH, now), now)
        # Every page the commits wrote is still in the WAL (SQLite would have copied all
        # but the last few hundred), and the background checkpoint copies them.
        assert store.checkpoint() > 2000
        assert len(store.load_alerts()) == 1000
    finally:
        store.close()


async def test_a_metrics_scrape_is_rendered_off_the_event_loop(
    daemon: tuple[Daemon, FixedEngine],
) -> None:
    """At 1,000 services the exposition text is ~1 s of CPU: on the event loop it held
    every gate request for that long at each scrape."""
    built, _ = daemon
    threads: list[bool] = []

    class Witness:
        def collect(self) -> list[object]:
            threads.append(threading.current_thread() is threading.main_thread())
            return []

    built.metrics.registry.register(Witness())  # type: ignore[arg-type]
    threads.clear()  # registering collects once, to describe it
    server = TestServer(build_app(built), host="127.0.0.1")
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.make_url("/metrics")) as resp,
        ):
            assert resp.status == 200
            assert "sentinel_event_loop_lag_seconds_count" in await resp.text()
    finally:
        await server.close()
    assert threads and not any(threads)


async def test_a_commit_of_thousands_of_new_alerts_is_only_the_database_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a start (or in a storm) thousands of alerts change at once; their rows are
    encoded in slices before the one transaction that saves them with their incidents and
    notifications: 7,000 rows encoded inside it held the event loop ~30 of its ~41 ms.
    (Still-firing alerts' rows, held by keep_firing_for, are saved in chunks of
    QUIET_CHUNK, each encoding its own.)"""
    manager, store, shop, _ = manager_and_groups(tmp_path, AlertPolicy(keep_firing_for=30))
    encoded_inside: list[int] = []  # rows encoded inside each transaction
    commit = store.commit_cycle

    def commit_cycle(*args: object, **kwargs: object) -> None:
        encoded_inside.append(0)
        commit(*args, **kwargs)  # type: ignore[arg-type]

    encode = state.alert_data

    def alert_data(alert: Alert) -> str:
        if encoded_inside:
            encoded_inside[-1] += 1
        return encode(alert)

    monkeypatch.setattr(store, "commit_cycle", commit_cycle)
    monkeypatch.setattr(state, "alert_data", alert_data)
    try:
        for now, status in ((100.0, Status.BREACH), (160.0, Status.BREACH), (220.0, Status.OK)):
            with Turns() as turns:
                await manager.observe(shop, pods(2000, status, now), now)
            assert turns.count >= 50  # the encoding too gave the loop its turns
        assert len(encoded_inside) >= 3
        assert max(encoded_inside) <= QUIET_CHUNK
        # What is saved is what the manager holds, with one FIRING and one RESOLVED.
        assert not manager.unsaved
        assert store.load_alerts() == manager.alerts
        assert all(a.state is AlertState.RESOLVED for a in manager.alerts.values())
        assert [e.kind for e in store.due(now=300.0)] == ["firing", "resolved"]
    finally:
        store.close()


async def test_a_step_stopped_while_staging_a_storm_leaves_nothing_half_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forced stop cancels a cycle wherever it pauses. Stopped while a storm's changes
    were being staged, the step must leave no alert FIRING without its incident row and
    notification (a later commit would save them: no page ever, then a RESOLVED for an
    incident never announced): the next step makes the same transitions, once."""
    manager, store, shop, _ = manager_and_groups(tmp_path)
    logged = 0
    midway = asyncio.Event()  # well inside the staging of 2,000 transitions
    log_transition = manager._log

    def counting(tr: object) -> None:
        nonlocal logged
        logged += 1
        if logged == 500:
            midway.set()
        log_transition(tr)  # type: ignore[arg-type]

    monkeypatch.setattr(manager, "_log", counting)
    try:
        step = asyncio.ensure_future(manager.observe(shop, pods(2000, Status.BREACH, 100.0), 100.0))
        await midway.wait()
        step.cancel()
        with pytest.raises(asyncio.CancelledError):
            await step
        assert manager.alerts == {} and not manager.unsaved
        assert manager.firing("shop") == [] and manager.last_firing == {}
        # The same results again: every alert fires once, with its incident and one message.
        await manager.observe(shop, pods(2000, Status.BREACH, 160.0), 160.0)
        assert sum(a.state is AlertState.FIRING for a in manager.alerts.values()) == 2000
        assert len(manager.last_firing) == 2000
        assert store.load_alerts() == manager.alerts
        assert len(store.incidents(open_only=True, limit=5000)) == 2000
        assert [e.kind for e in store.due(now=200.0)] == ["firing"]
    finally:
        store.close()


async def test_notifiers_reloaded_during_a_step_leave_its_notifications_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload swaps the notifiers in place while a storm's notifications are built in
    slices: the step routes all of them by the notifiers it started with, as if they had
    been queued just before the reload (no KeyError, no group split across two routings;
    the dispatcher then treats them as it treats entries queued before a reload)."""
    manager, store, shop, _ = manager_and_groups(tmp_path)
    built = 0
    midway = asyncio.Event()  # inside the building of 2,000 alerts' notifications
    payload = manager._alert_payload

    def counting(*args: Any) -> dict[str, Any]:
        nonlocal built
        built += 1
        if built == 500:
            midway.set()
        return payload(*args)

    monkeypatch.setattr(manager, "_alert_payload", counting)

    async def reload() -> None:
        await midway.wait()
        notifiers = cast(dict[str, Any], manager.notifiers)  # swapped in place, as a reload does
        notifiers.clear()
        notifiers["pager"] = LogNotifier("pager")

    try:
        await asyncio.gather(
            manager.observe(shop, pods(2000, Status.BREACH, 100.0), 100.0), reload()
        )
        entries = store.due(now=200.0)
        assert [(e.notifier, e.kind) for e in entries] == [("log", "firing")]
        assert len(entries[0].payload["alerts"]) == 2000
    finally:
        store.close()
