"""The performance benchmark: one command, one table.

    # the full scaling curve (about 25 min on the 2-core CI machine):
    .venv/bin/python bench/run.py --services 100,1000,10000 --hours 6 --step 60
    # the small configuration .ci/run keeps working (under 3 min):
    .venv/bin/python bench/run.py --services 50 --hours 0.5 --cycles 5 --seconds 3

For each size (N services x 3 SLIs, `group_by: [service]`, the 5xx SLO with a 30-day
budget and the 30d catalogue's burn-rate windows) it builds the dataset (bench/dataset.py,
`--hours` of history every `--step` seconds, so the long windows read real history),
backfills it into Debian's Prometheus, backfills the recording rules `sentinel rules
export` writes (level by level, tests/support/rulebackfill.py: promtool cannot backfill a
rule that reads another recorded series in the same pass; the period chain by instant
queries at its groups' slots, after 30 days of hourly buckets), and measures in the same
run:

  - Prometheus' own rule-group time on exactly the expressions a cycle sends (one group
    for the raw multi-window cycle, one for the recorded one; pinned with @ to the dataset
    end), the reference every cycle time is divided by;
  - Sentinel's multi-window cycle (`evaluate_once` with budgets and burn tiers), raw and
    recorded: wall p50/p99, its own CPU per cycle and per 1,000 SLO instances, and RSS
    (results and engine state included), in a child process;
  - cost linearity: CPU per cycle of each size against the previous one.

At one size (the largest up to 1,000, `--gate-at` to choose) also:
  - Prometheus' CPU per cycle (its `process_cpu_seconds_total`) for the 30-day budget
    query, raw and recorded (the read plus the recording rule that keeps it), against the
    1h window's raw query;
  - the gate under load with the default `gate.cache_ttl` while scheduled cycles run
    (every 5 s), against a bare aiohttp endpoint loaded right after it (twice each); and a
    second line of many distinct services and `since` values (no cache helps) with the
    Prometheus queries each gate request cost.
Once: the alert latency of a live stack (simulator, Prometheus scraping it every second,
`sentinel run` with a 1 s interval, the fake Slack): from the breach being visible in
Prometheus (the SLO's own query, polled every 50 ms) to the Slack call; and a Slack storm
(`--storm` services breaching in one cycle, the fake Slack holding posts to one a second
per channel): the messages and the time until the last incident is shown, with
`group_by: service` and `group_by: slo`.

Timings are printed, never asserted; the machine is shared, so each timing is a ratio to
a reference measured in the same run, and repeated measurements print their spread.
bench/ puts tests/ on sys.path to reuse the test support servers (Prometheus, the fake
Slack, process helpers) rather than keep copies of them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import yaml

from dataset import write_chunk
from load import LoadResult, run_load
from support.procs import http, start_sentinel, stop_children_on_sigterm, wait_for
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
    period: 30d
    burn_rate: {min_events: 100}
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
SLIS = 3
Row = tuple[str, str, str]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def spread(values: list[float]) -> str:
    """Relative spread of repeated measurements (max/min - 1), the noise of this run."""
    low = min(values)
    return f"±{(max(values) / low - 1) * 50:.0f} %" if low > 0 and len(values) > 1 else "n/a"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- dataset and Prometheus ------------------------------------------------------------------


def build_dataset(work: Path, services: int, hours: float, end: int, step: int) -> Path:
    storage = work / "prom" / "data"
    start = end - int(hours * 3600)
    chunk = max(1800, step * 60)
    lines = 0
    started = time.monotonic()
    for t in range(start, end + 1, chunk):
        path = work / "chunk.om"
        lines += write_chunk(path, services, t, min(t + chunk, end + 1), start, step)
        backfill(path, storage)
    (work / "chunk.om").unlink(missing_ok=True)
    log(
        f"dataset: {services:,} services, {hours:g} h every {step} s, {lines:,} samples, "
        f"backfilled in {time.monotonic() - started:.0f} s"
    )
    return storage


def config_text(prom_url: str, rules: Path, extra: str = "") -> str:
    return (
        f'prometheus: {{url: "{prom_url}", timeout: 120s, max_in_flight: 4, '
        # 10,000 services x 2 series per answer is beyond the default 10,000.
        f"max_series: 100000}}\n"
        f'rules: ["{rules}/*.yaml"]\n' + extra
    )


def restart(prom: PrometheusServer, rule_files: tuple[str, ...] = ()) -> None:
    prom.stop()
    prom.rule_files = rule_files
    prom.start(timeout=300)


def record_rules(work: Path, prom: PrometheusServer, rules: Path, end: int, hours: float) -> bool:
    """Backfill the exported recording rules, level by level (a rule reading a series
    another rule records comes after it; support/rulebackfill.py): the window ratios
    over the last 10 minutes with promtool's rule backfill, the chained period rules by
    instant queries at their groups' slots, as a ruler evaluates them (promtool's range
    queries read `@ end()` as the range's end). Before the hourly period sum, the hourly
    buckets of the 30 days before the dataset are written from the dataset's own rates:
    Prometheus then sums 720 hourly samples as it would in steady state, not `--hours`."""
    from support.rulebackfill import backfill_chain, levels

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
    groups = yaml.safe_load(exported.read_text())["groups"]
    chained = [g for g in groups if "interval" in g]  # the period chain keeps its slots
    plain = [
        {**g, "rules": [r for r in g["rules"] if "record" in r]}
        for g in levels([g for g in groups if "interval" not in g])[0]
    ]
    # The window ratios over the last 10 min only, every 60 s: a recorded cycle reads
    # them at the dataset end (an instant selector, 5 min lookback), and an evaluation
    # over 10,000 services' long windows takes seconds (a pass over the whole history
    # did not finish in an hour at 10,000). The period chain below covers the history.
    start = end - int(hours * 3600)
    started = time.monotonic()
    path = work / "record.yml"
    path.write_text(yaml.safe_dump({"groups": plain}))
    blocks = work / "rule-blocks"
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
                str(path),
            ],
            check=True,
            capture_output=True,
            timeout=3600,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"recording-rule backfill failed: {exc}")
        return False
    if not blocks.is_dir():  # promtool can exit 0 having written nothing
        log("recording-rule backfill failed: promtool wrote no block")
        return False
    prom.stop()
    for block in blocks.iterdir():
        shutil.copytree(block, prom.storage / block.name)
    prom.start(timeout=300)
    _month_of_hourly_buckets(work, prom, groups, start, end)
    try:
        backfill_chain(prom, chained, start, end, work, first_level=0)
    except (AssertionError, OSError, subprocess.SubprocessError) as exc:
        log(f"recording-rule backfill failed: {exc}")
        return False
    log(f"recording rules backfilled in {time.monotonic() - started:.0f} s")
    return True


def _month_of_hourly_buckets(
    work: Path, prom: PrometheusServer, groups: list[dict[str, Any]], start: int, end: int
) -> None:
    """`slo:sli_{bad,total}:increase1h` of every instance, hourly over the 30 days before
    `start`, on the chain's slots: the five-minute rules' expressions over the dataset's
    last hour (pinned with @), one range query per rule, written as OpenMetrics and
    imported in month-long blocks (no month of raw data needed). promtool's rule backfill
    is not used here: with a one-hour interval it silently writes no block when `start`
    falls in the second half of a two-hour block (Prometheus 2.42; it failed CI once)."""
    from support.rulebackfill import import_openmetrics, openmetrics_labels

    fine = next(g for g in groups if g["name"].startswith("sentinel-period-5m-"))
    first, last = start - 720 * 3600, start - 3600
    path = work / "month.om"
    written = 0
    with path.open("w") as out:
        for rule in fine["rules"]:
            if not rule["record"].endswith(":increase5m"):
                continue
            name = rule["record"].replace(":increase5m", ":increase1h")
            expr = rule["expr"].replace("[5m]", f"[1h] @ {end}").replace("300 * ", "3600 * ", 1)
            params = {"query": expr, "start": first, "end": last, "step": 3600}
            result = prom_result(prom.url, "query_range", params)
            out.write(f"# TYPE {name} gauge\n")
            for series in result:
                labels = openmetrics_labels({**series["metric"], **rule["labels"]})
                for t, value in series["values"]:
                    out.write(f"{name}{labels} {value} {t}\n")
                    written += 1
        out.write("# EOF\n")
    import_openmetrics(path, prom, work / "month-blocks", max_block_duration="744h")
    path.unlink()
    log(f"month of hourly buckets: {written:,} samples")


PIN_RANGE = re.compile(r"\[(\d+[smhdwy])\]")
# (not a selector under a range: its range already carries the @)
PIN_RECORDED = re.compile(r"(slo:[a-z0-9_:]+\{[^}]*\})(?!\[)")


def pinned(query: str, end: int) -> str:
    """The query evaluated at the dataset end whenever Prometheus runs it (the @ modifier
    on every range and every recorded-series selector)."""
    out = PIN_RANGE.sub(rf"[\1] @ {end}", query)
    return PIN_RECORDED.sub(rf"\1 @ {end}", out)


def cycle_queries(config_path: Path) -> list[str]:
    """The queries one multi-window cycle of `config_path` sends (deduplicated)."""
    from sentinel.config import load_config
    from sentinel.evaluate.wiring import build_engine
    from sentinel.rules.loader import load_rules

    config = load_config(config_path)
    slos = load_rules(config).slos
    engine = build_engine(config)
    planned = set(engine.plan(slos).values())
    planned |= {q for qs in engine.plan_budgets(slos).values() for q in qs.values()}
    return sorted(q.query for q in planned)


def rule_groups_file(work: Path, groups: dict[str, list[str]], end: int) -> Path:
    doc = {
        "groups": [
            {
                "name": name,
                "interval": "5s",
                "rules": [
                    {"record": f"bench:{name}:{i}", "expr": pinned(q, end)}
                    for i, q in enumerate(queries)
                ],
            }
            for name, queries in groups.items()
        ]
    }
    path = work / "reference-groups.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def prom_metric(prom_url: str, name: str, match: str = "") -> float:
    with urllib.request.urlopen(f"{prom_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and match in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def prom_result(prom_url: str, api: str, params: dict[str, Any], timeout: float = 600) -> Any:
    """`data.result` of a Prometheus query API answer (`api`: query or query_range)."""
    data = urllib.parse.urlencode(params).encode()
    with urllib.request.urlopen(f"{prom_url}/api/v1/{api}", data, timeout=timeout) as resp:
        return json.load(resp)["data"]["result"]


def settle_blocks(prom: PrometheusServer, limit: float = 900.0) -> str:
    """Wait until Prometheus has compacted the backfilled blocks as far as it will: its
    compactor is triggered a minute after start, then every minute; done when it has been
    triggered since the wait began and the loaded block count held for two minutes (a
    compaction before the wait is not one still to come; a pass with nothing to compact
    is triggered but counts no compaction). A long-running server reads a month from a
    few compacted blocks, not from the hundreds of two-hour blocks promtool writes;
    returns "before -> after blocks" for the row."""

    def blocks() -> float:
        return prom_metric(prom.url, "prometheus_tsdb_blocks_loaded ")

    def triggered() -> float:
        return prom_metric(prom.url, "prometheus_tsdb_compactions_triggered_total ")

    first = blocks()
    passes = triggered()
    started = time.monotonic()
    last, held_since = first, time.monotonic()
    while time.monotonic() - started < limit:
        time.sleep(5)
        now = blocks()
        ran = triggered() > passes
        if now != last:
            last, held_since = now, time.monotonic()
        elif ran and time.monotonic() - held_since >= 125:
            break
    log(f"compaction: {first:.0f} -> {last:.0f} blocks in {time.monotonic() - started:.0f} s")
    return f"{first:.0f} -> {last:.0f}"


def rule_group_seconds(prom_url: str, names: list[str], wait: float) -> dict[str, list[float]]:
    """Prometheus' own evaluation times of each group (distinct last_duration values)."""
    seen: dict[str, list[float]] = {n: [] for n in names}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and min(len(v) for v in seen.values()) < 4:
        for name in names:
            value = prom_metric(
                prom_url, "prometheus_rule_group_last_duration_seconds{", f';{name}"'
            )
            if value > 0 and (not seen[name] or seen[name][-1] != value):
                seen[name].append(value)
        time.sleep(0.5)
    return seen


