"""Grafana dashboards rendered from the typed rule model through Jinja2 templates.

The model becomes plain view objects (`ServiceView`, `SLOView`); templates under
`dashboards/` turn them into Grafana's dashboard JSON with every string through
`tojson`. The result is parsed (so a broken template fails here, not in Grafana), panel
ids are assigned in order, and the JSON is written with sorted keys: rendering unchanged
rules twice gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError

from sentinel.config import Config
from sentinel.errors import ConfigError, Problem
from sentinel.outputs.links import dashboard_uid
from sentinel.query.logql import error_lines_logql, sli_logql
from sentinel.query.promql import rate_exprs, sli_expr
from sentinel.rules.model import (
    RATIO_SLIS,
    SLO,
    LatencySLI,
    LogQLSLI,
    LogRatioSLI,
    Matcher,
    MatchOp,
    RuleSet,
)
from sentinel.units import format_duration

ENV_MATCHER = (Matcher("env", MatchOp.RE, "$env"),)
REQUIRED = ("title", "uid", "schemaVersion", "panels")


@dataclass(frozen=True)
class SLOView:
    name: str
    description: str
    kind: str
    unit: str
    source: str  # prometheus | loki
    expr: str
    threshold: float
    objective: float | None
    good_when: str
    window: str
    severity: str
    runbook_url: str | None
    traffic: dict[str, str]
    y: int
    decimals: int = 3
    budget_expr: str | None = None  # from Sentinel's own metrics, when the SLO has a period
    burn_expr: str | None = None


@dataclass(frozen=True)
class ServiceView:
    name: str
    uid: str
    title: str
    slos: list[SLOView]
    error_logs: str | None
    deploy_marker: str | None
    prometheus_uid: str
    loki_uid: str
    logs_y: int = 0  # below the last SLO row
    tags: list[str] = field(default_factory=lambda: ["sentinel", "slo"])


def _unit(slo: SLO) -> str:
    if isinstance(slo.sli, LatencySLI):
        return "s"
    if isinstance(slo.sli, RATIO_SLIS):  # with an objective or a plain threshold
        return "percentunit"
    return "short"


def _decimals(slo: SLO, unit: str) -> int:
    """Seconds and percentages show 3 decimals; a plain number (a raw query's value: a
    cost in dollars, tokens, a fraction of a limit) as many as its threshold needs for
    three significant digits, so $0.00027 is not shown as 0.000."""
    if unit != "short" or slo.threshold == 0 or not math.isfinite(slo.threshold):
        return 3
    return max(0, min(8, 2 - math.floor(math.log10(abs(slo.threshold)))))


def slo_view(slo: SLO, y: int) -> SLOView:
    is_log = isinstance(slo.sli, LogRatioSLI | LogQLSLI)
    expr = sli_logql(slo, ()) if is_log else sli_expr(slo, ENV_MATCHER if _env_ok(slo) else ())
    unit = _unit(slo)
    return SLOView(
        name=slo.name,
        description=slo.description,
        kind=slo.sli.kind,
        unit=unit,
        source="loki" if is_log else "prometheus",
        expr=expr,
        threshold=slo.threshold,
        objective=slo.objective,
        good_when=slo.good_when.value,
        window=format_duration(slo.window),
        severity=slo.severity.value,
        runbook_url=slo.runbook_url,
        traffic={} if is_log else rate_exprs(slo, ENV_MATCHER if _env_ok(slo) else ()),
        y=y,
        decimals=_decimals(slo, unit),
        budget_expr=_own(slo, "sentinel_slo_error_budget_remaining") if slo.period else None,
        burn_expr=_own(slo, "sentinel_slo_burn_rate") if slo.period else None,
    )


def _own(slo: SLO, metric: str) -> str:
    """A query over Sentinel's own /metrics for this SLO (escaped like every query)."""
    from sentinel.query.promql import quote

    return f"{metric}{{service={quote(slo.service)}, slo={quote(slo.name)}}}"


