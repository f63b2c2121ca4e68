"""The deploy gate: "may this release be promoted?" for canary / blue-green pipelines.

Verdicts: pass (200), fail (412), pending (503 + Retry-After; curl --retry retries it).
The decision itself (`decide`) is pure; `Gate.check` gathers its inputs: a fresh
evaluation of the service's gate SLOs over [since, now] (shared by identical concurrent
requests and cached for `cache_ttl`), the firing alerts, and source health.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sentinel.alerting.manager import AlertManager
from sentinel.daemon import Daemon
from sentinel.evaluation import SLOResult, Status, format_value, rfc3339
from sentinel.model import LABEL_NAME, SLO, Matcher, MatchOp
from sentinel.store import Store
from sentinel.timeparse import parse_time
from sentinel.units import format_duration
from sentinel.web import dumps, json_response, require_token

RESERVED = frozenset({"service", "since", "slo", "release", "revision"})
STATUS_CODE = {"pass": 200, "fail": 412, "pending": 503}
RETRY_AFTER = "30"


class GateInputError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(f"{param}: {message}")


@dataclass(frozen=True)
class GateRequest:
    service: str
    matchers: tuple[Matcher, ...]
    since: float | None
    slos: tuple[str, ...]
    release: str | None = None
    revision: str | None = None

    @property
    def cache_key(self) -> tuple[Any, ...]:
        return (self.service, self.matchers, self.since, self.slos)


@dataclass
class Verdict:
    decision: str
    reasons: list[str] = field(default_factory=list)


def parse_request(query: Any) -> GateRequest:
    service = query.get("service", "").strip()
    if not service:
        raise GateInputError("service", "is required")
    since = None
    if query.get("since"):
        try:
            since = parse_time(query["since"])
        except ValueError as exc:
            raise GateInputError("since", str(exc)) from None
    matchers = []
    for name, value in sorted(query.items()):
        if name in RESERVED:
            continue
        if not LABEL_NAME.match(name):
            raise GateInputError(name, "not a valid label name")
        matchers.append(Matcher(name, MatchOp.EQ, value))
    slos = tuple(s.strip() for s in query.get("slo", "").split(",") if s.strip())
    return GateRequest(
        service, tuple(matchers), since, slos, query.get("release"), query.get("revision")
    )


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
        over = f"over {format_duration(r.window)}{since_text}"
        if r.status is Status.BREACH:
            op = ">" if _below(r) else "<"
            fail.append(f"{r.slo} = {_fmt(r, r.value)} {op} {_fmt(r, r.threshold)} {over}")
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


def _below(r: SLOResult) -> bool:
    return r.value is None or r.value > r.threshold


def _fmt(r: SLOResult, value: float | None) -> str:
    if value is None:
        return "no data"
    if r.kind in ("ratio", "log_ratio"):
        return f"{value * 100:.3g} %"
    if r.kind == "latency":
        return f"{value:.3g} s"
    return f"{value:.4g}"


class Gate:
    def __init__(self, daemon: Daemon, alerts: AlertManager | None, store: Store | None) -> None:
        self.daemon = daemon
        self.alerts = alerts
        self.store = store
        self._inflight: dict[tuple[Any, ...], asyncio.Future[tuple[float, list[SLOResult]]]] = {}
        self._cache: dict[tuple[Any, ...], tuple[float, list[SLOResult]]] = {}
        self._verdicts: dict[tuple[Any, ...], tuple[str, str]] = {}
        counter = daemon.metrics.gate_decisions
        self._decision_counters = {d: counter.labels(d) for d in ("pass", "fail", "pending")}
        self._inputs_json: dict[GateRequest, str] = {}
        # Audit rows are written in batches: one SQLite transaction per request would cost
        # more than the rest of the request. A crash loses at most `flush_every` seconds.
        self._audit: list[tuple[float, str, str, str, str]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Small, frequent batches: a large one holds the GIL long enough to show in p99.
        self.flush_every = 0.02

    def flush_audit(self) -> None:
        rows, self._audit = self._audit, []
        if self.store is not None:
            self.store.record_gates(rows)

    async def _flush_loop(self) -> None:
        assert self.store is not None
        # Small batches on the loop itself: rows are tiny (texts are stored once), and a
        # worker thread only added GIL hand-offs that showed up in the p99.
        while True:
            await asyncio.sleep(self.flush_every)
            self.flush_audit()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self.flush_audit()

    def record(self, at: float, service: str, decision: str, inputs: str, body: str) -> None:
        self._audit.append((at, service, decision, inputs, body))
        if self.store is not None and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush_loop())

    def known_services(self) -> set[str]:
        return self.daemon.known_services()

    def gate_slos(self, req: GateRequest) -> list[SLO]:
        out = []
        for slo in self.daemon.rules.slos:
            if not slo.gate or (req.slos and slo.name not in req.slos):
                continue
            if slo.service == req.service or "service" in slo.group_by:
                out.append(slo)
        return out

    async def check(self, req: GateRequest, now: float) -> tuple[str, str]:
        """-> (decision, JSON body). The verdict of a fresh evaluation is computed once
        and its body reused while nothing it depends on changes (the hot path of a
        pipeline fleet polling the gate)."""
        slos = self.gate_slos(req)
        if req.slos:
            missing = set(req.slos) - {s.name for s in slos}
            if missing:
                raise GateInputError(
                    "slo", f"unknown SLO(s) for this service: {', '.join(sorted(missing))}"
                )
        min_duration = self.daemon.config.gate.min_duration
        window = None if req.since is None else now - req.since
        if window is not None and window < 0:
            raise GateInputError("since", "is in the future")
        evaluated_at, results = await self._evaluate(req, slos, now, window)
        firing = tuple(self._firing(req.service))
        down_for = self._source_down_for(now)
        gate_config = self.daemon.config.gate
        down_state = None if down_for is None else down_for >= gate_config.source_down_after
        verdict_key = (req.cache_key, req.release, req.revision, evaluated_at, firing, down_state)
        cached = self._verdicts.get(verdict_key)
        if cached is not None:
            self._decision_counters[cached[0]].inc()
            return cached
        results = [r for r in results if r.service == req.service]
        verdict = decide(
            results,
            firing,
            down_for,
            gate_config.source_down_policy,
            gate_config.source_down_after,
            " since deploy" if req.since is not None else "",
        )
        judged = None if req.since is None else evaluated_at - req.since
        too_soon = judged is not None and judged < max(min_duration, 60.0)
        if too_soon and verdict.decision == "pass":
            assert judged is not None
            verdict = Verdict("pending", [f"only {format_duration(int(judged))} since deploy"])
        body = self._body(req, verdict, results, firing, evaluated_at)
        answer = (verdict.decision, dumps(body))
        if len(self._verdicts) > 1000:
            self._verdicts.pop(next(iter(self._verdicts)))
        self._verdicts[verdict_key] = answer
        self._decision_counters[verdict.decision].inc()
        return answer

    def audit(self, req: GateRequest, now: float, decision: str, body_json: str) -> None:
        inputs = self._inputs_json.get(req)
        if inputs is None:
            inputs = json.dumps(
                {
                    "service": req.service,
                    "since": req.since,
                    "slos": list(req.slos),
                    "matchers": {m.label: m.value for m in req.matchers},
                    "release": req.release,
                    "revision": req.revision,
                }
            )
            if len(self._inputs_json) > 1000:
                self._inputs_json.clear()
            self._inputs_json[req] = inputs
        self.record(now, req.service, decision, inputs, body_json)

    async def _evaluate(
        self, req: GateRequest, slos: list[SLO], now: float, window: float | None
    ) -> tuple[float, list[SLOResult]]:
        key = req.cache_key
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] <= self.daemon.config.gate.cache_ttl:
            return cached
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[tuple[float, list[SLOResult]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[key] = future
        try:
            extra = [*req.matchers]
            if any("service" in s.group_by for s in slos):
                extra.append(Matcher("service", MatchOp.EQ, req.service))
            report = await self.daemon.engine.evaluate_once(
                slos, now, window, extra, remember=False, budgets=False
            )
            value = (now, report.results)
            self._cache[key] = value
            if len(self._cache) > 1000:
                self._cache.pop(next(iter(self._cache)))
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved; waiters re-raise it
            raise
        finally:
            del self._inflight[key]

    def _firing(self, service: str) -> list[tuple[str, str]]:
        if self.alerts is None:
            return []
        return [(slo.name, slo.severity.value) for _, slo in self.alerts.firing(service)]

    def _source_down_for(self, now: float) -> float | None:
        worst = None
        for source in self.daemon.engine.sources.values():
            if source.health.status == "unhealthy":
                since = source.health.last_success_at or self.daemon.started_at
                down = now - since
                worst = down if worst is None else max(worst, down)
        return worst

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


def gate_routes(gate: Gate) -> list[web.RouteDef]:
    async def handle(request: web.Request) -> web.Response:
        require_token(request)
        try:
            req = parse_request(request.query)
            if req.service not in gate.known_services():
                return json_response(
                    {"error": f"service: unknown service {req.service!r}", "decision": None},
                    status=404,
                )
            now = gate.daemon.clock()
            decision, text = await gate.check(req, now)
        except GateInputError as exc:
            return json_response({"error": str(exc), "parameter": exc.param}, status=400)
        gate.audit(req, now, decision, text)
        headers = {"Retry-After": RETRY_AFTER} if decision == "pending" else {}
        return web.Response(
            text=text,
            status=STATUS_CODE[decision],
            headers=headers,
            content_type="application/json",
        )

    async def history(request: web.Request) -> web.Response:
        require_token(request)
        if gate.store is None:
            return json_response([])
        gate.flush_audit()
        try:
            limit = min(1000, int(request.query.get("limit", "100")))
        except ValueError:
            return json_response({"error": "limit: expected an integer"}, status=400)
        return json_response(gate.store.gate_history(request.query.get("service"), limit))

    return [web.get("/api/v1/gate", handle), web.get("/api/v1/gate/history", history)]


__all__ = ["Gate", "GateInputError", "decide", "format_value", "gate_routes", "parse_request"]
