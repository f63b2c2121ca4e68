"""Profile one size of the benchmark's multi-window cycle: where Sentinel's CPU goes.

    .venv/bin/python bench/profile_cycle.py --services 1000 --work /tmp/prof1000
    .venv/bin/python bench/profile_cycle.py --work /tmp/prof1000 --py-spy /tmp/cycle.svg
    .venv/bin/python bench/profile_cycle.py --work /tmp/prof1000 --py-spy /tmp/cycle.txt  # raw
    .venv/bin/python bench/profile_cycle.py --work /tmp/prof1000 --py-spy /tmp/c.txt --gil

The dataset and Prometheus' storage are kept in `--work` and reused by the next run (the
backfill is the slow part); the cycles run in this process, so `--py-spy` records only
Sentinel's own work (the queries' wait on Prometheus shows as idle). It prints the CPU of
each cycle and the split between the engine's stages (queries + parsing, evaluation).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from run import RULES, build_dataset, config_text
from support.promserver import PrometheusServer


async def cycles(config_path: Path, at: float, count: int, daemon: bool) -> list[float]:
    from sentinel.config import load_config
    from sentinel.evaluate.wiring import build_engine
    from sentinel.rules.loader import load_rules

    config = load_config(config_path)
    slos = load_rules(config).slos
    engine = build_engine(config, daemon=daemon)
    step = 30.0 if daemon else 0.0  # the daemon's cycles: 30 s apart, long windows kept
    cpus = []
    try:
        for i in range(count + 1):
            c0 = time.process_time()
            report = await engine.evaluate_once(slos, at - (count - i) * step)
            cpus.append(time.process_time() - c0)
            gc.freeze()
        print(
            f"{len(report.results):,} results, {report.queries} queries, "
            f"{len(report.errors)} errors",
            file=sys.stderr,
        )
    finally:
        for source in engine.sources.values():
            await source.close()
    return cpus[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--step", type=int, default=60)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--recorded", action="store_true", help="budget_source: recorded")
    parser.add_argument("--daemon", action="store_true", help="the daemon's engine, 30 s apart")
    parser.add_argument("--py-spy", type=Path, help="write a py-spy flame graph here")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="py-spy samples only the thread holding the GIL (the worker threads' waits "
        "otherwise show as work)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work: Path = args.work
    stamp = work / "end"
    if args.child:
        from sentinel.daemon import allocator, collector

        allocator.tune()  # as `sentinel run` does
        collector.tune()
        end = int(stamp.read_text())
        cpus = asyncio.run(cycles(work / "config.yaml", end, args.cycles, args.daemon))
        per_k = statistics.median(cpus) / (args.services * 3) * 1e6
        print(
            f"CPU per cycle p50 {statistics.median(cpus) * 1000:.1f} ms "
            f"(min {min(cpus) * 1000:.1f}), {per_k:.1f} ms per 1,000 SLO instances"
        )
        return 0
    if not stamp.exists():
        work.mkdir(parents=True, exist_ok=True)
        end = int(time.time()) // args.step * args.step
        build_dataset(work, args.services, args.hours, end, args.step)
        stamp.write_text(str(end))
    prom = PrometheusServer(work / "prom")
    prom.start(timeout=600)
    try:
        rules = work / "rules"
        rules.mkdir(exist_ok=True)
        (rules / "platform.yaml").write_text(RULES)
        extra = "evaluation: {budget_source: recorded}\n" if args.recorded else ""
        (work / "config.yaml").write_text(config_text(prom.url, rules, extra))
        child = [sys.executable, __file__, "--child", "--work", str(work)]
        child += ["--services", str(args.services), "--cycles", str(args.cycles)]
        child += ["--daemon"] if args.daemon else []
        if args.py_spy:
            spy = str(Path(sys.executable).with_name("py-spy"))
            form = ["-f", "raw"] if args.py_spy.suffix == ".txt" else []  # collapsed stacks
            child = [
                spy,
                "record",
                "-o",
                str(args.py_spy),
                "-r",
                "500",
                *form,
                *(["--gil"] if args.gil else []),
                "--",
                *child,
            ]
        return subprocess.run(child, env=dict(os.environ)).returncode
    finally:
        prom.stop()


if __name__ == "__main__":
    sys.exit(main())
