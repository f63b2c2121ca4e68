"""Long steps on the event loop, cut into short slices with the loop's other work between.

A cycle's CPU work (parsing its answers, evaluating every instance and its burn tiers)
and the walks over every result after it (status-change logs, the SLO gauges, the alert
state machines) are a few thousand items at 1,000 services, ~100-200 ms in all; in one
piece, every gate request that arrived meanwhile waited for all of it. They are written
as generators that yield every few items; `drain` (or `finish`, for a step that returns
a result) runs one on the event loop and, once a slice has used its time
(`SLICE_SECONDS`), lets the loop answer what arrived meanwhile before the next slice: one
turn when it is idle, more while it is busy (`SHARE`, until a deadline: `pacing_for`).
`run` and `finish_now` run the same
generator to its end in one piece, for callers that are not on the loop or need it done
at once (tests, the CLI, backtests, reloads).

Not worker threads: a thread running Python takes the interpreter each time the loop
thread gives it up for a system call (every socket read and write), so a gate answer
written while a cycle evaluated in a thread waited for it, several times per request.

Slicing lets other coroutines run in the middle of a step: a step that shares state with
others must hold a lock for its whole length (the alert manager does).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar, cast

T = TypeVar("T")
U = TypeVar("U")

# A step written as a generator that yields between items and returns its result.
Steps = Generator[None, None, T]

# How long a slice may hold the loop: well under a gate request's own latency (a few ms
# with 50 concurrent pipelines), long enough that the yields cost nothing measurable
# (one loop turn, ~20 µs, per 1 ms of work).
SLICE_SECONDS = 0.001

# How many items a generator handles between two of its yields (the time is checked at
# each yield; a yield costs ~0.1 µs, an item of these walks 5-20 µs).
ITEMS_PER_YIELD = 32

# The same for the evaluation's inner loops (an SLO's instances, an answer's samples),
# whose items cost 1-12 µs: a chunk is a list comprehension between two yields.
CHUNK = 128
# An answer's samples parsed, grouped or counted between two yields (~0.5 µs each).
SAMPLES_CHUNK = 1024


# The share of a busy loop's time a sliced step takes: after a slice of s seconds it lets
# the loop run for s * (1 - SHARE) / SHARE before the next one, as long as the loop has
# other work (a loop turn took longer than IDLE_TURN). With one turn between slices a
# cycle took half the loop while the gate was loaded, and every request arriving then
# waited twice as long (the gate's p99 while cycles ran: +5-7 ms over bare aiohttp). An
# idle loop gives the step all its time: a cycle without load is not slowed.
SHARE = 0.2
# A loop turn shorter than this counts as idle: it answered at most two or three gate
# requests (~60 µs each), and a step then takes as many turns as it likes.
IDLE_TURN = 0.0002


class PaceDeadline:
    """Until when (time.perf_counter) the steps of a task pace themselves (`pacing_for`);
    `end` stops it at once (a daemon stopping)."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at

    def end(self) -> None:
        self.at = -math.inf


# The current task's deadline (inherited by the tasks it starts). Unset: no deadline.
_PACED_UNTIL: ContextVar[PaceDeadline | None] = ContextVar("paced_until", default=None)


@contextmanager
def pacing_for(seconds: float) -> Iterator[PaceDeadline]:
    """Steps run in this context (and the tasks it starts) pace themselves for `seconds`
    from now at most, then take every other loop turn as without pacing: a cycle paces
    for half its timeout, so a loaded gate slows it, never into an overrun."""
    deadline = PaceDeadline(time.perf_counter() + seconds)
    token = _PACED_UNTIL.set(deadline)
    try:
        yield deadline
    finally:
        _PACED_UNTIL.reset(token)


class _Pace:
    """When the next slice of any step may start while the loop is busy. Shared: the
    steps running at once (a cycle's answers being parsed, its evaluation, another
    group's record step) take SHARE of the loop between them, not each (four at once
    took 70 % of it)."""

    resume = 0.0


class Slicer:
    """The time left in the current slice of one step; `pause` starts the next slice."""

    __slots__ = ("_started", "_until", "budget", "slices")

    def __init__(self, budget: float | None = None) -> None:
        self.budget = SLICE_SECONDS if budget is None else budget
        self.slices = 1
        self._started = time.perf_counter()
        self._until = self._started + self.budget

    def due(self) -> bool:
        return time.perf_counter() >= self._until

    def skip(self, seconds: float) -> None:
        """Leave `seconds` out of the current slice (the step waited meanwhile)."""
        self._started += seconds
        self._until += seconds

    async def pause(self) -> None:
        """Give the event loop one turn, and more while it is busy (`SHARE`, until the
        task's pacing deadline); then start a new slice."""
        now = time.perf_counter()
        deadline = _PACED_UNTIL.get()
        if deadline is not None and now >= deadline.at:
            await asyncio.sleep(0)  # past its pacing deadline: one turn
            now = time.perf_counter()
        else:
            now = await self._paced(now)
        self.slices += 1
        self._started = now
        self._until = now + self.budget

    async def _paced(self, now: float) -> float:
        """Let a busy loop run its share after this slice; returns the time it resumed."""
        # What the slice ran, at most a few budgets: a slicer kept across an await (the
        # step waited for a query meanwhile) must not count the wait as its work.
        ran = min(now - self._started, 4 * self.budget)
        _Pace.resume = max(_Pace.resume, now + ran * (1 - SHARE) / SHARE)
        while True:
            before = now
            await asyncio.sleep(0)
            now = time.perf_counter()
            if now - before < IDLE_TURN:
                return now
            if now >= _Pace.resume:
                # This step's turn: the others waiting wait for its slice too (woken in
                # the same loop turn, they would all run theirs back to back).
                _Pace.resume = now + self.budget * (1 - SHARE) / SHARE
                return now


async def drain(steps: Iterable[object], slicer: Slicer | None = None) -> None:
    """Run a step written as a generator, pausing between slices."""
    await finish(cast(Steps[None], iter(steps)), slicer)


def run(steps: Iterable[object]) -> None:
    """Run a step written as a generator in one piece."""
    finish_now(cast(Steps[None], iter(steps)))


async def finish(steps: Steps[T], slicer: Slicer | None = None) -> T:
    """Run a step on the loop in slices; returns what it returned."""
    slicer = slicer or Slicer()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if slicer.due():
            await slicer.pause()


def finish_now(steps: Steps[T]) -> T:
    """Run a step to its end in one piece; returns what it returned."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def mapped(function: Callable[[U], T], items: Sequence[U]) -> Steps[list[T]]:
    """`[function(item) for item in items]` as a step that yields every ITEMS_PER_YIELD
    items (a list comprehension per chunk: no generator frame per item)."""
    out: list[T] = []
    for start in range(0, len(items), ITEMS_PER_YIELD):
        out += [function(item) for item in items[start : start + ITEMS_PER_YIELD]]
        yield
    return out
