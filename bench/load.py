"""A small HTTP load generator: N requests over C keep-alive connections, latency per request.

Uses `wrk` when installed (it does not compete with the server for the GIL); otherwise an
aiohttp client in this process, which is itself CPU-bound on a 2-core machine, so its
figures are a lower bound on what the server can do.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp


@dataclass
class LoadResult:
    tool: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def non_2xx(self) -> int:
        """Answers with a status outside 2xx (wrk counts them without their codes: key 0;
        the aiohttp fallback counts every status)."""
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


def run_load(
    url: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    paths: Sequence[str] = (),
) -> LoadResult:
    """Load `url`; with `paths` (each starting with /), every request takes the next path
    of the list in turn instead (many distinct requests: no cache helps)."""
    if shutil.which("wrk"):
        return _wrk(url, headers, connections, seconds, paths)
    return asyncio.run(_aiohttp_load(url, headers, connections, seconds, paths))


def _wrk(
    url: str, headers: dict[str, str], connections: int, seconds: float, paths: Sequence[str]
) -> LoadResult:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    with tempfile.TemporaryDirectory() as tmp:
        if paths:
            script = Path(tmp) / "paths.lua"
            listed = ",\n".join(json.dumps(p) for p in paths)  # JSON strings are Lua strings
            script.write_text(
                f"local paths = {{\n{listed}\n}}\nlocal i = 0\n"
                "request = function()\n  i = i % #paths + 1\n"
                "  return wrk.format(nil, paths[i])\nend\n"
            )
            cmd += ["-s", str(script)]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    elapsed = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    statuses = {0: int(non2xx.group(1))} if non2xx else {}
    return LoadResult("wrk", total, elapsed, pct("50"), pct("99"), statuses)


async def _aiohttp_load(
    url: str, headers: dict[str, str], connections: int, seconds: float, paths: Sequence[str]
) -> LoadResult:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        base = url.split("/", 3)
        origin = "/".join(base[:3])
        turn = itertools.count()

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                target = origin + paths[next(turn) % len(paths)] if paths else url
                async with session.get(target) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return LoadResult("aiohttp", len(latencies), elapsed, q[49] * 1000, q[98] * 1000, statuses)
