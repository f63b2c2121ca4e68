"""Rendering evaluation results for humans (a table) and machines (JSON)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sentinel import jsonenc
from sentinel.evaluate.slo import SLOResult, rfc3339
from sentinel.units import format_duration, format_measure


def results_json(results: Sequence[SLOResult]) -> str:
    return jsonenc.dumps([r.to_json() for r in results], indent=2)


def results_table(results: Sequence[SLOResult]) -> str:
    header = ("SERVICE", "SLO", "INSTANCE", "STATUS", "VALUE", "THRESHOLD", "WINDOW", "EVENTS")
    rows = [header]
    for r in results:
        instance = ",".join(f"{k}={v}" for k, v in sorted(r.labels.items())) or "-"
        events = "-" if r.events is None else f"{r.events:.6g}"
        rows.append(
            (
                r.service,
                r.slo,
                instance,
                r.status.value.upper(),
                format_measure(r.kind, r.value, digits=4, missing="-"),
                format_measure(r.kind, r.threshold, digits=4, missing="-"),
                format_duration(r.window),
                events,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    notes = [f"  {r.key}: {r.reason}" for r in results if r.status.value == "no_data" and r.reason]
    at = rfc3339(results[0].evaluated_at) if results else ""
    out = "\n".join(line.rstrip() for line in lines)
    if notes:
        out += "\n\nno data:\n" + "\n".join(notes)
    return f"{out}\n\nevaluated at {at}"


def canary_table(section: Mapping[str, Any]) -> str:
    """The gate's canary comparison (the body's `canary` section) as a table."""
    header = ("SLO", "VERDICT", "CANARY", "BASELINE", "EFFECT", "TOLERATED", "P")
    rows = [(*header, "CANARY-N", "BASELINE-N")]
    for s in section.get("slos", []):
        kind = s.get("kind", "")
        canary, baseline = s.get("canary") or {}, s.get("baseline") or {}
        effect = s.get("effect")
        rows.append(
            (
                s["slo"],
                str(s["verdict"]).upper(),
                _cell(kind, canary.get("value")),
                _cell(kind, baseline.get("value")),
                "-" if effect is None else f"{effect * 100:+.0f}%",
                _cell(kind, s.get("tolerated")),
                "-" if s.get("p_value") is None else f"{s['p_value']:.2g}",
                _count(canary.get("events")),
                _count(baseline.get("events")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    score = section.get("score")
    footer = f"score {'-' if score is None else f'{score:g}'}"
    for note in section.get("not_compared", []):
        footer += f"\n{note}"
    return "\n".join(line.rstrip() for line in lines) + "\n" + footer


def _cell(kind: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}s" if kind == "latency" else f"{value * 100:.2f}%"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"
