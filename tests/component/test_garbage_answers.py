"""A broken or hostile Prometheus, spoken to through the real HTTP source client: answers
that are valid JSON but garbage never crash a cycle and are never judged ok. Each SLO is
no_data with a reason naming what was wrong; a malformed answer marks the source unhealthy
in /health/detailed; an answer with more series than `max_series` is refused before it is
parsed."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from sentinel.config import PrometheusConfig
from sentinel.errors import BadResponse, TooManySeries
from sentinel.evaluate.engine import Engine
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.evaluate.wiring import renderers
from sentinel.query.promql import PART_LABEL
from sentinel.rules.model import SLO, ErrorRatioSLI, LatencySLI, RatioSLI, Selector
from sentinel.sources.prometheus import PrometheusSource
from support.fakeprom import FakePrometheus, element, vector_body

RATIO = SLO(
    service="platform",
    name="5xx",
    sli=RatioSLI(Selector("http_requests_total"), Selector("http_requests_total")),
    threshold=0.005,
    objective=0.995,
    window=300,
    group_by=("service",),
)
LATENCY = SLO(
    service="chatbot-backend",
    name="p95",
    sli=LatencySLI(Selector("latency_seconds"), 0.95),
    threshold=1.5,
    window=300,
)
ERROR_RATIO = SLO(
    service="s",
    name="errors",
    sli=ErrorRatioSLI("sum(rate(errors[$window])) / sum(rate(requests[$window]))"),
    threshold=0.01,
    window=300,
)


def part(name: str, value: Any, **labels: Any) -> dict[str, Any]:
    return element({PART_LABEL: name, **labels}, value)


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    server = FakePrometheus().start()
    yield server
    server.stop()


async def evaluate(
    prom: FakePrometheus, slo: SLO, max_series: int = 10_000
) -> tuple[list[SLOResult], PrometheusSource, dict[str, Any]]:
    source = PrometheusSource(
        PrometheusConfig(url=prom.url, retries=0, timeout=10, max_series=max_series)
    )
    engine = Engine({"prometheus": source}, renderers())
    try:
        report = await engine.evaluate_once([slo], 1_700_000_000.0)
    finally:
        await source.close()
    return report.results, source, dict(report.errors)


@pytest.mark.parametrize(
    ("result", "shown"),
    [
        ([element(["service", "a"], "1")], "['service', 'a']"),
        ([element({"service": ["a", "b"]}, "1")], "['a', 'b']"),
        ([element({}, True)], "True"),
        ([element({}, 0.5)], "0.5"),
        ([{"metric": {}, "value": "12"}], "'12'"),
        (["not an element"], "not an element"),
        ([element({}, "twelve")], "twelve"),
    ],
    ids=[
        "metric that is a list, not an object",
        "label value that is a list",
        "JSON true as the sample value",
        "JSON number instead of Prometheus' string value",
        "value that is not a [time, value] pair",
        "vector element that is not an object",
        "value string that is not a number",
    ],
)
async def test_a_malformed_answer_is_no_data_and_shows_in_source_health(
    prom: FakePrometheus, result: list[Any], shown: str
) -> None:
    prom.answer(result)
    results, source, errors = await evaluate(prom, LATENCY)
    (only,) = results
    assert only.status is Status.NO_DATA
    assert only.value is None
    assert "prometheus bad_response: malformed vector element" in only.reason
    assert shown in only.reason
    assert isinstance(errors[LATENCY.key], BadResponse)
    health = source.health.as_json()
    assert health["status"] == "unhealthy"
    assert "malformed vector element" in health["last_error"]


@pytest.mark.parametrize(
    ("slo", "result", "reason"),
    [
        (
            RATIO,
            [part("bad", "+Inf", service="a"), part("total", "+Inf", service="a")],
            "total is +Inf, not a count",
        ),
        (
            RATIO,
            [part("total", "+Inf", service="a"), part("total", "-Inf", service="a")],
            "total is +Inf, not a count",
        ),
        (
            RATIO,
            [part("total", "1e308", service="a"), part("total", "1e308", service="a")],
            "total overflows: the sum of its 2 series is +Inf",
        ),
        (
            RATIO,
            [part("bad", "-3", service="a"), part("total", "100", service="a")],
            "bad is -3, not a count",
        ),
        (
            RATIO,
            [part("bad", "150", service="a"), part("total", "100", service="a")],
            "bad 150 > total 100",
        ),
        (LATENCY, [part("value", "-Inf"), part("events", "100")], "value is -Inf"),
        (LATENCY, [part("value", "-0.2"), part("events", "100")], "latency is -0.2 s"),
        (LATENCY, [part("value", "0.3"), part("events", "NaN")], "events is NaN"),
        (ERROR_RATIO, [part("ratio", "+Inf")], "error ratio is +Inf, outside 0..1"),
        (ERROR_RATIO, [part("ratio", "-0.5")], "error ratio is -0.5, outside 0..1"),
    ],
    ids=[
        "bad = total = +Inf (a NaN ratio, once judged ok)",
        "+Inf and -Inf series for one instance (once a crash in fsum)",
        "1e308 twice for one instance (once an OverflowError)",
        "a negative error count",
        "more errors than requests",
        "-Inf latency",
        "negative latency",
        "NaN event count",
        "+Inf raw error ratio",
        "negative raw error ratio",
    ],
)
async def test_impossible_values_are_no_data_naming_the_value(
    prom: FakePrometheus, slo: SLO, result: list[Any], reason: str
) -> None:
    prom.answer(result)
    results, source, errors = await evaluate(prom, slo)
    (only,) = results
    assert only.status is Status.NO_DATA, only
    assert only.value is None
    assert reason in only.reason
    # Prometheus answered correctly what it was asked; the values are the rule's problem.
    assert not errors
    assert source.health.status == "healthy"


async def test_an_answer_over_max_series_is_refused_before_parsing_it(
    prom: FakePrometheus,
) -> None:
    body = vector_body([part("total", "10", service=f"svc-{i:06d}") for i in range(100_000)])
    prom.answer(body)
    tracemalloc.start()
    try:
        results, source, errors = await evaluate(prom, RATIO)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (only,) = results
    assert only.status is Status.NO_DATA
    assert "too many series (100000 > max_series 10000)" in only.reason
    assert isinstance(errors[RATIO.key], TooManySeries)
    assert source.health.status == "unhealthy"
    assert "too many series" in (source.health.last_error or "")
    # The 12 MB body is read; parsing it would have cost about 200 MB.
    assert peak < 60 * 1024**2, f"peak {peak / 1024**2:.0f} MB"


async def test_max_series_is_exact_and_holds_for_answers_the_quick_count_cannot_see(
    prom: FakePrometheus,
) -> None:
    eleven = [part("total", "10", service=f"s{i}") for i in range(11)]
    prom.answer(eleven, pretty=True)  # `"metric": {` with a space escapes the byte count
    results, source, _ = await evaluate(prom, RATIO, max_series=10)
    assert [r.status for r in results] == [Status.NO_DATA]
    assert "too many series (11 > max_series 10)" in results[0].reason
    assert source.health.status == "unhealthy"

    prom.answer(eleven[:10])
    results, source, errors = await evaluate(prom, RATIO, max_series=10)
    assert not errors
    assert [r.status for r in results] == [Status.OK] * 10
