"""Burn-rate maths (table-driven) and burn-rate alerts against the real Prometheus."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from sentinel.config import load_config
from sentinel.daemon.assembly import build_daemon
from sentinel.evaluate.budgets import apply_budgets
from sentinel.evaluate.burn import WindowRatio, judge_tier
from sentinel.evaluate.slo import SLOResult, Status, evaluate
from sentinel.offline.ruletest.runner import run_file
from sentinel.query.promql import PART_LABEL
from sentinel.rules.catalogues import builtin_catalogue, load_catalogue
from sentinel.rules.loader import load_rules
from sentinel.rules.model import SLO, BurnPolicy, RatioSLI, Selector
from sentinel.sources.base import Sample
from sentinel.units import parse_duration
from support.promserver import PrometheusServer
from support.scenario import at

SLOTH_WINDOWS = Path(__file__).resolve().parents[1] / "data" / "sloth-windows"


@pytest.mark.parametrize(
    ("period", "factors"),
    [
        ("30d", [14.4, 6.0, 3.0, 1.0]),
        ("28d", [13.44, 5.6, 2.8, 0.9333333]),
        ("7d", [13.44, 3.5, 1.4, 0.98]),
    ],
    ids=["workbook 30d: 14.4 6 3 1", "Sloth 28d catalogue", "7d catalogue derives its own"],
)
def test_factors_are_derived_from_the_catalogue(period: str, factors: list[float]) -> None:
    catalogue = builtin_catalogue(parse_duration(period))
    got = [tier.factor(catalogue.period) for tier in catalogue.tiers]
    assert got == pytest.approx(factors, rel=1e-6)
    assert [t.severity for t in catalogue.tiers] == ["page", "page", "ticket", "ticket"]


def test_custom_catalogue_file_is_read() -> None:
    catalogue = load_catalogue(SLOTH_WINDOWS / "custom-30d.yaml")
    assert catalogue.period == parse_duration("30d")
    assert len(catalogue.tiers) == 4


@pytest.mark.parametrize(
    ("long", "short", "min_events", "fires"),
    [
        (WindowRatio(15, 1000), WindowRatio(2, 100), 0, True),
        (WindowRatio(15, 1000), WindowRatio(1, 100), 0, False),
        (WindowRatio(10, 1000), WindowRatio(5, 100), 0, False),
        (WindowRatio(15, 1000), WindowRatio(2, 3), 0, True),
        (WindowRatio(15, 1000), WindowRatio(2, 3), 10, False),
        (WindowRatio(15, 1000), None, 0, False),
    ],
    ids=[
        "both windows over 14.4x fire",
        "short window under the factor holds",
        "long window under the factor holds",
        "three requests with two errors fire without a guard",
        "min_events keeps three requests from paging",
        "a window without data never fires",
    ],
)
def test_page_quick_tier(
    long: WindowRatio, short: WindowRatio | None, min_events: float, fires: bool
) -> None:
    catalogue = builtin_catalogue(parse_duration("30d"))
    quick = catalogue.tiers[0]
    windows = {quick.long_window: long}
    if short is not None:
        windows[quick.short_window] = short
    verdict = judge_tier(quick, catalogue.period, 0.001, windows, min_events)
    assert verdict.firing is fires
    assert verdict.factor == pytest.approx(14.4)


MONTH = parse_duration("30d")
BUDGETED = SLO(
    service="chatbot-backend",
    name="http-5xx-budget",
    sli=RatioSLI(Selector("http_requests_total"), Selector("http_requests_total")),
    threshold=0.001,
    objective=0.999,
    window=300,
    period=MONTH,
    burn=BurnPolicy(builtin_catalogue(MONTH), min_events=100),
)


def parts(bad: float, total: float) -> list[Sample]:
    return [Sample({PART_LABEL: "bad"}, bad), Sample({PART_LABEL: "total"}, total)]


def tiers_of(windows: dict[float, list[Sample]]) -> dict[str, SLOResult]:
    slo = BUDGETED
    assert slo.burn is not None
    answers = {w: windows.get(w, parts(0, 1000)) for w in {MONTH, *slo.burn.catalogue.windows()}}
    results = evaluate(slo, parts(0, 1000), at=0.0)
    out = apply_budgets(slo, results, answers, {w: "q" for w in answers})
    return {r.labels["tier"]: r for r in out if r.kind == "burn_rate"}


def test_a_tier_over_too_few_events_is_no_data_not_ok() -> None:
    catalogue = builtin_catalogue(MONTH)
    # 10 requests, none failed, in every window: the burn rate is 0 but proves nothing.
    tiers = tiers_of({w: parts(0, 10) for w in catalogue.windows()})
    assert {t: r.status for t, r in tiers.items()} == {
        "page-quick": Status.NO_DATA,
        "page-slow": Status.NO_DATA,
        "ticket-quick": Status.NO_DATA,
        "ticket-slow": Status.NO_DATA,
    }
    assert tiers["page-quick"].reason == "too little traffic in 1h, 5m (min_events 100)"
    assert tiers["page-quick"].value == 0.0  # the burn rate stays visible
    assert judge_tier(catalogue.tiers[0], MONTH, 0.001, {}, 100).judged is False


def test_a_tier_whose_window_holds_garbage_is_no_data_naming_it() -> None:
    hour = parse_duration("1h")
    tiers = tiers_of({hour: parts(math.inf, math.inf)})
    assert tiers["page-quick"].status is Status.NO_DATA
    assert tiers["page-quick"].reason == "1h: total is +Inf, not a count"
    assert tiers["ticket-quick"].status is Status.OK  # its windows (2h, 1d) are fine


def test_sentinel_test_expects_no_data_for_a_tier_below_min_events(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(BURN_RULES)
    (tmp_path / "rules_test.yaml").write_text(
        """\
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - name: four requests a minute cannot page
    interval: 15s
    input_series:
      - series: 'http_requests_total{namespace="chatbot",service="chatbot-backend",status="500"}'
        values: '0+1x40'
    expect:
      - {at: 10m, slo: http-5xx-budget, tier: page-quick, status: no_data}
      - {at: 10m, slo: http-5xx-budget, tier: ticket-slow, status: no_data}
