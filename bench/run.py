"""The performance benchmark, one command:

    .venv/bin/python bench/run.py [--services 1000] [--hours 1] [--cycles 12] [--seconds 10]

Builds the dataset (N services x 3 SLIs, 15 s samples), backfills it into Debian's
Prometheus, backfills the recording rules `sentinel rules export` writes, and measures in
one run:

  (a) Prometheus' own rule-group evaluation time for Sentinel's SLI expressions
      (prometheus_rule_group_last_duration_seconds, pinned with @ to the dataset time);
  (b) the same queries from a bare aiohttp loop (the floor);
  (c) Sentinel's evaluate_once cycle p50/p99 (5m window; full multi-window with budgets,
      raw and from recorded series), its CPU per cycle and RSS (in a child process);
  (d) gate req/s and p50/p99 at 50 connections against `sentinel run`, and a bare aiohttp
      endpoint in the same run.

It prints one table with the ratios. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

import aiohttp

from dataset import STEP, write_chunk
from load import run_load
from support.procs import http, start_sentinel, wait_for
from support.promserver import PrometheusServer, backfill, find_binary, free_port

RULES = """\
version: sentinel/v1
service: platform
labels: {namespace: bench}
slos:
  - name: http-5xx-ratio
    sli:
      ratio:
        bad: {metric: bench_http_requests_total, matchers: {code: "=~5.."}}
        total: {metric: bench_http_requests_total}
    objective: 99.5%
    window: 5m
    group_by: [service]
    PERIOD
  - name: latency-p95
    sli:
      latency: {histogram: bench_latency_seconds, quantile: 0.95}
    threshold: 1.5s
    window: 5m
    group_by: [service]
  - name: fallback-rate
    sli:
      ratio:
        bad: {metric: bench_answers_total, matchers: {answer_mode: snippet-fallback}}
        total: {metric: bench_answers_total}
    objective: 95%
    window: 5m
    group_by: [service]
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_dataset(work: Path, services: int, hours: float, end: int) -> Path:
    storage = work / "prom" / "data"
    start = end - int(hours * 3600)
    chunk = 1800
    lines = 0
    for t in range(start, end + 1, chunk):
        path = work / "chunk.om"
        lines += write_chunk(path, services, t, min(t + chunk, end + 1), start)
        backfill(path, storage)
    (work / "chunk.om").unlink(missing_ok=True)
    log(f"dataset: {services} services, {hours:g} h, {lines:,} samples")
    return storage


def write_rules(work: Path, with_period: bool) -> Path:
    rules = work / f"rules-{'period' if with_period else 'plain'}"
    rules.mkdir(exist_ok=True)
    period = "period: 30d\n    burn_rate: {min_events: 100}" if with_period else ""
    (rules / "platform.yaml").write_text(RULES.replace("PERIOD", period))
    return rules


def config_text(prom_url: str, rules: Path, extra: str = "") -> str:
    return (
        textwrap.dedent(
            f"""\
        prometheus: {{url: "{prom_url}", timeout: 60s, max_in_flight: 4}}
        rules: ["{rules}/*.yaml"]
        """
        )
        + extra
    )


def sli_group(work: Path, end: int) -> Path:
    """Sentinel's 5m SLI expressions as one Prometheus recording-rule group, pinned."""
    sys.path.insert(0, str(REPO))
    from sentinel.config import Config
    from sentinel.query.promql import slo_query
    from sentinel.rules.loader import load_rules

    config = Config(rules=[str(write_rules(work, False) / "*.yaml")], base_dir="/")
    exprs = [slo_query(s) for s in load_rules(config).slos]
    pinned = [e.replace("[5m]", f"[5m] @ {end}") for e in exprs]
    group = {
        "groups": [
            {
                "name": "sentinel-sli",
                "interval": "5s",
                "rules": [
                    {"record": f"bench:sentinel_sli:{i}", "expr": e} for i, e in enumerate(pinned)
                ],
            }
        ]
    }
    path = work / "sli-group.yml"
    import yaml

    path.write_text(yaml.safe_dump(group))
    return path


async def bare_queries(prom_url: str, queries: list[str], at: float, rounds: int) -> list[float]:
    durations = []
    async with aiohttp.ClientSession() as session:
        for _ in range(rounds):
            started = time.perf_counter()

            async def one(q: str) -> None:
                async with session.post(
                    f"{prom_url}/api/v1/query", data={"query": q, "time": str(at)}
                ) as r:
                    await r.read()

            await asyncio.gather(*(one(q) for q in queries))
            durations.append(time.perf_counter() - started)
    return durations


def rule_group_seconds(prom_url: str, wait: float) -> list[float]:
    seen: list[float] = []
    deadline = time.monotonic() + wait
    last = None
    while time.monotonic() < deadline:
        # Prometheus' own /metrics (it does not scrape itself here).
        _, text, _ = http("GET", f"{prom_url}/metrics")
        for line in str(text).splitlines():
            if (
                line.startswith("prometheus_rule_group_last_duration_seconds{")
                and ';sentinel-sli"' in line
            ):
                value = float(line.rsplit(" ", 1)[1])
                if value != last and value > 0:
                    seen.append(value)
                    last = value
        time.sleep(1)
    return seen


