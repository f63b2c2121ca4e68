"""Chart render time and size: `.venv/bin/python bench/chart_bench.py [--runs 30]`.

Renders the Slack alert chart (sentinel/notify/chart.py) of a 3 h latency SLI at the
chart's 300 points with a breach, a deploy and the firing mark, and prints the p50/p95
render time and the PNG size. Targets: p50 <= 300 ms, PNG <= 150 KB.

Then an incident's burst (`--storm 20` charts at once), drawn as the daemon did before
(threads of the daemon) and as it does now (its chart worker process), each in a fresh
process holding the daemon's imports: the daemon's RSS after the burst and how long its
event loop waited for a turn meanwhile (a coroutine asking for a 5 ms sleep; what a gate
or health request waits on top of its own work).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


async def storm(mode: str, charts: int) -> dict[str, float]:
    """One burst of `charts` charts drawn concurrently, as the daemon's notifiers do."""
    for daemon_module in ("sentinel.daemon.assembly", "sentinel.web.app"):
        importlib.import_module(daemon_module)  # what `sentinel run` holds before any chart
    from sentinel.notify.chart import in_thread
    from sentinel.notify.chart_worker import ChartWorker

    before = rss_mb()
    worker = ChartWorker(timeout=120) if mode == "worker" else None
    draw = worker if worker is not None else in_thread(render_png)
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            began = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - began - 0.005) * 1000)

    prober = asyncio.ensure_future(probe())
    began = time.perf_counter()
    pngs = await asyncio.gather(*(draw(spec(1_764_000_000.0 + i)) for i in range(charts)))
    wall = time.perf_counter() - began
    done.set()
    await prober
    after = rss_mb()
    if worker is not None:
        await worker.close()
    lags.sort()
    assert all(p.startswith(b"\x89PNG") for p in pngs)
    return {
        "rss_before": before,
        "rss_after": after,
        "wall_s": wall,
        "lag_p50": statistics.median(lags),
        "lag_p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
        "lag_max": lags[-1],
    }


def storm_table(charts: int) -> None:
    rows = {}
    for mode in ("thread", "worker"):
        child = [sys.executable, __file__, "--storm-child", mode, "--storm", str(charts)]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
    print(f"\n{charts} charts at once (an incident's burst), the daemon's imports loaded:")
    print("| drawn in | daemon RSS before -> after | burst wall | loop wait p50 / p99 / max |")
    print("|---|---|---|---|")
    names = {"thread": "daemon threads (before)", "worker": "chart worker process (now)"}
    for mode, r in rows.items():
        print(
            f"| {names[mode]} | {r['rss_before']:.0f} -> {r['rss_after']:.0f} MB "
            f"| {r['wall_s']:.1f} s | {r['lag_p50']:.1f} / {r['lag_p99']:.1f} / "
            f"{r['lag_max']:.0f} ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--storm", type=int, default=20, help="charts in the burst (0: none)")
    parser.add_argument("--storm-child", choices=("thread", "worker"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.storm_child:
        print(json.dumps(asyncio.run(storm(args.storm_child, args.storm))))
        return
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
    if args.storm:
        storm_table(args.storm)


if __name__ == "__main__":
    main()
