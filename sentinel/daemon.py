"""The long-running daemon: schedules rule groups, keeps the latest results, reloads on
SIGHUP, stops gracefully on SIGTERM/SIGINT.

Run state: STARTING -> RUNNING -> STOPPING -> STOPPED. The scheduler is an adapter: its
job only calls `run_group`, which calls `Engine.evaluate_once(slos, now)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from sentinel import __version__
from sentinel.config import Config, load_config
from sentinel.errors import ConfigError
from sentinel.evaluation import SLOResult, Status, evaluate_failure
from sentinel.loader import load_rules
from sentinel.logs import fields
from sentinel.model import RuleGroup, RuleSet
from sentinel.selfmetrics import SelfMetrics
from sentinel.wiring import build_engine, build_sources

log = logging.getLogger("sentinel.daemon")

ResultHook = Callable[[RuleGroup, list[SLOResult], float], Awaitable[None]]


class RunState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class GroupStatus:
    last_started_at: float | None = None
    last_finished_at: float | None = None
    last_duration: float | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    cycles: int = 0
    overruns: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "last_evaluation_at": self.last_finished_at,
            "duration_seconds": self.last_duration,
            "outcome": self.last_outcome,
            "last_error": self.last_error,
            "cycles": self.cycles,
            "overruns": self.overruns,
        }


@dataclass
class ReloadStatus:
    status: str = "initial"
    at: float | None = None
    errors: list[str] = field(default_factory=list)


class Daemon:
    def __init__(
        self,
        config_path: str,
        config: Config,
        rules: RuleSet,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.rules = rules
        self.clock = clock
        self.state = RunState.STARTING
        self.started_at = clock()
        self.metrics = SelfMetrics()
        self.engine = build_engine(config)
        self.results: dict[str, list[SLOResult]] = {}
        self.group_status: dict[str, GroupStatus] = {}
        self.reload_status = ReloadStatus(at=self.started_at)
        self.result_hooks: list[ResultHook] = []
        self.health_providers: list[Callable[[], dict[str, dict[str, Any]]]] = []
        # Run after start and after each successful reload (dashboards re-render).
        self.start_hooks: list[Callable[[], Awaitable[None]]] = []
        self.reload_hooks: list[Callable[[], Awaitable[None]]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._scheduler: AsyncIOScheduler | None = None
        self._stop = asyncio.Event()
        self._services: set[str] | None = None
        self._signals = 0

    # -- evaluation ---------------------------------------------------------------------

    def cycle_timeout(self, group: RuleGroup) -> float:
        configured = self.config.evaluation.cycle_timeout
        return configured if configured is not None else max(1.0, group.interval * 0.9)

    async def run_group(self, name: str, now: float | None = None) -> list[SLOResult] | None:
        """Evaluate one rule group once. Never raises; never overlaps itself."""
        group = next((g for g in self.rules.groups if g.name == name), None)
        if group is None:
            return None
        lock = self._locks.setdefault(name, asyncio.Lock())
        status = self.group_status.setdefault(name, GroupStatus())
        if lock.locked():
            status.overruns += 1
            self.metrics.cycles.labels(name, "overrun").inc()
            log.warning("cycle skipped: previous cycle still running", extra=fields(group=name))
            return None
        async with lock:
            return await self._run_group_locked(group, status, now)

    async def _run_group_locked(
        self, group: RuleGroup, status: GroupStatus, now: float | None
    ) -> list[SLOResult]:
        at = self.clock() if now is None else now
        started = time.monotonic()
        status.last_started_at = at
        outcome, error = "ok", None
        try:
            report = await asyncio.wait_for(
                self.engine.evaluate_once(group.slos, at), self.cycle_timeout(group)
            )
            results = report.results
            self._count_queries(report.queries, report.errors.values(), group)
            if report.errors:
                outcome = "source_error"
                error = str(next(iter(report.errors.values())))
        except TimeoutError:
            outcome, error = "overrun", f"cycle exceeded {self.cycle_timeout(group):g}s"
            status.overruns += 1
            results = self._failed(group, at, error)
        except Exception as exc:  # a bug or bad data must never kill the daemon
            log.exception("evaluation crashed", extra=fields(group=group.name))
            outcome, error = "crash", f"internal error: {type(exc).__name__}: {exc}"
            results = self._failed(group, at, error)
        duration = time.monotonic() - started
        self._record(group, status, results, at, duration, outcome, error)
        for hook in self.result_hooks:
            try:
                await hook(group, results, at)
            except Exception:
                log.exception("result hook failed", extra=fields(group=group.name))
        # What survives a cycle lives long (results, metrics, alert states): move it out of
        # the collector's sight. Full collections over thousands of results otherwise cost
        # more CPU than the evaluation and show up as gate latency spikes.
        gc.freeze()
        return results

    def _failed(self, group: RuleGroup, at: float, reason: str) -> list[SLOResult]:
        return [r for slo in group.slos for r in evaluate_failure(slo, reason, at)]

    def _count_queries(self, queries: int, errors: Any, group: RuleGroup) -> None:
        for source in {slo.source for slo in group.slos}:
            self.metrics.queries.labels(source).inc(0)
        self.metrics.queries.labels("all").inc(queries)
        seen = set()
        for err in errors:
            if (err.source, err.query) not in seen:
                seen.add((err.source, err.query))
                self.metrics.query_errors.labels(err.source, err.kind).inc()

    def _record(
        self,
        group: RuleGroup,
        status: GroupStatus,
        results: list[SLOResult],
        at: float,
        duration: float,
        outcome: str,
        error: str | None,
    ) -> None:
        self._log_changes(self.results.get(group.name, []), results)
        self.results[group.name] = results
        self._services = None
        status.last_finished_at = at
        status.last_duration = round(duration, 4)
        status.last_outcome = outcome
        status.last_error = error
        status.cycles += 1
        self.metrics.eval_duration.labels(group.name).observe(duration)
        self.metrics.cycles.labels(group.name, outcome).inc()
        if outcome == "ok":
            self.metrics.last_success.labels(group.name).set(at)
        self.metrics.record_results(group.name, results)
        for name, source in self.engine.sources.items():
            self.metrics.dependency_up.labels(name).set(source.health.status == "healthy")

    def _log_changes(self, before: list[SLOResult], after: list[SLOResult]) -> None:
        previous = {r.key: r.status for r in before}
        for res in after:
            old = previous.get(res.key)
            if old == res.status:
                continue
            level = logging.WARNING if res.status is Status.BREACH else logging.INFO
            log.log(
                level,
                f"SLO {res.key} {old or 'new'} -> {res.status.value}",
                extra=fields(
                    service=res.service,
                    slo=res.slo,
                    labels=dict(res.labels),
                    status=res.status.value,
                    previous=old.value if old else None,
                    value=res.value,
                    threshold=res.threshold,
                    reason=res.explanation(),
                ),
            )

    async def evaluate_once(self, now: float | None = None) -> list[SLOResult]:
        """Every group once (used by tests and benchmarks; the scheduler runs groups)."""
        out: list[SLOResult] = []
        for group in self.rules.groups:
            out += await self.run_group(group.name, now) or []
        return out

    def extra_health(self) -> dict[str, dict[str, Any]]:
        """Health of non-source dependencies (state store, notifiers), registered later."""
        out: dict[str, dict[str, Any]] = {}
        for provider in self.health_providers:
            out.update(provider())
        return out

    def known_services(self) -> set[str]:
        """Services of the rules and of the latest results (group_by instances); cached
        per cycle because the gate asks on every request."""
        if self._services is None:
            self._services = {slo.service for slo in self.rules.slos} | {
                r.service for results in self.results.values() for r in results
            }
        return self._services

    def latest(self) -> list[SLOResult]:
        return [r for group in self.rules.groups for r in self.results.get(group.name, [])]

    # -- readiness ----------------------------------------------------------------------

    def readiness(self) -> list[str]:
        """Reasons the daemon is not ready; empty when it is."""
        reasons = []
        if self.state is not RunState.RUNNING:
            reasons.append(f"daemon is {self.state.value}")
        for group in self.rules.groups:
            if self.group_status.get(group.name, GroupStatus()).cycles == 0:
                reasons.append(f"first evaluation of rule group {group.name!r} not finished")
        for name, source in self.engine.sources.items():
            if source.health.status != "healthy":
                detail = source.health.last_error or "not contacted yet"
                reasons.append(f"{name} unreachable: {detail}")
        return reasons

    # -- scheduling ---------------------------------------------------------------------

    def _schedule(self) -> None:
        assert self._scheduler is not None
        for job in self._scheduler.get_jobs():
            job.remove()
        for group in self.rules.groups:
            self._scheduler.add_job(
                self._job,
                "interval",
                seconds=group.interval,
                args=[group.name],
                id=f"group:{group.name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(group.interval)),
                next_run_time=_now_dt(),
            )

    async def _job(self, name: str) -> None:
        if self.state is not RunState.RUNNING:
            return
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            await self.run_group(name)
        finally:
            self._inflight.discard(task)

    # -- reload -------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read config and rules; refuse an invalid one and keep running the old."""
        try:
            config = load_config(self.config_path)
            rules = load_rules(config)
        except ConfigError as exc:
            self.reload_status = ReloadStatus(
                "failed", self.clock(), [str(p) for p in exc.problems]
            )
            self.metrics.reloads.labels("failed").inc()
            log.error(
                "reload refused; the previous config keeps running",
                extra=fields(errors=self.reload_status.errors),
            )
            return False
        old_sources = None
        if config.prometheus != self.config.prometheus or config.loki != self.config.loki:
            old_sources = self.engine.sources
            self.engine.sources = build_sources(config)
        for group in self.rules.groups:
            if group.name not in {g.name for g in rules.groups}:
                self.results.pop(group.name, None)
                self.metrics.forget_group(group.name)
        self.config, self.rules = config, rules
        self._services = None
        self.engine.recorded_budgets = config.evaluation.budget_source == "recorded"
        self.engine.forget(rules.slos)
        if self._scheduler is not None:
            self._schedule()
        self.reload_status = ReloadStatus("ok", self.clock())
        self.metrics.reloads.labels("ok").inc()
        log.info("config reloaded", extra=fields(slos=len(rules.slos), groups=len(rules.groups)))
        if old_sources:
            for source in old_sources.values():
                await source.close()
        await self._run_hooks(self.reload_hooks)
        return True

    async def _run_hooks(self, hooks: list[Callable[[], Awaitable[None]]]) -> None:
        for hook in hooks:
            try:
                await hook()
            except Exception:
                log.exception("hook failed")

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self.state = RunState.RUNNING
        self._schedule()
        self._scheduler.start()
        await self._run_hooks(self.start_hooks)
        log.info(
            f"sentinel {__version__} running",
            extra=fields(slos=len(self.rules.slos), groups=len(self.rules.groups)),
        )

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))

    def remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def request_stop(self, why: str = "stop") -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second stop signal: cancelling running cycles now")
            for task in list(self._inflight):
                task.cancel()
        else:
            log.info(f"{why} received: shutting down gracefully")
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        self.state = RunState.STOPPING
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._inflight:
            timeout = self.config.evaluation.shutdown_timeout
            _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
            for task in pending:
                log.warning("cycle still running at shutdown timeout: cancelled")
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        for source in self.engine.sources.values():
            with contextlib.suppress(Exception):
                await source.close()
        self.state = RunState.STOPPED


def _now_dt() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
