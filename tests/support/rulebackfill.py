"""Backfill exported recording rules the way a live ruler evaluates them.

`promtool tsdb create-blocks-from rules` cannot evaluate a rule that reads another
recorded series in the same pass, and it evaluates each rule as a range query, where
`@ end()` means the end of the range, not the evaluation time (the fresh period ratio
needs the latter). So rules are grouped by dependency level (a rule reading a series
recorded by a level-n rule is level n+1); level 0 (raw series only) may go through
promtool's rule backfill, every other level is evaluated here with one instant query per
rule and group slot (`start + phase + k * interval`, as a ruler does), written as
OpenMetrics and imported with `promtool tsdb create-blocks-from openmetrics`. Between
levels Prometheus restarts to read the new blocks.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sentinel.units import parse_duration
from support.procs import http
from support.promserver import PrometheusServer, find_binary

Group = dict[str, Any]


def levels(groups: Sequence[Group]) -> list[list[Group]]:
    """The recording rules of `groups` split by dependency level, each level a list of
    groups (same names and intervals, only that level's rules)."""
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    level: dict[str, int] = {}

    def of(rule: dict[str, Any]) -> int:
        names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["expr"])) & recorded
        names.discard(rule["record"])
        return 1 + max((level.get(n, 0) for n in names), default=-1)

    rules = [r for g in groups for r in g["rules"] if "record" in r]
    for _ in rules:  # a fixed point: at most one round per rule
        for rule in rules:
            level[rule["record"]] = max(level.get(rule["record"], 0), of(rule))
    out: list[list[Group]] = []
    for n in range(1 + max(level.values(), default=-1)):
        out.append(
            [
                {**g, "rules": [r for r in g["rules"] if "record" in r and of(r) == n]}
                for g in groups
                if any("record" in r and of(r) == n for r in g["rules"])
            ]
        )
    return out


def openmetrics_labels(labels: dict[str, str]) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
        if k != "__name__"
    )
    return f"{{{inner}}}"


def evaluate_level(
    prom_url: str,
    groups: Sequence[Group],
    start: float,
    end: float,
    out: Path,
    default_interval: float = 60.0,
    phase: Callable[[Group, float], float] = lambda group, interval: 0.0,
) -> int:
    """Evaluate every rule of `groups` at its group's slots in [start, end] by instant
    queries and write the samples to `out` as OpenMetrics; returns the samples written."""
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for group in groups:
        interval = parse_duration(group["interval"]) if "interval" in group else default_interval
        first = start + phase(group, interval)
        slots = [first + k * interval for k in range(int((end - first) // interval) + 1)]
        for t in slots:
            for rule in group["rules"]:
                params = urllib.parse.urlencode({"query": rule["expr"], "time": f"{t:.3f}"})
                status, body, _ = http("GET", f"{prom_url}/api/v1/query?{params}")
                assert status == 200, body
                for sample in body["data"]["result"]:
                    labels = {**sample["metric"], **rule.get("labels", {})}
                    value = float(sample["value"][1])
                    family = series.setdefault(rule["record"], {})
                    family.setdefault(openmetrics_labels(labels), []).append((t, value))
    written = 0
    with out.open("w") as f:
        for name, family in series.items():
            f.write(f"# TYPE {name} gauge\n")
            for labels_text, samples in family.items():
                for t, value in samples:
                    shown = "NaN" if math.isnan(value) else repr(value)
                    f.write(f"{name}{labels_text} {shown} {t:.3f}\n")
                    written += 1
        f.write("# EOF\n")
    return written


def import_openmetrics(
    path: Path, prom: PrometheusServer, scratch: Path, max_block_duration: str = ""
) -> None:
    """Blocks from `path` into a stopped-and-restarted `prom` (`max_block_duration`, e.g.
    "744h", writes a month in a few blocks, as a long-running server's compactor would)."""
    promtool = find_binary("promtool")
    assert promtool
    if scratch.exists():
        shutil.rmtree(scratch)
    longer = [f"--max-block-duration={max_block_duration}"] if max_block_duration else []
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", *longer, str(path), str(scratch)],
        check=True,
        capture_output=True,
    )
    prom.stop()
    for block in scratch.iterdir():
        shutil.copytree(block, prom.storage / block.name)
    prom.start(timeout=300)


def backfill_chain(
    prom: PrometheusServer,
    groups: Sequence[Group],
    start: float,
    end: float,
    work: Path,
    phase: Callable[[Group, float], float] = lambda group, interval: 0.0,
    first_level: int = 1,
) -> None:
    """Levels `first_level`.. of `groups`, one after another, as a ruler evaluates them."""
    for n, level in enumerate(levels(groups)):
        if n < first_level:
            continue
        path = work / f"level-{n}.om"
        evaluate_level(prom.url, level, start, end, path, phase=phase)
        import_openmetrics(path, prom, work / f"level-{n}-blocks")
