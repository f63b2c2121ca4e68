"""The cycle's hot paths measured inline must judge exactly as the checked paths do.

Evaluation and budgets take a shortcut for the honest answer (one finite, non-negative
series per part) and fall back to the checked code for everything else; these tests feed
both every shape of answer a backend can send (NaN, +-Inf, negatives, bad > total, zero
traffic, several series, missing parts) and require the same results, field by field.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any

import pytest

from sentinel.evaluate.budgets import (
    KeptParses,
    TierNames,
    _honest_error_ratio_steps,
    _honest_window_ratios,
    apply_budgets,
    budget_steps,
    checked_window_ratios,
    window_ratios,
    with_budget,
)
from sentinel.evaluate.burn import WindowRatio, budget_report, judge_tier
from sentinel.evaluate.slo import (
    InstanceKey,
    SLOResult,
    Status,
    _judge,
    _maker,
    _measure,
    _pair_steps,
    evaluate,
    group_parts,
    grouped_steps,
)
from sentinel.query.promql import PART_LABEL
from sentinel.rules.catalogues import BurnTier, builtin_catalogue
from sentinel.rules.model import (
    SLO,
    BurnPolicy,
    GoodWhen,
    LatencySLI,
    PromQLSLI,
    RatioSLI,
    Selector,
    SLIKind,
)
from sentinel.slicing import finish_now
from sentinel.sources.base import Sample
from sentinel.units import format_duration

RATIO = SLO(
    service="shop",
    name="5xx",
    sli=RatioSLI(Selector("http_requests_total"), Selector("http_requests_total")),
    threshold=0.005,
    objective=0.995,
    window=300,
    min_events=10,
    group_by=("service",),
)
LATENCY = SLO(
    service="shop",
    name="p95",
    sli=LatencySLI(Selector("h"), 0.95),
    threshold=1.5,
    window=300,
    min_events=5,
    group_by=("service", "region"),
)
RAW = SLO(
    service="shop",
    name="avail",
    sli=PromQLSLI("x"),
    threshold=0.99,
    window=300,
    good_when=GoodWhen.ABOVE,
)

# Values a backend may send: ordinary, zero, tiny, huge, negative, NaN, infinities.
VALUES = (0.0, -0.0, 1.0, 3.0, 3.0000000001, 1e-300, 1e308, -1.0, math.nan, math.inf, -math.inf)


def _same(a: SLOResult, b: SLOResult) -> bool:
    # repr compares NaN values equal (nan != nan) and every field, budget included.
    return repr(a) == repr(b)


def _part_shapes(name: str) -> list[list[float] | None]:
    """Absent, one series of each value, two series."""
    return [None, *([v] for v in VALUES), [1.0, 2.0], [math.nan, 1.0]]


@pytest.mark.parametrize("slo", [RATIO, LATENCY, RAW], ids=lambda s: s.name)
def test_the_inline_judgement_equals_the_checked_one_for_every_shape_of_answer(slo: SLO) -> None:
    make = _maker(slo, 1000.0, "q", None)
    judge = _judge(slo, make)
    names = ("bad", "total") if slo is RATIO else ("value", "events")
    key = ("shop",) if slo is RATIO else (("shop", "eu") if slo is LATENCY else ())
    checked = 0
    for first, second in itertools.product(_part_shapes(names[0]), _part_shapes(names[1])):
        for with_ratio in (False, True):
            parts: dict[str, list[float]] = {}
            if first is not None:
                parts[names[0]] = first
            if second is not None:
                parts[names[1]] = second
            if with_ratio:
                parts["ratio"] = [0.5]
            expected = make(key, *_measure(slo, parts))
            assert _same(judge(key, parts), expected), parts
            checked += 1
    assert checked > 200


LATENCY_BY_SERVICE = dataclasses.replace(LATENCY, group_by=("service",))


@pytest.mark.parametrize("slo", [RATIO, LATENCY_BY_SERVICE], ids=lambda s: s.name)
def test_an_answer_read_in_one_pass_is_judged_as_the_grouped_answer_is(slo: SLO) -> None:
    """An SLO grouped by one label reads its answer's two parts in one pass (no lists
    per instance); every value a backend may send, each part absent or present, instances
    only remembered, and answers the pass refuses (a duplicate series, a part it does not
    know, nothing at all) give the results the grouped path gives, field by field."""
    first, second = ("total", "bad") if slo is RATIO else ("value", "events")
    values: list[float | None] = [None, *VALUES]
    samples: list[Sample] = []
    for i, (one, two) in enumerate(itertools.product(values, values)):
        for part, value in ((first, one), (second, two)):
            if value is not None:
                samples.append(Sample({PART_LABEL: part, "service": f"s{i:03d}"}, value))
    # Remembered: gone, still here, and keys of another length (a reload changed the
    # SLO's group_by; the whole-SLO key) that no value of this answer belongs to.
    known = {("gone",), ("s000",), ("s001", "eu"), ()}
    assert finish_now(_pair_steps("service", samples, first, second)) is not None
    duplicate = [*samples, Sample({PART_LABEL: first, "service": "s012"}, 1.0)]
    unknown = [*samples, Sample({PART_LABEL: "ratio", "service": "s007"}, 0.5)]
    # A series without the part label is a `value`; one without the group label is "".
    partless = [*samples[:4], Sample({"service": "x"}, 0.5), Sample({PART_LABEL: first}, 2.0)]
    assert finish_now(_pair_steps("service", duplicate, first, second)) is None
    assert finish_now(_pair_steps("service", unknown, first, second)) is None
    for answer in (samples, duplicate, unknown, [], samples[:3], partless):
        for remembered in (set(), known):
            names: dict[InstanceKey, Any] = {}
            for _ in range(2):  # the second time with labels and keys lent by `names`
                seen: set[InstanceKey] = set()
                got = evaluate(slo, answer, 1000.0, "q", remembered, None, seen, names)
                seen_grouped: set[InstanceKey] = set()
                want = finish_now(
                    grouped_steps(
                        slo, group_parts(slo, answer), 1000.0, "q", remembered, None, seen_grouped
                    )
                )
                assert len(got) == len(want) and seen == seen_grouped
                for a, b in zip(got, want, strict=True):
                    assert _same(a, b) and a.key == b.key
    statuses = {r.status for r in evaluate(slo, samples, 1000.0)}
    assert statuses == {Status.OK, Status.BREACH, Status.NO_DATA}


def test_ratio_results_keep_their_labels_status_and_reason() -> None:
    samples = [
        Sample({PART_LABEL: "bad", "service": "a"}, 1.0),
        Sample({PART_LABEL: "total", "service": "a"}, 1000.0),
        Sample({PART_LABEL: "bad", "service": "b"}, 50.0),
        Sample({PART_LABEL: "total", "service": "b"}, 1000.0),
        Sample({PART_LABEL: "total", "service": "c"}, 5.0),
    ]
    out = {r.labels["service"]: r for r in evaluate(RATIO, samples, 1000.0)}
    assert out["a"].status is Status.OK and out["a"].value == 0.001 and out["a"].events == 1000
    assert out["b"].status is Status.BREACH and out["b"].value == 0.05
    assert out["c"].status is Status.NO_DATA and "insufficient traffic" in out["c"].reason
    assert out["a"].service == "a" and dict(out["a"].labels) == {"service": "a"}


def test_attaching_a_budget_keeps_every_other_field_of_the_result() -> None:
    values = {}
    for f in dataclasses.fields(SLOResult):
        if not f.init:
            continue  # a cache of a derived value (`_key`)
        values[f.name] = {
            "status": Status.BREACH,
            "labels": {"service": "x"},
            "budget": {"old": 1},
        }.get(f.name, f"{f.name}-value" if f.type in ("str", "Status") else 0.25)
    original = SLOResult(**values)
    budget = {"remaining": 0.5}
    assert repr(with_budget(original, budget)) == repr(dataclasses.replace(original, budget=budget))


MONTH = 30 * 86400.0
BURN = dataclasses.replace(
    RATIO, period=MONTH, burn=BurnPolicy(builtin_catalogue(MONTH), min_events=20)
)


@pytest.mark.parametrize("failed_window", [None, 3600.0, 300.0])
def test_budgets_judge_every_shape_of_window_answer_as_the_checked_path_does(
    failed_window: float | None,
) -> None:
    """Every window answers with a different mix of shapes per instance (and one window
    query fails): the budgets and tiers must equal the code they replaced."""
    assert BURN.burn is not None
    windows = sorted({MONTH, *BURN.burn.catalogue.windows()})
    shapes = [
        (b, t) for b in (None, 0.0, -0.0, 1.0, 30.0, math.nan, -1.0) for t in (1000.0, 0.0, 10.0)
    ]
    answers: dict[float, list[Sample] | None] = {}
    for j, w in enumerate(windows):
        samples: list[Sample] = []
        for i in range(len(shapes)):
            bad, total = shapes[(i + j) % len(shapes)]
            if bad is not None:
                samples.append(Sample({PART_LABEL: "bad", "service": f"s{i}"}, bad))
            if (i + j) % 7:  # now and then no total at all for this window
                samples.append(Sample({PART_LABEL: "total", "service": f"s{i}"}, total))
        answers[w] = None if w == failed_window else samples
    first = answers[windows[0]] or []
    results = evaluate(BURN, first, 1000.0, known={(f"s{i}",) for i in range(len(shapes) + 2)})
    queries = {w: f"q{w}" for w in windows}
    out = apply_budgets(BURN, results, answers, queries)
    reference = _reference_budgets(BURN, results, answers, queries)
    assert len(out) == len(reference) == len(results) * 5
    for got, want in zip(out, reference, strict=True):
        assert _same(got, want)
    # The daemon lends each tier result its labels and key from the cycle before.
    tier_names: TierNames = {}
    for _ in range(2):
        lent = apply_budgets(BURN, results, answers, queries, tier_names)
        assert len(tier_names) == len(results)
        for got, want in zip(lent, reference, strict=True):
            assert _same(got, want) and got.key == want.key
    assert {r.status for r in out if r.kind == SLIKind.BURN_RATE} >= {Status.NO_DATA, Status.OK}


def test_a_reused_window_answer_keeps_its_judgement_and_a_new_answer_is_judged_afresh() -> None:
    """The daemon reuses a long window's answer for cycles (`kept`, `reused`): the same
    answer object gives the same budgets every cycle, and an answer asked again, a failed
    window, or a window no longer reused is judged from what it says now."""
    assert BURN.burn is not None
    windows = sorted({MONTH, *BURN.burn.catalogue.windows()})
    queries = {w: f"q{w}" for w in windows}

    def answer(bad: float) -> list[Sample]:
        return _ratio_window([(bad, 1000.0), (1.0, 1000.0)])

    def budgets(answers: Mapping[float, list[Sample] | None], **reuse: Any) -> list[Any]:
        results = evaluate(BURN, answer(1.0), 1000.0)
        out = finish_now(budget_steps(BURN, results, answers, queries, **reuse))
        return [(r.key, r.status, r.value, r.budget) for r in out]

    month = answer(10.0)
    answers: dict[float, list[Sample] | None] = {w: answer(10.0) for w in windows}
    answers[MONTH] = month
    kept: KeptParses = {}
    first = budgets(answers, kept=kept, reused={MONTH})
    assert first == budgets(answers) and set(kept) == {MONTH}
    assert budgets(answers, kept=kept, reused={MONTH}) == first  # the kept judgement
    # Asked again (a new answer object, other values): judged afresh, kept anew.
    answers[MONTH] = month = answer(400.0)
    again = budgets(answers, kept=kept, reused={MONTH})
    assert again == budgets(answers) and again != first
    assert kept[MONTH][0] is month
    # Not reused any more (asked every cycle): judged afresh and no longer kept.
    assert budgets(answers, kept=kept, reused=()) == again and not kept
    # A failed window forgets what its earlier answer said.
    budgets(answers, kept=kept, reused={MONTH})
    answers[MONTH] = None
    failed = budgets(answers, kept=kept, reused={MONTH})
    assert failed == budgets(answers) and not kept


def _ratio_window(pairs: list[tuple[float | None, float | None]]) -> list[Sample]:
    samples = []
    for i, (bad, total) in enumerate(pairs):
        if bad is not None:
            samples.append(Sample({PART_LABEL: "bad", "service": f"s{i}"}, bad))
        if total is not None:
            samples.append(Sample({"service": f"s{i}", PART_LABEL: "total"}, total))
    return samples


def test_a_window_is_judged_in_one_pass_exactly_as_the_checked_path_judges_it() -> None:
    """Each (bad, total) a backend may send, next to an honest instance: the one-pass
    judgement of a window equals the checked one, reasons of unusable values included."""
    honest = 0
    for bad, total in itertools.product((None, *VALUES), (None, *VALUES)):
        samples = _ratio_window([(1.0, 100.0), (bad, total), (None, 0.0)])
        got, want = window_ratios(RATIO, samples), checked_window_ratios(RATIO, samples)
        assert repr(got) == repr(want), (bad, total)
        honest += _honest_window_ratios("service", samples) is not None
    assert 0 < honest < 12 * 12  # both paths were taken


def test_a_window_of_thousands_of_instances_is_judged_as_the_checked_path_judges_it() -> None:
    """Read in slices, an instance's bad and total series may fall in different ones."""
    pairs: list[tuple[float | None, float | None]] = [
        (float(i % 7), 100.0 + i) if i % 5 else (None, 50.0) for i in range(3000)
    ]
    samples = _ratio_window(pairs)
    samples = samples[1::2] + samples[::2]  # totals and bads far apart
    assert _honest_window_ratios("service", samples) is not None
    assert window_ratios(RATIO, samples) == checked_window_ratios(RATIO, samples)  # no NaN
    samples.append(samples[10])  # one duplicate series among thousands
    assert _honest_window_ratios("service", samples) is None


