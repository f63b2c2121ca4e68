"""Backtests: replay rules over history through the same evaluation and alert state
machine as the daemon (nothing is sent), and report what would have fired.

Each SLO costs one range query per window (its own window, plus the period and burn
windows when it has a budget), chunked to stay under Prometheus' 11,000 points per series.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sentinel.alerting.manager import policy_for
from sentinel.alerting.state import Alert, TransitionKind, step
from sentinel.errors import SourceError
from sentinel.evaluate.budgets import apply_budgets
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.slo import SLOResult, Status, evaluate, rfc3339
from sentinel.rules.model import SLO, SLIKind
from sentinel.sources.base import Sample, Series
from sentinel.units import format_duration

MAX_POINTS = 10_000


@dataclass
class Incident:
    key: str
    service: str
    slo: str
    severity: str
    fired_at: float
    resolved_at: float | None = None
    peak: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "alert": self.key,
            "service": self.service,
            "slo": self.slo,
            "severity": self.severity,
            "fired_at": rfc3339(self.fired_at),
            "resolved_at": rfc3339(self.resolved_at) if self.resolved_at else None,
            "duration_seconds": (self.resolved_at - self.fired_at) if self.resolved_at else None,
            "peak_value": self.peak,
        }


@dataclass
class BacktestReport:
    start: float
    end: float
    step: float
    incidents: list[Incident] = field(default_factory=list)
    breach_seconds: dict[str, float] = field(default_factory=dict)
    budget_consumed: dict[str, float | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "from": rfc3339(self.start),
            "to": rfc3339(self.end),
            "step_seconds": self.step,
            "pages": sum(i.severity == "page" for i in self.incidents),
            "tickets": sum(i.severity == "ticket" for i in self.incidents),
            "incidents": [i.to_json() for i in self.incidents],
            "time_in_breach_seconds": self.breach_seconds,
            "budget_consumed": self.budget_consumed,
            "errors": self.errors,
        }


def _by_time(series: Sequence[Series]) -> dict[float, list[Sample]]:
    out: dict[float, list[Sample]] = {}
    for s in series:
        for t, value in s.points:
            out.setdefault(round(t, 3), []).append(Sample(s.labels, value))
    return out


async def _range(
    engine: Engine, slo: SLO, query: str, start: float, end: float, step: float
) -> dict[float, list[Sample]]:
    source = engine.sources[slo.source]
    out: dict[float, list[Sample]] = {}
    chunk = step * MAX_POINTS
    t = start
    while t <= end:
        stop = min(end, t + chunk - step)
        out.update(_by_time(await source.range(query, t, stop, step)))
        t = stop + step
    return out


async def backtest(
    engine: Engine,
    slos: Sequence[SLO],
    start: float,
    end: float,
    step: float,
    progress: Callable[[int, int, str], None] | None = None,
) -> BacktestReport:
    report = BacktestReport(start, end, step)
    times = [start + i * step for i in range(int((end - start) // step) + 1)]
    for index, slo in enumerate(slos):
        if progress is not None:
            progress(index, len(slos), slo.key)
        try:
            await _replay(engine, slo, times, report)
        except SourceError as exc:
            report.errors.append(f"{slo.key}: {exc.source} {exc.kind}: {exc.detail}")
    if progress is not None:
        progress(len(slos), len(slos), "done")
    report.incidents.sort(key=lambda i: (i.fired_at, i.key))
    return report


async def _replay(engine: Engine, slo: SLO, times: list[float], report: BacktestReport) -> None:
    render = engine.renderers[slo.source]
    start, end, step = times[0], times[-1], report.step
    main_query = render(slo, None, ())
    main = await _range(engine, slo, main_query, start, end, step)
    windows: dict[float, dict[float, list[Sample]]] = {}
    queries: dict[float, str] = {}
    if slo.period is not None and slo.objective is not None:
        for w in {slo.period, *(slo.burn.catalogue.windows() if slo.burn else ())}:
            queries[w] = render(slo, w, ())
            windows[w] = await _range(engine, slo, queries[w], start, end, step)
        total = await engine.sources[slo.source].instant(render(slo, end - start, ()), end)
        ratio = _ratio(slo, total)
        report.budget_consumed[slo.key] = None if ratio is None else ratio / (1 - slo.objective)
    alerts: dict[str, Alert] = {}
    open_incidents: dict[str, Incident] = {}
    for t in times:
        results = evaluate(slo, main.get(round(t, 3), []), t, main_query)
        answers: Mapping[float, Sequence[Sample] | None] = {
            w: samples.get(round(t, 3), []) for w, samples in windows.items()
        }
        results = apply_budgets(slo, results, answers, queries) if windows else results
        for result in results:
            _observe(slo, result, t, alerts, open_incidents, report)


def _observe(
    slo: SLO,
    result: SLOResult,
    t: float,
    alerts: dict[str, Alert],
    open_incidents: dict[str, Incident],
    report: BacktestReport,
) -> None:
    if result.status is Status.BREACH and result.kind != SLIKind.BURN_RATE:
        report.breach_seconds[result.key] = report.breach_seconds.get(result.key, 0) + report.step
    alert, tr = step(alerts.get(result.key), result, policy_for(slo, result), t)
    alerts[result.key] = alert
    incident = open_incidents.get(result.key)
    if incident is not None and result.value is not None:
        incident.peak = max(incident.peak or result.value, result.value)
    if tr is None:
        return
    if tr.kind is TransitionKind.FIRING:
        incident = Incident(
            result.key, result.service, result.slo, result.severity, t, None, result.value
        )
        open_incidents[result.key] = incident
        report.incidents.append(incident)
    elif tr.kind is TransitionKind.RESOLVED and incident is not None:
        incident.resolved_at = t
        del open_incidents[result.key]


def _ratio(slo: SLO, samples: Sequence[Sample]) -> float | None:
    results = evaluate(slo, samples, 0.0)
    values = [r.value for r in results if r.value is not None]
    return max(values) if values else None


def progress_bar(index: int, total: int, label: str) -> None:
    """A one-line progress bar on a terminal; silent when stderr is not one."""
    if not sys.stderr.isatty():
        return
    width = 30
    done = int(width * index / max(total, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {index}/{total} {label[:40]:<40}")
    if index >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def report_table(report: BacktestReport) -> str:
    data = report.to_json()
    lines = [
        f"backtest {data['from']} .. {data['to']} (step {format_duration(report.step)}): "
        f"{data['pages']} page(s), {data['tickets']} ticket(s)",
        "",
        f"{'ALERT':<60} {'SEVERITY':<8} {'FIRED':<21} {'RESOLVED':<21} DURATION",
    ]
    for i in report.incidents:
        resolved = rfc3339(i.resolved_at) if i.resolved_at else "(still firing)"
        duration = format_duration(i.resolved_at - i.fired_at) if i.resolved_at else "-"
        lines.append(
            f"{i.key:<60} {i.severity:<8} {rfc3339(i.fired_at):<21} {resolved:<21} {duration}"
        )
    if report.breach_seconds:
        lines += ["", "time in breach:"]
        lines += [f"  {k}: {format_duration(v)}" for k, v in sorted(report.breach_seconds.items())]
    if report.budget_consumed:
        lines += ["", "error budget consumed over the range:"]
        for key, consumed in sorted(report.budget_consumed.items()):
            text = "no data" if consumed is None else f"{consumed * 100:.1f} %"
            lines.append(f"  {key}: {text}")
    lines += [f"error: {e}" for e in report.errors]
    return "\n".join(lines)