# -- Sentinel's cycle -------------------------------------------------------------------------


def cycle_child(config: Path, at: float, cycles: int, daemon: bool = False) -> dict[str, Any]:
    """Run multi-window cycles in a child process: wall, CPU and RSS of Sentinel alone.

    `daemon`: the scheduled cycles' engine (long windows reused for 1/720 of themselves,
    evaluation.long_window_refresh: auto), one cycle every 30 s of evaluation time ending
    at `at`; otherwise every window is asked every cycle, at `at`."""
    step = 30.0 if daemon else 0.0
    code = textwrap.dedent(
        f"""
        import asyncio, gc, json, time, sys
        sys.path.insert(0, {str(REPO)!r})
        from sentinel.config import load_config
        from sentinel.rules.loader import load_rules
        from sentinel.evaluate.wiring import build_engine
        from sentinel.daemon import allocator, collector
        allocator.tune()  # as `sentinel run` does
        collector.tune()
        config = load_config({str(config)!r})
        slos = load_rules(config).slos
        async def main():
            engine = build_engine(config, daemon={daemon!r})
            walls, cpus = [], []
            for i in range({cycles} + 1):  # the first cycle (imports, connections) apart
                now = {at} - ({cycles} - i) * {step}
                c0, w0 = time.process_time(), time.perf_counter()
                report = await engine.evaluate_once(slos, now)
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
                gc.freeze()  # as the daemon does after every cycle
            for s in engine.sources.values():
                await s.close()
            status = open('/proc/self/status').read()
            rss = int(status.split('VmRSS:')[1].split()[0]) / 1024
            print(json.dumps({{"walls": walls[1:], "cpus": cpus[1:], "rss_mb": rss,
                               "results": len(report.results),
                               "errors": len(report.errors), "queries": report.queries}}))
        asyncio.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cycle child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def daemon_child(config: Path, at: float, cycles: int) -> dict[str, Any]:
    """The whole daemon in a child process (`sentinel run`'s parts: engine reusing long
    windows, state store, alert manager, self-metrics, status UI history, API routes; no
    listening socket), its cycles 30 s apart on a clock ending at `at`: CPU per cycle with
    the record step, and RSS with every instance's alert state held."""
    code = textwrap.dedent(
        f"""
        import asyncio, gc, json, time, sys
        sys.path.insert(0, {str(REPO)!r})
        from sentinel.daemon import allocator
        allocator.tune()  # as `sentinel run` does, before any thread
        from sentinel.config import load_config
        from sentinel.daemon import collector
        from sentinel.daemon.assembly import build_daemon
        from sentinel.rules.loader import load_rules
        from sentinel.web.app import build_app
        from sentinel.web.routes import api_routes
        collector.tune()
        config = load_config({str(config)!r})
        rules = load_rules(config)
        now = [{at} - {cycles} * 30.0]
        async def main():
            assembly = await build_daemon({str(config)!r}, config, rules, lambda: now[0])
            build_app(assembly.daemon, api_routes(assembly))
            cpus, walls = [], []
            try:
                for i in range({cycles} + 1):  # the first cycle (imports) apart
                    c0, w0 = time.process_time(), time.perf_counter()
                    for group in rules.groups:
                        await assembly.daemon.run_group(group.name, now[0])
                    await asyncio.sleep(0.05)  # the dispatcher's turn
                    cpus.append(time.process_time() - c0)
                    walls.append(time.perf_counter() - w0)
                    now[0] += 30.0
                states = len(assembly.manager.alerts)
            finally:
                await assembly.cleanup()
            status = open('/proc/self/status').read()
            rss = int(status.split('VmRSS:')[1].split()[0]) / 1024
            print(json.dumps({{"cpus": cpus[1:], "walls": walls[1:], "rss_mb": rss,
                               "states": states}}))
        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=config.parent
    )
    if out.returncode != 0:
        raise RuntimeError(f"daemon child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def daemon_rows(config: Path, at: float, cycles: int, services: int) -> list[Row]:
    got = daemon_child(config, at, cycles)
    cpu = statistics.median(got["cpus"])
    instances, label = services * SLIS, f"{services:,} svc"
    return [
        (
            f"{label}: whole daemon CPU / cycle",
            ms(cpu),
            f"{cpu / instances * 1e6:.1f} ms per 1,000 SLO instances: evaluation (long "
            f"windows reused) + record step (alert states, SQLite, metrics, UI history); "
            f"wall p50 {ms(statistics.median(got['walls']))}, p99 {ms(pct(got['cpus'], 0.99))} "
            f"CPU",
        ),
        (
            f"{label}: whole daemon RSS",
            f"{got['rss_mb']:.0f} MB",
            f"{got['states']:,} alert states held (target <= 80 MB at 1,000, <= 250 MB at 10,000)",
        ),
    ]


def decode_floor(config_path: Path, at: float) -> float:
    """CPU seconds to decode (orjson, nothing else) the answers of one cycle that asks
    every window: the floor under Sentinel's CPU per cycle, whatever it does next."""
    import orjson

    from sentinel.config import load_config
    from sentinel.evaluate.wiring import build_engine
    from sentinel.rules.loader import load_rules

    config = load_config(config_path)
    slos = load_rules(config).slos
    engine = build_engine(config)
    planned = set(engine.plan(slos).values())
    planned |= {q for qs in engine.plan_budgets(slos).values() for q in qs.values()}
    bodies = []
    for q in planned:
        data = urllib.parse.urlencode({"query": q.query, "time": f"{at:.3f}"}).encode()
        with urllib.request.urlopen(f"{config.prometheus.url}/api/v1/query", data) as r:
            bodies.append(r.read())
    best = float("inf")
    # Without the collector: decoding alone (the bench process keeps no collector tuning;
    # at 10,000 services the floor per instance came out 3x the 1,000-service one with it).
    gc.disable()
    try:
        for _ in range(5):
            c0 = time.process_time()
            for body in bodies:
                orjson.loads(body)
            best = min(best, time.process_time() - c0)
    finally:
        gc.enable()
    return best


# -- one size ---------------------------------------------------------------------------------


def measure_size(
    args: argparse.Namespace, root: Path, services: int, full: bool
) -> tuple[list[Row], dict[str, Any]]:
    work = root / f"n{services}"
    work.mkdir()
    end = int(time.time()) // args.step * args.step
    build_dataset(work, services, args.hours, end, args.step)
    prom = PrometheusServer(work / "prom")
    prom.start(timeout=300)
    rules = work / "rules"
    rules.mkdir()
    (rules / "platform.yaml").write_text(RULES)
    (work / "raw.yaml").write_text(config_text(prom.url, rules))
    (work / "recorded.yaml").write_text(
        config_text(prom.url, rules, "evaluation: {budget_source: recorded}\n")
    )
    rows: list[Row] = []
    facts: dict[str, Any] = {"services": services}
    try:
        if full:  # first: the gate judges at the wall clock, the dataset ends now
            rows += guarded("gate", lambda: gate_load(args, work, prom, rules, services))
        recorded_ok = record_rules(work, prom, rules, end, args.hours)
        # Prometheus compacts the backfilled blocks from a minute after it starts: seconds
        # at 100 services, minutes at 10,000. Everything below is measured after it: the
        # rule groups' reference, and Sentinel's cycles: until 2026-11-27 the recorded
        # path's cycles began about a minute after the restart below, when the compactor
        # starts, and at 10,000 services could share the 2 cores with it.
        compacted = "not known (the wait failed)"
        settled = guarded("compaction", lambda: [("", settle_blocks(prom), "")])
        if settled[0][1] != "FAILED":
            compacted = settled[0][1]
        else:
            rows += settled  # measured anyway, the row says the compactor may have run
        paths = {"raw": work / "raw.yaml"}
        if recorded_ok:
            paths["recorded"] = work / "recorded.yaml"
        queries = {name: cycle_queries(path) for name, path in paths.items()}
        restart(prom, (str(rule_groups_file(work, queries, end)),))
        log(f"{services:,}: Prometheus' own rule-group evaluations")
        groups = rule_group_seconds(prom.url, list(queries), 45 + services / 100)
        restart(prom)  # no rule group competing with the cycles
        label = f"{services:,} svc"
        for name, path in paths.items():
            log(f"{services:,}: Sentinel cycles, multi-window {name}")
            runs = [cycle_child(path, end, args.cycles) for _ in range(2)]
            steady = cycle_child(path, end, args.cycles, daemon=True)
            steady_cpu = statistics.median(steady["cpus"])
            floor = decode_floor(path, end)
            walls = [w for r in runs for w in r["walls"]]
            cpus = [c for r in runs for c in r["cpus"]]
            group = statistics.median(groups[name]) if groups[name] else float("nan")
            p50, p99 = pct(walls, 0.5), pct(walls, 0.99)
            cpu = statistics.median(cpus)
            instances = services * SLIS
            per_k = cpu / instances * 1000
            facts[name] = {"cpu": cpu, "p50": p50, "group": group}
            rows += [
                (
                    f"{label}: {name} cycle p50 / p99",
                    f"{ms(p50)} / {ms(p99)}",
                    f"{p50 / group:.2f} / {p99 / group:.2f} x Prometheus rule group "
                    f"{ms(group)} (target p50 <= 1.0); {runs[0]['queries']} queries, "
                    f"{runs[0]['results']:,} results, errors {runs[0]['errors']}",
                ),
                (
                    f"{label}: {name} Sentinel CPU / cycle",
                    ms(cpu),
                    f"{per_k * 1000:.1f} ms per 1,000 SLO instances ({instances:,}; target "
                    f"<= 6); two runs: {ms(statistics.median(runs[0]['cpus']))}, "
                    f"{ms(statistics.median(runs[1]['cpus']))}",
                ),
                (
                    f"{label}: {name} JSON decoding alone",
                    ms(floor),
                    f"{floor / instances * 1e6:.1f} ms per 1,000 SLO instances: orjson over "
                    f"the answers of a cycle asking every window, the floor under the CPU "
                    f"rows above and below",
                ),
                (
                    f"{label}: {name} Sentinel CPU / cycle, daemon",
                    ms(steady_cpu),
                    f"{steady_cpu / instances * 1e6:.1f} ms per 1,000 SLO instances (target "
                    f"<= 6); cycles 30 s apart, windows of 1d and more reused for 1/720 of "
                    f"themselves (long_window_refresh: auto): {steady['queries']} queries in "
                    f"the last, "
                    f"p99 {ms(pct(steady['cpus'], 0.99))}",
                ),
                (
                    f"{label}: {name} Sentinel RSS",
                    f"{max(r['rss_mb'] for r in [*runs, steady]):.0f} MB",
                    "state included (target <= 80 MB at 1,000, <= 250 MB at 10,000)",
                ),
            ]
        log(f"{services:,}: the whole daemon's cycles")
        rows += guarded("daemon", lambda: daemon_rows(paths["raw"], end, args.cycles, services))
        if full:
            rows += guarded(
                "Prometheus CPU",
                lambda: prometheus_cpu(args, work, prom, end, label, compacted),
            )
    finally:
        prom.stop()
        shutil.rmtree(work / "prom", ignore_errors=True)
    return rows, facts


def prometheus_cpu(
    args: argparse.Namespace,
    work: Path,
    prom: PrometheusServer,
    end: int,
    label: str,
    compacted: str,
) -> list[Row]:
    """Prometheus' CPU per Sentinel cycle for the 30-day budget of the 5xx SLO (all its
    instances): raw, and recorded = the read plus every rule that exists only for the
    period (the 5m and 1h groups of sentinel/outputs/export.py), each rule's cost times
    its evaluations per cycle (cycle interval / group interval), against the raw 1h
    window's query. CPU is Prometheus' process_cpu_seconds_total (10 ms ticks), so each
    query repeats until it has used a second of wall time."""
    from sentinel.config import load_config
    from sentinel.evaluate.wiring import build_engine
    from sentinel.query.promql import recorded_ratio_query
    from sentinel.rules.loader import load_rules
    from sentinel.units import parse_duration

    config = load_config(work / "raw.yaml")
    cycle = config.evaluation.interval
    slo = next(s for s in load_rules(config).slos if s.period is not None)
    raw = build_engine(config).plan_budgets([slo])[slo.key]
    exported = yaml.safe_load((work / "exported.yml").read_text())
    rules = [
        (r["record"], r["expr"], cycle / parse_duration(g["interval"]))
        for g in exported["groups"]
        if "interval" in g
        for r in g["rules"]
    ]
    month, hour = parse_duration("30d"), parse_duration("1h")
    log(f"{label}: Prometheus CPU, raw and recorded 30d budget (after compaction)")

    def cpu_per_query(query: str) -> float:
        data = urllib.parse.urlencode({"query": query, "time": str(end)}).encode()
        before, rounds = prom_metric(prom.url, "process_cpu_seconds_total"), 0
        started = time.monotonic()
        while rounds < max(5, args.cycles) or time.monotonic() - started < 1.0:
            with urllib.request.urlopen(f"{prom.url}/api/v1/query", data, timeout=600) as r:
                r.read()
            rounds += 1
        return (prom_metric(prom.url, "process_cpu_seconds_total") - before) / rounds

    runs: dict[str, list[float]] = {"raw 30d": [], "raw 1h": [], "read": [], "rules": []}
    per_rule: dict[str, list[float]] = {name: [] for name, _, _ in rules}
    for _ in range(2):
        runs["raw 30d"].append(cpu_per_query(raw[month].query))
        runs["raw 1h"].append(cpu_per_query(raw[hour].query))
        runs["read"].append(cpu_per_query(recorded_ratio_query(slo, month)))
        amortised = 0.0
        for name, expr, per_cycle in rules:
            cost = cpu_per_query(expr)
            per_rule[name].append(cost)
            amortised += cost * per_cycle
        runs["rules"].append(amortised)
    hour_cost = statistics.median(runs["raw 1h"])
    hourly = hourly_samples(prom.url, end)
    recorded = [r + q for r, q in zip(runs["read"], runs["rules"], strict=True)]
    detail = ", ".join(
        f"{name.removeprefix('slo:')} {ms(statistics.median(per_rule[name]))} x {per_cycle:.3g}"
        for name, _, per_cycle in rules
    )
    rows = []
    for name, values in (("raw 30d", runs["raw 30d"]), ("raw 1h", runs["raw 1h"])):
        value = statistics.median(values)
        rows.append(
            (
                f"{label}: Prometheus CPU / cycle, {name}",
                ms(value),
                f"{value / hour_cost:.2f} x raw 1h; runs {', '.join(ms(v) for v in values)}"
                + (f" (over {args.hours:g} h of raw data, not 30 d)" if name == "raw 30d" else ""),
            )
        )
    value = statistics.median(recorded)
    rows.append(
        (
            f"{label}: Prometheus CPU / cycle, recorded 30d",
            ms(value),
            f"{value / hour_cost:.2f} x raw 1h (target <= 1.0); read "
            f"{ms(statistics.median(runs['read']))} + rules {ms(statistics.median(runs['rules']))} "
            f"amortised over a {cycle:g} s cycle (per evaluation x evaluations per cycle: "
            f"{detail}); {hourly} hourly samples summed; TSDB blocks {compacted} (compacted as a "
            f"running server does); runs "
            f"{', '.join(ms(v) for v in recorded)}",
        )
    )
    return rows


def hourly_samples(prom_url: str, end: int) -> str:
    """How many hourly buckets the 30-day period sum reads at `end` (720 in steady state),
    counted in Prometheus rather than assumed."""
    query = f"max(count_over_time(slo:sli_total:increase1h[30d] @ {end}))"
    try:
        result = prom_result(prom_url, "query", {"query": query, "time": end})
        return f"{float(result[0]['value'][1]):.0f}" if result else "0"
    except (OSError, ValueError, KeyError, IndexError) as exc:
        return f"? ({exc})"


# -- the gate ---------------------------------------------------------------------------------


def gate_load(
    args: argparse.Namespace,
    work: Path,
    prom: PrometheusServer,
    rules: Path,
    services: int,
) -> list[Row]:
    """`sentinel run` with the default gate.cache_ttl and a cycle every 5 s
    (`--gate-cycles`), loaded with one pipeline's request (twice, each followed by the
    bare endpoint), then with many distinct services and `since` values."""
    port, bare_port = free_port(), free_port()
    config = work / "gate.yaml"
    config.write_text(
        config_text(prom.url, rules)
        + f'server: {{listen: "127.0.0.1:{port}", api_token: bench}}\n'
        + f"state: {{path: {work / 'state.db'}}}\n"
        + f"evaluation: {{interval: {args.gate_cycles}}}\n"
    )
    daemon = start_sentinel(config)
    bare = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "bare_server.py"), str(bare_port)]
    )
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer bench"}
    try:
        wait_for(lambda: http("GET", f"{url}/health/ready")[0] == 200, 300, "sentinel ready")
        bare_url = f"http://127.0.0.1:{bare_port}/api/v1/gate"
        wait_for(lambda: http("GET", bare_url)[0] == 200, 10, "bare")
        # `decision_in=body`: every verdict is a 200 (the dataset's services sit at their
        # thresholds, so one may flip between pass and fail from cycle to cycle), and only
        # what is not a verdict (a 404, 401, 429) is not. Those are answered as fast as a
        # verdict or faster: a throughput of them would say nothing of the gate.
        gate_url = f"{url}/api/v1/gate?service=svc-0001&decision_in=body"
        warm: list[Any] = []

        def verdict() -> bool:
            status, body, _ = http("GET", gate_url, headers=auth)
            warm[:] = [status, body]
            return status == 200 and isinstance(body, dict) and "decision" in body

        # Ready is not evaluated: until the first cycle has answered for the service (4 s
        # at 10,000 services) the gate does not know it (404).
        try:
            wait_for(verdict, 120, "the gate's first verdict")
        except AssertionError:
            raise RuntimeError(f"the gate's warm-up answer is not a verdict: {warm}") from None
        log(f"gate load: {args.connections} connections, {args.seconds:g} s per run")
        ours: list[LoadResult] = []
        floor: list[LoadResult] = []
        lags: list[LagFigures] = []
        bare_lags: list[dict[str, float]] = []
        bare_lag_url = f"http://127.0.0.1:{bare_port}/lag"
        # Prometheus' CPU during each run: the daemon's cycles (they go on during the bare
        # run too) share the 2 cores with the load generator and the server under test.
        prom_cpu: list[tuple[float, float]] = []
        for _ in range(args.gate_pairs):
            before = loop_lag_buckets(url)
            cpu_at = prom_metric(prom.url, "process_cpu_seconds_total")
            ours.append(run_load(gate_url, auth, args.connections, args.seconds))
            if ours[-1].non_2xx:
                raise RuntimeError(
                    f"{ours[-1].non_2xx:,} answers of the one-request load were not verdicts"
                )
            cpu_mid = prom_metric(prom.url, "process_cpu_seconds_total")
            lags.append(lag_figures(before, loop_lag_buckets(url)))
            http("GET", bare_lag_url)  # the bare server's lag from here on
            floor.append(run_load(bare_url, {}, args.connections, args.seconds))
            bare_lags.append(http("GET", bare_lag_url)[1])
            cpu_end = prom_metric(prom.url, "process_cpu_seconds_total")
            prom_cpu.append((cpu_mid - cpu_at, cpu_end - cpu_mid))
        # Many distinct requests: every service, each with its own deploy start inside the
        # SLO window (an older one shares the window's evaluation).
        now = int(time.time())
        paths = [
            f"/api/v1/gate?service=svc-{i:04d}&since={now - 120 - (i * 7) % 150}"
            for i in range(services)
        ]
        own_before = sentinel_queries(url)
        prom_before = prom.query_count()
        distinct = run_load(url + "/api/v1/gate", auth, args.connections, args.seconds, paths)
        gate_queries = (prom.query_count() - prom_before) - (sentinel_queries(url) - own_before)
        rss = int(
            Path(f"/proc/{daemon.process.pid}/status").read_text().split("VmRSS:")[1].split()[0]
        )
    finally:
        bare.terminate()
        daemon.stop()
    rps = [o.rps / f.rps for o, f in zip(ours, floor, strict=True)]
    p99 = [o.p99_ms - f.p99_ms for o, f in zip(ours, floor, strict=True)]
    best = min(range(len(p99)), key=lambda i: p99[i])
    o, f = ours[best], floor[best]
    answered = distinct.requests - distinct.non_2xx
    return [
        (
            f"gate req/s, one request (default cache_ttl, cycles every {args.gate_cycles})",
            f"{o.rps:,.0f}",
            f"{statistics.median(rps):.2f} x bare aiohttp (runs "
            + ", ".join(f"{r:.2f}" for r in rps)
            + "; "
            f"bare {f.rps:,.0f}; target >= 0.8; {o.tool}, {args.connections} connections; "
            "Prometheus CPU-s answering the cycles during the gate / bare runs: "
            + ", ".join(f"{g:.1f} / {b:.1f}" for g, b in prom_cpu)
            + f" of {args.seconds:g} s on the same cores)",
        ),
        (
            "gate p50 / p99, one request",
            f"{o.p50_ms:.2f} / {o.p99_ms:.2f} ms",
            f"bare {f.p50_ms:.2f} / {f.p99_ms:.2f} ms; p99 - bare p99 = "
            + ", ".join(f"{d:+.2f}" for d in p99)
            + f" ms over {len(p99)} runs, median {statistics.median(p99):+.2f} "
            "(target <= +1 ms)",
        ),
        (
            "gate: event-loop lag during the load, p99 / max",
            f"<= {lags[best].p99_ms:g} / <= {lags[best].max_ms:g} ms",
            "sentinel_event_loop_lag_seconds over each load run (bucket bounds; 10 ms "
            "ticks): "
            + "; ".join(str(lag) for lag in lags)
            + "; the bare server's own loop, same probe, under its load: "
            + "; ".join(
                f"p99 {b['p99'] * 1000:.0f} ms, max {b['max'] * 1000:.0f} ms" for b in bare_lags
            ),
        ),
        (
            f"gate, {services:,} distinct services x since",
            f"{distinct.rps:,.0f} req/s",
            f"p50 / p99 {distinct.p50_ms:.1f} / {distinct.p99_ms:.1f} ms; "
            f"{gate_queries / max(1, distinct.requests):.2f} Prometheus queries per request "
            f"({gate_queries:,.0f} for {distinct.requests:,}; non-2xx "
            f"{distinct.non_2xx:,}: 412/503 verdicts and 429 beyond the "
            f"evaluation budget; {answered:,} 200s)",
        ),
        ("gate: sentinel run RSS after the load", f"{rss / 1024:.0f} MB", "the daemon"),
    ]


