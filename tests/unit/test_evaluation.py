"""Pure evaluation: plain data in, results out. No server, no clock."""

from __future__ import annotations

import math

import pytest

from sentinel.evaluate.slo import Status, evaluate, evaluate_failure
from sentinel.query.promql import PART_LABEL
from sentinel.rules.model import SLO, GoodWhen, LatencySLI, PromQLSLI, RatioSLI, Selector
from sentinel.sources.base import Sample

RATIO = SLO(
    service="chatbot-backend",
    name="5xx",
    sli=RatioSLI(Selector("http_requests_total"), Selector("http_requests_total")),
    threshold=0.005,
    objective=0.995,
    window=300,
    min_events=100,
)
LATENCY = SLO(
    service="chatbot-backend",
    name="p95",
    sli=LatencySLI(Selector("h"), 0.95),
    threshold=1.5,
    window=300,
)
RAW_ABOVE = SLO(
    service="s",
    name="avail",
    sli=PromQLSLI("x"),
    threshold=0.99,
    window=300,
    good_when=GoodWhen.ABOVE,
)


def part(name: str, value: float, **labels: str) -> Sample:
    return Sample({PART_LABEL: name, **labels}, value)


@pytest.mark.parametrize(
    ("slo", "samples", "status", "value"),
    [
        (RATIO, [part("bad", 1), part("total", 1000)], Status.OK, 0.001),
        (RATIO, [part("bad", 10), part("total", 1000)], Status.BREACH, 0.01),
        (RATIO, [part("bad", 5), part("total", 1000)], Status.OK, 0.005),
        (RATIO, [part("total", 1000)], Status.OK, 0.0),
        (RATIO, [part("bad", 0), part("total", 0)], Status.NO_DATA, None),
        (RATIO, [], Status.NO_DATA, None),
        (RATIO, [part("bad", 1), part("total", 50)], Status.NO_DATA, 0.02),
        (LATENCY, [part("value", 1.2), part("events", 10)], Status.OK, 1.2),
        (LATENCY, [part("value", 1.6), part("events", 10)], Status.BREACH, 1.6),
        (LATENCY, [part("value", math.nan), part("events", 0)], Status.NO_DATA, None),
        (LATENCY, [part("events", 10)], Status.NO_DATA, None),
        (RAW_ABOVE, [Sample({}, 0.98)], Status.BREACH, 0.98),
        (RAW_ABOVE, [Sample({}, 0.999)], Status.OK, 0.999),
        (RAW_ABOVE, [Sample({"a": "1"}, 1), Sample({"a": "2"}, 1)], Status.NO_DATA, None),
        (RATIO, [part("bad", math.inf), part("total", math.inf)], Status.NO_DATA, None),
        (RATIO, [part("bad", math.nan), part("total", 1000)], Status.NO_DATA, None),
        (RATIO, [part("bad", -1), part("total", 1000)], Status.NO_DATA, None),
        (RATIO, [part("bad", 1001), part("total", 1000)], Status.NO_DATA, None),
        (RATIO, [part("bad", 1000), part("total", 1000)], Status.BREACH, 1.0),
        (LATENCY, [part("value", math.inf), part("events", 10)], Status.NO_DATA, None),
        (LATENCY, [part("value", -1.0), part("events", 10)], Status.NO_DATA, None),
        (RAW_ABOVE, [Sample({}, math.inf)], Status.NO_DATA, None),
        (RAW_ABOVE, [Sample({}, -0.5)], Status.BREACH, -0.5),
    ],
    ids=[
        "ratio under objective is ok",
        "ratio over objective breaches",
        "ratio exactly at threshold is ok",
        "missing bad series counts as zero errors",
        "zero traffic is no_data not ok",
        "empty answer is no_data",
        "below min_events is no_data but keeps the value",
        "latency under threshold is ok",
        "latency over threshold breaches",
        "NaN quantile is no_data",
        "missing quantile series is no_data",
        "raw good-when-above breaches below threshold",
        "raw good-when-above is ok above threshold",
        "raw with two series for one instance is no_data",
        "bad = total = +Inf is no_data, not a NaN ratio judged ok",
        "a NaN bad count is no_data, not zero errors",
        "a negative bad count is no_data",
        "more errors than requests is no_data",
        "every request failing breaches at 100 %",
        "+Inf latency is no_data",
        "negative latency is no_data",
        "+Inf from a raw query is no_data",
        "a raw query may measure negative numbers",
    ],
)
def test_status_and_value(
    slo: SLO, samples: list[Sample], status: Status, value: float | None
) -> None:
    (result,) = evaluate(slo, samples, at=1000.0)
    assert result.status is status
    if value is None:
        assert result.value is None
        assert result.reason
    else:
        assert result.value == pytest.approx(value, abs=1e-12)


def test_group_by_yields_one_result_per_instance_and_remembers_vanished_ones() -> None:
    slo = SLO(
        service="platform",
        name="5xx",
        sli=RatioSLI(Selector("r"), Selector("r")),
        threshold=0.01,
        window=300,
        group_by=("service",),
    )
    samples = [
        part("bad", 1, service="a"),
        part("total", 10, service="a"),
        part("total", 100, service="b"),
    ]
    results = evaluate(slo, samples, at=0.0, known=[("c",)])
    by = {r.service: r for r in results}
    assert by["a"].status is Status.BREACH and by["a"].value == pytest.approx(0.1)
    assert by["b"].status is Status.OK and by["b"].value == 0.0
    assert by["c"].status is Status.NO_DATA  # vanished instance is reported, not dropped
    assert by["a"].labels == {"service": "a"}


def test_failure_marks_every_known_instance_no_data_with_reason() -> None:
    results = evaluate_failure(RATIO, "prometheus unavailable: refused", at=5.0)
    assert [r.status for r in results] == [Status.NO_DATA]
    assert results[0].reason == "prometheus unavailable: refused"
    assert results[0].to_json()["evaluated_at"] == "1970-01-01T00:00:05Z"


@pytest.mark.parametrize("good_when", [GoodWhen.BELOW, GoodWhen.ABOVE])
def test_a_nan_value_or_threshold_never_reads_as_within_the_threshold(good_when: GoodWhen) -> None:
    slo = SLO(
        service="s", name="x", sli=PromQLSLI("x"), threshold=1.0, window=60, good_when=good_when
    )
    assert slo.breached(math.nan)
    nan_threshold = SLO(
        service="s",
        name="x",
        sli=PromQLSLI("x"),
        threshold=math.nan,
        window=60,
        good_when=good_when,
    )
    assert nan_threshold.breached(1.0)
    assert not slo.breached(1.0)  # exactly at the threshold is within it


def test_an_unusable_value_is_named_in_the_reason() -> None:
    (result,) = evaluate(RATIO, [part("bad", math.inf), part("total", math.inf)], at=0.0)
    assert result.reason == "total is +Inf, not a count"
    assert result.to_json()["reason"] == "total is +Inf, not a count"
