"""The daemon's cycles ask a long budget or burn-rate window again only after 1/720 of it
(`evaluation.long_window_refresh: auto`): the 30-day budget hourly, not every cycle, so a
month of raw samples is not rescanned per SLO every 30 s. Short windows and the SLO's own
query are asked every cycle, a failed answer is never kept, a reload forgets every kept
answer, and offline evaluation (backtests, rule tests) always asks afresh."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from sentinel.config import load_config
from sentinel.errors import SourceUnavailable
from sentinel.evaluate.engine import WINDOW_REUSE, CycleReport, Engine
from sentinel.evaluate.slo import SLOResult
from sentinel.evaluate.wiring import build_engine, renderers
from sentinel.health import DependencyHealth
from sentinel.query.promql import PART_LABEL
from sentinel.rules.catalogues import builtin_catalogue
from sentinel.rules.loader import load_rules
from sentinel.rules.model import SLO, BurnPolicy, RatioSLI, Selector
from sentinel.sources.base import Sample, Series
from sentinel.units import format_duration
from support.promserver import PrometheusServer
from support.scenario import at

RULES = """\
version: sentinel/v1
service: chatbot-backend
labels: {namespace: chatbot, service: chatbot-backend}
slos:
  - name: http-5xx-budget
    sli:
      ratio:
        bad: {metric: http_requests_total, matchers: {status: "=~5.."}}
        total: {metric: http_requests_total}
    objective: 99.9%
    window: 5m
    period: 30d
