"""One run of a synthetic probe, start to verdict: the chat request and the readiness
check (concurrently, each bounded by the probe's timeout) through sentinel/sources/
probe.py, judged by the pure sentinel/evaluate/probe_check.py.

Shared by the daemon's probe schedule (sentinel/daemon/probes.py) and `sentinel probe
--once`. The wall clock is injected; durations use the monotonic clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sentinel.config import ProbeConfig
from sentinel.evaluate.probe_check import ProbeRun, judge
from sentinel.sources.probe import ProbeClient


async def run_probe(
    name: str, config: ProbeConfig, client: ProbeClient, clock: Callable[[], float] = time.time
) -> ProbeRun:
    at, started = clock(), time.monotonic()
    chat, ready = await asyncio.gather(client.chat(), client.ready())
    return judge(name, config, chat, ready, at, time.monotonic() - started)


async def run_probes_once(
    probes: dict[str, ProbeConfig], clock: Callable[[], float] = time.time
) -> dict[str, ProbeRun]:
    """Every probe once, concurrently, each with its own short-lived session."""

    async def one(name: str, config: ProbeConfig) -> ProbeRun:
        client = ProbeClient(name, config)
        try:
            return await run_probe(name, config, client, clock)
        finally:
            await client.close()

    runs = await asyncio.gather(*(one(n, c) for n, c in probes.items()))
    return dict(zip(probes, runs, strict=True))
