"""The status UI's pure parts: breach spans, SVG charts and sparklines, the overview's
order and rows, the burn-down, and the helpers that keep links and redirects safe."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from markupsafe import Markup

from sentinel.alerting.silences import Silence, SilenceMatcher
from sentinel.alerting.state import Alert, AlertState
from sentinel.evaluate.slo import SLOResult, Status
from sentinel.sources.base import Series
from sentinel.web.charts import Line, Span, breach_spans, line_chart, sparkline
from sentinel.web.ui import safe_href
from sentinel.web.ui_auth import safe_next
from sentinel.web.ui_data import Filters, dependencies, rows
from sentinel.web.ui_series import MAX_POINTS, History, range_step
from sentinel.web.ui_service import burndown_points
from sentinel.web.ui_table import table_rows

NAN = math.nan


@pytest.mark.parametrize(
    ("points", "good_when", "expected"),
    [
        ([(0, 1.0), (10, 1.2)], "below", []),
        ([(0, 1.0), (10, 2.0), (20, 2.0), (30, 1.0)], "below", [Span(5, 25)]),
        ([(0, 2.0), (10, 1.0), (20, 2.0)], "below", [Span(-5, 5), Span(15, 25)]),
        ([(0, 2.0), (10, 2.0), (40, 2.0)], "below", [Span(-5, 15), Span(35, 45)]),
        ([(0, 2.0), (10, NAN), (20, 2.0)], "below", [Span(-5, 5), Span(15, 25)]),
        ([(0, 0.9), (10, 0.99)], "above", [Span(-5, 5)]),
    ],
    ids=[
        "values within the threshold make no span",
        "a run of breaching points is one span widened by half a step",
        "an ok point splits two spans",
        "a gap in the series ends a span",
        "NaN is a gap (no traffic), not a breach",
        "good_when above breaches below the threshold",
    ],
)
def test_breach_spans(
    points: list[tuple[float, float]], good_when: str, expected: list[Span]
) -> None:
    assert breach_spans(points, 0.95 if good_when == "above" else 1.5, good_when, 10) == expected


def test_a_range_never_has_more_than_500_points() -> None:
    for seconds in (900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400):
        step = range_step(seconds)
        assert seconds / step + 1 <= MAX_POINTS
        assert step == int(step) >= 1


def test_chart_escapes_its_text_and_marks_each_breach_span_with_its_times() -> None:
    svg = str(
        line_chart(
            title='p95 <script>alert(1)</script> "x"',
            start=0,
            end=100,
            step=10,
            lines=[Line([(0, 1.0), (10, 2.0), (20, 1.0)], "sli", "<b>sli</b>")],
            fmt=lambda v: f"{v:g} s",
            threshold=1.5,
            spans=[Span(5, 15)],
        )
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<b>" not in svg
    assert 'data-from="5" data-to="15"' in svg
    assert "threshold 1.5 s" in svg
    assert "1 breach span(s)" in svg  # the <desc> says it in words


def test_sparkline_puts_the_newest_value_at_the_right_and_merges_flat_runs() -> None:
    flat = str(sparkline([0.001] * 20, 0.005, "below", 20))
    assert flat.startswith("<svg><path") and "h57" in flat and len(flat) < 50
    short = str(sparkline([0.001, 0.001], 0.005, "below", 20))
    assert 'd="M54 ' in short  # two values of twenty slots: drawn at the right end
    assert "class=bad" in str(sparkline([0.001, 0.009], 0.005, "below", 20))
    assert str(sparkline([0.001], 0.005, "below", 20)) == ""


def result(
    service: str,
    slo: str,
    status: Status,
    value: float | None,
    labels: Mapping[str, str] | None = None,
    budget: dict[str, float] | None = None,
    kind: str = "ratio",
) -> SLOResult:
    return SLOResult(
        service, slo, status, value, 0.01, 0.99, 300.0, 0.0, labels or {}, budget=budget, kind=kind
    )


def tier(service: str, status: Status, long_burn: float, factor: float, name: str) -> SLOResult:
    budget = {"long_burn": long_burn, "short_burn": long_burn, "factor": factor}
    budget_text: dict[str, float] = dict(budget)
    r = result(service, "errors", status, long_burn, {"tier": name}, budget_text, "burn_rate")
    return r


def no_spark(key: str, r: SLOResult) -> Markup:
    return Markup("")


def test_overview_lists_breaches_then_no_data_then_least_budget_left() -> None:
    results = [
        result("a", "errors", Status.OK, 0.001, budget={"remaining": 0.9}),
        result("b", "errors", Status.OK, 0.004, budget={"remaining": 0.2}),
        result("c", "errors", Status.NO_DATA, None),
        result("d", "errors", Status.BREACH, 0.05),
        # e is ok, but a burn-rate tier of it breaches: it is listed with the breaches.
        result("e", "errors", Status.OK, 0.009, budget={"remaining": 0.5}),
        tier("e", Status.BREACH, 20.0, 14.4, "page-quick"),
        tier("e", Status.OK, 2.0, 6.0, "page-slow"),
    ]
    listed = rows(results, {}, [], 0.0)
    assert [(r.service, r.worst) for r in listed] == [
        ("e", "breach"),
        ("d", "breach"),
        ("c", "no_data"),
        ("b", "ok"),
        ("a", "ok"),
    ]
    e = listed[0]
    assert e.status == "ok" and len(e.tier_results) == 2  # tiers fold into their instance
    assert e.fastest is not None and e.fastest.name == "page-quick"


def test_rows_show_firing_alerts_of_the_instance_or_its_tiers_and_active_silences() -> None:
    results = [
        result("a", "errors", Status.BREACH, 0.05, {"model": "x"}),
        result("b", "errors", Status.OK, 0.001),
        tier("b", Status.BREACH, 20.0, 14.4, "page-quick"),
    ]
    alerts = {
        "a/errors{model=x}": Alert("a/errors{model=x}", AlertState.FIRING, 10.0, fired_at=10.0),
        "b/errors{tier=page-quick}": Alert("b/errors{tier=page-quick}", AlertState.PENDING, 5.0),
    }
    silence = Silence("s1", (SilenceMatcher("model", "x"),), 0.0, 100.0, "me", "why", 0.0)
    expired = Silence("s2", (SilenceMatcher("service", "b"),), 0.0, 1.0, "me", "why", 0.0)
    listed = {r.service: r for r in rows(results, alerts, [silence, expired], 50.0)}
    assert (listed["a"].alert, listed["a"].alert_since, listed["a"].silenced) == (
        "firing",
        10.0,
        True,
    )
    assert (listed["b"].alert, listed["b"].silenced) == ("pending", False)
    assert listed["a"].instance == "model=x"


def test_rows_show_the_firing_alert_of_a_service_whose_name_holds_a_brace() -> None:
    """A `service` label is any text; a name holding `{` was cut there when the overview
    matched alerts to rows, and its firing alert did not show."""
    results = [result("web{eu}", "errors", Status.BREACH, 0.05, {"service": "web{eu}"})]
    key = results[0].key
    alerts = {key: Alert(key, AlertState.FIRING, 10.0, fired_at=10.0)}
    (row,) = rows(results, alerts, [], 50.0)
    assert (row.service, row.alert, row.alert_since) == ("web{eu}", "firing", 10.0)


HOSTILE = ("q\"uote'<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "Trợ lý ảo")


def test_table_rows_render_hostile_label_values_as_text() -> None:
    results = [result(v, "errors", Status.BREACH, 0.05, {"service": v, "x": v}) for v in HOSTILE]
    html = str(table_rows(rows(results, {}, [], 0.0), no_spark))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert 'href="/services/q%22uote%27%3Cscript%3E' in html  # one path segment, encoded
    assert "Trợ lý ảo" in html


def test_filters_match_service_status_severity_and_search_text() -> None:
    results = [
        result("api", "errors", Status.BREACH, 0.05),
        result("web", "latency", Status.OK, 0.1, kind="latency"),
    ]
    listed = rows(results, {}, [], 0.0)

    def kept(**query: str) -> list[str]:
        f = Filters.from_query(query)
        return [r.service for r in listed if f.keep(r)]

    assert kept(service="api") == ["api"]
    assert kept(status="ok") == ["web"]
    assert kept(status="bogus") == ["api", "web"]  # an unknown status filters nothing
    assert kept(q="LAT") == ["web"]
    assert kept(severity="ticket") == []


def test_burndown_spends_the_budget_with_the_errors_of_each_step() -> None:
    # 1,000 events a step, 10 bad in the second step: budget 1 % of 3,000 = 30 events.
    part = "sentinel_part"
    series = [
        Series({part: "total"}, ((0, 1000.0), (60, 1000.0), (120, 1000.0), (180, 1000.0))),
        Series({part: "bad"}, ((60, 0.0), (120, 10.0), (180, 0.0))),
    ]
    points = burndown_points(series, {}, 0.01, start=0)
    assert [t for t, _ in points] == [60, 120, 180]  # the step at the start lies before it
    assert [round(v, 4) for _, v in points] == [1.0, round(1 - 10 / 30, 4), round(1 - 10 / 30, 4)]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/gate?service=a", "/gate?service=a"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
    ],
)
def test_sign_in_only_returns_to_a_page_of_this_site(target: str, expected: str) -> None:
    assert safe_next(target) == expected


def test_configured_links_are_only_http_or_this_site() -> None:
    assert safe_href("https://runbooks.example.com/a") == "https://runbooks.example.com/a"
    assert safe_href("/incidents#i-1") == "/incidents#i-1"
    assert safe_href("javascript:alert(1)") == "#"
    assert safe_href("JaVaScRiPt:alert(1)") == "#"
    assert safe_href(None) == "#"


def test_sparklines_drawn_from_a_reader_never_outlive_a_newer_value() -> None:
    """The overview draws its sparklines in a worker thread from a reader's copies while
    the loop records the next values: what it drew is cached only for instances with no
    newer value since, and the live history is never written by the drawing."""
    history = History(size=5)

    def cycle(value: float) -> SLOResult:
        r = SLOResult("svc", "p95", Status.OK, value, 1.0, None, 300, 0, {"pod": "a"})
        history.record("g", [r])
        return r

    first = cycle(0.5)
    reader = history.reader()
    before = reader.spark(first.key, first)  # drawn from [0.5]
    assert history._sparks == {}  # the thread wrote nothing live
    second = cycle(2.0)  # recorded on the loop meanwhile
    history.keep(reader)  # its drawing is older than the value: not cached
    fresh = history.reader().spark(second.key, second)
    assert fresh != before
    # With nothing recorded in between, the drawing is kept and reused.
    reader = history.reader()
    drawn = reader.spark(second.key, second)
    history.keep(reader)
    assert history.reader().sparks[second.key] is drawn
    # A new instance, drawn (empty) before its first value was recorded: nothing cached,
    # no error (the overview asked between the cycle's results and the history's record).
    other = SLOResult("svc", "p95", Status.OK, 1.0, 1.0, None, 300, 0, {"pod": "b"})
    reader = history.reader()
    reader.spark(other.key, other)
    history.record("g", [second, other])
    history.keep(reader)
    assert other.key not in history._sparks


def test_the_sparkline_history_keeps_the_last_values_oldest_first() -> None:
    """The overview's sparklines: the last `size` values of each instance in order, a
    missing value (no_data) as a gap, ±Inf kept, and an instance that left its group
    (a reload, a vanished label) forgotten with the group's next evaluation."""
    history = History(size=3)

    def cycle(*values: float | None, keys: str = "ab") -> None:
        results = [
            SLOResult("svc", "p95", Status.OK, v, 1.0, None, 300, 0, {"pod": k})
            for k, v in zip(keys, values, strict=True)
        ]
        history.record("g", results)

    key = SLOResult("svc", "p95", Status.OK, 0, 1.0, None, 300, 0, {"pod": "a"}).key
    assert history.values(key) == []
    cycle(1.0, 2.0)
    assert history.values(key) == [1.0]
    cycle(None, 2.0)
    cycle(math.inf, 2.0)
    assert history.values(key) == [1.0, None, math.inf]
    cycle(4.0, 2.0)  # the oldest drops out
    cycle(5.0, 2.0)
    assert history.values(key) == [math.inf, 4.0, 5.0]
    cycle(2.0, keys="b")  # `a` left the group
    assert history.values(key) == []


