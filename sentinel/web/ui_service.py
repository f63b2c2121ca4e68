"""The service page's panels: per SLO, an SLI chart per instance over the chosen range
(threshold line, breach spans, incidents on the timeline), the error-budget burn-down
with its ideal line, the burn-rate tiers, and the query behind each chart.

Charts are range queries through `RangeCache` (≤ 500 points a series, cached per
evaluation cycle). The SLI is charted with the same expression the dashboards use
(`sli_expr`/`sli_logql`), narrowed to the instance by its labels, so each point is what
an evaluation at that time would have measured over the SLO's window.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from markupsafe import Markup

from sentinel.alerting.state import Alert
from sentinel.query.logql import sli_logql
from sentinel.query.promql import PART_LABEL, selector_matchers, sli_expr, slo_query
from sentinel.rules.model import SLO, LogRatioSLI, Matcher, MatchOp, RatioQueriesSLI, RatioSLI
from sentinel.sources.base import Series
from sentinel.web.charts import Line, Marker, Span, breach_spans, line_chart
from sentinel.web.ui_data import Incident, Row, Tier, fmt, tier_view, when
from sentinel.web.ui_series import RangeAnswer, RangeCache, range_step

RANGES: dict[str, float] = {
    "15m": 900.0,
    "1h": 3600.0,
    "6h": 6 * 3600.0,
    "1d": 86400.0,
    "7d": 7 * 86400.0,
    "30d": 30 * 86400.0,
}
DEFAULT_RANGE = "1h"
MAX_CHARTS = 6  # instances charted per SLO (worst first); the rest are listed


@dataclass(frozen=True)
class Chart:
    title: str
    svg: Markup | None
    error: str | None
    spans: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Panel:
    slo: SLO
    anchor: str
    rows: tuple[Row, ...]
    charts: tuple[Chart, ...]
    burndown: Chart | None
    burndown_note: str
    source: str
    query: str
    explore_url: str | None
    incidents: tuple[Incident, ...]
    tiers: tuple[Tier, ...]  # of the first (worst) instance

    @property
    def worst(self) -> str:
        return self.rows[0].worst if self.rows else "no_data"


def chart_query(slo: SLO, labels: Mapping[str, str]) -> tuple[str, str]:
    """(source, expression) charting one instance: narrowed by its labels where the SLI
    is built from selectors; a raw query is charted as written (its series filtered)."""
    extra = [Matcher(k, MatchOp.EQ, v) for k, v in sorted(labels.items())]
    if slo.source == "loki":
        narrow = isinstance(slo.sli, LogRatioSLI)
        return "loki", sli_logql(slo, extra if narrow else ())
    narrow = selector_matchers(slo) is not None
    return "prometheus", sli_expr(slo, extra if narrow else ())


def _matching(series: Sequence[Series], labels: Mapping[str, str]) -> Series | None:
    for s in series:
        if all(s.labels.get(k, "") == v for k, v in labels.items()):
            return s
    return None


def explore_url(grafana: str | None, datasource: str, expr: str, range_name: str) -> str | None:
    if not grafana:
        return None
    left = {
        "datasource": datasource,
        "queries": [{"refId": "A", "expr": expr}],
        "range": {"from": f"now-{range_name}", "to": "now"},
    }
    return f"{grafana.rstrip('/')}/explore?left={quote(json.dumps(left), safe='')}"


def sli_chart(
    slo: SLO,
    row: Row,
    answer: RangeAnswer,
    markers: Sequence[Marker],
    chart_id: str,
) -> Chart:
    title = f"{slo.name}{' ' + row.instance if row.instance else ''}: SLI over the range"
    if answer.error is not None:
        return Chart(title, None, answer.error)
    series = _matching(answer.series, row.labels)
    points = series.points if series is not None else ()
    spans = breach_spans(points, slo.threshold, slo.good_when.value, answer.step)
    kind = slo.sli.kind
    svg = line_chart(
        title=title,
        start=answer.start,
        end=answer.end,
        step=answer.step,
        lines=[Line(points, "sli", f"{slo.name} SLI")],
        fmt=lambda v: fmt(kind, v),
        threshold=slo.threshold,
        spans=spans,
        markers=markers,
        chart_id=chart_id,
    )
    error = None if points else "no data in this range"
    return Chart(title, svg, error, tuple(spans))


def burndown_points(
    series: Sequence[Series], labels: Mapping[str, str], budget: float, start: float
) -> list[tuple[float, float]]:
    """Budget remaining (1 = untouched) at each step after `start`: errors so far over the
    budget the whole range's traffic allows, from per-step increases of bad and total (a
    point at `start` counts the step before the range, and is left out)."""
    parts: dict[str, dict[float, float]] = {}
    for s in series:
        plain = {k: v for k, v in s.labels.items() if k != PART_LABEL}
        if all(plain.get(k, "") == v for k, v in labels.items()):
            into = parts.setdefault(s.labels.get(PART_LABEL, ""), {})
            for t, v in s.points:
                if math.isfinite(v):
                    into[t] = into.get(t, 0.0) + v
    bad, total = parts.get("bad", {}), parts.get("total", {})
    times = sorted(t for t in total if t > start)
    allowed = budget * sum(total[t] for t in times)
    if not times or allowed <= 0:
        return []
    out, spent = [], 0.0
    for t in times:
        spent += bad.get(t, 0.0)
        out.append((t, 1.0 - spent / allowed))
    return out


def burndown(slo: SLO, row: Row, answer: RangeAnswer | None, chart_id: str) -> Chart | None:
    if answer is None or slo.objective is None or slo.period is None:
        return None
    title = f"{slo.name}{' ' + row.instance if row.instance else ''}: error budget burn-down"
    if answer.error is not None:
        return Chart(title, None, answer.error)
    points = burndown_points(answer.series, row.labels, 1.0 - slo.objective, answer.start)
    if not points:
        return Chart(title, None, "no traffic in the period")
    ideal = [(answer.start, 1.0), (answer.end, 0.0)]
    svg = line_chart(
        title=title,
        start=answer.start,
        end=answer.end,
        step=answer.step,
        lines=[
            Line(ideal, "ideal", "ideal: budget spent evenly over the period", dashed=True),
            Line(points, "budget", "error budget remaining"),
        ],
        fmt=lambda v: f"{v * 100:.0f} %",
        threshold=0.0,
        threshold_label="exhausted at",
        chart_id=chart_id,
    )
    return Chart(title, svg, None)


def markers(incidents: Sequence[Incident]) -> list[Marker]:
    """Fired (or silenced) and resolved marks on the timeline."""
    out = []
    for i in incidents:
        what = "silenced" if i.silenced else "fired"
        out.append(Marker(i.started_at, what, f"{i.slo} {what} {when(i.started_at)}"))
        if i.resolved_at is not None:
            out.append(Marker(i.resolved_at, "resolved", f"{i.slo} resolved {when(i.resolved_at)}"))
    return out


async def panels(
    slos: Sequence[SLO],
    rows_of: Mapping[str, list[Row]],
    incidents_of: Mapping[str, list[Incident]],
    cache: RangeCache,
    range_name: str,
    now: float,
    grafana: str | None,
    datasources: Mapping[str, str],
    alerts: Mapping[str, Alert],
) -> list[Panel]:
    seconds = RANGES[range_name]
    out = []
    for n, slo in enumerate(slos):
        rows = rows_of.get(slo.name, [])
        charted = rows[:MAX_CHARTS]
        queries = [chart_query(slo, r.labels) for r in charted]
        budget_q = _budget_query(slo, charted[0].labels if charted else {})
        requests = [cache.query(src, expr, seconds, now) for src, expr in queries]
        if budget_q is not None:
            requests.append(cache.query("prometheus", budget_q, slo.period or 0.0, now))
        answers = await asyncio.gather(*requests)
        incs = incidents_of.get(slo.name, [])
        charts = tuple(
            sli_chart(slo, r, a, markers([i for i in incs if i.key == r.key]), f"c{n}-{k}")
            for k, (r, a) in enumerate(zip(charted, answers, strict=False))
        )
        bd_answer = answers[len(charted)] if budget_q is not None else None
        source, expr = queries[0] if queries else chart_query(slo, {})
        out.append(
            Panel(
                slo=slo,
                anchor=f"slo-{n}",
                rows=tuple(rows),
                charts=charts,
                burndown=burndown(slo, charted[0], bd_answer, f"b{n}") if charted else None,
                burndown_note=_burndown_note(slo),
                source=source,
                query=expr,
                explore_url=explore_url(grafana, datasources.get(source, source), expr, range_name),
                incidents=tuple(incs),
                tiers=tuple(tier_view(t, alerts) for t in rows[0].tier_results) if rows else (),
            )
        )
    return out


def _budget_query(slo: SLO, labels: Mapping[str, str]) -> str | None:
    if slo.objective is None or slo.period is None or slo.source != "prometheus":
        return None
    if not isinstance(slo.sli, RatioSLI | RatioQueriesSLI):
        return None
    extra = [Matcher(k, MatchOp.EQ, v) for k, v in sorted(labels.items())]
    return slo_query(slo, range_step(slo.period), extra if isinstance(slo.sli, RatioSLI) else ())


def _burndown_note(slo: SLO) -> str:
    if slo.objective is None or slo.period is None:
        missing = "an objective" if slo.objective is None else "a period"
        return f"No error budget burn-down: the SLO has no {missing}."
    if slo.source != "prometheus" or not isinstance(slo.sli, RatioSLI | RatioQueriesSLI):
        return "The burn-down needs event counts (a bad/total ratio SLI on Prometheus)."
    return ""
