"""The long-running daemon: schedules rule groups, keeps the latest results, reloads on
SIGHUP, stops gracefully on SIGTERM/SIGINT.

Run state: STARTING -> RUNNING -> STOPPING -> STOPPED. The scheduler is an adapter: its
job only starts a cycle, a task the daemon owns, which calls `run_group` and so
`Engine.evaluate_once(slos, now)`. The daemon owns its cycles because a stop must let a
running cycle finish and commit, while APScheduler's executor cancels its own futures the
moment it shuts down.

A reload is built completely (config, rules, auth policy, schedule triggers) before it
replaces anything; if replacing fails half-way, the old config is put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentinel import __version__
from sentinel.config import Config, load_config
from sentinel.daemon.confdiff import compare
from sentinel.daemon.looplag import LoopLagMonitor
from sentinel.daemon.runstate import GroupStatus, ReloadStatus, RunState
from sentinel.daemon.scheduling import GroupJob, GroupScheduler, schedule_jobs
from sentinel.daemon.tasks import TaskSupervisor, wait_done
from sentinel.errors import ConfigError
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.slo import SLOResult, Status, evaluate_failure
from sentinel.gate.service import Unsettled
from sentinel.logs import fields
from sentinel.rules.loader import load_rules
from sentinel.rules.model import RuleGroup, RuleSet
from sentinel.selfmetrics import SelfMetrics
from sentinel.slicing import ITEMS_PER_YIELD, PaceDeadline, Slicer, drain, pacing_for
from sentinel.sources.base import Source
from sentinel.units import format_duration

log = logging.getLogger("sentinel.daemon")

ResultHook = Callable[[RuleGroup, list[SLOResult], float], Awaitable[None]]

# A group that has not finished a cycle for this many intervals is stuck (a dead job, a
# hung hook): `/health/ready` says so, naming the group.
STALE_INTERVALS = 3

# The GIL switch interval while the daemon runs (Python's default is 5 ms). `/metrics`,
# the API's large answers and the UI's pages are rendered in worker threads (a cycle's
# own work stays on the loop: sentinel/slicing.py); each time the event loop gives the
# GIL up for a system call (every socket read and write) such a thread takes it, and the
# loop waited up to the whole interval to get it back, several times per gate request.
# With one thread running it changes nothing.
SWITCH_INTERVAL = 0.0005
RELOAD_STOP_WAIT = 10.0  # seconds a stop waits for a reload being applied


@dataclass(frozen=True)
class _Reload:
    config: Config
    rules: RuleSet
    jobs: list[GroupJob]
    changes: list[str]


class Daemon:
    def __init__(
        self,
        config_path: str,
        config: Config,
        rules: RuleSet,
        *,
        engine: Engine,
        metrics: SelfMetrics,
        source_factory: Callable[[Config], dict[str, Source]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Collaborators come from the composition root (daemon/assembly.py): the engine
        of the scheduled cycles, the self-metrics, and the factory a reload uses to build
        sources for a changed source config."""
        self.config_path = config_path
        self.config = config
        self.rules = rules
        self.clock = clock
        self.state = RunState.STARTING
        self.started_at = clock()
        self.metrics = metrics
        metrics.record_rules(rules.fingerprint)
        self.engine = engine
        self._source_factory = source_factory
        self.results: dict[str, list[SLOResult]] = {}
        # Group -> instance key -> the status it had last cycle (its status-change logs).
        self._statuses: dict[str, dict[str, Status]] = {}
        self.group_status: dict[str, GroupStatus] = {}
        self.reload_status = ReloadStatus(at=self.started_at)
        self.result_hooks: list[ResultHook] = []
        self.health_providers: list[Callable[[], dict[str, dict[str, Any]]]] = []
        # Components that can make the daemon unready (the state store while it cannot
        # save alert changes) register a check returning their reasons.
        self.readiness_checks: list[Callable[[], list[str]]] = []
        # Results that come from elsewhere than the rule groups (the synthetic probes of
        # daemon/probes.py) join `latest()`, so `/api/v1/slos` shows them.
        self.result_providers: list[Callable[[], list[SLOResult]]] = []
        # Who leads among replicas of a shared state store (`/health/detailed` "leader");
        # set by the assembly. A lone daemon leads.
        self.leader_status: Callable[[], dict[str, Any]] = lambda: {
            "backend": "sqlite",
            "is_leader": True,
        }
        # Run after start and after each successful reload (dashboards re-render).
        self.start_hooks: list[Callable[[], Awaitable[None]]] = []
        self.reload_hooks: list[Callable[[], Awaitable[None]]] = []
        self.tasks = TaskSupervisor(clock, self._task_failed)
        # How late the event loop runs what is due (`/health/detailed` "event_loop", the
        # sentinel_event_loop_lag_seconds histogram); runs from start to stop.
        self.loop_lag = LoopLagMonitor(metrics.loop_lag)
        self._loop_lag_task: asyncio.Task[None] | None = None
        self._switch_interval: float | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        # The pacing deadlines of the cycles running now (`stop` ends them).
        self._pacing: set[PaceDeadline] = set()
        self._cycles: set[asyncio.Task[Any]] = set()
        self._scheduled_at: dict[str, float] = {}
        self._scheduler: GroupScheduler | None = None
        self._reload_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._services: set[str] | None = None
        self._unsettled: list[Unsettled] | None = None
        # Group -> keys of its SLOs whose answer failed in its latest cycle (all of them for
        # an overrun or a crash): what the gate's pending for unknown names rests on.
        self._failed_slos: dict[str, set[str]] = {}
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
        # The cycle's sliced steps (evaluation, record step, the alert manager's) give way
        # to a busy loop for half the timeout at most (sentinel/slicing.py); not at all
        # once the daemon is stopping.
        stopping = self.state in (RunState.STOPPING, RunState.STOPPED)
        with pacing_for(0.0 if stopping else self.cycle_timeout(group) / 2) as pacing:
            self._pacing.add(pacing)
            try:
                return await self._cycle(group, status, now)
            finally:
                self._pacing.discard(pacing)

    async def _cycle(
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
            failed = set(report.errors)
        except TimeoutError:
            outcome, error = "overrun", f"cycle exceeded {self.cycle_timeout(group):g}s"
            status.overruns += 1
            results = self._failed(group, at, error)
            failed = {slo.key for slo in group.slos}
        except Exception as exc:  # a bug or bad data must never kill the daemon
            log.exception("evaluation crashed", extra=fields(group=group.name))
            outcome, error = "crash", f"internal error: {type(exc).__name__}: {exc}"
            results = self._failed(group, at, error)
            failed = {slo.key for slo in group.slos}
        self._failed_slos[group.name] = failed  # with the results, in `_record`
        duration = time.monotonic() - started
        await self._record(group, status, results, at, duration, outcome, error)
        for hook in self.result_hooks:
            try:
                await hook(group, results, at)
            except Exception:
                log.exception("result hook failed", extra=fields(group=group.name))
        status.completed_at = self.clock()
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

    async def _record(
        self,
        group: RuleGroup,
        status: GroupStatus,
        results: list[SLOResult],
        at: float,
        duration: float,
        outcome: str,
        error: str | None,
    ) -> None:
        """Keep the cycle's results, log status changes, set the SLO gauges. The walks
        over every result run in slices (sentinel/slicing.py) that let the event loop
        answer gate requests in between: in one piece they held it ~100 ms a cycle at
        1,000 services, which every request arriving meanwhile waited for."""
        self.results[group.name] = results
        self._services = self._unsettled = None
        status.last_finished_at = at
        status.last_duration = round(duration, 4)
        status.last_outcome = outcome
        status.last_error = error
        status.cycles += 1
        self.metrics.eval_duration.labels(group.name).observe(duration)
        self.metrics.cycles.labels(group.name, outcome).inc()
        if outcome == "ok":
            self.metrics.last_success.labels(group.name).set(at)
        slicer = Slicer()
        await drain(self._log_changes(group.name, results), slicer)
        await drain(self.metrics.record_steps(group.name, results), slicer)
        for name, source in self.engine.sources.items():
            self.metrics.dependency_up.labels(name).set(source.health.status == "healthy")

    def _log_changes(self, group: str, after: list[SLOResult]) -> Iterator[None]:
        """Log each instance whose status changed since the group's last cycle (a
        generator: yields every few results)."""
        previous = self._statuses.get(group, {})
        current: dict[str, Status] = {}
        for n, res in enumerate(after, 1):
            if n % ITEMS_PER_YIELD == 0:
                yield
            key = res.key
            current[key] = res.status
            old = previous.get(key)
            if old is res.status:
                continue
            level = logging.WARNING if res.status is Status.BREACH else logging.INFO
            log.log(
                level,
                f"SLO {key} {old or 'new'} -> {res.status.value}",
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
        self._statuses[group] = current

    async def evaluate_once(self, now: float | None = None) -> list[SLOResult]:
        """Every group once (used by tests and benchmarks; the scheduler runs groups)."""
        out: list[SLOResult] = []
        for group in self.rules.groups:
            out += await self.run_group(group.name, now) or []
        return out

    def extra_health(self) -> dict[str, dict[str, Any]]:
        """Health of non-source dependencies (state store, notifiers), registered later,
        and of the daemon's own background tasks."""
        out: dict[str, dict[str, Any]] = {
            "background_tasks": self.tasks.health(),
            "event_loop": self.loop_lag.health(),
        }
        for provider in self.health_providers:
            out.update(provider())
        return out

    def known_services(self) -> set[str]:
        """Services of the rules and of the latest results (group_by instances); cached
        per cycle because the gate asks on every request."""
        if self._services is None:
            self._services = (
                {slo.service for slo in self.rules.slos}
                | {r.service for results in self.results.values() for r in results}
                | {probe.service for probe in self.config.probes.values()}
            )
        return self._services

    def failed_slos(self, group: str) -> set[str]:
        """Keys of the group's SLOs whose answer failed in its latest cycle."""
        return self._failed_slos.get(group, set())

    def unsettled_services(self) -> list[Unsettled]:
        """The SLOs that name their services by `group_by: [service]` and have named none
        yet: not evaluated since the start or the reload that added them, or their answer
        failed in their group's latest cycle (the source down, an overrun). While there are
        any, a service the gate does not know may be one of theirs. (An answer that held no
        instance, without failing, names no service: a name nothing else knows is
        unknown.) One walk over the results per cycle, kept with `known_services`."""
        if self._unsettled is None:
            self._unsettled = []
            for group in self.rules.groups:
                slos = [slo for slo in group.slos if "service" in slo.group_by]
                if not slos:
                    continue
                results = self.results.get(group.name, [])
                failed = self.failed_slos(group.name)
                names = {slo.name for slo in slos}
                named: set[str] = set()
                first: dict[str, SLOResult] = {}
                for r in results:
                    if r.slo not in names:
                        continue
                    if "service" in r.labels:  # a burn tier's alone ({tier: ...}) is none
                        named.add(r.slo)
                    else:
                        first.setdefault(r.slo, r)
                for slo in slos:
                    if slo.name in named:
                        continue
                    if slo.name not in first:  # no result at all: not evaluated yet
                        self._unsettled.append(Unsettled(group, slo, None))
                    elif slo.key in failed:
                        self._unsettled.append(Unsettled(group, slo, first[slo.name]))
        return self._unsettled

    def latest(self) -> list[SLOResult]:
        return [r for part in self.latest_parts() for r in part]

    def latest_parts(self) -> list[Sequence[SLOResult]]:
        """`latest()` unflattened: each group's results (replaced after each cycle, never
        changed in place), then each provider's. Cheap on the loop where joining them is
        not (150,000 results at 10,000 services); another thread may read them."""
        parts: list[Sequence[SLOResult]] = [self.results.get(g.name, []) for g in self.rules.groups]
        return parts + [provider() for provider in self.result_providers]

    # -- readiness ----------------------------------------------------------------------

    def readiness(self) -> list[str]:
        """Reasons the daemon is not ready; empty when it is.

        Ready means Sentinel is useful: it runs, every group has finished a cycle and none
        is stuck, and at least one source the rules use answers. A source that is down
        while another answers (Loki down, Prometheus up) is degraded health, shown in
        `/health/detailed`, not unreadiness: the Prometheus SLOs and the gate on them keep
        working, and an orchestrator must not take Sentinel out of service for it.
        """
        reasons = []
        if self.state is not RunState.RUNNING:
            reasons.append(f"daemon is {self.state.value}")
        now = self.clock()
        for group in self.rules.groups:
            reason = self._group_not_ready(group, now)
            if reason:
                reasons.append(reason)
        reasons += self._sources_not_ready()
        for check in self.readiness_checks:
            reasons += check()
        return reasons

    def _group_not_ready(self, group: RuleGroup, now: float) -> str | None:
        status = self.group_status.get(group.name)
        completed = status.completed_at if status else None
        since = max(
            (t for t in (completed, self._scheduled_at.get(group.name)) if t is not None),
            default=None,
        )
        if (
            self.state is RunState.RUNNING
            and since is not None
            and now - since >= STALE_INTERVALS * group.interval
        ):
            return (
                f"rule group {group.name!r} has not finished an evaluation for "
                f"{format_duration(int(now - since))} ({STALE_INTERVALS} intervals of "
                f"{format_duration(group.interval)})"
            )
        if completed is None:
            return f"first evaluation of rule group {group.name!r} not finished"
        return None

    def _sources_not_ready(self) -> list[str]:
        used = {slo.source for slo in self.rules.slos} & self.engine.sources.keys()
        down = {
            name: self.engine.sources[name].health
            for name in sorted(used)
            if self.engine.sources[name].health.status != "healthy"
        }
        if not used or len(down) < len(used):
            return []
        return [
            f"{name} unreachable: {health.last_error or 'not contacted yet'}"
            for name, health in down.items()
        ]

    # -- scheduling ---------------------------------------------------------------------

    def _schedule(self, jobs: list[GroupJob]) -> None:
        assert self._scheduler is not None
        self._scheduler.replace(jobs)
        now = self.clock()
        for job in jobs:
            self._scheduled_at[job.group] = now

    async def _job(self, name: str) -> None:
        if self.state is not RunState.RUNNING:
            return
        cycle = self.tasks.spawn(self.run_group(name), f"cycle:{name}")
        self._cycles.add(cycle)
        cycle.add_done_callback(self._cycles.discard)
        try:
            await asyncio.shield(cycle)
        except asyncio.CancelledError:
            # APScheduler cancels its jobs when it shuts down; the cycle goes on and
            # `stop` waits for it. Returning normally keeps APScheduler from logging the
            # cancellation as a crash with a traceback.
            return

    # -- reload -------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read config and rules. Everything is built and checked before anything is
        replaced; an invalid config (or a failure while switching) keeps the old one."""
        async with self._reload_lock:
            if self.state in (RunState.STOPPING, RunState.STOPPED):
                log.info("reload ignored: shutting down")
                return False
            try:
                # In a worker thread: reading and validating 1,300 SLOs takes ~2 s of CPU,
                # which on the loop froze health checks and the gate for as long.
                new = await asyncio.to_thread(self._prepare_reload)
                if self.state in (RunState.STOPPING, RunState.STOPPED):
                    # A stop arrived while the files were read: nothing is switched, no
                    # source is built that the stop would not close.
                    log.info("reload dropped: shutting down")
                    return False
            except ConfigError as exc:
                return self._reload_failed([str(p) for p in exc.problems])
            except Exception as exc:  # a loader bug must not end reloads or the daemon
                log.exception("reload crashed while loading")
                return self._reload_failed(
                    [f"{self.config_path}: cannot load: {type(exc).__name__}: {exc}"]
                )
            return await self._apply_reload(new)

    def _prepare_reload(self) -> _Reload:
        config = load_config(self.config_path)
        rules = load_rules(config)
        changes = compare(self.config, config, self.config_path)
        if changes.refusals:
            raise ConfigError(changes.refusals)
        return _Reload(config, rules, schedule_jobs(rules), changes.notes)

    async def _apply_reload(self, new: _Reload) -> bool:
        old_config, old_rules, old_sources = self.config, self.rules, self.engine.sources
        sources_changed = (
            new.config.prometheus != old_config.prometheus or new.config.loki != old_config.loki
        )
        new_sources = self._source_factory(new.config) if sources_changed else None
        try:
            self._switch(new, new_sources)
        except Exception as exc:
            log.exception("reload could not be applied; the previous config keeps running")
            self._switch(_Reload(old_config, old_rules, schedule_jobs(old_rules), []), None)
            self.engine.sources = old_sources
            for source in (new_sources or {}).values():
                with contextlib.suppress(Exception):
                    await source.close()
            return self._reload_failed([f"reload not applied: {type(exc).__name__}: {exc}"])
        for note in new.changes:
            log.warning(f"reload: {note}", extra=fields(change=note))
        removed = {g.name for g in old_rules.groups} - {g.name for g in new.rules.groups}
        for name in removed:
            self.results.pop(name, None)
            self._statuses.pop(name, None)
            # `_failed_slos[name]` stays: a cycle of the removed group may still be on its
            # way to the alert manager, which reads it to know what answered (one small set
            # per group name ever loaded).
            self.group_status.pop(name, None)
            self._scheduled_at.pop(name, None)
            self.metrics.forget_group(name)
        self.engine.forget(new.rules.slos)
        self.reload_status = ReloadStatus("ok", self.clock(), changes=list(new.changes))
        self.metrics.reloads.labels("ok").inc()
        log.info(
            "config reloaded",
            extra=fields(
                slos=len(new.rules.slos),
                groups=len(new.rules.groups),
                rules_fingerprint=new.rules.fingerprint,
            ),
        )
        if new_sources is not None:
            for source in old_sources.values():
                with contextlib.suppress(Exception):
                    await source.close()
        failed = await self._run_hooks(self.reload_hooks)
        if failed:
            self.reload_status.status = "partial"
            self.reload_status.errors = failed
        return True

    def _switch(self, new: _Reload, sources: Mapping[str, Source] | None) -> None:
        """Swap config, rules, sources and schedule in one step (no await in between)."""
        self.config, self.rules = new.config, new.rules
        self.metrics.record_rules(new.rules.fingerprint)
        if sources is not None:
            self.engine.sources = sources
        self.engine.recorded_budgets = new.config.evaluation.budget_source == "recorded"
        self.engine.reuse_windows = new.config.evaluation.long_window_refresh == "auto"
        self._services = self._unsettled = None
        if self._scheduler is not None:
            self._schedule(new.jobs)

    def _reload_failed(self, errors: list[str]) -> bool:
        self.reload_status = ReloadStatus("failed", self.clock(), errors)
        self.metrics.reloads.labels("failed").inc()
        log.error(
            "reload refused; the previous config keeps running",
            extra=fields(errors=errors),
        )
        return False

    async def _run_hooks(self, hooks: list[Callable[[], Awaitable[None]]]) -> list[str]:
        failed = []
        for hook in hooks:
            try:
                await hook()
            except Exception as exc:
                name = getattr(hook, "__name__", "hook")
                log.exception(f"{name} failed")
                failed.append(f"{name} failed: {type(exc).__name__}: {exc}")
        return failed

    def _task_failed(self, name: str) -> None:
        self.metrics.task_failures.labels(name.partition(":")[0]).inc()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start scheduling. Raises ConfigError if a group cannot be scheduled."""
        jobs = schedule_jobs(self.rules)
        self._scheduler = GroupScheduler(self._job)
        self.state = RunState.RUNNING
        if self._loop_lag_task is None:
            self._loop_lag_task = self.tasks.spawn(self.loop_lag.run(), "loop-lag")
        if self._switch_interval is None:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(SWITCH_INTERVAL, self._switch_interval))
        self._schedule(jobs)
        self._scheduler.start()
        await self._run_hooks(self.start_hooks)
        log.info(
            f"sentinel {__version__} running",
            extra=fields(
                slos=len(self.rules.slos),
                groups=len(self.rules.groups),
                rules_fingerprint=self.rules.fingerprint,
            ),
        )

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def request_reload(self) -> None:
        log.info("SIGHUP received: reloading config and rules")
        self.tasks.spawn(self.reload(), "reload")

    def request_stop(self, why: str = "stop") -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning(f"second stop signal ({why}): cancelling running cycles now")
            self._force.set()
        else:
            log.info(f"{why} received: shutting down gracefully")
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        """Stop scheduling, let running cycles finish and commit (up to
        `evaluation.shutdown_timeout`, or until a second signal), close the sources."""
        self.state = RunState.STOPPING
        for pacing in self._pacing:  # running cycles finish at full speed
            pacing.end()
        if self._scheduler is not None:
            self._scheduler.shutdown()
        # A reload being applied (its hooks swap notifiers, restart probes) ends first, or
        # it would rebuild what this stop is closing; bounded (a hook can hang), and a
        # second stop signal does not wait.
        if self._reload_lock.locked():
            released = asyncio.ensure_future(self._reload_lock.acquire())
            try:
                await wait_done({released}, RELOAD_STOP_WAIT, self._force)
            finally:
                if released.done() and not released.cancelled():
                    self._reload_lock.release()
                else:
                    released.cancel()
        await self._finish_cycles()
        for source in self.engine.sources.values():
            with contextlib.suppress(Exception):
                await source.close()
        if self._loop_lag_task is not None:
            self._loop_lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_lag_task
            self._loop_lag_task = None
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        self.state = RunState.STOPPED

    async def _finish_cycles(self) -> None:
        running = {t for t in self._cycles if not t.done()}
        if not running:
            return
        timeout = self.config.evaluation.shutdown_timeout
        log.info(
            f"waiting up to {timeout:g}s for {len(running)} running cycle(s) to finish",
            extra=fields(cycles=sorted(t.get_name() for t in running)),
        )
        pending = await wait_done(running, timeout, self._force)
        why = "second stop signal" if self._force.is_set() else f"shutdown_timeout {timeout:g}s"
        for task in pending:
            log.warning(f"{why}: cancelling {task.get_name()} before it finished")
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
