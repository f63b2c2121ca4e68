"""Runs rule unit-test files: input series and log lines, an evaluation interval, and
expectations on SLO statuses and alert states at given times (in the spirit of
`promtool test rules`), fully in-process.

    rule_files: [../../rules/chatbot.yaml]     # relative to the test file
    evaluation_interval: 1m
    tests:
      - name: a 5xx burst breaches
        interval: 15s                          # spacing of input samples
        input_series:
          - series: 'http_requests_total{service="chatbot-backend",status="500"}'
            values: '0+10x200'
        input_logs:
          - stream: {app: chatbot-backend}
            start: 0m
            interval: 15s
            count: 100
            line: '{"answer_mode": "snippet-fallback"}'
        expect:
          - {at: 10m, slo: http-5xx-ratio, status: breach, value: 0.05}
          - {at: 12m, alert: http-5xx-ratio, state: firing, severity: page}
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sentinel.alerting.manager import policy_for
from sentinel.alerting.state import Alert, step
from sentinel.config import Config, LokiConfig
from sentinel.errors import BadQuery, ConfigError
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.slo import SLOResult
from sentinel.evaluate.wiring import renderers
from sentinel.health import DependencyHealth
from sentinel.offline.ruletest import logql_engine, promql_engine
from sentinel.rules.loader import load_rules
from sentinel.rules.model import SLO
from sentinel.sources.base import Sample, Series
from sentinel.units import format_duration, parse_duration


class _InProcess:
    """A Source over an in-process engine."""

    def __init__(self, name: str, run: Any) -> None:
        self.name = name
        self.health = DependencyHealth(name=name, target="in-process", status="healthy")
        self._run = run

    async def instant(self, query: str, at: float) -> list[Sample]:
        try:
            vector = self._run(query, at)
        except (promql_engine.PromQLError, logql_engine.LogQLError) as exc:
            raise BadQuery(self.name, query, str(exc)) from None
        return [Sample(dict(labels), value) for labels, value in vector.items()]

    async def range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        raise BadQuery(self.name, query, "range queries are not used by `sentinel test`")

    async def check_syntax(self, query: str) -> str | None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class TestOutcome:
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def _series(spec: dict[str, Any], interval: float) -> promql_engine.SeriesData:
    _, labels = promql_engine.parse_series(str(spec["series"]))
    values = promql_engine.expand_values(str(spec["values"]))
    points = [(i * interval, v) for i, v in enumerate(values) if v is not None]
    return promql_engine.SeriesData(labels, points)


def _logs(specs: Sequence[dict[str, Any]]) -> list[logql_engine.Entry]:
    entries = []
    for spec in specs:
        start = parse_duration(spec.get("start", 0))
        interval = parse_duration(spec.get("interval", "15s"))
        stream = {str(k): str(v) for k, v in (spec.get("stream") or {}).items()}
        for i in range(int(spec.get("count", 1))):
            ts = start + i * interval
            entries.append(logql_engine.Entry(int(ts * 1e9), str(spec["line"]), stream))
    entries.sort(key=lambda e: e.ts_ns)
    return entries


def _loki(entries: list[logql_engine.Entry]) -> Any:
    def select(
        matchers: list[tuple[str, str, str]], start: int, end: int
    ) -> list[logql_engine.Entry]:
        return [
            e
            for e in entries
            if start < e.ts_ns <= end
            and all(logql_engine._match(op, e.stream.get(n, ""), v) for n, op, v in matchers)
        ]

    def run(query: str, at: float) -> dict[Any, float]:
        node = logql_engine.parse(query)
        return logql_engine.evaluate(node, int(at * 1e9), select)

    return run


def load_slos(test_file: Path, rule_files: Sequence[str]) -> list[SLO]:
    patterns = [str((test_file.parent / f).resolve()) for f in rule_files]
    config = Config(rules=patterns, loki=LokiConfig(url="http://in-process"), base_dir="/")
    return list(load_rules(config).slos)


async def run_test(slos: Sequence[SLO], spec: dict[str, Any], eval_interval: float) -> TestOutcome:
    outcome = TestOutcome(str(spec.get("name", "unnamed")))
    interval = parse_duration(spec.get("interval", "1m"))
    series = [_series(s, interval) for s in spec.get("input_series") or []]
    prom = promql_engine.InProcessPrometheus(series)
    sources: dict[str, Any] = {
        "prometheus": _InProcess("prometheus", prom.query),
        "loki": _InProcess("loki", _loki(_logs(spec.get("input_logs") or []))),
    }
    engine = Engine(sources, renderers())
    expectations = list(spec.get("expect") or [])
    by_time: dict[float, list[dict[str, Any]]] = {}
    for exp in expectations:
        at = parse_duration(exp["at"])
        if abs(at / eval_interval - round(at / eval_interval)) > 1e-9:
            outcome.failures.append(f"at {exp['at']}: not a multiple of evaluation_interval")
            continue
        by_time.setdefault(round(at / eval_interval) * eval_interval, []).append(exp)
    if not by_time:
        return outcome
    alerts: dict[str, Alert] = {}
    slo_by_name = {s.name: s for s in slos}
    t = 0.0
    while t <= max(by_time) + 1e-9:
        report = await engine.evaluate_once(slos, t)
        for err in report.errors.values():
            outcome.failures.append(
                f"at {format_duration(t)}: {err.source} {err.kind}: {err.detail}"
            )
            return outcome
        for result in report.results:
            slo = slo_by_name[result.slo]
            alerts[result.key], _ = step(alerts.get(result.key), result, policy_for(slo, result), t)
        for exp in by_time.get(t, []):
            outcome.failures += _check(exp, report.results, alerts)
        t += eval_interval
    return outcome


def _check(
    exp: dict[str, Any], results: Sequence[SLOResult], alerts: dict[str, Alert]
) -> list[str]:
    where = f"at {exp['at']}"
    labels = {str(k): str(v) for k, v in (exp.get("labels") or {}).items()}
    if "tier" in exp:
        labels["tier"] = str(exp["tier"])
    name = exp.get("slo") or exp.get("alert")
    matching = [r for r in results if r.slo == name and dict(r.labels) == labels]
    if not matching:
        known = sorted({f"{r.slo}{dict(r.labels) or ''}" for r in results})
        return [f"{where}: no result for {name}{labels or ''} (have: {', '.join(known)})"]
    result = matching[0]
    problems = []
    if "status" in exp and result.status.value != exp["status"]:
        problems.append(
            f"{where}: SLO {result.key} is {result.status.value}, expected {exp['status']} "
            f"(value {result.value}, {result.explanation()})"
        )
    if "value" in exp:
        want = float(exp["value"])
        got = result.value
        if got is None or not math.isclose(
            got, want, rel_tol=float(exp.get("tolerance", 1e-9)), abs_tol=1e-12
        ):
            problems.append(f"{where}: SLO {result.key} value is {got}, expected {want}")
    if "state" in exp:
        alert = alerts.get(result.key)
        state = alert.state.value if alert else "inactive"
        if state != exp["state"]:
            problems.append(f"{where}: alert {result.key} is {state}, expected {exp['state']}")
    if "severity" in exp and result.severity != exp["severity"]:
        want_severity = exp["severity"]
        problems.append(
            f"{where}: alert {result.key} has severity {result.severity}, expected {want_severity}"
        )
    return problems


def run_file(path: Path) -> list[TestOutcome]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        slos = load_slos(path, data.get("rule_files") or [])
    except ConfigError as exc:
        return [TestOutcome(f"{path}: rule files", [str(p) for p in exc.problems])]
    eval_interval = parse_duration(data.get("evaluation_interval", "1m"))
    return [asyncio.run(run_test(slos, spec, eval_interval)) for spec in data.get("tests") or []]