def test_the_sparkline_history_stays_bounded_when_instances_churn() -> None:
    """Instances whose label changes every cycle (a pod name per deploy) come and go: the
    history's memory follows the live instances, not every one ever seen, and the ones
    that stay keep their values in order across the slots being reused and compacted."""
    history = History(size=4)
    steady = SLOResult("svc", "p95", Status.OK, 0, 1.0, None, 300, 0, {"pod": "steady"})
    for cycle in range(3000):
        results = [
            SLOResult("svc", "p95", Status.OK, float(cycle), 1.0, None, 300, 0, {"pod": "steady"}),
            *(
                SLOResult("svc", "p95", Status.OK, 1.0, 1.0, None, 300, 0, {"pod": f"p{cycle}-{i}"})
                for i in range(3)
            ),
        ]
        history.record("g", results)
    assert history.values(steady.key) == [2996.0, 2997.0, 2998.0, 2999.0]
    gone = SLOResult("svc", "p95", Status.OK, 0, 1.0, None, 300, 0, {"pod": "p10-0"})
    assert history.values(gone.key) == []
    assert len(history._counts) <= 2 * 1024 + 4  # 12,000 instances were seen
    assert history.values(results[1].key) == [1.0]  # a new one starts empty, not with
    # the values of the instance whose slot it took


