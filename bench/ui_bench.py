"""Status UI benchmark: the overview of N SLO instances, one command:

    .venv/bin/python bench/ui_bench.py [--instances 1000] [--requests 40]

Builds the daemon's real assembly (state store, alert manager, gate) around a rule file
with one grouped ratio SLO (30-day budget, four burn-rate tiers) and gives it one cycle of
N instances, 1 in 20 breaching and firing, a sparkline history of 30 evaluations each,
and a few silences; then again with the threshold results only (no tiers). Then it serves the UI over loopback HTTP and prints, for `GET /`:
the server time per request (inside the handler, p50/p95/max), the HTML size (raw and
gzip), and the client's request time. Timings are printed, never asserted.

No Prometheus is needed: the overview reads only the latest results, the alert states
and the evaluation history (never a range query).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import random
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import logging

import aiohttp
from aiohttp import web

from sentinel.alerting.silences import SilenceMatcher
from sentinel.config import load_config
from sentinel.daemon.assembly import build_daemon
from sentinel.daemon.runstate import GroupStatus
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.rules.loader import load_rules
from sentinel.web.app import build_app
from sentinel.web.ui import StatusUI

RULES = """\
version: sentinel/v1
service: platform
interval: 30s
slos:
  - name: http-5xx-ratio
    sli:
      ratio:
        bad: {metric: http_requests_total, matchers: {code: "=~5.."}}
        total: {metric: http_requests_total}
    objective: 99.9%
    window: 5m
    group_by: [service]
    period: 30d
    burn_rate: {min_events: 100}
"""
TIERS = (("page-quick", "1h", "5m", 13.4), ("page-slow", "6h", "30m", 5.6))
TIERS += (("ticket-quick", "1d", "2h", 2.8), ("ticket-slow", "3d", "6h", 0.93))


def results(
    n: int, now: float, rng: random.Random, last: dict[int, float], tiers: bool = True
) -> list[SLOResult]:
    """One cycle. Each instance's error ratio walks from its previous value: 5-minute
    windows evaluated every 30 s share 90 % of their data, so real SLIs move smoothly."""
    out = []
    for i in range(n):
        service = f"svc-{i:04d}"
        breach = i % 20 == 0
        base = 0.004 if breach else rng.uniform(0, 0.0008)
        ratio = max(0.0, last.get(i, base) + rng.gauss(0, 0.00004))
        last[i] = ratio
        labels = {"service": service}
        budget = {"remaining": 1 - ratio / 0.001 * rng.uniform(0.1, 0.9), "period": "30d"}
        out.append(
            SLOResult(
                service,
                "http-5xx-ratio",
                Status.BREACH if breach else Status.OK,
                ratio,
                0.001,
                0.999,
                300.0,
                now,
                labels,
                5000.0,
                "",
                "",
                "ratio",
                "page",
                budget,
            )
        )
        for name, long_w, short_w, factor in TIERS if tiers else ():
            burn = ratio / 0.001
            out.append(
                SLOResult(
                    service,
                    "http-5xx-ratio",
                    Status.BREACH if burn > factor else Status.OK,
                    burn,
                    factor,
                    0.999,
                    3600.0,
                    now,
                    {**labels, "tier": name},
                    5000.0,
                    "",
                    "",
                    "burn_rate",
                    name.split("-")[0],
                    {
                        "long_burn": burn,
                        "short_burn": burn * 1.1,
                        "factor": factor,
                        "long_window": long_w,
                        "short_window": short_w,
                    },
                )
            )
    return out


async def bench(instances: int, requests: int, tiers: bool) -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "rules").mkdir()
        (work / "rules" / "platform.yaml").write_text(RULES)
        (work / "config.yaml").write_text(
            textwrap.dedent(
                f"""\
                prometheus: {{url: "http://127.0.0.1:9"}}
                rules: [rules/*.yaml]
                state: {{path: "{work / "state.db"}"}}
                """
            )
        )
        config = load_config(work / "config.yaml")
        rules = load_rules(config)
        assembly = await build_daemon(str(work / "config.yaml"), config, rules)
        daemon, group = assembly.daemon, rules.groups[0]
        now = time.time()
        ui = StatusUI(assembly)
        walk: dict[int, float] = {}
        for k in range(30):  # 30 evaluations of history for the sparklines
            cycle = results(instances, now - (30 - k) * 30, rng, walk, tiers)
            ui.history.record(group.name, cycle)
        daemon.results[group.name] = cycle
        daemon.group_status[group.name] = GroupStatus(
            last_started_at=now,
            last_finished_at=now,
            last_duration=0.4,
            last_outcome="ok",
            cycles=30,
            completed_at=now,
        )
        assembly.manager.observe_sync(group, cycle, now)
        for i in range(5):
            assembly.store.add_silence(
                (SilenceMatcher("service", f"svc-{i * 40:04d}"),), now - 60, now + 3600, "b", "c"
            )

        gc.freeze()  # as the daemon does after each cycle (runner._run_group_locked)

        timings: list[float] = []

        @web.middleware
        async def timed(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            started = time.perf_counter()
            response = await handler(request)
            timings.append(time.perf_counter() - started)
            return response

        app = build_app(daemon, ui.routes())
        app.middlewares.append(timed)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        status = daemon.group_status[group.name]
        measured: dict[str, list[float]] = {"first": [], "repeat": []}
        client: list[float] = []
        body = b""
        async with aiohttp.ClientSession() as session:
            for n in range(requests + 2):
                if n % 2 == 0:  # a new evaluation cycle: new history, rows built afresh
                    ui.history.record(group.name, cycle)
                    status.cycles += 1
                started = time.perf_counter()
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    body = await response.read()
                client.append(time.perf_counter() - started)
                if n >= 2:  # the first two compile the templates
                    measured["first" if n % 2 == 0 else "repeat"].append(timings[-1])
            # Pages past the first, drawn on demand in the same cycle (the last page: a
            # page number past the end is answered with it).
            later: dict[str, float] = {}
            for label, path in (("last page", "/?page=999999"), ("filtered", "/?status=ok")):
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    await response.read()
                later[label] = timings[-1]
        await runner.cleanup()
        await assembly.cleanup()
        rows = body.count(b"<tr class=")
        shape = "with 4 burn-rate tiers each" if tiers else "threshold only"
        print(
            f"overview of {instances} SLO instances, {shape} ({len(cycle)} results; "
            f"{rows} rows on the first page)"
        )
        for what, label in (("first", "first view after a cycle"), ("repeat", "repeat views")):
            times = sorted(measured[what])
            print(
                f"  server time, {label:<25} p50 {statistics.median(times) * 1000:6.1f} ms"
                f"  p95 {times[int(len(times) * 0.95) - 1] * 1000:6.1f} ms"
                f"  max {times[-1] * 1000:6.1f} ms   (budget 150 ms)"
            )
        print(
            f"  server time, last page {later['last page'] * 1000:.1f} ms, first page of "
            f"status=ok {later['filtered'] * 1000:.1f} ms (same cycle)"
        )
        print(f"  client time p50 {statistics.median(client[2:]) * 1000:6.1f} ms (loopback HTTP)")
        print(
            f"  HTML {len(body) / 1024:6.1f} KB raw, {len(gzip.compress(body)) / 1024:.1f} KB gzip"
            "   (budget 250 KB)"
        )


def main() -> int:
    logging.disable(logging.WARNING)  # the alert manager logs every firing it creates
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    for tiers in (True, False):
        asyncio.run(bench(args.instances, args.requests, tiers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
