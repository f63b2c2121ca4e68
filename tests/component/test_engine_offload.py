"""A cycle over an SLO with thousands of instances does not hold the event loop: its
evaluation runs in a worker thread while gate and health requests go on, and gives the
same results as evaluating on the loop."""

from __future__ import annotations

import asyncio

import pytest

from sentinel.evaluate import engine as engine_module
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


def _cycle(n: int) -> tuple[list[SLOResult], list[str]]:
    """One cycle, with a ticker coroutine marking the sequence of events while it runs."""
    events: list[str] = []
    evaluate = engine_module.evaluate

    def marked(*args, **kwargs):  # type: ignore[no-untyped-def]
        events.append("evaluate:start")
        out = evaluate(*args, **kwargs)
        events.append("evaluate:end")
        return out

    async def main() -> list[SLOResult]:
        engine = Engine({"prometheus": ManyInstances(n)}, renderers())
        done = False

        async def ticker() -> None:
            while not done:
                events.append("tick")
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            report = await engine.evaluate_once([BIG], 1000.0)
        finally:
            done = True
            await task
        return report.results

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "evaluate", marked)
        return asyncio.run(main()), events


def test_other_coroutines_run_while_a_large_slo_is_evaluated() -> None:
    results, events = _cycle(8_000)
    start, end = events.index("evaluate:start"), events.index("evaluate:end")
    assert "tick" in events[start:end]  # the loop went on during the evaluation
    assert len(results) == 8_000 * 5  # every instance and its four burn tiers


def test_evaluating_off_the_loop_gives_the_results_of_evaluating_on_it() -> None:
    threshold = 500  # instances: 1,000 samples per answer, above OFF_LOOP_SAMPLES in all
    off, _ = _cycle(threshold)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "OFF_LOOP_SAMPLES", 10**9)
        on, events = _cycle(threshold)
    start, end = events.index("evaluate:start"), events.index("evaluate:end")
    assert "tick" not in events[start:end]  # on the loop, as small SLOs are
    assert [repr(r) for r in off] == [repr(r) for r in on]
