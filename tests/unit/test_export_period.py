"""`sentinel rules export`'s period chain, pure: no rule re-reads the period's history
every interval, the chain's groups pin the intervals it depends on, buckets do not overlap, and
Sentinel reads the sparse period series with a lookback that sees it between evaluations.
(Against a real Prometheus: tests/component/test_export.py and test_recorded.py.)"""

from __future__ import annotations

import re

import pytest

from sentinel.outputs.export import slo_groups
from sentinel.query.promql import recorded_ratio_query
from sentinel.rules.catalogues import builtin_catalogue
from sentinel.rules.model import SLO, BurnPolicy, ErrorRatioSLI, RatioSLI, Selector
from sentinel.units import parse_duration

MONTH = 30 * 86400.0
RATIO = SLO(
    service="shop",
    name="checkout",
    sli=RatioSLI(bad=Selector("req_total", ()), total=Selector("req_total", ())),
    threshold=0.01,
    window=300.0,
    objective=0.99,
    group_by=("pod",),
    period=MONTH,
    burn=BurnPolicy(builtin_catalogue(MONTH)),
)
RAW = SLO(
    service="shop",
    name="raw",
    sli=ErrorRatioSLI("sum(rate(err[$window])) / sum(rate(req[$window]))"),
    threshold=0.01,
    window=300.0,
    objective=0.99,
    period=MONTH,
    burn=BurnPolicy(builtin_catalogue(MONTH)),
)
RECORDED = re.compile(r"(slo:[a-z0-9_:]+)\{[^}]*\}(?:\[([0-9a-z]+)(?::[0-9a-z]+)?\])?")


def _recording_groups(slo: SLO) -> list[dict[str, object]]:
    return [g for g in slo_groups(slo) if any("record" in r for r in g["rules"])]


@pytest.mark.parametrize("slo", [RATIO, RAW], ids=["ratio", "raw-error-ratio"])
def test_no_rule_rereads_more_than_two_hours_of_recorded_samples_more_often_than_hourly(
    slo: SLO,
) -> None:
    """The cost of issue 19: a 30-day `sum_over_time` over a series recorded every
    interval re-summed 8,640+ samples per series at every evaluation. Now a rule evaluated
    more often than hourly reads at most two hours of a recorded series; the one reading
    the whole period runs hourly, over 720 hourly samples."""
    for group in _recording_groups(slo):
        interval = parse_duration(str(group.get("interval", "1m")))
        for rule in group["rules"]:  # type: ignore[attr-defined]
            for name, window in RECORDED.findall(rule["expr"]):
                span = parse_duration(window) if window else 0.0
                if interval < 3600:
                    assert span <= 2 * 3600, (group["name"], rule["record"], name, window)
                else:
                    assert name.endswith(":increase1h") or span <= 3600, (rule["record"], name)


def test_the_chain_pins_its_intervals_and_its_buckets_do_not_overlap() -> None:
    """12 five-minute samples make an hour only if the groups run every 5m and 1h, and a
    closed Prometheus 2 range of exactly 1h would count a sample an hour old twice."""
    groups = {g["name"]: g for g in slo_groups(RATIO)}
    fine = groups["sentinel-period-5m-shop-checkout"]
    coarse = groups["sentinel-period-1h-shop-checkout"]
    assert (fine["interval"], coarse["interval"]) == ("5m", "1h")
    exprs = {r["record"]: r["expr"] for r in coarse["rules"]}
    assert "[3599999ms]" in exprs["slo:sli_bad:increase1h"]
    assert "[2591999999ms]" in exprs["slo:sli_total:increase30d"]
    order = [r["record"] for r in coarse["rules"]]
    # The bucket end is recorded after the sums (a reader in between counts twice, the
    # conservative side), and the fresh ratio reads only the last two hours.
    assert order[-1] == "slo:period_buckets_end:timestamp_seconds"
    fresh = next(r for r in fine["rules"] if r["record"] == "slo:sli_error:ratio_rate30d")
    assert "[2h:5m]" in fresh["expr"] and "@ end()" in fresh["expr"]
    # The five-minute samples' timestamp is one series recorded with them, before the
    # ratio that compares it (not a max over every instance at every subquery step).
    fine_order = [r["record"] for r in fine["rules"]]
    stamp = fine_order.index("slo:period_fine:timestamp_seconds")
    assert fine_order.index("slo:sli_total:increase5m") < stamp
    assert stamp < fine_order.index("slo:sli_error:ratio_rate30d")
    assert "timestamp(" not in fresh["expr"]


def test_sentinel_reads_the_five_minute_period_series_across_its_gaps() -> None:
    """A series recorded every 5 minutes is invisible to an instant selector (5-minute
    lookback) right before its next evaluation: the period is read with last_over_time;
    the burn windows (recorded every interval) stay plain selectors."""
    period = recorded_ratio_query(RATIO, MONTH)
    assert "last_over_time(slo:sli_error:ratio_rate30d{" in period and "[10m])" in period
    assert "last_over_time" not in recorded_ratio_query(RATIO, 3600.0)
