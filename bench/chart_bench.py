"""Chart render time and size: `.venv/bin/python bench/chart_bench.py [--runs 30]`.

Renders the Slack alert chart (sentinel/notify/chart.py) of a 3 h latency SLI at the
chart's 300 points with a breach, a deploy and the firing mark, and prints the p50/p95
render time and the PNG size. Targets: p50 <= 300 ms, PNG <= 150 KB.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from sentinel.notify.chart import ChartSpec, render_png


def spec(now: float = 1_764_000_000.0) -> ChartSpec:
    start = now - 3 * 3600
    step = 36.0
    points = []
    for i in range(301):
        t = start + i * step
        breach = 1.2 if 150 <= i < 230 else 0.0
        points.append((t, 0.8 + 0.15 * math.sin(i / 9) + breach))
    return ChartSpec(
        title="chatbot-backend / chat-latency-p95 {env=prod}",
        kind="latency",
        threshold=1.5,
        good_when="below",
        points=tuple(points),
        start=start,
        end=now,
        fired_at=start + 155 * step,
        deploys=(start + 148 * step,),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    chart = spec()
    png = render_png(chart)  # warm-up: imports and font cache
    times = []
    for _ in range(args.runs):
        began = time.perf_counter()
        png = render_png(chart)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    print(f"renders: {args.runs}")
    print(f"render p50: {statistics.median(times):.0f} ms (target <= 300 ms), p95: {p95:.0f} ms")
    print(f"png size: {len(png) / 1024:.1f} KB (target <= 150 KB)")


if __name__ == "__main__":
    main()
