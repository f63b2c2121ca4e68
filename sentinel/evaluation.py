"""Pure SLO evaluation: (SLO, query answer, evaluation time) -> one result per instance.

No I/O, no clock: everything arrives as arguments, so backtests and tests evaluate at
explicit timestamps. An empty answer, NaN (0/0) or a missing series is `no_data`, never `ok`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sentinel.model import RATIO_SLIS, SLO, LatencySLI
from sentinel.promql import PART_LABEL
from sentinel.sources.base import Sample

InstanceKey = tuple[str, ...]


class Status(StrEnum):
    OK = "ok"
    BREACH = "breach"
    NO_DATA = "no_data"


@dataclass(frozen=True)
class SLOResult:
    service: str
    slo: str
    status: Status
    value: float | None
    threshold: float
    objective: float | None
    window: float
    evaluated_at: float
    labels: Mapping[str, str] = field(default_factory=dict)
    events: float | None = None
    reason: str = ""
    query: str = ""
    kind: str = ""
    severity: str = "page"
    budget: Mapping[str, Any] | None = None

    @property
    def instance(self) -> InstanceKey:
        return tuple(f"{k}={v}" for k, v in sorted(self.labels.items()))

    @property
    def key(self) -> str:
        suffix = ",".join(self.instance)
        return f"{self.service}/{self.slo}" + (f"{{{suffix}}}" if suffix else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "slo": self.slo,
            "kind": self.kind,
            "status": self.status.value,
            "value": self.value,
            "threshold": self.threshold,
            "objective": self.objective,
            "window": self.window,
            "evaluated_at": rfc3339(self.evaluated_at),
            "labels": dict(self.labels),
            "events": self.events,
            "severity": self.severity,
            **({"budget": dict(self.budget)} if self.budget is not None else {}),
            "reason": self.reason,
            "query": self.query,
        }


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def evaluate(
    slo: SLO,
    samples: Sequence[Sample],
    at: float,
    query: str = "",
    known: Iterable[InstanceKey] = (),
    window: float | None = None,
) -> list[SLOResult]:
    """Evaluate one SLO from the answer to its query.

    `known` lists instances seen in earlier cycles, so an instance whose series vanished
    is reported as no_data instead of silently disappearing.
    """
    parts = _group(slo, samples)
    keys = set(parts) | set(known)
    if not keys:
        keys = {()}  # nothing at all: one no_data result for the SLO as a whole
    results = []
    for key in sorted(keys):
        value, events, reason = _measure(slo, parts.get(key, {}))
        results.append(_result(slo, key, value, events, reason, at, query, window))
    return results


def evaluate_failure(
    slo: SLO,
    reason: str,
    at: float,
    query: str = "",
    known: Iterable[InstanceKey] = (),
    window: float | None = None,
) -> list[SLOResult]:
    """The source could not answer: every known instance is no_data with the reason."""
    keys = sorted(set(known)) or [()]
    return [_result(slo, key, None, None, reason, at, query, window) for key in keys]


def _group(slo: SLO, samples: Sequence[Sample]) -> dict[InstanceKey, dict[str, list[float]]]:
    grouped: dict[InstanceKey, dict[str, list[float]]] = {}
    for sample in samples:
        key = tuple(sample.labels.get(label, "") for label in slo.group_by)
        part = sample.labels.get(PART_LABEL, "value")
        grouped.setdefault(key, {}).setdefault(part, []).append(sample.value)
    return grouped


def _measure(slo: SLO, parts: Mapping[str, list[float]]) -> tuple[float | None, float | None, str]:
    """-> (value, events, reason); value None means no_data."""
    if "ratio" in parts:  # a raw error ratio: no event counts
        ratio = _single(parts.get("ratio"))
        if ratio is None or math.isinf(ratio):
            return None, None, "error ratio is NaN or missing (no traffic in the window)"
        return ratio, None, ""
    if isinstance(slo.sli, RATIO_SLIS):
        total = _single(parts.get("total"))
        bad = _single(parts.get("bad"))
        if total is None or total <= 0:
            return None, total, "no traffic in the window"
        # No bad series at all is a ratio of 0: counters for errors often never exist.
        return (bad or 0.0) / total, total, ""
    values = parts.get("value")
    events = _single(parts.get("events")) if isinstance(slo.sli, LatencySLI) else None
    if not values:
        return None, events, "query returned no series"
    if len(values) > 1:
        return None, events, f"query returned {len(values)} series for one instance; expected 1"
    value = values[0]
    if math.isnan(value):
        return None, events, "value is NaN (no traffic in the window)"
    return value, events, ""


def _single(values: list[float] | None) -> float | None:
    if not values:
        return None
    total = math.fsum(values)
    return None if math.isnan(total) else total


def _result(
    slo: SLO,
    key: InstanceKey,
    value: float | None,
    events: float | None,
    reason: str,
    at: float,
    query: str,
    window: float | None,
) -> SLOResult:
    labels = dict(zip(slo.group_by, key, strict=True)) if key else {}
    status = Status.NO_DATA
    if value is not None:
        if events is not None and events < slo.min_events:
            reason = f"insufficient traffic: {events:g} events < min_events {slo.min_events:g}"
        else:
            status = Status.BREACH if slo.breached(value) else Status.OK
    return SLOResult(
        service=labels.get("service", slo.service),
        slo=slo.name,
        status=status,
        value=value,
        threshold=slo.threshold,
        objective=slo.objective,
        window=window if window is not None else slo.window,
        evaluated_at=at,
        labels=labels,
        events=events,
        reason=reason or _describe(slo, status, value),
        query=query,
        kind=slo.sli.kind,
        severity=slo.severity.value,
    )


def _describe(slo: SLO, status: Status, value: float | None) -> str:
    if value is None:
        return ""
    op = {Status.BREACH: ">" if slo.good_when == "below" else "<"}.get(status)
    if op is None:
        op = "<=" if slo.good_when == "below" else ">="
    return f"{format_value(slo, value)} {op} {format_value(slo, slo.threshold)}"


def format_value(slo: SLO, value: float) -> str:
    if isinstance(slo.sli, LatencySLI):
        return f"{value:.3g} s"
    if isinstance(slo.sli, RATIO_SLIS):
        return f"{value * 100:.3g} %"
    return f"{value:.4g}"
