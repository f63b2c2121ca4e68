"""Rendering evaluation results for humans (a table) and machines (JSON)."""

from __future__ import annotations

from collections.abc import Sequence

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