def test_a_window_of_error_ratios_is_judged_in_one_pass_as_the_checked_path_judges_it() -> None:
    """The recorded windows answer one `ratio` series per instance: every value a backend
    may send (NaN is no traffic; within rounding above 1 is 1; outside 0..1 is unusable,
    with the checked path's reason), next to honest instances, and answers the pass
    refuses (a duplicate series, another part) judge as the checked path judges."""

    def window(values: list[float]) -> list[Sample]:
        return [Sample({PART_LABEL: "ratio", "service": f"s{i}"}, v) for i, v in enumerate(values)]

    one_pass = 0
    for value in (*VALUES, 0.5, 1.0, 1.0 + 1e-12, 1.0 + 1e-6, 2.0):
        for samples in (
            window([0.001, value, 0.0]),
            [*window([0.001, value]), Sample({PART_LABEL: "ratio", "service": "s1"}, 0.2)],
            [*window([0.001, value]), Sample({PART_LABEL: "total", "service": "s2"}, 10.0)],
        ):
            got, want = window_ratios(RATIO, samples), checked_window_ratios(RATIO, samples)
            assert repr(got) == repr(want), (value, samples)
            one_pass += finish_now(_honest_error_ratio_steps("service", samples)) is not None
    assert 0 < one_pass < len(VALUES) + 5  # the honest windows only, and some of them