def cycle_child(config: Path, at: float, cycles: int, recorded: bool) -> dict[str, Any]:
    """Run evaluate_once cycles in a child process: wall, CPU and RSS of Sentinel alone."""
    code = textwrap.dedent(
        f"""
        import asyncio, gc, json, resource, time, sys
        sys.path.insert(0, {str(REPO)!r})
        from sentinel.config import load_config
        from sentinel.rules.loader import load_rules
        from sentinel.evaluate.wiring import build_engine
        config = load_config({str(config)!r})
        slos = load_rules(config).slos
        async def main():
            engine = build_engine(config)
            walls, cpus, instances = [], [], 0
            for _ in range({cycles}):
                c0, w0 = time.process_time(), time.perf_counter()
                report = await engine.evaluate_once(slos, {at})
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
                gc.freeze()  # as the daemon does after every cycle
                instances = len(report.results)
                errors = len(report.errors)
            for s in engine.sources.values():
                await s.close()
            rss = int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024
            print(json.dumps({{"walls": walls, "cpus": cpus, "rss_mb": rss,
                               "instances": instances, "errors": errors}}))
        asyncio.run(main())
        """
    )
    env = {**os.environ}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(q * (len(ordered) - 1)))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0, help="gate load duration")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if not find_binary("prometheus"):
        print("prometheus is not installed: apt-get install prometheus", file=sys.stderr)
        return 2
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        end = int(time.time()) // STEP * STEP
        build_dataset(work, args.services, args.hours, end)
        prom = PrometheusServer(work / "prom")
        group = sli_group(work, end)
        prom.rule_files = (str(group),)
        prom.start(timeout=120)
        try:
            rows += measure(args, work, prom, end)
        finally:
            prom.stop()
    print_table(rows, args)
    return 0


