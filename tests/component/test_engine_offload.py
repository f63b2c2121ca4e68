"""A cycle over an SLO with thousands of instances does not hold the event loop: its
evaluation runs on the loop in slices (sentinel/slicing.py), gate and health requests
answered between them, never in a worker thread (a thread running Python took the
interpreter each time the loop made a system call: every gate answer written while a
cycle evaluated waited for it); and it gives the results of evaluating in one piece."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections.abc import Generator
from typing import Any

import pytest

from sentinel import slicing
from sentinel.evaluate import budgets
from sentinel.evaluate import engine as engine_module
from sentinel.evaluate import slo as slo_module
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.slo import SLOResult
from sentinel.evaluate.wiring import renderers
from sentinel.health import DependencyHealth
from sentinel.query.promql import PART_LABEL
from sentinel.rules.catalogues import builtin_catalogue
from sentinel.rules.model import SLO, BurnPolicy, RatioSLI, Selector
from sentinel.sources.base import Sample, Series

MONTH = 30 * 86400.0
BIG = SLO(
    service="platform",
    name="5xx",
    sli=RatioSLI(Selector("http_requests_total"), Selector("http_requests_total")),
    threshold=0.005,
    objective=0.995,
    window=300,
    group_by=("service",),
    period=MONTH,
    burn=BurnPolicy(builtin_catalogue(MONTH), min_events=10),
)


class ManyInstances:
    """A Prometheus stand-in answering every query with `n` instances' bad and total."""

    name = "prometheus"

    def __init__(self, n: int) -> None:
        self.health = DependencyHealth(name="prometheus", target="memory")
        self.answer = [
            Sample({PART_LABEL: part, "service": f"svc-{i:05d}"}, value)
            for i in range(n)
            for part, value in (("bad", float(i % 7)), ("total", 1000.0))
        ]

    async def instant(self, query: str, at: float) -> list[Sample]:
        await asyncio.sleep(0)
        return list(self.answer)

    async def range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        return []

    async def check_syntax(self, query: str) -> str | None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _cycle(n: int) -> tuple[list[SLOResult], list[str], set[int], float]:
    """One cycle, with a ticker coroutine marking the sequence of events while it runs:
    (results, events, the threads the evaluation ran in, the ticker's longest wait
    during the evaluation)."""
    events: list[str] = []
    threads: set[int] = set()
    ticks: list[float] = []
    steps = engine_module.evaluate_steps

    def marked(*args: Any, **kwargs: Any) -> Generator[None, None, Any]:
        events.append("evaluate:start")
        threads.add(threading.get_ident())
        out = yield from steps(*args, **kwargs)
        events.append("evaluate:end")
        return out

    async def main() -> tuple[list[SLOResult], float]:
        engine = Engine({"prometheus": ManyInstances(n)}, renderers())
        done = False

        async def ticker() -> None:
            while not done:
                events.append("tick")
                ticks.append(time.perf_counter())
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            started = time.perf_counter()
            report = await engine.evaluate_once([BIG], 1000.0)
            ended = time.perf_counter()
        finally:
            done = True
            await task
        during = [started, *(t for t in ticks if started <= t <= ended), ended]
        return report.results, max(b - a for a, b in itertools.pairwise(during))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "evaluate_steps", marked)
        results, longest = asyncio.run(main())
    return results, events, threads, longest


def test_other_coroutines_run_while_a_large_slo_is_evaluated_on_the_loop() -> None:
    started = time.perf_counter()
    results, events, threads, longest = _cycle(8_000)
    whole = time.perf_counter() - started
    start, end = events.index("evaluate:start"), events.index("evaluate:end")
    assert "tick" in events[start:end]  # the loop went on during the evaluation
    assert threads == {threading.get_ident()}, "evaluated in a worker thread"
    assert len(results) == 8_000 * 5  # every instance and its four burn tiers
    # 8,000 instances and their tiers are ~100-200 ms of work here; the loop waited at most
    # a slice and a chunk at a time. A loose bound (machines vary); one piece fails it.
    assert longest < 0.4 * whole, f"loop held {longest * 1000:.0f} of {whole * 1000:.0f} ms"


def test_evaluating_in_slices_gives_the_results_of_evaluating_in_one_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In one piece: every loop of the steps runs as a single chunk.
    one_piece = {
        (slo_module, "CHUNK"): 10**9,
        (slo_module, "SAMPLES_CHUNK"): 10**9,
        (budgets, "CHUNK"): 10**9,
        (budgets, "SAMPLES_CHUNK"): 10**9,
        (budgets, "ITEMS_PER_YIELD"): 10**9,
        (engine_module, "CHUNK"): 10**9,
    }
    with pytest.MonkeyPatch.context() as patch:
        for (module, name), value in one_piece.items():
            patch.setattr(module, name, value)
        whole, _, _, _ = _cycle(700)
    # In slices: small odd chunks (many boundaries) and a loop turn at every yield.
    for n, (module, name) in enumerate(one_piece):
        monkeypatch.setattr(module, name, (3, 5, 7)[n % 3])
    monkeypatch.setattr(slicing, "SLICE_SECONDS", 0.0)
    sliced, events, _, _ = _cycle(700)
    assert events.count("tick") > 100
    assert len(whole) == 700 * 5
    assert [repr(r) for r in sliced] == [repr(r) for r in whole]


@pytest.mark.parametrize("queries", ["one shared", "one each"])
def test_many_small_slos_give_the_loop_its_turns_between_them(queries: str) -> None:
    # 300 SLOs of 5 instances: none is a slice long alone, together ~100-300 ms of work;
    # their answers are all in at once. Counted, not timed: how many SLOs were evaluated
    # between two turns of another coroutine (the loop's other work). A slow machine
    # only makes the slices end sooner.
    slos = [
        dataclasses.replace(
            BIG,
            name=f"slo-{i:03d}",
            sli=BIG.sli
            if queries == "one shared"
            else RatioSLI(Selector(f"errors_{i}_total"), Selector(f"requests_{i}_total")),
        )
        for i in range(300)
    ]
    events: list[str] = []
    steps = engine_module.evaluate_steps

    def marked(*args: Any, **kwargs: Any) -> Generator[None, None, Any]:
        out = yield from steps(*args, **kwargs)
        events.append("slo")
        return out

    async def main() -> int:
        engine = Engine({"prometheus": ManyInstances(5)}, renderers())
        done = False

        async def ticker() -> None:
            while not done:
                events.append("tick")
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            report = await engine.evaluate_once(slos, 1000.0)
        finally:
            done = True
            await task
        return len(report.results)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "evaluate_steps", marked)
        count = asyncio.run(main())
    assert count == 300 * 5 * 5
    runs = "".join("s" if e == "slo" else "." for e in events).split(".")
    assert events.count("slo") == 300
    # In one piece all 300 were evaluated between two turns; in ~1 ms slices, a few each.
    assert max(len(run) for run in runs) < 100, max(len(run) for run in runs)


def test_an_slo_listed_twice_is_evaluated_once_and_reported_for_each_listing() -> None:
    async def main() -> list[SLOResult]:
        engine = Engine({"prometheus": ManyInstances(3)}, renderers())
        return (await engine.evaluate_once([BIG, BIG], 1000.0)).results

    results = asyncio.run(main())
    assert len(results) == 2 * 3 * 5
    assert [repr(r) for r in results[:15]] == [repr(r) for r in results[15:]]