@pytest.mark.parametrize(
    "samples",
    [
        [Sample({PART_LABEL: "total", "service": "a"}, 5.0)] * 2,  # duplicate series
        [Sample({PART_LABEL: "bad", "service": "a"}, 1.0)],  # bad events, no total
        [Sample({PART_LABEL: "ratio", "service": "a"}, 0.1)],  # a raw ratio part
        [Sample({"service": "a"}, 5.0)],  # no part label at all
        [Sample({PART_LABEL: "total"}, 5.0), Sample({PART_LABEL: "bad"}, 9.0)],  # no label
    ],
    ids=["duplicate", "bad-only", "ratio", "no-part", "no-group-label"],
)
def test_an_unusual_window_answer_takes_the_checked_path(samples: list[Sample]) -> None:
    assert _honest_window_ratios("service", samples) is None
    assert repr(window_ratios(RATIO, samples)) == repr(checked_window_ratios(RATIO, samples))


# -- the oracle: budgets.py's apply_budgets and _tier_result as they were at 2361031 ---------


def _reference_budgets(slo, results, answers, queries):  # type: ignore[no-untyped-def]
    parsed = {w: window_ratios(slo, s) if s is not None else None for w, s in answers.items()}
    by_window = {w: p[0] if p is not None else None for w, p in parsed.items()}
    budget = 1.0 - slo.objective
    names = {w: format_duration(w) for w in answers}
    out, tiers = [], []
    for result in results:
        key: InstanceKey = (
            tuple(result.labels.get(g, "") for g in slo.group_by) if result.labels else ()
        )
        windows = {w: r[key] for w, r in by_window.items() if r is not None and key in r}
        unusable = {w: p[1][key] for w, p in parsed.items() if p is not None and key in p[1]}
        report = budget_report(slo.objective, slo.period, windows.get(slo.period), windows, names)
        out.append(dataclasses.replace(result, budget=report))
        failed = [w for w, r in by_window.items() if r is None]
        for tier in slo.burn.catalogue.tiers:
            if tier.severity not in slo.burn.tiers:
                continue
            tiers.append(
                _tier_result(slo, result, tier, windows, unusable, failed, budget, queries, names)
            )
    return out + tiers


