"""Long steps on the event loop, cut into short slices with the loop's other work between.

After each cycle the daemon walks every result several times (status-change logs, the SLO
gauges, the alert state machines): a few thousand results took ~100 ms at 1,000 services,
in one piece, and every gate request that arrived meanwhile waited for all of it. The
walks are written as generators that yield every few items; `drain` runs one on the
event loop and, once a slice has used its time (`SLICE_SECONDS`), gives the loop one
turn (`await asyncio.sleep(0)`: the requests whose bytes arrived meanwhile are answered)
before the next slice. `run` runs the same generator to its end in one piece, for
callers that are not on the loop or need it done at once (tests, the CLI, reloads).

Slicing lets other coroutines run in the middle of a step: a step that shares state with
others must hold a lock for its whole length (the alert manager does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

# How long a slice may hold the loop: well under a gate request's own latency (a few ms
# with 50 concurrent pipelines), long enough that the yields cost nothing measurable
# (one loop turn, ~20 µs, per 2 ms of work).
SLICE_SECONDS = 0.002

# How many items a generator handles between two of its yields (the time is checked at
# each yield; a yield costs ~0.1 µs, an item of these walks 5-20 µs).
ITEMS_PER_YIELD = 32


class Slicer:
    """The time left in the current slice of one step; `pause` starts the next slice."""

    __slots__ = ("_until", "budget", "slices")

    def __init__(self, budget: float | None = None) -> None:
        self.budget = SLICE_SECONDS if budget is None else budget
        self.slices = 1
        self._until = time.perf_counter() + self.budget

    def due(self) -> bool:
        return time.perf_counter() >= self._until

    async def pause(self) -> None:
        """Give the event loop one turn, then start a new slice."""
        await asyncio.sleep(0)
        self.slices += 1
        self._until = time.perf_counter() + self.budget


async def drain(steps: Iterable[object], slicer: Slicer | None = None) -> None:
    """Run a step written as a generator, pausing between slices."""
    slicer = slicer or Slicer()
    for _ in steps:
        if slicer.due():
            await slicer.pause()


def run(steps: Iterable[object]) -> None:
    """Run a step written as a generator in one piece."""
    for _ in steps:
        pass
