"""Soak: 100,000 evaluation cycles of the daemon against the benchmark dataset, sampling
RSS, open file descriptors and the state database's size.

    .venv/bin/python reliability/soak.py                 # 100,000 cycles
    .venv/bin/python reliability/soak.py --cycles 2000   # a short run

In-process and at full speed, not a `sentinel run` process on a 100 ms interval: the
smallest interval a rule file accepts is 1 s, and 100,000 cycles of it are 28 hours. So
this builds the daemon exactly as `sentinel run` does (`build_daemon`: store, alert
manager, dispatcher and state retention as background tasks, the real Prometheus client)
on a simulated clock that advances one interval (1 s) per cycle, and calls
`Daemon.run_group` for each rule group back to back: the daemon's own cycle, minus the
scheduler's waiting. The Prometheus data is laid out on the same clock: the benchmark's
services (bench/dataset.py, the benchmark's rules: some breach for good, the rest are
healthy) plus `--flapping` services whose 5xx ratio goes bad for 10 minutes every 20,
so alerts fire and resolve all run long (one notification each way through a `log`
notifier) and the outbox, incidents and retention have work. `state.retention` is its
minimum, 1 h of simulated time (about 3,600 cycles), so a run longer than that shows
whether the database stays bounded.

Printed: cycles, wall time and cycles/s; RSS, FDs, the database size and SQLite's own
heap at every sample; the RSS slope by least squares after warm-up (KB per 1,000 cycles);
the largest database size after the first retention hour; incidents opened and
notifications sent. Exits 1 when the slope exceeds `--max-slope`, SQLite's heap outgrows
its page cache limit, or the database keeps growing after the first retention hour.

SQLite's page cache (`cache_size`: 512 KiB, set by the state store; SQLite's default is
2 MB) fills slowly: the state database is ~5 MB and a cycle touches a few new pages, so
the cache grows ~100 KB per 1,000 cycles until it reaches its limit (~20,000 cycles at
2 MB), and then stays there. That warm-up is bounded by design, not
a leak, but it dominates a raw RSS slope over a run of that length. So the slope judged is
RSS minus SQLite's heap (`sqlite3_memory_used`, read from the same libsqlite3 the
`sqlite3` module uses), and SQLite's heap is judged on its own against its limit. Where
the library cannot be read (a statically linked Python), the raw RSS slope is judged.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from dataset import STEP, write_chunk  # noqa: E402
from run import RULES as BENCH_RULES  # noqa: E402
from support.procs import stop_children_on_sigterm  # noqa: E402
from support.promserver import PrometheusServer, backfill  # noqa: E402

INTERVAL = 1  # seconds of simulated time per cycle
RETENTION = 3600  # state.retention's minimum
FLAP_PERIOD = 1200  # seconds: bad for the first half of each period (offset per service)

FLAP_RULES = """\
version: sentinel/v1
service: flapping
labels: {namespace: soak}
slos:
  - name: http-5xx-ratio
    sli:
      ratio:
        bad: {metric: soak_requests_total, matchers: {code: "=~5.."}}
        total: {metric: soak_requests_total}
    objective: 99%
    window: 1m
    group_by: [service]
    alert: {for: 0s, keep_firing_for: 0s}
"""


def flap_bad(k: int, t: int, start: int) -> bool:
    return ((t - start + k * 60) % FLAP_PERIOD) < FLAP_PERIOD // 2


def write_flapping(path: Path, services: int, start: int, end: int, origin: int) -> None:
    """soak_requests_total{service="flap-k", code}: 100 requests/s, 5 % of them 5xx while
    bad; cumulative from `origin` so chunks join up."""
    with path.open("w") as out:
        out.write("# TYPE soak_requests counter\n")
        for k in range(services):
            labels = f'namespace="soak",service="flap-{k}"'
            for code in ("200", "500"):
                total = 0.0
                for t in range(origin, end, STEP):
                    if t > origin:
                        bad = 5.0 * STEP if flap_bad(k, t - STEP, origin) else 0.0
                        total += bad if code == "500" else 100.0 * STEP - bad
                    if t >= start:
                        out.write(f'soak_requests_total{{{labels},code="{code}"}} {total:g} {t}\n')
        out.write("# EOF\n")


def build_data(work: Path, services: int, flapping: int, start: int, end: int) -> Path:
    storage = work / "prom" / "data"
    chunk = 7200
    for t in range(start, end + 1, chunk):
        path = work / "chunk.om"
        write_chunk(path, services, t, min(t + chunk, end + 1), start)
        backfill(path, storage)
        write_flapping(path, flapping, t, min(t + chunk, end + 1), start)
        backfill(path, storage)
    (work / "chunk.om").unlink(missing_ok=True)
    return storage


class SimClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _libsqlite3() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        lib.sqlite3_libversion.restype = ctypes.c_char_p
    except (OSError, AttributeError):
        return None
    # Only meaningful if it is the library the sqlite3 module is linked against.
    import sqlite3

    return lib if lib.sqlite3_libversion().decode() == sqlite3.sqlite_version else None


LIBSQLITE3 = _libsqlite3()


def sqlite_heap() -> int:
    """Bytes SQLite holds from malloc (page cache, schema, prepared statements); 0 if
    unknown."""
    return int(LIBSQLITE3.sqlite3_memory_used()) if LIBSQLITE3 is not None else 0


def db_bytes(path: Path) -> int:
    """The database file and its write-ahead log (SQLite reuses the log after each
    checkpoint; it grows only if checkpoints cannot complete)."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


