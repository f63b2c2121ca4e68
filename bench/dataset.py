"""Synthetic platform data for the benchmark: N services, each with request counters
(200/500), a latency histogram and answer-mode counters, sampled every `step` seconds
(15 s by default; the full scaling run uses 60 s so 10,000 services x 6 h backfill in
minutes, not an hour), written as OpenMetrics in time chunks (promtool maps its whole
input, so chunks keep it small)."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

LE = ("0.25", "0.5", "1", "1.5", "2", "5", "+Inf")
# Cumulative fraction of requests at or under each bucket bound (healthy service).
CDF = (0.3, 0.6, 0.85, 0.95, 0.98, 0.999, 1.0)
STEP = 15


def series_per_service() -> int:
    return 2 + len(LE) + 1 + 2


def _series(out: TextIO, name: str, labels: str, per_s: float, times: range, origin: int) -> int:
    """One counter series growing at `per_s` since `origin`; returns the lines written.
    (One write per series: 10,000 services x 6 h are tens of millions of lines.)"""
    head = f"{name}{{{labels}}} "
    out.write("".join([f"{head}{per_s * (t - origin):.3f} {t}\n" for t in times]))
    return len(times)


def write_chunk(
    path: Path, services: int, start: int, end: int, origin: int, step: int = STEP
) -> int:
    """Samples in [start, end) as counters that started at `origin`; returns lines."""
    times = range(start, end, step)
    lines = 0
    with path.open("w") as out:
        out.write("# TYPE bench_http_requests counter\n")
        for i in range(services):
            rate, labels = 10 + i % 7, f'namespace="bench",service="svc-{i:04d}"'
            bad = rate * (i % 10) / 1000
            for code, per_s in (("200", rate - bad), ("500", bad)):
                lines += _series(
                    out,
                    "bench_http_requests_total",
                    f'{labels},code="{code}"',
                    per_s,
                    times,
                    origin,
                )
        out.write("# TYPE bench_latency_seconds histogram\n")
        for i in range(services):
            rate, labels = 10 + i % 7, f'namespace="bench",service="svc-{i:04d}"'
            for le, frac in zip(LE, CDF, strict=True):
                lines += _series(
                    out,
                    "bench_latency_seconds_bucket",
                    f'{labels},le="{le}"',
                    rate * frac,
                    times,
                    origin,
                )
            lines += _series(out, "bench_latency_seconds_count", labels, rate, times, origin)
            lines += _series(out, "bench_latency_seconds_sum", labels, rate * 0.6, times, origin)
        out.write("# TYPE bench_answers counter\n")
        for i in range(services):
            rate, labels = 10 + i % 7, f'namespace="bench",service="svc-{i:04d}"'
            fallback = rate * (i % 5) / 100
            for mode, per_s in (("llm-summary", rate - fallback), ("snippet-fallback", fallback)):
                lines += _series(
                    out,
                    "bench_answers_total",
                    f'{labels},answer_mode="{mode}"',
                    per_s,
                    times,
                    origin,
                )
        out.write("# EOF\n")
    return lines
