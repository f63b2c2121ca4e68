"""The deploy gate: "may this release be promoted?" for canary / blue-green pipelines.

Verdicts: pass (200), fail (412), pending (503 + Retry-After; curl --retry retries it);
in canary mode also marginal (503 + Retry-After: more traffic decides).
Overload: 429 + Retry-After (a verdict was not computed). The decision itself (`decide`)
is pure; `Gate.check` gathers its inputs: a fresh evaluation of the service's gate SLOs
over [since, now] (shared by identical concurrent requests, cached for `cache_ttl`,
budgeted by sentinel/gate/budget.py, answered `pending` past `gate.deadline`), the firing
alerts, and source health. Requests are parsed and checked in sentinel/gate/request.py;
canary mode (the canary release judged against the baseline) plans, queries and judges
in sentinel/gate/canary.py, sharing this module's cache, budget, deadline and audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sentinel import jsonenc
from sentinel.alerting.manager import AlertManager
from sentinel.alerting.store_api import StateStore
from sentinel.config import Config
from sentinel.errors import GateInputError, SourceError, StateStoreError
from sentinel.evaluate.canary import Judgement
from sentinel.evaluate.probe_check import KIND as PROBE_KIND
from sentinel.evaluate.slo import SLOResult, Status, rfc3339
from sentinel.gate import canary
from sentinel.gate.budget import EvaluationBudget, GateEngine
from sentinel.gate.request import (
    GateRequest,
    audit_inputs,
    check_narrowing,
)
from sentinel.health import DependencyHealth, health_changes
from sentinel.rules.model import SLO, Matcher, MatchOp, RuleGroup, RuleSet
from sentinel.selfmetrics import SelfMetrics
from sentinel.slicing import pacing_for
from sentinel.sources.base import Source
from sentinel.units import comparison, format_duration, format_measure

log = logging.getLogger("sentinel.gate")

STATUS_CODE = {"pass": 200, "fail": 412, "pending": 503, "marginal": 503}
RETRY_AFTER = "30"
FIRST_CYCLE_RETRY = 5.0  # seconds; Retry-After for a service unknown until a first cycle
MAX_BODY = 64 * 1024  # a Flagger payload is a few hundred bytes
HISTORY_LIMIT = 1000
PRUNE_BATCH = 500


@dataclass
class Verdict:
    decision: str
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GateAnswer:
    decision: str
    body: str
    retry_after: str | None = None


@dataclass(frozen=True)
class Evaluated:
    at: float  # the evaluation time the results are for
    results: list[SLOResult]
    completed_at: float  # the cache's freshness counts from here
    # Canary mode: the plans queried and their answers (SLO key -> samples or error).
    plans: Sequence[canary.CanaryPlan] = ()
    answers: Mapping[str, canary.Answer] = field(default_factory=dict)
    # The sources' health when it was taken (Gate._sources_seen): reused only while equal.
    sources_seen: tuple[tuple[str, bool, float], ...] = ()


def decide(
    results: Sequence[SLOResult],
    firing: Sequence[tuple[str, str]],
    source_down_for: float | None,
    policy: str,
    down_after: float,
    since_text: str,
) -> Verdict:
    """Pure verdict from results, firing alerts (slo, severity) and source health."""
    fail: list[str] = []
    pending: list[str] = []
    warn: list[str] = []
    for r in results:
        if r.kind == PROBE_KIND:  # a synthetic probe's reason is its failing assertion
            if r.status is not Status.OK:
                (fail if r.status is Status.BREACH else pending).append(f"{r.slo}: {r.reason}")
            continue
        over = f"over {format_duration(r.window)}{since_text}"
        if r.status is Status.BREACH:
            op = comparison(r.good_when, breached=True)
            value, threshold = format_measure(r.kind, r.value), format_measure(r.kind, r.threshold)
            fail.append(f"{r.slo} = {value} {op} {threshold} {over}")
        elif r.status is Status.NO_DATA:
            if r.value is None and r.events is None and source_down_for is not None:
                if source_down_for >= down_after:
                    down = format_duration(int(source_down_for))
                    msg = f"{r.slo}: source down for {down} ({r.reason})"
                    (fail if policy == "fail_closed" else warn).append(msg)
                else:
                    pending.append(f"{r.slo}: source temporarily unavailable ({r.reason})")
            else:
                pending.append(f"{r.slo}: {r.reason or 'no data'} {over}")
    for slo, severity in firing:
        msg = f"alert firing for {slo} (severity {severity})"
        (fail if severity == "page" else pending).append(msg)
    if fail:
        return Verdict("fail", fail + pending)
    if pending:
        return Verdict("pending", pending)
    if not results:
        return Verdict("pending", ["no gate SLOs matched"])
    return Verdict("pass", warn)


def _no_probes(service: str, since: float | None, now: float) -> list[SLOResult]:
    return []


class HasSources(Protocol):
    @property
    def sources(self) -> Mapping[str, Source]: ...


@dataclass(frozen=True)
class Unsettled:
    """An SLO whose instances name services (`group_by: [service]`) that has named none
    yet, and its latest result without instances (None: its group has not finished a cycle
    since the start or reload)."""

    group: RuleGroup
    slo: SLO
    result: SLOResult | None

    def reason(self) -> str:
        if self.result is None:
            return (
                f"rule group {self.group.name!r} has not finished its first evaluation since "
                f"Sentinel started or the reload that added it; SLO {self.slo.name!r} names "
                "services by group_by"
            )
        why = self.result.reason or "no answer"
        return (
            f"SLO {self.slo.name!r} names services by group_by and its latest answer failed ({why})"
        )


class GateHost(Protocol):
    """What the gate reads of the running daemon: the live config and rules (both
    replaced on reload), the clock, self-metrics, the sources of the scheduled cycles
    (their health) and the services known. The daemon implements it; the gate imports
    neither the daemon nor the web layer."""

    clock: Callable[[], float]

    @property
    def config(self) -> Config: ...

    @property
    def rules(self) -> RuleSet: ...

    @property
    def metrics(self) -> SelfMetrics: ...

    @property
    def started_at(self) -> float: ...

    @property
    def engine(self) -> HasSources: ...

    def known_services(self) -> set[str]: ...

    def unsettled_services(self) -> Sequence[Unsettled]: ...


class Gate:
    # Audit retention is applied at start, then this often; while more than one batch
    # (PRUNE_BATCH rows, up to ~0.1 s of SQLite work on the loop) is due, every second.
    prune_every = 60.0

    def __init__(
        self,
        host: GateHost,
        alerts: AlertManager | None,
        store: StateStore | None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.alerts = alerts
        self.store = store
        self.monotonic = monotonic
        # (service, since, now) -> the service's synthetic probe results, judged outside
        # the gate's evaluation (daemon/probes.py registers them; none by default).
        self.probe_results: Callable[[str, float | None, float], list[SLOResult]] = _no_probes
        config = host.config.gate
        self.budget = EvaluationBudget(
            config.max_evaluations_per_second, config.max_pending_evaluations, monotonic
        )
        self.engine = GateEngine()
        self._inflight: dict[tuple[Any, ...], asyncio.Future[Evaluated]] = {}
        self._cache: dict[tuple[Any, ...], Evaluated] = {}
        self._verdicts: dict[tuple[Any, ...], GateAnswer] = {}
        # Canary comparisons running or done but not yet turned into a verdict.
        self._judging: dict[tuple[Any, ...], asyncio.Future[Judgement]] = {}
        self._decisions = host.metrics.gate_decisions.counts
        for decision in STATUS_CODE:  # every decision shown from the start, at 0
            self._decisions.setdefault(decision, 0)
        # Per set of sources read: the health reading (`_HealthReading`) and what it was
        # taken from, reused while no dependency's health changed.
        self._health: dict[frozenset[str], tuple[_HealthTakenFrom, _HealthReading]] = {}
        self._inputs_json: dict[GateRequest, str] = {}
        self._slo_index: tuple[object, dict[tuple[str, tuple[str, ...]], Any]] = (None, {})
        # Audit rows are written in batches: one SQLite transaction per request would cost
        # more than the rest of the request. A crash loses at most `flush_every` seconds.
        self._audit: list[tuple[float, str, str, str, str]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Small, frequent batches: a large one holds the GIL long enough to show in p99.
        self.flush_every = 0.02
        self._pruner: asyncio.Task[None] | None = None
        if store is not None:
            self.prune_audit()
            with contextlib.suppress(RuntimeError):  # constructed outside a running loop
                self._pruner = asyncio.get_running_loop().create_task(self._prune_loop())

    # -- audit --------------------------------------------------------------------------

    def flush_audit(self) -> None:
        rows, self._audit = self._audit, []
        if self.store is None:
            return
        try:
            self.store.record_gates(rows)
        except StateStoreError as exc:
            # The verdicts were answered; only their audit rows are lost (store health
            # shows the failing write).
            log.warning(f"gate audit: {len(rows)} decisions not recorded: {exc}")

    def prune_audit(self) -> int:
        """Apply gate.audit_retention and gate.audit_max_rows; returns rows deleted."""
        if self.store is None:
            return 0
        config = self.host.config.gate
        cutoff = self.host.clock() - config.audit_retention
        try:
            return self.store.prune_gate_audit(cutoff, config.audit_max_rows, PRUNE_BATCH)
        except StateStoreError as exc:
            log.warning(f"gate audit: retention not applied: {exc}")
            return 0

    async def _prune_loop(self) -> None:
        behind = False
        while True:
            await asyncio.sleep(1.0 if behind else self.prune_every)
            behind = self.prune_audit() >= PRUNE_BATCH

    async def _flush_loop(self) -> None:
        assert self.store is not None
        # Small batches on the loop itself: rows are tiny (texts are stored once), and a
        # worker thread only added GIL hand-offs that showed up in the p99.
        while True:
            await asyncio.sleep(self.flush_every)
            self.flush_audit()

    async def close(self) -> None:
        for task in (self._flusher, self._pruner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for evaluation in list(self._inflight.values()):
            evaluation.cancel()
        self.flush_audit()
        await self.engine.close()

    def record(self, at: float, service: str, decision: str, inputs: str, body: str) -> None:
        self._audit.append((at, service, decision, inputs, body))
        if self.store is not None and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_loop())

    def audit(
        self, req: GateRequest, now: float, decision: str, body_json: str, inputs: str | None = None
    ) -> None:
        """Queue the audit row; `inputs` is `audit_inputs(req)` as JSON when the caller
        has it already."""
        if inputs is None:
            inputs = self._inputs_json.get(req)
        if inputs is None:
            inputs = jsonenc.dumps(audit_inputs(req))
            if len(self._inputs_json) > 1000:
                self._inputs_json.clear()
            self._inputs_json[req] = inputs
        self.record(now, req.service, decision, inputs, body_json)

    # -- verdicts -----------------------------------------------------------------------

    def known_services(self) -> set[str]:
        return self.host.known_services()

    def unknown_service(self, req: GateRequest, now: float) -> GateAnswer | None:
        """The answer for a service no rule, result or probe names. None (the caller answers
        404) unless an SLO that names services by `group_by: [service]` has named none yet:
        not evaluated since the start or the reload that added it, or its latest answer
        failed. The service may be one of theirs, so the answer is pending (fail on a page
        alert restored for it, audited: it blocked a deploy), not "unknown": a pipeline
        reads 404 as its own mistake. Not cached: it costs no query. A pending is not
        audited, as a 404 is not (a flood of names would fill the history)."""
        unsettled = self.host.unsettled_services()
        if not unsettled:
            return None
        shown = "; ".join(u.reason() for u in unsettled[:3])
        more = f"; and {len(unsettled) - 3} more SLOs" if len(unsettled) > 3 else ""
        reason = f"service {req.service!r} not known yet: {shown}{more}"
        # The first cycle is under way (seconds); otherwise the next is an interval away.
        wait = min(FIRST_CYCLE_RETRY if u.result is None else u.group.interval for u in unsettled)
        retry_after = str(max(1, math.ceil(wait)))
        answer = self._unevaluated(req, self._firing(req.service), now, reason, retry_after)
        if answer.decision == "fail":
            self.audit(req, now, answer.decision, answer.body)
        return answer

    def gate_slos(self, req: GateRequest) -> list[SLO]:
        return list(self._gate_slos(req)[0])

    def _gate_slos(self, req: GateRequest) -> tuple[tuple[SLO, ...], frozenset[str]]:
        """The gate SLOs of the request's service (and `slo` list) and the sources they
        read, looked up once per rule set: a pipeline fleet asks for the same few services
        thousands of times a second, and a rule set may hold thousands of SLOs."""
        rules = self.host.rules
        if self._slo_index[0] is not rules:  # a reload replaced the rules
            self._slo_index = (rules, {})
        index = self._slo_index[1]
        found = index.get((req.service, req.slos))
        if found is None:
            slos = tuple(
                slo
                for slo in rules.slos
                if slo.gate
                and (not req.slos or slo.name in req.slos)
                and (slo.service == req.service or "service" in slo.group_by)
            )
            found = (slos, frozenset(slo.source for slo in slos))
            if len(index) > 1000:  # bounded: unknown services are refused before this
                index.clear()
            index[(req.service, req.slos)] = found
        return found

    def _cached_verdict(self, key: tuple[Any, ...]) -> GateAnswer | None:
        """The answer already computed for the same inputs (counted as a decision again)."""
        cached = self._verdicts.get(key)
        if cached is not None:
            self._decisions[cached.decision] += 1
        return cached

    def _remember_verdict(self, key: tuple[Any, ...], answer: GateAnswer) -> None:
        if len(self._verdicts) > 1000:  # bounded: oldest first
            self._verdicts.pop(next(iter(self._verdicts)))
        self._verdicts[key] = answer

    async def check(self, req: GateRequest, now: float, deadline_at: float) -> GateAnswer:
        """The answer to `req` at `now`, by the monotonic `deadline_at` at the latest. The
        verdict of a fresh evaluation is computed once and its body reused while nothing
        it depends on changes (the hot path of a pipeline fleet polling the gate)."""
        found, sources = self._gate_slos(req)
        slos = list(found)
        all_probes = self.probe_results(req.service, req.since, now)
        probes = [r for r in all_probes if not req.slos or r.slo in req.slos]
        if req.slos:
            missing = set(req.slos) - {s.name for s in slos} - {r.slo for r in all_probes}
            if missing:
                raise GateInputError(
                    "slo", f"unknown SLO(s) for this service: {', '.join(sorted(missing))}"
                )
        check_narrowing(slos, req.matchers)
        firing = tuple(self._firing(req.service))
        if req.canary_mode:
            return await self._check_canary(req, slos, now, deadline_at, firing)
        if req.since is not None and now - req.since < 1.0:
            # Nothing to measure yet (or a since slightly ahead: clock skew): no query.
            return self._unevaluated(req, firing, now, "only 0s since deploy", None)
        evaluated = await self._evaluate(req, slos, now, deadline_at, sources)
        if evaluated is None:
            deadline = self.host.config.gate.deadline
            reason = (
                f"evaluation still running after {format_duration(deadline)} (slow source); "
                "it goes on and its result is kept for the retry"
            )
            return self._unevaluated(req, firing, now, reason, str(math.ceil(deadline)))
        down_for = self._source_down_for(now, sources)
        config = self.host.config.gate
        down_state = None if down_for is None else down_for >= config.source_down_after
        probed = tuple((r.slo, r.status, r.reason) for r in probes)
        verdict_key = (
            req.cache_key,
            req.release,
            req.revision,
            evaluated.at,
            firing,
            down_state,
            probed,
        )
        cached = self._cached_verdict(verdict_key)
        if cached is not None:
            return cached
        results = [r for r in evaluated.results if r.service == req.service] + probes
        verdict = decide(
            results,
            firing,
            down_for,
            config.source_down_policy,
            config.source_down_after,
            " since deploy" if req.since is not None else "",
        )
        judged = None if req.since is None else evaluated.at - req.since
        too_soon = judged is not None and judged < max(config.min_duration, 60.0)
        if too_soon and verdict.decision == "pass":
            assert judged is not None
            verdict = Verdict("pending", [f"only {format_duration(int(judged))} since deploy"])
        answer = self._answer(req, verdict, results, firing, evaluated.at)
        self._remember_verdict(verdict_key, answer)
        return answer

    def _answer(
        self,
        req: GateRequest,
        verdict: Verdict,
        results: Sequence[SLOResult],
        firing: Sequence[tuple[str, str]],
        evaluated_at: float,
        retry_after: str | None = None,
    ) -> GateAnswer:
        body = jsonenc.dumps(self._body(req, verdict, results, firing, evaluated_at))
        return self._finish(verdict.decision, body, retry_after)

    def _finish(self, decision: str, body: str, retry_after: str | None = None) -> GateAnswer:
        self._decisions[decision] += 1
        if decision in ("pass", "fail"):
            return GateAnswer(decision, body)
        return GateAnswer(decision, body, retry_after or RETRY_AFTER)

    def _unevaluated(
        self,
        req: GateRequest,
        firing: Sequence[tuple[str, str]],
        now: float,
        reason: str,
        retry_after: str | None,
    ) -> GateAnswer:
        """The answer without SLO results: fail on a firing page alert, else pending."""
        page = [f"alert firing for {s} (severity {sev})" for s, sev in firing if sev == "page"]
        verdict = Verdict("fail", page) if page else Verdict("pending", [reason])
        return self._answer(req, verdict, [], firing, now, retry_after)

    # -- canary mode --------------------------------------------------------------------

    async def _check_canary(
        self,
        req: GateRequest,
        slos: list[SLO],
        now: float,
        deadline_at: float,
        firing: tuple[tuple[str, str], ...],
    ) -> GateAnswer:
        """The canary judged against the baseline over [since, now] (at most
        gate.canary.max_window; without since, each SLO's window). Firing alerts are
        shown, not judged: an incident hitting both releases is not the canary's doing."""
        config = self.host.config.gate
        window = None
        if req.since is not None:
            window = max(1.0, min(now - req.since, config.canary.max_window))
        plans, left_out = canary.plan(slos, req, window, self._extra(req, slos))
        if req.since is not None and now - req.since < 1.0:
            return self._canary_unjudged(req, firing, now, "only 0s since deploy", None)
        since_key = req.since if window is not None and window < config.canary.max_window else None
        key = ("canary", req.cache_key, since_key)

        async def work() -> Evaluated:
            sources = self.engine.engine(self.host.config).sources
            answers = await canary.query(plans, sources, now)
            return Evaluated(now, [], self.host.clock(), plans, answers)

        used = frozenset(p.slo.source for p in plans)
        evaluated = await self._shared(key, now, deadline_at, work, used)
        if evaluated is None:
            reason = (
                f"evaluation still running after {format_duration(config.deadline)} (slow "
                "source); it goes on and its result is kept for the retry"
            )
            return self._canary_unjudged(req, firing, now, reason, str(math.ceil(config.deadline)))
        downs = {name: self._source_down_for(now, frozenset([name])) for name in used}
        down_state = tuple(
            sorted(
                (n, None if d is None else d >= config.source_down_after) for n, d in downs.items()
            )
        )
        verdict_key = (
            "canary",
            req.cache_key,
            req.release,
            req.revision,
            evaluated.at,
            firing,
            down_state,
        )
        cached = self._cached_verdict(verdict_key)
        if cached is not None:
            return cached

        def unavailable(slo: SLO, error: SourceError) -> tuple[str, str]:
            down = downs.get(slo.source)
            what = f"{error.source} {error.kind}: {error.detail}"
            if down is None or down < config.source_down_after:
                return "pending", f"source temporarily unavailable ({what})"
            text = f"source down for {format_duration(int(down))} ({what})"
            if config.source_down_policy == "fail_closed":
                return "fail", text
            return "removed", f"{text}; left out (source_down_policy: fail_open)"

        # In a worker thread: a comparison is pure CPU (and once imported scipy.stats for
        # ~1.6 s), and on the loop that froze health checks and every other request. Once
        # for the same inputs: pipelines polling together share one comparison, and one
        # that outlasts a request's deadline is kept for its retry.
        judging = self._judging.get(verdict_key)
        if judging is None or (
            judging.done() and (judging.cancelled() or judging.exception() is not None)
        ):
            judging = asyncio.ensure_future(
                asyncio.to_thread(
                    canary.compare, evaluated.plans, evaluated.answers, config.canary, unavailable
                )
            )
            judging.add_done_callback(_retrieved)
            if len(self._judging) > 100:  # bounded: oldest first
                self._judging.pop(next(iter(self._judging)))
            self._judging[verdict_key] = judging
        try:
            judgement = await asyncio.wait_for(
                asyncio.shield(judging), max(0.0, deadline_at - self.monotonic())
            )
        except TimeoutError:
            reason = (
                f"comparison still running after {format_duration(config.deadline)}; it goes "
                "on and its result is kept for the retry"
            )
            return self._canary_unjudged(req, firing, now, reason, str(math.ceil(config.deadline)))
        self._judging.pop(verdict_key, None)
        decision, reasons = judgement.decision, list(judgement.reasons)
        judged = None if req.since is None else evaluated.at - req.since
        if decision == "pass" and judged is not None and judged < max(config.min_duration, 60.0):
            decision, reasons = "pending", [f"only {format_duration(int(judged))} since deploy"]
        body = self._body(req, Verdict(decision, reasons), [], firing, evaluated.at)
        body["mode"] = "canary"
        body["slos"] = canary.legacy_slos(judgement, evaluated.plans)
        body["canary"] = canary.section(judgement, evaluated.plans, left_out, config.canary)
        answer = self._finish(decision, jsonenc.dumps(body))
        self._remember_verdict(verdict_key, answer)
        return answer

    def _canary_unjudged(
        self,
        req: GateRequest,
        firing: Sequence[tuple[str, str]],
        now: float,
        reason: str,
        retry_after: str | None,
    ) -> GateAnswer:
        body = self._body(req, Verdict("pending", [reason]), [], firing, now)
        body["mode"] = "canary"
        body["canary"] = None
        return self._finish("pending", jsonenc.dumps(body), retry_after)

    # -- evaluation ---------------------------------------------------------------------

    async def _evaluate(
        self,
        req: GateRequest,
        slos: list[SLO],
        now: float,
        deadline_at: float,
        sources: frozenset[str],
    ) -> Evaluated | None:
        """The shared evaluation for `req`, or None when it is not done by `deadline_at`
        (it goes on in the background). Raises GateOverloaded beyond the budget."""
        window = None if req.since is None else now - req.since
        if window is not None and window >= max((s.window for s in slos), default=0.0):
            window = None  # every SLO is capped by its own window: one shared evaluation
        key = (req.service, req.matchers, None if window is None else req.since, req.slos)

        async def work() -> Evaluated:
            engine = self.engine.engine(self.host.config)
            extra = self._extra(req, slos)
            # A pipeline waits for it: paced while the loop is busy for half its deadline.
            with pacing_for(self.host.config.gate.deadline / 2):
                report = await engine.evaluate_once(
                    slos, now, window, extra, remember=False, budgets=False
                )
            return Evaluated(now, report.results, self.host.clock())

        return await self._shared(key, now, deadline_at, work, sources)

    def _extra(self, req: GateRequest, slos: Sequence[SLO]) -> list[Matcher]:
        extra = [*req.matchers]
        if any("service" in s.group_by for s in slos):
            extra.append(Matcher("service", MatchOp.EQ, req.service))
        return extra

    async def _shared(
        self,
        key: tuple[Any, ...],
        now: float,
        deadline_at: float,
        work: Callable[[], Awaitable[Evaluated]],
        used: frozenset[str],
    ) -> Evaluated | None:
        """`work`'s result for `key`: from the cache while fresh, else shared with every
        identical request in flight, else started within the budget. None when it is not
        done by `deadline_at` (it goes on; its result is kept for the retry).

        Fresh means younger than `cache_ttl` and taken since the last change in the
        health of the sources it read (`used`): otherwise a cached `ok` passed for the
        whole ttl into an outage (the source-down policy judges the no_data a fresh
        evaluation gives), and a cached no_data outlived the recovery."""
        config = self.host.config.gate
        cached = self._cache.get(key)
        if (
            cached is not None
            and now - cached.completed_at <= config.cache_ttl
            and cached.sources_seen == self._sources_seen(used)
        ):
            return cached
        task = self._inflight.get(key)
        if task is None:
            self.budget.configure(config.max_evaluations_per_second, config.max_pending_evaluations)
            wait = self.budget.reserve(deadline_at - self.monotonic())
            task = asyncio.ensure_future(self._run(key, work, wait, used))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        try:
            return await asyncio.wait_for(
                asyncio.shield(task), max(0.0, deadline_at - self.monotonic())
            )
        except TimeoutError:
            return None

    async def _run(
        self,
        key: tuple[Any, ...],
        work: Callable[[], Awaitable[Evaluated]],
        wait: float,
        used: frozenset[str],
    ) -> Evaluated:
        try:
            if wait > 0:
                await asyncio.sleep(wait)
            # The health as it was when the evaluation started: a failure a cycle sees
            # meanwhile must not be taken as already judged by results that may predate
            # it (the next request evaluates again instead).
            seen = self._sources_seen(used)
            value = replace(await work(), sources_seen=seen)
            self._cache[key] = value
            if len(self._cache) > 1000:
                self._cache.pop(next(iter(self._cache)))
            return value
        finally:
            self.budget.release()

    def _finished(self, key: tuple[Any, ...], task: asyncio.Future[Evaluated]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        # Retrieve the outcome even when every waiter left at the deadline.
        if not task.cancelled() and task.exception() is not None:
            log.error("gate evaluation failed", exc_info=task.exception())

    def _firing(self, service: str) -> list[tuple[str, str]]:
        if self.alerts is None:
            return []
        return [(slo.name, slo.severity.value) for _, slo in self.alerts.firing(service)]

    def _health_of(self, used: frozenset[str]) -> _HealthReading:
        """The health of the sources in `used`, as both the scheduled cycles' clients and
        the gate's own saw it, read again only when some dependency's health changed or a
        reload replaced the clients (a pipeline fleet asks thousands of times a second
        between two changes)."""
        changes = health_changes()
        host_sources = self.host.engine.sources
        own_engine = self.engine.current
        own = own_engine.sources if own_engine is not None else None
        started_at = self.host.started_at
        kept = self._health.get(used)
        if kept is not None:
            (kept_changes, kept_host, kept_own, kept_started), reading = kept
            if (
                kept_changes == changes
                and kept_host is host_sources
                and kept_own is own
                and kept_started == started_at
            ):
                return reading
        reading = _read_health(used, host_sources, own or {}, started_at)
        if len(self._health) > 100:  # bounded: one entry per set of sources gate SLOs read
            self._health.clear()
        self._health[used] = ((changes, host_sources, own, started_at), reading)
        return reading

    def _sources_seen(self, used: frozenset[str]) -> tuple[tuple[str, bool, float], ...]:
        """Per source the gate SLOs read, by what the scheduled cycles' client and the
        gate's own saw: failing, and since when (the last success before it), or not,
        and its latest failure. Constant through a long outage (so the evaluation that
        saw it stays cached and the source-down policy applies), changed by every
        outage, every recovery and every failure in between."""
        return self._health_of(used).seen

    def _source_down_for(self, now: float, used: frozenset[str]) -> float | None:
        """How long the worst of the sources the gate SLOs `used` has been down, by what
        both the scheduled cycles and the gate's own clients saw last; None when each
        one's last outcome is good. A source no gate SLO reads (Loki, for a gate on
        Prometheus SLOs) cannot fail the gate."""
        down_since = self._health_of(used).down_since
        return None if down_since is None else now - down_since

    def _body(
        self,
        req: GateRequest,
        verdict: Verdict,
        results: Sequence[SLOResult],
        firing: Sequence[tuple[str, str]],
        evaluated_at: float,
    ) -> dict[str, Any]:
        return {
            "decision": verdict.decision,
            "service": req.service,
            # The window judged ends when the evaluation ran (results are shared for
            # gate.cache_ttl), not when this request arrived.
            "window": {
                "from": rfc3339(req.since) if req.since is not None else None,
                "to": rfc3339(evaluated_at),
            },
            "evaluated_at": rfc3339(evaluated_at),
            "reasons": verdict.reasons,
            "release": req.release,
            "revision": req.revision,
            "matchers": {m.label: m.value for m in req.matchers},
            "slos": [
                {
                    "slo": r.slo,
                    "status": r.status.value,
                    "value": r.value,
                    "threshold": r.threshold,
                    "objective": r.objective,
                    "events": r.events,
                    "window": r.window,
                    "labels": dict(r.labels),
                    "reason": r.explanation(),
                }
                for r in results
            ],
            "firing_alerts": [{"slo": s, "severity": sev} for s, sev in firing],
        }


# A health reading's inputs: the change mark, the cycles' and the gate's own clients,
# and the daemon's start.
_HealthTakenFrom = tuple[int, Mapping[str, Source], Mapping[str, Source] | None, float]


@dataclass(frozen=True)
class _HealthReading:
    # Per source: (name, failing, since when failing) or (name, False, latest failure).
    seen: tuple[tuple[str, bool, float], ...]
    # When the longest-down of the sources the scheduled cycles read went down (None:
    # none is down); a source that never succeeded counts from the daemon's start.
    down_since: float | None


def _read_health(
    used: frozenset[str],
    host_sources: Mapping[str, Source],
    own: Mapping[str, Source],
    started_at: float,
) -> _HealthReading:
    seen = []
    down_since = None
    for name in sorted(used):
        source = host_sources.get(name)
        records = [s.health for s in (source, own.get(name)) if s is not None]
        down = _down_since(records)
        if down is not None:
            seen.append((name, True, down))
        else:
            last = max((h.last_failure_at or 0.0 for h in records), default=0.0)
            seen.append((name, False, last))
        # Only sources the scheduled cycles read count as down: a source only the gate's
        # own client knows is judged by its answers alone.
        if source is not None and down is not None:
            since = down or started_at
            down_since = since if down_since is None else min(down_since, since)
    return _HealthReading(tuple(seen), down_since)


def _down_since(records: Sequence[DependencyHealth]) -> float | None:
    """None when the latest outcome is a success (or nothing failed); else the last
    success before the failures (0.0 when there was none)."""
    if not any(h.status == "unhealthy" for h in records):
        return None
    last_ok = max((h.last_success_at or 0.0 for h in records), default=0.0)
    last_bad = max((h.last_failure_at or 0.0 for h in records), default=0.0)
    return None if last_ok > last_bad else last_ok


def _retrieved(future: asyncio.Future[Any]) -> None:
    # A comparison every waiting request gave up on may fail unobserved; the next
    # request for the same inputs starts another and sees the error.
    if not future.cancelled():
        future.exception()
