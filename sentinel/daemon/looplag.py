"""Event-loop lag: how late the loop runs what is ready, measured from inside the daemon.

Every answer Sentinel gives (the gate, health, /metrics, the API) waits while the event
loop runs something else. A background task sleeps a fixed tick and records how much
later than asked it woke up: that overshoot is the time the loop was held by other work
(a cycle's record step, a JSON answer parsed in the loop, a worker thread keeping the
GIL). It feeds the `sentinel_event_loop_lag_seconds` histogram (alert on its rate-based
p99) and the `event_loop` check of `/health/detailed` (the largest lag of the last
minute and since start), so "the gate is slow while cycles run" shows as a number
instead of a guess.

The probe costs one wake-up per tick (about 10 µs of CPU every 10 ms on a busy loop).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram

# How often the probe wakes up; also the resolution of what it sees (a loop held 3 ms
# within one tick shows as up to 3 ms, one held for less than the tick may show as 0).
TICK_SECONDS = 0.01
# The window of `/health/detailed`'s recent figures.
RECENT_SECONDS = 60.0
# A recent maximum above this makes the check "degraded": every request waited that long.
DEGRADED_SECONDS = 0.25


class LoopLagMonitor:
    """Sleeps `tick`, records the overshoot. Start it with `run()` as a supervised task."""

    def __init__(
        self,
        histogram: Histogram,
        tick: float = TICK_SECONDS,
        recent: float = RECENT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.histogram = histogram
        self.tick = tick
        self.recent = recent
        self.clock = clock
        self.max_seconds = 0.0
        self.last_seconds = 0.0
        self.samples = 0
        # (monotonic time, lag) of the ticks that overshot by more than one tick: the
        # recent maximum and the count of long holds come from these, and a loop that runs
        # on time records nothing here.
        self._spikes: deque[tuple[float, float]] = deque(maxlen=10_000)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.tick
            await asyncio.sleep(self.tick)
            self.record(max(0.0, loop.time() - asked))

    def record(self, lag: float) -> None:
        self.samples += 1
        self.last_seconds = lag
        self.histogram.observe(lag)
        if lag > self.max_seconds:
            self.max_seconds = lag
        if lag > self.tick:
            self._spikes.append((self.clock(), lag))

    def recent_max(self) -> float:
        since = self.clock() - self.recent
        spikes = self._spikes
        while spikes and spikes[0][0] < since:
            spikes.popleft()
        return max((lag for _, lag in spikes), default=0.0)

    def health(self) -> dict[str, Any]:
        """The `event_loop` check of `/health/detailed`."""
        recent = self.recent_max()
        return {
            "status": "degraded" if recent > DEGRADED_SECONDS else "healthy",
            "lag_seconds": round(self.last_seconds, 6),
            "max_lag_seconds_1m": round(recent, 6),
            "max_lag_seconds": round(self.max_seconds, 6),
            "tick_seconds": self.tick,
            "samples": self.samples,
        }