def spark_result(pod: str, value: float | None, threshold: float = 1.0) -> SLOResult:
    return SLOResult("svc", "p95", Status.OK, value, threshold, None, 300, 0, {"pod": pod})


def test_a_group_recording_in_slices_keeps_its_values_while_another_frees_many() -> None:
    """Groups record their results in slices, side by side (`observe`). One that lost
    1,300 instances (its source timed out) must not move the rings under one paused
    half-way: its values landed in discarded arrays and the overview failed after."""
    history = History(size=3)
    history.record("b", [spark_result(f"b{i}", 1.0) for i in range(1300)])
    a = [spark_result(f"a{i}", float(i)) for i in range(140)]
    steps = history._record("a", a)  # the generator `observe` drains
    next(steps)  # paused after its first slice
    history.record("b", [])  # 1,300 slots free: more than live, but a is under way
    assert len(history._counts) == 1300 + 31  # a took 31 before its first yield
    for _ in steps:  # the rest of a's slices; the last one, alone, compacts
        pass
    assert len(history._counts) == 140
    assert [history.values(r.key) for r in a] == [[float(i)] for i in range(140)]
    history.record("a", [spark_result(f"a{i}", -1.0) for i in range(140)])
    assert history.values(a[139].key) == [139.0, -1.0]
    reader = history.reader()
    assert "<svg" in str(reader.spark(a[139].key, a[139]))


