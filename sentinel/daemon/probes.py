"""The daemon's synthetic probes: each configured probe runs on its own interval, one run
at a time, and every run is kept (state store, self-metrics) and handed on as the
`probe-NAME` SLO result of its service.

Each probe is one asyncio task that runs, records, then sleeps out the rest of its
interval: a run never overlaps the previous one (a slow service delays the next run
instead of stacking requests on it), and each run is bounded by the probe's timeout plus
a margin. Stopping cancels the tasks, and with them any request in flight. A reload
restarts only the probes whose config changed.

A run's result travels the path of an evaluated SLO: `result_hooks` (the alert manager:
states, incidents, Slack), `results()` (`/api/v1/slos`), `gate_results()` (the deploy
gate, judging only a run that started after the deploy), `health()` (`/health/detailed`).
A failing probe is the monitored service's failure, not Sentinel's: it does not degrade
Sentinel's health; a probe that stops running does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sentinel.alerting.store_api import StateStore
from sentinel.config import ProbeConfig
from sentinel.errors import StateStoreError
from sentinel.evaluate.probe_check import (
    ProbeRun,
    gate_result,
    probe_result,
    probe_slo,
    request_line,
    slo_name,
)
from sentinel.evaluate.prober import run_probe
from sentinel.evaluate.slo import SLOResult
from sentinel.logs import fields
from sentinel.rules.model import RuleGroup
from sentinel.selfmetrics import SelfMetrics
from sentinel.sources.probe import ProbeClient

log = logging.getLogger("sentinel.probes")

ResultHook = Callable[[RuleGroup, list[SLOResult], float], Awaitable[None]]

# Beyond its timeout a run gets this long (name resolution, a slow readiness check)
# before it is abandoned as failed.
RUN_MARGIN = 5.0
# A probe whose last run is older than this many intervals has stopped running.
STALE_INTERVALS = 3
# Stored runs past a probe's retention are deleted at most this often.
PRUNE_EVERY = 3600.0


class ProbeSchedule:
    def __init__(
        self,
        probes: Mapping[str, ProbeConfig],
        metrics: SelfMetrics,
        store: StateStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.probes = dict(probes)
        self.metrics = metrics
        self.store = store
        self.clock = clock
        self.latest: dict[str, ProbeRun] = {}
        self.result_hooks: list[ResultHook] = []
        self.started_at = clock()
        self._clients: dict[str, ProbeClient] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pruned_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._running = False

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        for name in self.probes:
            self._start(name)

    def _start(self, name: str) -> None:
        task = self._tasks.get(name)
        if task is None or task.done():
            self._tasks[name] = asyncio.get_running_loop().create_task(
                self._loop(name), name=f"probe:{name}"
            )

    async def _loop(self, name: str) -> None:
        while name in self.probes:
            started = time.monotonic()
            try:
                await self.run_once(name)
            except Exception:  # a bug must not end the probe's schedule
                log.exception("probe run crashed", extra=fields(probe=name))
            config = self.probes.get(name)
            if config is None:
                return
            await asyncio.sleep(max(0.0, config.interval - (time.monotonic() - started)))

    async def run_once(self, name: str) -> ProbeRun | None:
        """Run one probe now and record the run; None (nothing run) while its previous
        run is still going or when no such probe is configured."""
        config = self.probes.get(name)
        if config is None:
            return None
        lock = self._locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            log.warning("probe run skipped: previous run still going", extra=fields(probe=name))
            return None
        async with lock:
            run = await self._run(name, config)
            await self._record(name, config, run)
            return run

    async def _run(self, name: str, config: ProbeConfig) -> ProbeRun:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = ProbeClient(name, config)
        at, started = self.clock(), time.monotonic()
        limit = config.timeout + RUN_MARGIN
        try:
            return await asyncio.wait_for(run_probe(name, config, client, self.clock), limit)
        except TimeoutError:
            failure = f"{request_line(config)}: run abandoned after {limit:g}s"
            return ProbeRun(name, at, time.monotonic() - started, False, (failure,))

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def reconfigure(self, probes: Mapping[str, ProbeConfig]) -> None:
        """Apply a reloaded config: removed probes stop (their series go), changed ones
        restart from a fresh run, unchanged ones go on undisturbed."""
        old, self.probes = self.probes, dict(probes)
        for name, config in old.items():
            if self.probes.get(name) == config:
                continue
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            client = self._clients.pop(name, None)
            if client is not None:
                await client.close()
            self.latest.pop(name, None)
            self._failures.pop(name, None)
            if name not in self.probes:
                self.metrics.forget_probe(name)
        if self._running:
            self.start()

    # -- recording ----------------------------------------------------------------------

    async def _record(self, name: str, config: ProbeConfig, run: ProbeRun) -> None:
        previous = self.latest.get(name)
        self.latest[name] = run
        self._failures[name] = 0 if run.success else self._failures.get(name, 0) + 1
        self._log(name, previous, run)
        result = probe_result(name, config, run, run.at)
        self.metrics.record_probe(name, run.success, run.duration, run.at)
        self.metrics.record_results(f"probe:{name}", [result])
        self._store(name, config, run)
        group = RuleGroup(
            f"probe:{name}", "config", config.service, config.interval, (probe_slo(name, config),)
        )
        now = self.clock()
        for hook in self.result_hooks:
            try:
                await hook(group, [result], now)
            except Exception:
                log.exception("probe result hook failed", extra=fields(probe=name))

    def _store(self, name: str, config: ProbeConfig, run: ProbeRun) -> None:
        if self.store is None:
            return
        try:
            self.store.record_probe_run(run)
            if run.at - self._pruned_at.get(name, 0.0) >= PRUNE_EVERY:
                self.store.prune_probe_runs(name, run.at - config.retention)
                self._pruned_at[name] = run.at
        except StateStoreError as exc:
            # The run still counts (metrics, alerts, gate); only its history row is lost,
            # and the store's health shows the failing write.
            log.warning(f"probe run not stored: {exc}", extra=fields(probe=name))

    def _log(self, name: str, previous: ProbeRun | None, run: ProbeRun) -> None:
        if previous is not None and previous.success == run.success:
            return
        if run.success:
            log.info(f"probe {name} passed", extra=fields(probe=name, duration=run.duration))
        else:
            log.warning(
                f"probe {name} failed: {run.reason}",
                extra=fields(probe=name, failure=run.reason, status_code=run.status),
            )

    # -- views --------------------------------------------------------------------------

    def results(self) -> list[SLOResult]:
        """Each probe's latest run as its SLO result (no_data before the first run)."""
        now = self.clock()
        return [
            probe_result(name, config, self.latest.get(name), now)
            for name, config in sorted(self.probes.items())
        ]

    def gate_results(self, service: str, since: float | None, now: float) -> list[SLOResult]:
        return [
            gate_result(name, config, self.latest.get(name), since, now)
            for name, config in sorted(self.probes.items())
            if config.service == service and config.gate
        ]

    def slo_names(self, service: str) -> set[str]:
        return {
            slo_name(name)
            for name, config in self.probes.items()
            if config.service == service and config.gate
        }

    def services(self) -> set[str]:
        return {config.service for config in self.probes.values()}

    def health(self) -> dict[str, dict[str, Any]]:
        """One `/health/detailed` check per probe: its last outcome, and `unhealthy` only
        when the probe has stopped running (a failing probe is the service's problem)."""
        now = self.clock()
        out = {}
        for name, config in sorted(self.probes.items()):
            run = self.latest.get(name)
            since = run.at if run is not None else self.started_at
            stale = now - since > STALE_INTERVALS * config.interval + config.timeout + RUN_MARGIN
            out[f"probe:{name}"] = {
                "status": "unhealthy" if stale else "healthy",
                "target": request_line(config),
                "service": config.service,
                "slo": slo_name(name),
                "interval_seconds": config.interval,
                "outcome": "not_run" if run is None else ("pass" if run.success else "fail"),
                "consecutive_failures": self._failures.get(name, 0),
                "last_run": None if run is None else run.to_json(),
                **({"last_error": "probe has stopped running"} if stale else {}),
            }
        return out