"""
    )
    outcomes = run_file(tmp_path / "rules_test.yaml")
    assert [o.failures for o in outcomes] == [[]]


BURN_RULES = """\
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
    burn_rate: {min_events: 100}
"""

PLATFORM_RULES = """\
version: sentinel/v1
service: platform
labels: {namespace: platform}
slos:
  - name: slow-burn
    sli:
      ratio:
        bad: {metric: platform_requests_total, matchers: {code: "=~5.."}}
        total: {metric: platform_requests_total}
    objective: 99.9%
    window: 5m
    period: 30d
    group_by: [service]
    burn_rate: {min_events: MIN}
"""


def oracle_window(minute: int, window_min: int) -> tuple[float, float]:
    """bad and total in (minute - window, minute] for the chatbot scenario (phases exact)."""
    from support.scenario import phase_at

    bad = total = 0.0
    for step in range(max(0, (minute - window_min) * 4), minute * 4):
        phase = phase_at(step / 4)
        bad += phase.errors
        total += phase.requests
    return bad, total


def oracle_page(minute: int) -> bool:
    def burn(window: int) -> float:
        bad, total = oracle_window(minute, window)
        return bad / total / 0.001 if total else 0.0

    return (burn(60) > 14.4 and burn(5) > 14.4) or (burn(360) > 6 and burn(30) > 6)


async def test_5xx_burst_pages_at_the_right_step_and_resolves(
    tmp_path: Path, prometheus: PrometheusServer, write_config: Callable[..., Path]
) -> None:
    config_path = write_config(prometheus.url, {"chatbot.yaml": BURN_RULES})
    config = load_config(config_path)
    built = await build_daemon(str(config_path), config, load_rules(config), lambda: at(0))
    try:
        states: dict[int, dict[str, str]] = {}
        for minute in range(115, 185):
            await built.daemon.run_group("chatbot", at(minute))
            states[minute] = {
                a["key"].split("tier=")[-1].rstrip("}"): a["state"]
                for a in built.manager.to_json()
                if "tier=" in a["key"]
            }
        page_on = [
            m
            for m in states
            if "firing" in (states[m].get("page-quick"), states[m].get("page-slow"))
        ]
        expected = [m for m in range(115, 185) if oracle_page(m)]
        assert page_on == expected, (page_on, expected)
        assert page_on[0] > 120 and page_on[-1] < 184
        results = {
            (r.slo, r.labels.get("tier")): r for r in await built.daemon.evaluate_once(at(140))
        }
        main = results[("http-5xx-budget", None)]
        assert main.budget is not None
        bad, total = oracle_window(140, 140)
        assert main.budget["error_ratio"] == pytest.approx(bad / total, rel=1e-3)
        assert main.budget["remaining"] == pytest.approx(1 - bad / total / 0.001, rel=1e-3)
        bad1h, total1h = oracle_window(140, 60)
        assert main.budget["burn_rates"]["1h"] == pytest.approx(bad1h / total1h / 0.001, rel=1e-9)
        incidents = built.store.incidents()
        assert "page" in {i["severity"] for i in incidents}
    finally:
        await built.cleanup()
        await built.daemon.stop()


@pytest.mark.parametrize(("min_events", "tickets"), [(100, True), (10**9, False)])
async def test_slow_burn_opens_a_ticket_not_a_page(
    prometheus: PrometheusServer,
    write_config: Callable[..., Path],
    min_events: int,
    tickets: bool,
) -> None:
    rules = PLATFORM_RULES.replace("MIN", str(min_events))
    config_path = write_config(prometheus.url, {"platform.yaml": rules})
    config = load_config(config_path)
    built = await build_daemon(str(config_path), config, load_rules(config), lambda: at(0))
    try:
        results = await built.daemon.evaluate_once(at(60))
        svc5 = {r.labels.get("tier"): r for r in results if r.labels.get("service") == "svc-0005"}
        # 0.5 % errors against a 0.1 % budget: burn 5 — over the ticket factors, under the page ones.
        # With min_events out of reach no tier can be judged: no_data, never ok.
        assert svc5["ticket-quick"].status.value == ("breach" if tickets else "no_data")
        assert svc5["page-quick"].status.value == ("ok" if tickets else "no_data")
        assert svc5["page-slow"].status.value == ("ok" if tickets else "no_data")
        assert svc5[None].budget is not None
        assert svc5[None].budget["burn_rates"]["2h"] == pytest.approx(5.0, rel=1e-6)
        if not tickets:
            assert "too little traffic" in svc5["ticket-quick"].reason
    finally:
        await built.cleanup()
        await built.daemon.stop()
