"""What holds the daemon's event loop: each HTTP endpoint, a reload and a cycle at one size.

    .venv/bin/python bench/loop_census.py --services 1000 --work /tmp/census1000

Everything the daemon answers — the gate, health checks, Slack's button clicks — waits
while one piece of work holds the event loop. This builds the daemon as `sentinel run`
does (against the benchmark's dataset in a real Prometheus, `--services` x 3 SLOs, the
dataset kept in `--work` for the next run), runs three cycles, then asks every endpoint
twice from another thread (the first answer of a cycle builds what the second reuses),
reloads the same files and runs one more cycle, while a coroutine asks for 1 ms sleeps:
the longest it waited is the longest piece the loop was held for. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from run import RULES, build_dataset, config_text
from support.promserver import PrometheusServer, free_port

ENDPOINTS = (
    "/health/live",
    "/health/detailed",
    "/metrics",
    "/api/v1/slos",
    "/api/v1/alerts",
    "/api/v1/gate?service=svc-0001",
    "/",
    "/services/svc-0001",
    "/incidents",
)


async def census(config_path: Path, at: float) -> list[tuple[str, str, float]]:
    from aiohttp import web

    from sentinel.config import load_config
    from sentinel.daemon import allocator, collector
    from sentinel.daemon.assembly import build_daemon
    from sentinel.daemon.runner import SWITCH_INTERVAL
    from sentinel.rules.loader import load_rules
    from sentinel.web.app import build_app, build_runner
    from sentinel.web.routes import api_routes

    allocator.tune()  # as `sentinel run` does
    collector.tune()
    sys.setswitchinterval(SWITCH_INTERVAL)
    config = load_config(config_path)
    rules = load_rules(config)
    now = [at - 3 * 30.0]
    built = await build_daemon(str(config_path), config, rules, lambda: now[0])
    app = build_app(built.daemon, api_routes(built))
    for _ in range(3):
        for group in rules.groups:
            await built.daemon.run_group(group.name, now[0])
        now[0] += 30
    runner = build_runner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    loop = asyncio.get_running_loop()
    rows: list[tuple[str, str, float]] = []

    def fetch(path: str) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", headers={"Authorization": "Bearer bench"}
        )
        began = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                size = len(answer.read())
        except urllib.error.HTTPError as exc:
            size = len(exc.read())
        return f"{size / 1024:,.0f} KB in {(time.perf_counter() - began) * 1000:,.0f} ms"

    async def held(label: str, work: Callable[[], Awaitable[Any]]) -> None:
        waits: list[float] = []
        done = False

        async def probe() -> None:
            while not done:
                began = time.perf_counter()
                await asyncio.sleep(0.001)
                waits.append(time.perf_counter() - began - 0.001)

        prober = asyncio.ensure_future(probe())
        await asyncio.sleep(0.02)
        waits.clear()
        outcome = await work()
        done = True
        await prober
        rows.append((label, outcome if isinstance(outcome, str) else "", max(waits) * 1000))

    try:
        for path in ENDPOINTS:
            for n in ("first", "again"):
                await held(f"GET {path} ({n})", lambda p=path: loop.run_in_executor(None, fetch, p))  # type: ignore[misc]
        await held("reload, same files", built.daemon.reload)
        first = rules.groups[0].name

        async def cycle() -> str:
            await built.daemon.run_group(first, now[0])
            return ""

        await held(f"cycle of group {first}", cycle)
    finally:
        await runner.cleanup()
        await built.cleanup()
        await built.daemon.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    work: Path = args.work
    stamp = work / "end"
    if not stamp.exists():
        work.mkdir(parents=True, exist_ok=True)
        end = int(time.time()) // 60 * 60
        build_dataset(work, args.services, args.hours, end, 60)
        stamp.write_text(str(end))
    end = int(stamp.read_text())
    prom = PrometheusServer(work / "prom")
    prom.start(timeout=600)
    try:
        rules = work / "rules"
        rules.mkdir(exist_ok=True)
        (rules / "platform.yaml").write_text(RULES)
        state = work / "census.db"
        for leftover in work.glob("census.db*"):
            leftover.unlink()
        config = work / "config.yaml"
        config.write_text(
            config_text(prom.url, rules)
            + f"server: {{api_token: bench}}\nstate: {{path: {state}}}\n"
        )
        logging.disable(logging.CRITICAL)
        rows = asyncio.run(census(config, float(end)))
    finally:
        prom.stop()
    print(f"\nThe event loop's longest wait, {args.services:,} services x 3 SLOs:")
    print("| work | answer | loop's longest wait |")
    print("|---|---|---|")
    for label, outcome, wait in rows:
        print(f"| {label} | {outcome} | {wait:,.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