def test_an_slo_moved_to_another_rule_file_keeps_its_sparkline_and_a_removed_one_goes() -> None:
    """A reload that deletes a rule file (its group) and moves one of its SLOs into
    another: the moved instance goes on with its values, the rest are let go, and the
    removed group's frozen ring never stands for the instance again."""
    history = History(size=4)
    moved, dropped = spark_result("moved", 1.0), spark_result("dropped", 1.0)
    history.record("z", [moved, dropped])
    history.record("z", [spark_result("moved", 2.0), spark_result("dropped", 2.0)])
    history.keep_groups(["a"])  # the reload: group z is gone
    history.record("a", [spark_result("moved", 3.0)])
    assert history.values(moved.key) == [1.0, 2.0, 3.0]
    assert history.values(dropped.key) == []
    history.record("a", [spark_result("moved", 4.0)])
    assert history.reader().slots[moved.key] == history._groups["a"][moved.key]
    history.keep_groups(["a"])  # the next reload frees what nobody took
    assert len(history._free) == 1


def test_a_reload_that_removes_a_group_while_it_records_gives_no_slot_two_owners() -> None:
    """The reload runs beside the cycles: the removed group's record, paused half-way,
    still holds its slots when the reload forgets the group. They must not be both free
    and waiting for an SLO moved elsewhere, or the next new instances overwrite it."""
    history = History(size=4)
    z = [spark_result(f"z{i}", 1.0) for i in range(40)]
    history.record("z", z)
    steps = history._record("z", [spark_result(f"z{i}", 2.0) for i in range(40)])
    next(steps)
    history.keep_groups(["a", "b"])  # z's file deleted, its SLO z0 moved to a
    for _ in steps:
        pass
    history.record("a", [spark_result("z0", 3.0)])
    history.record("b", [spark_result(f"new{i}", 9.0) for i in range(40)])
    owned = [slot for slots in history._groups.values() for slot in slots.values()]
    assert len(owned) == len(set(owned)) == 41
    assert not set(owned) & set(history._free)
    assert history.values(z[0].key) == [3.0]  # z recorded meanwhile: started afresh
    assert history.values(spark_result("new0", 0).key) == [9.0]