def _env_ok(slo: SLO) -> bool:
    # A rule that pins env itself keeps it; otherwise the dashboard's $env variable applies.
    return "env" not in dict(slo.labels)


def service_views(rules: RuleSet, config: Config) -> list[ServiceView]:
    by_service: dict[str, list[SLO]] = {}
    for slo in rules.slos:
        by_service.setdefault(slo.service, []).append(slo)
    views = []
    for service in sorted(by_service):
        slos = by_service[service]
        error_logs = next((q for s in slos if (q := error_lines_logql(s))), None)
        rows = _layout(slos)
        views.append(
            ServiceView(
                name=service,
                uid=dashboard_uid(service),
                title=f"SLOs: {service}",
                slos=rows,
                error_logs=error_logs if config.loki is not None else None,
                deploy_marker=config.dashboards.deploy_marker,
                prometheus_uid=config.dashboards.prometheus_datasource_uid,
                loki_uid=config.dashboards.loki_datasource_uid,
                logs_y=_height(slos),
            )
        )
    return views


def _row_height(slo: SLO) -> int:
    return 9 + (8 if slo.period else 0)  # a row, its panels, the budget panels


def _layout(slos: list[SLO]) -> list[SLOView]:
    views, y = [], 0
    for slo in slos:
        views.append(slo_view(slo, y))
        y += _row_height(slo)
    return views


def _height(slos: list[SLO]) -> int:
    return sum(_row_height(slo) for slo in slos)


def _environment(template_dir: Path) -> Environment:
    if not template_dir.is_dir():
        msg = f"dashboard template folder {template_dir} does not exist"
        raise ConfigError([Problem("config", None, "dashboards.templates", msg)])
    return Environment(
        loader=FileSystemLoader(str(template_dir)),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def finalize(text: str, name: str) -> dict[str, Any]:
    """Parse rendered JSON, check Grafana's required fields, number the panels."""
    try:
        dashboard = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{name}: template produced invalid JSON: {exc}") from None
    missing = [key for key in REQUIRED if key not in dashboard]
    if missing:
        raise ValueError(f"{name}: dashboard lacks {', '.join(missing)}")
    for number, panel in enumerate(_all_panels(dashboard["panels"]), start=1):
        panel["id"] = number
        for key in ("type", "gridPos"):
            if key not in panel:
                raise ValueError(f"{name}: panel {panel.get('title')!r} lacks {key}")
    return dashboard  # type: ignore[no-any-return]


def _all_panels(panels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_all_panels(panel.get("panels", [])))
    return out


def dump(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all(rules: RuleSet, config: Config) -> dict[str, dict[str, Any]]:
    """file name -> dashboard JSON, for every service plus the overview."""
    env = _environment(config.resolve(config.dashboards.templates))
    views = service_views(rules, config)
    out: dict[str, dict[str, Any]] = {}
    try:
        service_tpl = env.get_template("service.json.j2")
        for view in views:
            out[f"{view.uid}.json"] = finalize(service_tpl.render(service=view), view.uid)
        overview = env.get_template("overview.json.j2").render(
            services=views, prometheus_uid=config.dashboards.prometheus_datasource_uid
        )
    except TemplateError as exc:
        where = f"{getattr(exc, 'filename', None) or 'template'}:{getattr(exc, 'lineno', '')}"
        raise ValueError(f"{where}: {exc}") from exc
    out["sentinel-overview.json"] = finalize(overview, "overview")
    return out


def write_all(dashboards: dict[str, dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write files whose content changed; return the paths written. Each file is replaced
    whole (written beside it, then renamed): Grafana's file provisioning reads the folder
    at any moment, and a full disk must not leave it a truncated dashboard."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in sorted(dashboards.items()):
        path = out_dir / name
        text = dump(dashboard)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        part = path.with_name(f".{name}.part")  # not *.json: provisioning skips it
        try:
            part.write_text(text, encoding="utf-8")
            os.replace(part, path)
        except OSError:
            part.unlink(missing_ok=True)
            raise
        written.append(path)
    return written