def measure(
    args: argparse.Namespace, work: Path, prom: PrometheusServer, end: int
) -> list[tuple[str, str, str]]:
    from sentinel.config import Config
    from sentinel.query.promql import slo_query
    from sentinel.rules.loader import load_rules

    plain_rules, period_rules = write_rules(work, False), write_rules(work, True)
    queries = [
        slo_query(s) for s in load_rules(Config(rules=[f"{plain_rules}/*.yaml"], base_dir="/")).slos
    ]
    log("waiting for Prometheus' own rule-group evaluations")
    group_times = rule_group_seconds(prom.url, 30)
    bare = asyncio.run(bare_queries(prom.url, queries, end, args.cycles))
    (work / "plain.yaml").write_text(config_text(prom.url, plain_rules))
    (work / "period.yaml").write_text(config_text(prom.url, period_rules))
    log("Sentinel cycles: 5m window")
    plain = cycle_child(work / "plain.yaml", end, args.cycles, False)
    log("Sentinel cycles: multi-window with budgets (raw queries)")
    multi = cycle_child(work / "period.yaml", end, max(3, args.cycles // 3), False)
    recorded = record_rules(args, work, prom, period_rules, end)
    gate = gate_load(args, work, prom, plain_rules)
    prom_group = statistics.median(group_times) if group_times else float("nan")
    p50 = pct(plain["walls"], 0.5)
    rows = [
        (
            "instances per cycle (5m)",
            f"{plain['instances']:,}",
            f"{args.services} services x 3 SLIs",
        ),
        ("(a) Prometheus rule group", f"{prom_group * 1000:.1f} ms", "median of last_duration"),
        (
            "(b) bare aiohttp, 3 queries",
            f"{statistics.median(bare) * 1000:.1f} ms",
            "p50, concurrent",
        ),
        (
            "(c) Sentinel 5m cycle p50",
            f"{p50 * 1000:.1f} ms",
            f"{p50 / prom_group:.2f} x rule group (target <= 1.0)",
        ),
        (
            "(c) Sentinel 5m cycle p99",
            f"{pct(plain['walls'], 0.99) * 1000:.1f} ms",
            f"{pct(plain['walls'], 0.99) / prom_group:.2f} x rule group (target <= 1.5)",
        ),
        (
            "(c) Sentinel CPU per cycle",
            f"{statistics.median(plain['cpus']) * 1000:.1f} ms",
            "target <= 20 ms",
        ),
        ("(c) Sentinel RSS", f"{plain['rss_mb']:.0f} MB", "target <= 80 MB"),
        (
            "(c) multi-window raw p50",
            f"{pct(multi['walls'], 0.5) * 1000:.1f} ms",
            f"{pct(multi['walls'], 0.5) / p50:.2f} x 5m cycle ({multi['instances']:,} results)",
        ),
    ]
    if recorded is not None:
        rows.append(
            (
                "(c) multi-window recorded p50",
                f"{pct(recorded['walls'], 0.5) * 1000:.1f} ms",
                f"{pct(recorded['walls'], 0.5) / p50:.2f} x 5m cycle (target <= 2.0)",
            )
        )
    rows += gate
    return rows


def record_rules(
    args: argparse.Namespace, work: Path, prom: PrometheusServer, rules: Path, end: int
) -> dict[str, Any] | None:
    """Backfill the exported recording rules around the dataset end, restart, measure."""
    promtool = find_binary("promtool")
    exported = work / "exported.yml"
    (work / "export.yaml").write_text(config_text(prom.url, rules))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sentinel",
            "rules",
            "export",
            "-c",
            str(work / "export.yaml"),
            "-o",
            str(exported),
        ],
        check=True,
        cwd=REPO,
    )
    blocks = work / "rule-blocks"
    log("backfilling the exported recording rules (promtool create-blocks-from rules)")
    try:
        subprocess.run(
            [
                str(promtool),
                "tsdb",
                "create-blocks-from",
                "rules",
                f"--start={end - 600}",
                f"--end={end}",
                f"--url={prom.url}",
                f"--output-dir={blocks}",
                "--eval-interval=60s",
                "-q",
                str(exported),
            ],
            check=True,
            capture_output=True,
            timeout=1800,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"recording-rule backfill failed: {exc}")
        return None
    prom.stop()
    for block in blocks.iterdir():
        shutil.copytree(block, prom.storage / block.name)
    prom.start(timeout=120)
    (work / "recorded.yaml").write_text(
        config_text(prom.url, rules, "evaluation: {budget_source: recorded}\n")
    )
    # Recorded samples lie on the backfill's 60 s grid: evaluate at the dataset end.
    log("Sentinel cycles: multi-window with budgets (recorded series)")
    return cycle_child(work / "recorded.yaml", end, max(3, args.cycles // 2), True)


def gate_load(
    args: argparse.Namespace, work: Path, prom: PrometheusServer, rules: Path
) -> list[tuple[str, str, str]]:
    """The gate under load as users run it (the default `gate.cache_ttl`, 5 s: a fresh
    evaluation every 5 s under the load), then with a 600 s cache (every answer from the
    cache) to separate HTTP serving cost from evaluation cost."""
    rows = _gate_load(args, work, prom, rules, None)
    rows += _gate_load(args, work, prom, rules, "600s")
    return rows


def _gate_load(
    args: argparse.Namespace,
    work: Path,
    prom: PrometheusServer,
    rules: Path,
    cache_ttl: str | None,
) -> list[tuple[str, str, str]]:
    port, bare_port = free_port(), free_port()
    label = "default cache_ttl 5s" if cache_ttl is None else f"cache_ttl {cache_ttl}"
    config = work / f"gate-{cache_ttl or 'default'}.yaml"
    config.write_text(
        config_text(prom.url, rules)
        + f'server: {{listen: "127.0.0.1:{port}", api_token: bench}}\nstate: {{path: {work / "state.db"}}}\n'
        + (f"gate: {{cache_ttl: {cache_ttl}}}\n" if cache_ttl else "")
        + "evaluation: {interval: 60s}\n"
    )
    daemon = start_sentinel(config)
    bare = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "bare_server.py"), str(bare_port)]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        # Served from the latest evaluation: wait until the first cycle is done.
        wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 120, "sentinel ready")
        wait_for(
            lambda: http("GET", f"http://127.0.0.1:{bare_port}/api/v1/gate")[0] == 200, 10, "bare"
        )
        gate_url = f"{url}/api/v1/gate?service=svc-0001"
        auth = {"Authorization": "Bearer bench"}
        http("GET", gate_url, headers=auth)  # warm the fresh-result cache
        log(f"gate load: {args.connections} connections, {args.seconds:g}s each")
        ours = run_load(gate_url, auth, args.connections, args.seconds)
        floor = run_load(
            f"http://127.0.0.1:{bare_port}/api/v1/gate", {}, args.connections, args.seconds
        )
        rss = (
            int(
                Path(f"/proc/{daemon.process.pid}/status").read_text().split("VmRSS:")[1].split()[0]
            )
            / 1024
        )
    finally:
        bare.terminate()
        daemon.stop()
    return [
        (
            f"(d) gate req/s, {label}",
            f"{ours.rps:,.0f}",
            f"{ours.rps / floor.rps:.2f} x bare {floor.rps:,.0f} (target >= 0.5; {ours.tool})",
        ),
        (
            f"(d) gate p50 / p99, {label}",
            f"{ours.p50_ms:.2f} / {ours.p99_ms:.2f} ms",
            f"bare {floor.p50_ms:.2f} / {floor.p99_ms:.2f} ms (target p99 <= 5 ms)",
        ),
        (f"(d) sentinel run RSS, {label}", f"{rss:.0f} MB", "daemon after the load"),
    ]


def print_table(rows: list[tuple[str, str, str]], args: argparse.Namespace) -> None:
    width = max(len(r[0]) for r in rows)
    print(
        f"\nSentinel benchmark: {args.services} services, {args.hours:g} h of data, {os.cpu_count()} CPUs"
    )
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")


if __name__ == "__main__":
    raise SystemExit(main())
