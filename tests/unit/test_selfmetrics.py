"""Sentinel's own SLO gauges across cycles: values follow the latest results, series of
vanished instances go, and come back when the instance does (the gauge children are kept
between cycles, so a removed one must never be reused)."""

from __future__ import annotations

from prometheus_client import generate_latest

from sentinel.evaluate.slo import SLOResult, Status
from sentinel.selfmetrics import SelfMetrics


def result(service: str, status: Status, value: float, budget: dict | None = None) -> SLOResult:  # type: ignore[type-arg]
    return SLOResult(
        service, "5xx", status, value, 0.01, 0.99, 300, 0.0, {"service": service}, budget=budget
    )


def exposition(metrics: SelfMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_gauges_follow_the_latest_cycle_and_vanished_instances_come_back() -> None:
    metrics = SelfMetrics()
    metrics.record_results("g", [result("a", Status.OK, 0.001), result("b", Status.OK, 0.002)])
    metrics.record_results("g", [result("a", Status.BREACH, 0.05)])
    text = exposition(metrics)
    assert 'sentinel_slo_value{instance="service=a",service="a",slo="5xx"} 0.05' in text
    assert 'sentinel_slo_breached{instance="service=a",service="a",slo="5xx"} 1.0' in text
    assert 'service="b"' not in text  # gone with its instance
    metrics.record_results("g", [result("a", Status.OK, 0.001), result("b", Status.OK, 0.003)])
    text = exposition(metrics)
    assert 'sentinel_slo_value{instance="service=b",service="b",slo="5xx"} 0.003' in text
    assert 'sentinel_slo_breached{instance="service=a",service="a",slo="5xx"} 0.0' in text


def test_burn_rate_series_of_a_dropped_window_come_back_with_the_window() -> None:
    metrics = SelfMetrics()
    both = {"remaining": 0.5, "burn_rates": {"1h": 2.0, "5m": 3.0}}
    metrics.record_results("g", [result("a", Status.OK, 0.001, both)])
    metrics.record_results(
        "g", [result("a", Status.OK, 0.001, {"remaining": 0.5, "burn_rates": {"1h": 2.0}})]
    )
    assert 'window="5m"' not in exposition(metrics)
    metrics.record_results("g", [result("a", Status.OK, 0.001, both)])
    text = exposition(metrics)
    assert (
        'sentinel_slo_burn_rate{instance="service=a",service="a",slo="5xx",window="5m"} 3.0' in text
    )
    assert (
        'sentinel_slo_error_budget_remaining{instance="service=a",service="a",slo="5xx"} 0.5'
        in text
    )


def test_forgetting_a_group_removes_its_series() -> None:
    metrics = SelfMetrics()
    metrics.record_results("g", [result("a", Status.OK, 0.001)])
    metrics.forget_group("g")
    assert 'service="a"' not in exposition(metrics)
    metrics.record_results("g", [result("a", Status.OK, 0.002)])
    assert 'sentinel_slo_value{instance="service=a",service="a",slo="5xx"} 0.002' in exposition(
        metrics
    )
