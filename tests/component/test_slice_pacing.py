"""A sliced step (a cycle's evaluation, its record step) takes at most about `SHARE` of an
event loop that has other work (a loaded gate), and all of an idle one: with one loop
turn between slices, a cycle took half the loop while pipelines polled the gate, and
every request arriving then waited twice as long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager

from sentinel.slicing import Slicer, drain, pacing_for


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def work(items: int, each: float, spent: list[float]) -> Iterator[None]:
    """A step of `items` items of `each` seconds of CPU, yielding after each."""
    for _ in range(items):
        started = time.perf_counter()
        busy(each)
        spent.append(time.perf_counter() - started)
        yield


@asynccontextmanager
async def loaded_loop() -> AsyncIterator[list[float]]:
    """The loop's other work, as a loaded gate makes it: a request of 0.3 ms at every
    turn. Yields the time each request took."""
    other: list[float] = []
    stop = False

    async def requests() -> None:
        while not stop:
            started = time.perf_counter()
            busy(0.0003)
            other.append(time.perf_counter() - started)
            await asyncio.sleep(0)

    task = asyncio.create_task(requests())
    await asyncio.sleep(0)
    try:
        yield other
    finally:
        stop = True
        await task


async def share_of(steps: Awaitable[object], spent: list[float]) -> tuple[float, float]:
    """(the steps' share of the loop while they ran, how long they took)."""
    started = time.perf_counter()
    await steps
    took = time.perf_counter() - started
    return sum(spent) / took, took


async def test_a_sliced_step_takes_about_its_share_of_a_busy_loop() -> None:
    spent: list[float] = []
    async with loaded_loop() as other:
        # 40 ms of work in 1 ms slices.
        share, took = await share_of(drain(work(200, 0.0002, spent), Slicer(0.001)), spent)
    # About SHARE (0.2) of the loop; with one turn between slices it took ~1 / 1.3 of it.
    assert share < 0.35, f"the step took {share:.0%} of the loop"
    assert sum(other) / took > 0.5


async def test_a_sliced_step_on_an_idle_loop_is_not_slowed() -> None:
    spent: list[float] = []
    _, took = await share_of(drain(work(200, 0.0002, spent), Slicer(0.001)), spent)
    assert took < 1.5 * sum(spent) + 0.01, f"{took * 1000:.0f} ms for {sum(spent) * 1000:.0f}"


async def test_a_wait_for_io_is_not_counted_as_a_slices_work() -> None:
    # The cycle keeps one slicer while it awaits its queries: 50 ms waiting for Prometheus
    # is not 50 ms of work to make up for with 200 ms of pause while the gate is busy.
    async with loaded_loop():
        slicer = Slicer(0.001)
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await slicer.pause()
        paused = time.perf_counter() - started
    assert paused < 0.03, f"paused {paused * 1000:.0f} ms"


async def test_steps_running_at_once_share_one_share_of_a_busy_loop() -> None:
    # A cycle parses several answers and evaluates at once: four steps together, not each,
    # take about SHARE of the loop (each pacing itself alone, four took ~70 %).
    spent: list[float] = []
    steps = (drain(work(50, 0.0002, spent), Slicer(0.001)) for _ in range(4))
    async with loaded_loop():
        share, _ = await share_of(asyncio.gather(*steps), spent)
    assert share < 0.35, f"the steps took {share:.0%} of the loop"


async def test_a_step_stops_pacing_at_its_deadline() -> None:
    # A cycle paces for half its timeout, then takes every other turn: a loaded gate
    # slows it, never into an overrun.
    spent: list[float] = []
    async with loaded_loop():
        with pacing_for(0.0):
            share, _ = await share_of(drain(work(200, 0.0002, spent), Slicer(0.001)), spent)
    assert share > 0.5, f"the step took {share:.0%} of the loop"


async def test_ending_a_deadline_stops_the_pacing_of_steps_already_running() -> None:
    # A daemon stopping ends its running cycles' pacing: they finish at full speed within
    # shutdown_timeout instead of giving way to the gate for half their cycle_timeout.
    spent: list[float] = []
    async with loaded_loop():
        with pacing_for(60.0) as deadline:
            running = asyncio.ensure_future(drain(work(400, 0.0002, spent), Slicer(0.001)))
        await asyncio.sleep(0.02)
        deadline.end()
        before = len(spent)
        started = time.perf_counter()
        await running
        took = time.perf_counter() - started
    share = sum(spent[before:]) / took
    assert share > 0.5, f"the step took {share:.0%} of the loop after the end"