"""
DAY = 86400.0


def _budget(results: list[SLOResult]) -> dict[str, float | None]:
    main = next(r for r in results if r.kind != "burn_rate")
    assert main.budget is not None
    return dict(main.budget["burn_rates"])


async def test_a_daemon_asks_each_long_window_once_per_720th_of_it(
    prometheus: PrometheusServer, write_config: Callable[..., Path]
) -> None:
    config = load_config(write_config(prometheus.url, {"chatbot.yaml": RULES}))
    slos = load_rules(config).slos
    daemon, fresh = build_engine(config, daemon=True), build_engine(config)
    windows = sorted(daemon.plan_budgets(slos)[slos[0].key])
    start = at(125)  # inside the 5xx burst: every window holds errors
    asked_at: dict[float, float] = {}
    fresh_at: dict[float, dict[str, float | None]] = {}
    try:
        for elapsed in (0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 3600.0):
            now = start + elapsed
            ours: CycleReport = await daemon.evaluate_once(slos, now)
            theirs: CycleReport = await fresh.evaluate_once(slos, now)
            assert theirs.queries == len(windows)  # the 5m window is the SLO's own query
            reused = {w for w in windows if w in asked_at and now - asked_at[w] < w * WINDOW_REUSE}
            assert ours.queries == len(windows) - len(reused), elapsed
            for w in windows:
                asked_at.setdefault(w, now)
                if w not in reused:
                    asked_at[w] = now
            # Windows asked this cycle judge as a fresh evaluation does; a kept one gives
            # exactly what a fresh evaluation said when it was last asked.
            fresh_at[now] = _budget(theirs.results)
            got = _budget(ours.results)
            assert got.keys() == fresh_at[now].keys()
            for w in windows:
                name = format_duration(w)
                assert got[name] is not None
                assert got[name] == fresh_at[asked_at[w]][name], (elapsed, name)
        # What the cycles above asked: the 30d window twice (at start and an hour later),
        # the 1d window every 2 minutes, everything under 6h every cycle.
        assert {w for w in windows if w >= DAY} == {DAY, 3 * DAY, 30 * DAY}
        assert asked_at[30 * DAY] == start + 3600.0
        assert asked_at[DAY] == start + 3600.0
    finally:
        for engine in (daemon, fresh):
            for source in engine.sources.values():
                await source.close()


async def test_every_cycle_refresh_and_a_reload_ask_every_window_again(
    prometheus: PrometheusServer, write_config: Callable[..., Path]
) -> None:
    path = write_config(
        prometheus.url, {"chatbot.yaml": RULES}, "evaluation: {long_window_refresh: every_cycle}\n"
    )
    every = build_engine(load_config(path), daemon=True)
    config = load_config(write_config(prometheus.url, {"chatbot.yaml": RULES}))
    slos = load_rules(config).slos
    daemon = build_engine(config, daemon=True)
    try:
        first = await daemon.evaluate_once(slos, at(125))
        assert (await daemon.evaluate_once(slos, at(125) + 30)).queries < first.queries
        daemon.forget(slos)  # what a reload does
        assert (await daemon.evaluate_once(slos, at(125) + 60)).queries == first.queries
        for step in range(3):
            report = await every.evaluate_once(slos, at(125) + 30 * step)
            assert report.queries == first.queries
    finally:
        for engine in (daemon, every):
            for source in engine.sources.values():
                await source.close()


class FlakyMonth:
    """Answers every window with one healthy instance; the 30-day window fails once."""

    name = "prometheus"

    def __init__(self) -> None:
        self.health = DependencyHealth(name="prometheus", target="memory")
        self.asked: list[str] = []
        self.failed = False

    async def instant(self, query: str, at: float) -> list[Sample]:
        await asyncio.sleep(0)
        self.asked.append(query)
        if "[30d]" in query and not self.failed:
            self.failed = True
            raise SourceUnavailable("prometheus", query, "connection refused")
        return [
            Sample({PART_LABEL: "bad", "service": "a"}, 1.0),
            Sample({PART_LABEL: "total", "service": "a"}, 1000.0),
        ]

    async def range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        return []

    async def check_syntax(self, query: str) -> str | None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_failed_long_window_is_asked_again_next_cycle_not_kept() -> None:
    month = 30 * DAY
    slo = SLO(
        service="a",
        name="5xx",
        sli=RatioSLI(Selector("http_requests_total"), Selector("http_requests_total")),
        threshold=0.005,
        objective=0.995,
        window=300,
        group_by=("service",),
        period=month,
        burn=BurnPolicy(builtin_catalogue(month), min_events=10),
    )
    source = FlakyMonth()
    engine = Engine({"prometheus": source}, renderers(), reuse_windows=True)
    first = await engine.evaluate_once([slo], 1000.0)
    main = next(r for r in first.results if r.kind != "burn_rate")
    assert main.budget is not None and main.budget["remaining"] is None  # unknown, not fine
    second = await engine.evaluate_once([slo], 1030.0)
    assert sum("[30d]" in q for q in source.asked) == 2
    main = next(r for r in second.results if r.kind != "burn_rate")
    assert main.budget is not None and main.budget["remaining"] is not None
    third = await engine.evaluate_once([slo], 1060.0)
    assert sum("[30d]" in q for q in source.asked) == 2  # kept now that it answered
    assert third.queries == first.queries - 3  # 1d, 3d and 30d kept


async def test_kept_window_answers_share_one_labels_dict_per_label_set(
    prometheus: PrometheusServer, write_config: Callable[..., Path]
) -> None:
    # Every window of an SLO answers the same instances, and each answer decoded its own
    # labels dicts: at 10,000 services x 3 SLIs the kept answers held 140,000 of them
    # (54 MB). Kept, they share one per label set — and judge exactly as before.
    config = load_config(write_config(prometheus.url, {"chatbot.yaml": RULES}))
    slos = load_rules(config).slos
    daemon, fresh = build_engine(config, daemon=True), build_engine(config)
    now = at(125)
    try:
        ours = await daemon.evaluate_once(slos, now)
        theirs = await fresh.evaluate_once(slos, now)
    finally:
        for engine in (daemon, fresh):
            for source in engine.sources.values():
                await source.close()
    kept = [sample for _, samples in daemon._reused.values() for sample in samples]
    assert len(daemon._reused) >= 3 and kept
    label_sets: dict[tuple[tuple[str, str], ...], set[int]] = {}
    for sample in kept:
        label_sets.setdefault(tuple(sample.labels.items()), set()).add(id(sample.labels))
    assert all(len(ids) == 1 for ids in label_sets.values()), label_sets
    assert len(kept) >= 2 * len(label_sets)  # each label set in several windows' answers
    assert [r.to_json() for r in ours.results] == [r.to_json() for r in theirs.results]