def test_a_record_cancelled_part_way_gives_its_new_slots_back() -> None:
    """A cycle cancelled at shutdown (or its deadline) stops its record part-way: the
    slots it took for new instances are free again, not held by nobody for ever."""
    history = History(size=4)
    for _ in range(50):
        steps = history._record("g", [spark_result(f"p{i}", 1.0) for i in range(100)])
        next(steps)
        next(steps)
        steps.close()
    assert len(history._counts) - len(history._free) == 0
    assert history._recording == 0
    history.record("g", [spark_result(f"p{i}", 1.0) for i in range(100)])
    assert len(history._counts) - len(history._free) == 100


def test_a_sparkline_at_its_threshold_is_not_drawn_as_a_breach() -> None:
    """Values are kept as 4-byte floats: 0.3 s becomes 0.30000001. The row says ok for a
    p95 of 0.3 against a threshold of 0.3, and so must its sparkline's colour."""
    history = History()
    at = [spark_result("a", 0.3, threshold=0.3), spark_result("b", 0.3000001, threshold=0.3)]
    history.record("g", at)
    history.record("g", at)
    reader = history.reader()
    assert "class=bad" not in str(reader.spark(at[0].key, at[0]))
    assert "class=bad" in str(reader.spark(at[1].key, at[1]))


def test_the_header_shows_dependencies_but_not_the_gates_own_clients() -> None:
    """A gate query that failed hours ago stays the gate client's last outcome; the
    header's glance is for what the daemon runs on (the detail is in /health/detailed)."""
    checks = {
        "prometheus": {"status": "healthy", "latency_ms": 3.0},
        "state_store": {"status": "unhealthy", "last_error": "disk full"},
        "notifier:oncall": {"status": "healthy"},
        "gate:prometheus": {"status": "unhealthy", "last_error": "timeout", "informational": True},
    }
    shown = {d.name: (d.status, d.detail) for d in dependencies(checks)}
    assert shown == {
        "prometheus": ("healthy", "3 ms"),
        "state_store": ("unhealthy", "disk full"),
        "oncall": ("healthy", ""),
    }