def _tier_result(  # type: ignore[no-untyped-def]
    slo: SLO,
    result: SLOResult,
    tier: BurnTier,
    windows: Mapping[float, WindowRatio],
    unusable: Mapping[float, str],
    failed: list[float],
    budget: float,
    queries: Mapping[float, str],
    names: Mapping[float, str],
) -> SLOResult:
    assert slo.burn is not None and slo.period is not None  # apply_budgets checked both
    verdict = judge_tier(tier, slo.period, budget, windows, slo.burn.min_events)
    needed = (tier.long_window, tier.short_window)
    garbage = [
        f"{names.get(w) or format_duration(w)}: {unusable[w]}" for w in needed if w in unusable
    ]
    if any(w in failed for w in needed):
        status, reason = Status.NO_DATA, "a burn-rate window query failed"
    elif garbage:
        status, reason = Status.NO_DATA, "; ".join(garbage)
    elif not verdict.judged:
        # Burn rates over too few events prove nothing either way: no_data, not ok.
        status, reason = Status.NO_DATA, verdict.reason
    else:
        status = Status.BREACH if verdict.firing else Status.OK
        reason = verdict.reason
    return SLOResult(
        service=result.service,
        slo=slo.name,
        status=status,
        value=verdict.long_burn,
        threshold=verdict.factor,
        objective=slo.objective,
        window=tier.long_window,
        evaluated_at=result.evaluated_at,
        labels={**result.labels, "tier": f"{tier.severity}-{tier.speed}"},
        events=windows[tier.long_window].total if tier.long_window in windows else None,
        reason=reason,
        query=queries.get(tier.long_window, ""),
        kind=SLIKind.BURN_RATE,
        severity=tier.severity,
        budget={
            "short_window": names.get(tier.short_window) or format_duration(tier.short_window),
            "short_burn": verdict.short_burn,
            "long_window": names.get(tier.long_window) or format_duration(tier.long_window),
            "long_burn": verdict.long_burn,
            "factor": verdict.factor,
        },
    )


def test_a_results_key_is_its_own_after_a_copy_with_other_labels() -> None:
    """`key` is computed once per result; a copy with other labels has its own key."""
    result = SLOResult("shop", "5xx", Status.OK, 0.001, 0.005, 0.995, 300, 1.0, {"region": "eu"})
    assert result.key == "shop/5xx{region=eu}"
    moved = dataclasses.replace(result, labels={"region": "us", "az": "b"})
    assert moved.key == "shop/5xx{az=b,region=us}"
    assert with_budget(result, {}).key == result.key