@dataclass(frozen=True)
class LagFigures:
    """The daemon's event-loop lag over one load run, from its histogram's buckets."""

    ticks: int
    p99_ms: float
    max_ms: float
    over_10ms: int

    def __str__(self) -> str:
        return (
            f"p99 <= {self.p99_ms:g} ms, max <= {self.max_ms:g} ms, "
            f"{self.over_10ms} of {self.ticks:,} ticks > 10 ms"
        )


def loop_lag_buckets(url: str) -> dict[float, float]:
    """sentinel_event_loop_lag_seconds' cumulative buckets (upper bound -> count)."""
    _, text, _ = http("GET", f"{url}/metrics")
    out = {}
    for line in str(text).splitlines():
        if line.startswith("sentinel_event_loop_lag_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(bound)] = float(line.rsplit(" ", 1)[1])
    return out


def lag_figures(before: dict[float, float], after: dict[float, float]) -> LagFigures:
    delta = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = delta[-1][1] if delta else 0.0
    p99 = next((b for b, n in delta if n >= 0.99 * total), float("inf"))
    top = next((b for b, n in delta if n >= total), float("inf"))
    over = total - next((n for b, n in delta if b == 0.01), total)
    return LagFigures(int(total), p99 * 1000, top * 1000, int(over))


def gate_only(args: argparse.Namespace, root: Path, services: int) -> list[Row]:
    """--gate-only: the dataset, Prometheus and the gate rows, nothing else (iterating on
    the gate's latency without the cycles' and the rule groups' measurements)."""
    work = root / f"n{services}"
    work.mkdir()
    end = int(time.time()) // args.step * args.step
    build_dataset(work, services, args.hours, end, args.step)
    prom = PrometheusServer(work / "prom")
    prom.start(timeout=300)
    rules = work / "rules"
    rules.mkdir()
    (rules / "platform.yaml").write_text(RULES)
    try:
        return gate_load(args, work, prom, rules, services)
    finally:
        prom.stop()


def sentinel_queries(url: str) -> float:
    """Queries of the scheduled cycles (sentinel_queries_total{source="all"})."""
    _, text, _ = http("GET", f"{url}/metrics")
    total = 0.0
    for line in str(text).splitlines():
        if line.startswith('sentinel_queries_total{source="all"}'):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- alert latency ----------------------------------------------------------------------------


def alert_latency(root: Path, trials: int) -> list[Row]:
    """Breach visible in Prometheus -> Slack call, with the live stack."""
    from sentinel.config import load_config
    from sentinel.query.promql import slo_query
    from sentinel.rules.loader import load_rules
    from support.fakeslack import CHANNEL, TOKEN, FakeSlack
    from support.livestack import RULES_HEADER, live_stack

    notifier = textwrap.dedent(
        f"""\
        notifiers:
          oncall:
            type: slack
            token: ${{SENTINEL_BENCH_SLACK_TOKEN}}
            channel: {CHANNEL}
            base_url: {{url}}/api/
        """
    )
    slack = FakeSlack().start()
    work = root / "alert"
    work.mkdir()
    latencies: list[float] = []
    try:
        with live_stack(
            work, RULES_HEADER + "    notify: [oncall]\n", notifier.replace("{url}", slack.url)
        ) as live:
            os.environ["SENTINEL_BENCH_SLACK_TOKEN"] = TOKEN
            config = load_config(live.config)
            slo = load_rules(config).slos[0]
            query = slo_query(slo)
            proc = start_sentinel(live.config, {"SENTINEL_BENCH_SLACK_TOKEN": TOKEN})
            try:
                wait_for(lambda: http("GET", f"{live.url}/health/ready")[0] == 200, 90, "ready")
                for _ in range(trials):
                    posts = _posts(slack)
                    http("POST", f"{live.sim_url}/fault?mode=latency")
                    visible = _when(lambda: _breached(live.prom.url, query, slo.threshold), 60)
                    slack_at = _when(lambda n=posts: _posts(slack) > n, 60)
                    latencies.append(slack_at - visible)
                    http("POST", f"{live.sim_url}/fault?mode=none")
                    _when(lambda: not _breached(live.prom.url, query, slo.threshold), 90)
                    # wait for the resolve to be delivered before the next breach
                    updates = _updates(slack)
                    try:
                        _when(
                            lambda n=updates: _updates(slack) > n,
                            60,
                        )
                    except TimeoutError:
                        log("no resolve message within 60 s; next breach anyway")
            finally:
                proc.stop()
    finally:
        slack.stop()
    interval = 1.0
    return [
        (
            "alert latency: breach visible in Prometheus -> Slack call",
            f"{statistics.median(latencies):.2f} s",
            f"{statistics.median(latencies) / (interval + 1):.2f} x (1 interval + 1 s = "
            f"{interval + 1:g} s, the target); trials: "
            + ", ".join(f"{v:.2f} s" for v in latencies),
        )
    ]


def slack_storm(root: Path, services: int) -> list[Row]:
    """A platform-wide breach: every service's alert of one SLO fires in the same cycle.
    The real alert manager, store, dispatcher and Slack notifier against the fake Slack
    holding chat.postMessage to one message a second per channel (Slack's documented
    limit, answered with 429 and Retry-After): the messages it takes, and when the last
    incident is shown, with `group_by: service` (the default) and `group_by: slo`."""
    import asyncio

    from pydantic import SecretStr

    from sentinel.alerting.manager import AlertManager
    from sentinel.alerting.store import Store
    from sentinel.config import SlackNotifierConfig
    from sentinel.evaluate.slo import SLOResult, Status
    from sentinel.notify.dispatcher import Dispatcher
    from sentinel.notify.slack import SlackNotifier
    from sentinel.rules.model import SLO, RatioSLI, RuleGroup, Selector
    from sentinel.selfmetrics import SelfMetrics
    from support.fakeslack import CHANNEL, TOKEN, FakeSlack

    slo = SLO(
        "platform",
        "http-5xx-ratio",
        RatioSLI(Selector("bad"), Selector("total")),
        0.005,
        300,
        group_by=("service",),
    )
    group = RuleGroup("platform", "platform.yaml", "platform", 30, (slo,))
    names = [f"svc-{n:04d}" for n in range(services)]

    def results(status: Status, at: float) -> list[SLOResult]:
        value = 0.02 if status is Status.BREACH else 0.001
        return [
            SLOResult(n, slo.name, status, value, 0.005, None, 300, at, {"service": n}, 1000.0)
            for n in names
        ]

    async def storm(group_by: str) -> tuple[int, float]:
        work = root / f"storm-{group_by}"
        work.mkdir()
        async with contextlib.AsyncExitStack() as stack:
            slack = FakeSlack(post_interval=1.0).start()
            stack.callback(slack.stop)
            store = Store(work / "state.db")
            stack.callback(store.close)
            config = SlackNotifierConfig(
                type="slack",
                token=SecretStr(TOKEN),
                channel=CHANNEL,
                base_url=f"{slack.url}/api/",
                charts=False,
                group_by=group_by,  # type: ignore[arg-type]
            )
            notifier = SlackNotifier("oncall", config, store)
            stack.push_async_callback(notifier.close)
            manager = AlertManager(store, {"oncall": notifier}, {})
            dispatcher = Dispatcher(store, {"oncall": notifier}, SelfMetrics())
            now = time.time()
            manager.observe_sync(group, results(Status.OK, now - 30), now - 30)
            started = time.monotonic()
            manager.observe_sync(group, results(Status.BREACH, now), now)

            def shown() -> int:
                return sum(
                    len(store.slack_message_incidents(m.channel, m.ts)) for m in slack.roots()
                )

            while shown() < services and time.monotonic() - started < 3 * services + 60:
                await dispatcher.deliver_due()
                await asyncio.sleep(0.05)
            took = time.monotonic() - started
            if shown() < services:
                raise RuntimeError(f"{shown()} of {services} incidents shown after {took:.0f} s")
            return len(slack.roots()), took
        raise AssertionError("unreachable")  # pragma: no cover

    quiet = logging.getLogger("sentinel")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # a line per alert fired, in this process
    try:
        per_service = asyncio.run(storm("service"))
        per_slo = asyncio.run(storm("slo"))
    finally:
        quiet.setLevel(level)
    return [
        (
            f"Slack storm, {services} services at once, group_by: {name}",
            f"{took:.1f} s",
            f"{posts} message(s) until the last incident is shown (the fake Slack: 1 message "
            f"a second per channel, 429 + Retry-After; Sentinel's retry adds slack-sdk's "
            f"jitter)",
        )
        for name, (posts, took) in (("service", per_service), ("slo", per_slo))
    ]


def _posts(slack: Any) -> int:
    return sum(1 for m, _ in slack.calls if m == "chat.postMessage")


def _updates(slack: Any) -> int:
    return sum(1 for m, _ in slack.calls if m == "chat.update")


def _when(check: Any, timeout: float) -> float:
    """The time.monotonic() at which `check()` first held (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"condition not met within {timeout:g} s")


def _breached(prom_url: str, query: str, threshold: float) -> bool:
    for item in prom_result(prom_url, "query", {"query": query}, timeout=5):
        if item["metric"].get("sentinel_part", "value") == "value":
            return float(item["value"][1]) > threshold
    return False


# -- main ---------------------------------------------------------------------------------------


def guarded(name: str, measure: Any) -> list[Row]:
    """One part of the table; a failure is a row saying so, not a lost table."""
    try:
        return measure()  # type: ignore[no-any-return]
    except Exception as exc:
        log(f"{name} failed: {type(exc).__name__}: {exc}")
        return [(name, "FAILED", f"{type(exc).__name__}: {str(exc)[:200]}")]


def linearity(facts: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for before, after in itertools.pairwise(facts):
        grow = after["services"] / before["services"]
        for name in ("raw", "recorded"):
            if name in before and name in after:
                ratio = after[name]["cpu"] / before[name]["cpu"]
                target = f"target <= {grow * 1.2:.0f}" if grow == 10 else "linear"
                rows.append(
                    (
                        f"cost {before['services']:,} -> {after['services']:,} svc, {name}",
                        f"{ratio:.1f} x CPU",
                        f"{grow:g} x the instances ({target}); cycle p50 "
                        f"{after[name]['p50'] / before[name]['p50']:.1f} x",
                    )
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", default="100,1000,10000", help="sizes, comma-separated")
    parser.add_argument("--hours", type=float, default=6.0, help="history in the dataset")
    parser.add_argument("--step", type=int, default=60, help="dataset sample step, seconds")
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="gate load per run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--gate-at", type=int, default=0, help="size for gate/Prometheus CPU")
    parser.add_argument("--alert-trials", type=int, default=2)
    parser.add_argument(
        "--storm", type=int, default=60, help="services breaching at once for the Slack rows"
    )
    parser.add_argument(
        "--gate-cycles",
        default="5s",
        help="the daemon's cycle interval during the gate rows ('1h': the gate alone, no cycle "
        "after the first)",
    )
    parser.add_argument(
        "--gate-only", action="store_true", help="only the gate rows, at the --gate-at size"
    )
    parser.add_argument(
        "--gate-pairs",
        type=int,
        default=2,
        help="gate / bare load runs, alternating (their p99s differ by ~2 ms run to run)",
    )
    args = parser.parse_args()
    stop_children_on_sigterm()
    if not find_binary("prometheus"):
        print("prometheus is not installed: apt-get install prometheus", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.services.split(",")]
    gate_at = args.gate_at or max([s for s in sizes if s <= 1000] or [min(sizes)])
    started = time.monotonic()
    rows: list[Row] = []
    facts = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.gate_only:
            rows = gate_only(args, Path(tmp), gate_at)
            print_table(rows, args, time.monotonic() - started)
            return 0
        for services in sizes:
            size_rows, size_facts = measure_size(args, Path(tmp), services, services == gate_at)
            rows += size_rows
            facts.append(size_facts)
        rows += linearity(facts)
        if args.alert_trials > 0:
            log("alert latency with the live stack")
            rows += guarded("alert latency", lambda: alert_latency(Path(tmp), args.alert_trials))
        if args.storm > 0:
            log(f"Slack storm of {args.storm} services")
            rows += guarded("Slack storm", lambda: slack_storm(Path(tmp), args.storm))
    print_table(rows, args, time.monotonic() - started)
    return 0


def print_table(rows: list[Row], args: argparse.Namespace, took: float) -> None:
    load = os.getloadavg()
    print(
        f"\nSentinel benchmark: {args.services} services x {SLIS} SLIs, {args.hours:g} h of data "
        f"every {args.step} s, {os.cpu_count()} CPUs, load {load[0]:.1f} {load[1]:.1f}, "
        f"{took / 60:.1f} min"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>22}  ratio / target / noise")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>22}  {note}")


if __name__ == "__main__":
    raise SystemExit(main())