async def soak(args: argparse.Namespace, work: Path, prom_url: str, start: int) -> int:
    from sentinel.config import load_config
    from sentinel.daemon import allocator, collector
    from sentinel.daemon.assembly import build_daemon
    from sentinel.rules.loader import load_rules

    allocator.tune()  # as `sentinel run` does
    collector.tune()
    (work / "rules").mkdir()
    (work / "rules" / "platform.yaml").write_text(BENCH_RULES.replace("PERIOD", ""))
    (work / "rules" / "flapping.yaml").write_text(FLAP_RULES)
    config_path = work / "config.yaml"
    config_path.write_text(
        textwrap.dedent(
            f"""\
            prometheus: {{url: "{prom_url}", timeout: 10s, retries: 0}}
            rules: [rules/*.yaml]
            evaluation: {{interval: {INTERVAL}s}}
            state: {{path: state.db, retention: {RETENTION}s}}
            notifiers:
              log: {{type: log}}
            """
        )
    )
    os.chdir(work)
    config = load_config(config_path)
    clock = SimClock(float(start + 600))
    built = await build_daemon(str(config_path), config, load_rules(config), clock)
    groups = [g.name for g in built.daemon.rules.groups]
    state = work / "state.db"
    samples: list[tuple[int, int, int, int, int]] = []  # cycle, RSS KB, FDs, DB bytes, SQLite heap
    cache_pages = int(built.store.db.execute("PRAGMA cache_size").fetchone()[0])
    page_size = int(built.store.db.execute("PRAGMA page_size").fetchone()[0])
    # cache_size < 0 is a limit in KiB, > 0 in pages.
    cache_limit = -cache_pages * 1024 if cache_pages < 0 else cache_pages * page_size
    every = max(1, args.cycles // 100)
    started = time.monotonic()
    try:
        for cycle in range(1, args.cycles + 1):
            clock.now += INTERVAL
            for name in groups:
                await built.daemon.run_group(name, now=clock.now)
            await asyncio.sleep(0)  # let the dispatcher and the retention run
            if cycle % every == 0 or cycle == args.cycles:
                fds = len(os.listdir("/proc/self/fd"))
                samples.append((cycle, rss_kb(), fds, db_bytes(state), sqlite_heap()))
                if cycle % (every * 10) == 0:
                    c, r, f, d, h = samples[-1]
                    print(
                        f"  cycle {c:>7,}  RSS {r / 1024:6.1f} MB  FDs {f:>3}  "
                        f"DB {d / 1024:8.1f} KB  SQLite heap {h / 1024:6.0f} KB  "
                        f"frozen {gc.get_freeze_count():>9,}  "
                        f"({time.monotonic() - started:6.0f} s)",
                        flush=True,
                    )
        await built.dispatcher.deliver_due()
        wall = time.monotonic() - started
        incidents = built.store.db.execute("SELECT count(*) FROM incidents").fetchone()[0]
        outbox = built.store.outbox_stats()
        metrics = built.daemon.metrics
        delivered = metrics.notifications.labels("log", "delivered")._value.get()
    finally:
        await built.cleanup()
        await built.daemon.stop()
    return report(args, samples, wall, incidents, outbox, int(delivered), cache_limit)


def report(
    args: argparse.Namespace,
    samples: list[tuple[int, int, int, int, int]],
    wall: float,
    incidents: int,
    outbox: dict[str, int],
    delivered: int,
    cache_limit: int,
) -> int:
    # Warm-up: the first tenth, and at least until the retention has begun deleting (the
    # database, and SQLite's page cache of it, grow until then by design).
    warm = [s for s in samples if s[0] > max(args.cycles // 10, RETENTION + 600)]
    judged = len(warm) >= 10
    warm = warm if judged else [s for s in samples if s[0] > args.cycles // 10]
    rss_slope = slope([(c / 1000, r) for c, r, *_ in warm])
    heap_slope = slope([(c / 1000, h / 1024) for c, _, _, _, h in warm])
    # RSS less SQLite's heap: what is left when the page cache's bounded warm-up is
    # taken out (judged on its own below). Without the library, raw RSS.
    net_slope = slope([(c / 1000, r - h / 1024) for c, r, _, _, h in warm])
    heap_max = max(s[4] for s in samples)
    heap_allowed = cache_limit * 1.25 + 1024 * 1024  # + schema and prepared statements
    after_hour = [s for s in samples if s[0] > RETENTION + 600]
    print(f"\nSoak: {args.cycles:,} cycles in {wall:.0f} s ({args.cycles / wall:.0f} cycles/s)")
    print(f"  each cycle: {args.services} benchmark services x 3 SLOs + {args.flapping} flapping")
    print(
        f"  RSS {min(s[1] for s in samples) / 1024:.1f}-{max(s[1] for s in samples) / 1024:.1f} "
        f"MB; slope after warm-up (cycle {warm[0][0]:,} on) {rss_slope:+.1f} KB per 1,000 cycles"
    )
    if LIBSQLITE3 is not None:
        print(
            f"  SQLite heap {min(s[4] for s in samples) / 1024:.0f}-{heap_max / 1024:.0f} KB "
            f"(page cache limit {cache_limit / 1024:.0f} KB), slope {heap_slope:+.1f}; "
            f"RSS less SQLite's heap: slope {net_slope:+.1f} KB per 1,000 cycles (judged)"
        )
    else:
        print("  SQLite heap unknown (libsqlite3 not loadable): the raw RSS slope is judged")
    print(f"  gc-frozen objects at the end: {gc.get_freeze_count():,} (flat: nothing frozen leaks)")
    print(f"  open FDs {min(s[2] for s in samples)}-{max(s[2] for s in samples)}")
    print(f"  incidents kept {incidents}; notifications delivered {delivered}; outbox {outbox}")
    print("\n  cycle      RSS MB   FDs   DB KB  SQLite KB")
    step = max(1, len(samples) // 10)
    for c, r, f, d, h in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        print(f"  {c:>7,}  {r / 1024:7.1f}  {f:>4}  {d / 1024:7.1f}  {h / 1024:9.0f}")
    problems = []
    if not judged:
        print(f"\n  (too short to judge the slope: judged after cycle {RETENTION + 600:,})")
    elif LIBSQLITE3 is None and rss_slope > args.max_slope:
        problems.append(f"RSS slope {rss_slope:.1f} KB/1,000 cycles > {args.max_slope}")
    elif LIBSQLITE3 is not None and net_slope > args.max_slope:
        problems.append(
            f"RSS less SQLite's heap: slope {net_slope:.1f} KB/1,000 cycles > {args.max_slope}"
        )
    if heap_max > heap_allowed:
        problems.append(
            f"SQLite heap {heap_max / 1024:.0f} KB > its page cache limit "
            f"{cache_limit / 1024:.0f} KB (+25 % and 1 MB for schema and statements)"
        )
    if len(after_hour) >= 4:
        first_half = max(s[3] for s in after_hour[: len(after_hour) // 2])
        second_half = max(s[3] for s in after_hour[len(after_hour) // 2 :])
        print(
            f"\n  DB after the first retention hour: max {first_half / 1024:.0f} KB, then "
            f"{second_half / 1024:.0f} KB"
        )
        if second_half > first_half * 1.25 + 256 * 1024:
            problems.append("state DB still growing after the first retention hour")
    if problems:
        print("\nSOAK FAILED: " + "; ".join(problems))
        return 1
    print("\nsoak held: RSS flat (less SQLite's bounded page cache), FDs flat, state DB bounded")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--services", type=int, default=20, help="benchmark services")
    parser.add_argument("--flapping", type=int, default=5, help="services that flap")
    parser.add_argument("--max-slope", type=float, default=20.0, help="KB of RSS per 1,000 cycles")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    stop_children_on_sigterm()
    logging.basicConfig(level=logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="sentinel-soak-"))
    try:
        if args.keep:
            print(f"working directory: {work}")
        end = int(time.time()) - 3600
        start = end - (args.cycles * INTERVAL + 900)
        t0 = time.monotonic()
        storage = build_data(work, args.services, args.flapping, start, end)
        print(f"dataset: {(end - start) / 3600:.1f} h backfilled in {time.monotonic() - t0:.0f} s")
        prom = PrometheusServer(work / "prom")
        prom.workdir.mkdir(exist_ok=True)
        assert storage == prom.storage
        prom.start(timeout=120)
        try:
            return asyncio.run(soak(args, work, prom.url, start))
        finally:
            prom.stop()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
