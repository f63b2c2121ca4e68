"""View models of the status UI, assembled from the daemon's latest results, the alert
states and the state store. Plain data in, frozen dataclasses out: templates only format.

Order on the overview is "worst first": a breach (of the SLO or of a burn-rate tier), then
no_data, then ok; within each, the lowest error budget remaining first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sentinel.alerting.manager import instance_of
from sentinel.alerting.silences import Silence, alert_labels
from sentinel.alerting.state import Alert, AlertState
from sentinel.evaluate.slo import SLOResult, Status

STATUS_RANK = {"breach": 0, "no_data": 1, "ok": 2}
STATUS_TEXT = {"breach": "breach", "no_data": "no data", "ok": "ok"}


def fmt(kind: str, value: float | None) -> str:
    """A value in its SLI's unit: seconds for latency, percent for ratios."""
    if value is None or not math.isfinite(value):
        return "—"
    if kind == "latency":
        return f"{value:.3g} s"
    if kind in ("ratio", "log_ratio"):
        return f"{value * 100:.3g} %"
    if kind == "burn_rate":
        return f"{value:.3g}×"
    return f"{value:.4g}"


def when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    seconds = max(0, int(now - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def instance_key(service: str, slo: str, labels: Mapping[str, str]) -> str:
    """The alert key of an instance (as `SLOResult.key` builds it; one label, the common
    case of `group_by: [service]`, without sorting)."""
    if not labels:
        return f"{service}/{slo}"
    if len(labels) == 1:
        for k, v in labels.items():
            return f"{service}/{slo}{{{k}={v}}}"
    suffix = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"{service}/{slo}{{{suffix}}}"


@dataclass(slots=True)
class Tier:
    name: str
    status: str
    long_burn: float | None
    short_burn: float | None
    factor: float
    long_window: str
    short_window: str
    alert: str

    @property
    def pressure(self) -> float:
        """How close to firing: the smaller of the two burn rates over the factor."""
        if self.long_burn is None or self.short_burn is None or not self.factor:
            return -1.0
        return min(self.long_burn, self.short_burn) / self.factor

    @property
    def text(self) -> str:
        return f"{self.name} {fmt('burn_rate', self.long_burn)} of {self.factor:.3g}×"


# Not frozen, with slots: an overview builds 1,000 of these per evaluation cycle.
@dataclass(slots=True)
class Row:
    key: str
    service: str
    slo: str
    instance: str
    status: str
    worst: str  # the status, or breach when a burn-rate tier breaches
    severity: str
    value: str
    op: str
    threshold: str
    reason: str
    budget: float | None
    tier_results: tuple[SLOResult, ...]
    fastest: Tier | None
    alert: str  # firing | pending | ""
    alert_since: float | None
    silenced: bool
    result: SLOResult  # the instance's own result: its sparkline is drawn from it
    labels: Mapping[str, str]

    @property
    def budget_text(self) -> str:
        return "—" if self.budget is None else f"{self.budget * 100:.0f} %"


def _op(result: SLOResult) -> str:
    if result.value is None:
        return ""
    breach = result.status is Status.BREACH
    if result.good_when == "above":
        return "<" if breach else "≥"
    return ">" if breach else "≤"


_SHOWN = (AlertState.FIRING, AlertState.PENDING)


def _alert_state(alerts: Mapping[str, Alert], keys: Iterable[str]) -> tuple[str, float | None]:
    state, since = "", None
    for key in keys:
        alert = alerts.get(key)
        if alert is None:
            continue
        if alert.state is AlertState.FIRING:
            return "firing", alert.fired_at or alert.since
        if alert.state is AlertState.PENDING and not state:
            state, since = "pending", alert.pending_since or alert.since
    return state, since


def _pressure(result: SLOResult) -> float:
    """How close a burn-rate tier is to firing: the smaller burn rate over the factor."""
    b = result.budget or {}
    long_burn, short_burn, factor = b.get("long_burn"), b.get("short_burn"), b.get("factor")
    if long_burn is None or short_burn is None or not factor:
        return -1.0
    return float(min(long_burn, short_burn) / factor)


def tier_view(result: SLOResult, alerts: Mapping[str, Alert]) -> Tier:
    b = result.budget or {}
    alert = alerts.get(result.key)
    return Tier(
        name=result.labels.get("tier", "?"),
        status=result.status.value,
        long_burn=b.get("long_burn"),
        short_burn=b.get("short_burn"),
        factor=float(b.get("factor") or result.threshold),
        long_window=str(b.get("long_window", "")),
        short_window=str(b.get("short_window", "")),
        alert=alert.state.value if alert is not None and alert.state in _SHOWN else "",
    )


def rows(
    results: Sequence[SLOResult],
    alerts: Mapping[str, Alert],
    silences: Sequence[Silence],
    now: float,
) -> list[Row]:
    """One row per SLO instance (burn-rate tiers folded into their instance), worst first.
    Sparklines are drawn when a page of rows is rendered (`ui_table.table_rows`), only for
    the rows shown. Built once per evaluation cycle for thousands of instances: keys of
    tier alerts are only built for SLOs with an alert pending or firing (a handful), not
    for every tier."""
    hot = {k: a for k, a in alerts.items() if a.state in _SHOWN}
    hot_slos = set(map(instance_of, hot))
    tiers: dict[str, list[SLOResult]] = {}
    plain: list[SLOResult] = []
    for r in results:
        if r.kind == "burn_rate":
            labels = {k: v for k, v in r.labels.items() if k != "tier"}
            tiers.setdefault(instance_key(r.service, r.slo, labels), []).append(r)
        else:
            plain.append(r)
    active = [s for s in silences if s.active(now)]
    out = []
    for r in plain:
        key = instance_key(r.service, r.slo, r.labels)
        own = tiers.get(key, [])
        alert, since = "", None
        if hot and f"{r.service}/{r.slo}" in hot_slos:
            alert, since = _alert_state(hot, [key, *(t.key for t in own)])
        fastest = max(own, key=_pressure) if own else None
        status = r.status.value
        worst = "breach" if any(t.status is Status.BREACH for t in own) else status
        silenced = bool(active) and any(
            s.matches(alert_labels(r.service, r.slo, r.severity, r.labels)) for s in active
        )
        out.append(
            Row(
                key=key,
                service=r.service,
                slo=r.slo,
                instance=_instance(r.labels),
                status=status,
                worst=worst,
                severity=r.severity,
                value=fmt(r.kind, r.value),
                op=_op(r),
                threshold=fmt(r.kind, r.threshold),
                reason=r.reason,
                budget=(r.budget or {}).get("remaining"),
                tier_results=tuple(own),
                fastest=tier_view(fastest, hot) if fastest is not None else None,
                alert=alert,
                alert_since=since,
                silenced=silenced,
                result=r,
                labels=r.labels,
            )
        )
    out.sort(key=_sort_key)
    return out


def _instance(labels: Mapping[str, str]) -> str:
    if not labels or (len(labels) == 1 and "service" in labels):
        return ""
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "service")


def _sort_key(row: Row) -> tuple[int, float, str, str, str]:
    budget = row.budget if row.budget is not None else math.inf
    return (STATUS_RANK.get(row.worst, 3), budget, row.service, row.slo, row.instance)


@dataclass(frozen=True)
class Filters:
    service: str = ""
    status: str = ""
    severity: str = ""
    q: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        def one(name: str, limit: int = 200) -> str:
            return str(query.get(name, "")).strip()[:limit]

        status = one("status")
        severity = one("severity")
        return cls(
            service=one("service"),
            status=status if status in STATUS_RANK else "",
            severity=severity if severity in ("page", "ticket", "info") else "",
            q=one("q"),
        )

    def params(self) -> dict[str, str]:
        """The filters set, as query parameters (for the overview's page links)."""
        given = {"q": self.q, "service": self.service, "status": self.status}
        return {k: v for k, v in {**given, "severity": self.severity}.items() if v}

    def keep(self, row: Row) -> bool:
        if self.service and row.service != self.service:
            return False
        if self.status and row.worst != self.status:
            return False
        if self.severity and row.severity != self.severity:
            return False
        if self.q:
            needle = self.q.lower()
            text = f"{row.service} {row.slo} {row.instance}".lower()
            return needle in text
        return True

    @property
    def active(self) -> bool:
        return bool(self.service or self.status or self.severity or self.q)


@dataclass(frozen=True)
class Dependency:
    name: str
    status: str
    detail: str


@dataclass(frozen=True)
class Header:
    dependencies: tuple[Dependency, ...]
    last_cycle_at: float | None
    last_cycle_seconds: float | None
    generation: int
    counts: Mapping[str, int]


def dependencies(checks: Mapping[str, Mapping[str, Any]]) -> tuple[Dependency, ...]:
    """Sources, state store, notifiers (and background tasks once they fail), named as
    /health/detailed names them."""
    out = []
    for name, check in checks.items():
        status = str(check.get("status", "unknown"))
        if name == "background_tasks" and status == "healthy":
            continue
        if check.get("informational"):  # the gate's own clients: /health/detailed only
            continue
        error = check.get("last_error")
        latency = check.get("latency_ms")
        detail = str(error) if error and status != "healthy" else ""
        if not detail and latency is not None:
            detail = f"{latency:g} ms"
        out.append(Dependency(name.removeprefix("notifier:"), status, detail))
    return tuple(out)


def status_counts(all_rows: Sequence[Row]) -> dict[str, int]:
    counts = {"breach": 0, "no_data": 0, "ok": 0, "firing": 0}
    for row in all_rows:
        counts[row.worst] = counts.get(row.worst, 0) + 1
        if row.alert == "firing":
            counts["firing"] += 1
    return counts


# -- incidents ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    notifier: str
    kind: str
    state: str  # pending | delivered | dead
    attempts: int
    last_error: str
    at: float


@dataclass(frozen=True)
class Incident:
    id: str
    key: str  # the alert (instance) key
    service: str
    slo: str
    severity: str
    instance: str
    started_at: float
    resolved_at: float | None
    value: str
    threshold: str
    silenced: bool
    deliveries: tuple[Delivery, ...]
    slack_url: str | None

    @property
    def state(self) -> str:
        return "open" if self.resolved_at is None else "resolved"


def delivery_state(row: Mapping[str, Any]) -> str:
    if row.get("delivered_at") is not None:
        return "delivered"
    if row.get("dead_at") is not None:
        return "dead"
    return "pending"


def slack_url(channel: str, ts: str) -> str:
    """A Slack permalink (slack.com redirects to the workspace of a signed-in user)."""
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def incidents(
    raw: Sequence[Mapping[str, Any]],
    deliveries: Sequence[Mapping[str, Any]],
    threads: Mapping[str, tuple[str, str]],
    silences: Sequence[Silence],
    kinds: Mapping[str, str],
) -> list[Incident]:
    """Incident rows with each notifier's delivery state; silenced when a silence that
    matched the alert was active when it fired (it then sent nothing)."""
    by_incident: dict[str, list[Delivery]] = {str(i["id"]): [] for i in raw}
    for d in deliveries:
        shown = by_incident.get(str(d.get("incident_id")))
        if shown is None:
            continue  # an incident not on the page (deliveries cover the whole period)
        shown.append(
            Delivery(
                notifier=str(d["notifier"]),
                kind=str(d["kind"]),
                state=delivery_state(d),
                attempts=int(d.get("attempts") or 0),
                last_error=str(d.get("last_error") or ""),
                at=float(d["created_at"]),
            )
        )
    out = []
    for i in raw:
        labels = dict(i.get("labels") or {})
        matched = alert_labels(i["service"], i["slo"], i["severity"], labels)
        started = float(i["started_at"])
        kind = "burn_rate" if "tier" in labels else kinds.get(f"{i['service']}/{i['slo']}", "")
        thread = threads.get(i["id"])
        out.append(
            Incident(
                id=str(i["id"]),
                key=str(i.get("alert_key") or instance_key(i["service"], i["slo"], labels)),
                service=str(i["service"]),
                slo=str(i["slo"]),
                severity=str(i["severity"]),
                instance=_instance(labels),
                started_at=started,
                resolved_at=i.get("resolved_at"),
                value=fmt(kind, i.get("last_value")),
                threshold=fmt(kind, i.get("threshold")),
                silenced=any(
                    s.starts_at <= started < s.ends_at and s.matches(matched) for s in silences
                ),
                deliveries=tuple(reversed(by_incident.get(str(i["id"]), []))),
                slack_url=slack_url(*thread) if thread else None,
            )
        )
    return out


# -- silences and gate ---------------------------------------------------------------------


@dataclass(frozen=True)
class SilenceView:
    id: str
    matchers: str
    starts_at: float
    ends_at: float
    author: str
    comment: str
    status: str


def silence_views(silences: Sequence[Silence], now: float) -> list[SilenceView]:
    def text(s: Silence) -> str:
        parts = []
        for m in s.matchers:
            op = ("=~" if m.is_regex else "=") if m.is_equal else ("!~" if m.is_regex else "!=")
            parts.append(f'{m.name}{op}"{m.value}"')
        return ", ".join(parts)

    views = [
        SilenceView(
            s.id,
            text(s),
            s.starts_at,
            s.ends_at,
            s.author,
            s.comment,
            str(s.to_json(now)["status"]),
        )
        for s in silences
    ]
    order = {"active": 0, "pending": 1, "expired": 2}
    views.sort(key=lambda v: (order.get(v.status, 3), -v.ends_at))
    return views


@dataclass(frozen=True)
class GateRow:
    at: float
    service: str
    env: str
    release: str
    decision: str
    reasons: tuple[str, ...]
    count: int


def gate_rows(history: Sequence[Mapping[str, Any]]) -> list[GateRow]:
    out = []
    for h in history:
        inputs = h.get("inputs") or {}
        result = h.get("result") or {}
        matchers = inputs.get("matchers") or {}
        release = inputs.get("release") or inputs.get("revision") or ""
        reasons = result.get("reasons") if isinstance(result, dict) else None
        out.append(
            GateRow(
                at=float(h.get("last_at") or h["at"]),
                service=str(h["service"]),
                env=str(matchers.get("env", "")),
                release=str(release),
                decision=str(h["decision"]),
                reasons=tuple(str(r) for r in (reasons or [])),
                count=int(h.get("count") or 1),
            )
        )
    return out
