"""Budgets and burn-rate tiers for one cycle, pure: the answers of an SLO's window
queries in, the SLO results (with their `budget`) and one result per burn tier out.

A burn tier result has `kind="burn_rate"`, the tier's severity, and a `tier` label, so
it is its own alert in the state machine (and its own row in /api/v1/slos).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentinel.evaluate.burn import WindowRatio
from sentinel.evaluate.slo import (
    _BAD_OVER_TOTAL,
    _MAX,
    InstanceKey,
    SLOResult,
    Status,
    Unusable,
    bad_total,
    count,
    error_ratio,
    group_parts_steps,
)
from sentinel.query.promql import PART_LABEL
from sentinel.rules.catalogues import BurnTier
from sentinel.rules.model import SLO, SLIKind
from sentinel.slicing import CHUNK, ITEMS_PER_YIELD, SAMPLES_CHUNK, Steps, finish_now
from sentinel.sources.base import Sample
from sentinel.units import format_duration

Unusables = dict[InstanceKey, str]
# One window's answer judged per instance (`window_ratios`).
WindowParse = tuple[dict[InstanceKey, WindowRatio], Unusables]
# Per window of one SLO, an answer reused from an earlier cycle and what it was judged to
# (`budget_steps(kept=...)`).
KeptParses = dict[float, tuple[Sequence[Sample], WindowParse, "WindowRates"]]
# One window's burn rate per instance (None: no traffic in the window).
WindowRates = dict[InstanceKey, float | None]
# Per instance of one SLO, each burn tier's labels and key (`Names` for the tier results).
TierNames = dict[InstanceKey, list[tuple[Mapping[str, str], str]]]


def window_ratios(slo: SLO, samples: Sequence[Sample]) -> WindowParse:
    """Per instance, bad and total of one window; and, apart, the instances whose values
    cannot be judged (NaN, +-Inf, negative, bad > total) with the reason."""
    return finish_now(window_ratio_steps(slo, samples))


def window_ratio_steps(slo: SLO, samples: Sequence[Sample]) -> Steps[WindowParse]:
    """`window_ratios` as a step that yields every few hundred samples."""
    if len(slo.group_by) == 1:
        honest = yield from _honest_window_ratio_steps(slo.group_by[0], samples)
        if honest is None and samples and samples[0].labels.get(PART_LABEL) == "ratio":
            honest = yield from _honest_error_ratio_steps(slo.group_by[0], samples)
        if honest is not None:
            return honest, {}
    return (yield from checked_window_ratio_steps(slo, samples))


def _honest_window_ratios(
    label: str, samples: Sequence[Sample]
) -> dict[InstanceKey, WindowRatio] | None:
    """The common answer judged in one pass without grouping into lists: one `bad` and
    one `total` series per instance, finite counts, bad <= total. Anything else (a
    duplicate series, another part, a value no counter has) returns None and the whole
    window takes the checked path, so both always agree (tests/unit/test_eval_fastpath.py).
    A window holds thousands of instances and a cycle reads up to eight windows per SLO."""
    return finish_now(_honest_window_ratio_steps(label, samples))


def _honest_window_ratio_steps(
    label: str, samples: Sequence[Sample]
) -> Steps[dict[InstanceKey, WindowRatio] | None]:
    bad: dict[str, float] = {}
    total: dict[str, float] = {}
    for start in range(0, len(samples), SAMPLES_CHUNK):
        for labels, value in samples[start : start + SAMPLES_CHUNK]:
            part = labels.get(PART_LABEL)
            if part == "total":
                total[labels.get(label, "")] = value
            elif part == "bad":
                bad[labels.get(label, "")] = value
            else:
                return None
        yield
    if len(bad) + len(total) != len(samples) or not bad.keys() <= total.keys():
        return None  # a duplicate (instance, part), or bad events without a total
    out: dict[InstanceKey, WindowRatio] = {}
    # WindowRatio's own constructor is a Python function (a NamedTuple's): a tenth of
    # the budget step's CPU for the thousands of ratios a window holds.
    new, ratio = tuple.__new__, WindowRatio
    for n, (name, events) in enumerate(total.items()):
        if n % SAMPLES_CHUNK == SAMPLES_CHUNK - 1:
            yield
        errors = bad.get(name, 0.0)
        if 0.0 < events <= _MAX and 0.0 <= errors <= events:
            out[(name,)] = new(ratio, (errors or 0.0, events, True))  # -0.0 is 0
        elif events == 0.0 and errors == 0.0:
            out[(name,)] = new(ratio, (0.0, events, True))  # no traffic in this window
        else:
            return None
    return out


def _honest_error_ratio_steps(
    label: str, samples: Sequence[Sample]
) -> Steps[dict[InstanceKey, WindowRatio] | None]:
    """A window of raw error ratios (the recorded series of `sentinel rules export`) in
    one pass: one `ratio` series per instance, each within 0..1 or NaN (no traffic: no
    ratio, as `error_ratio` says). Anything else returns None and takes the checked path
    (tests/unit/test_eval_fastpath.py compares them)."""
    ratios: dict[str, float] = {}
    for start in range(0, len(samples), SAMPLES_CHUNK):
        for labels, value in samples[start : start + SAMPLES_CHUNK]:
            if labels.get(PART_LABEL) != "ratio":
                return None
            ratios[labels.get(label, "")] = value
        yield
    if len(ratios) != len(samples):
        return None  # two series for one instance
    out: dict[InstanceKey, WindowRatio] = {}
    new, ratio, most = tuple.__new__, WindowRatio, 1.0 + _BAD_OVER_TOTAL
    for n, (name, value) in enumerate(ratios.items()):
        if n % SAMPLES_CHUNK == SAMPLES_CHUNK - 1:
            yield
        if 0.0 <= value <= most:
            out[(name,)] = new(ratio, (min(value or 0.0, 1.0), 1.0, False))  # -0.0 is 0
        elif value == value:  # not NaN: outside 0..1, the checked path says why
            return None
    return out


def checked_window_ratios(slo: SLO, samples: Sequence[Sample]) -> WindowParse:
    """`window_ratios` for every shape of answer, each value checked and explained."""
    return finish_now(checked_window_ratio_steps(slo, samples))


def checked_window_ratio_steps(slo: SLO, samples: Sequence[Sample]) -> Steps[WindowParse]:
    out: dict[InstanceKey, WindowRatio] = {}
    unusable: Unusables = {}
    grouped = yield from group_parts_steps(slo, samples)
    for n, (key, parts) in enumerate(grouped.items()):
        if n % CHUNK == CHUNK - 1:
            yield
        totals, bads = parts.get("total"), parts.get("bad")
        if totals is not None and len(totals) == 1 and "ratio" not in parts:
            # The honest answer, measured inline (same result as the checked path below).
            one = totals[0]
            if 0.0 < one <= _MAX:
                if bads is None:
                    out[key] = WindowRatio(0.0, one)
                    continue
                if len(bads) == 1 and 0.0 <= bads[0] <= one:
                    out[key] = WindowRatio(bads[0] or 0.0, one)  # -0.0 is 0
                    continue
        try:
            if "ratio" in parts:
                ratio = error_ratio(parts["ratio"])
                if ratio is not None:
                    out[key] = WindowRatio(ratio, 1.0, counted=False)
                continue
            total = count(parts.get("total"), "total")
            bad = count(parts.get("bad"), "bad") or 0.0
            if total is not None and total > 0:
                bad_total(bad, total)  # raises Unusable for bad > total
                bad = min(bad, total)  # float rounding of equal sums
        except Unusable as exc:
            unusable[key] = str(exc)
            continue
        if total is not None:
            out[key] = WindowRatio(bad, total)
    return out, unusable


def apply_budgets(
    slo: SLO,
    results: Sequence[SLOResult],
    answers: Mapping[float, Sequence[Sample] | None],
    queries: Mapping[float, str],
    tier_names: TierNames | None = None,
) -> list[SLOResult]:
    """`answers[window]` is None when that query failed. Returns the SLO's results with
    budgets attached, followed by the burn-tier results. `tier_names`, kept by the caller
    for this SLO across cycles, lends each tier result its labels and key (`Names`).

    Everything constant for the SLO (window names, tier factors, the tiers judged) is
    computed once per call, not per instance: a cycle judges thousands of instances.
    """
    return finish_now(budget_steps(slo, results, answers, queries, tier_names))


def budget_steps(
    slo: SLO,
    results: Sequence[SLOResult],
    answers: Mapping[float, Sequence[Sample] | None],
    queries: Mapping[float, str],
    tier_names: TierNames | None = None,
    kept: KeptParses | None = None,
    reused: Collection[float] = (),
) -> Steps[list[SLOResult]]:
    """`apply_budgets` as a step that yields after each window's answer and every few
    instances (sentinel/slicing.py).

    `reused` names the windows whose answer is one reused from an earlier cycle (the
    daemon asks a long window again only every 1/720 of it); `kept`, kept by the caller
    for this SLO, holds what those answers were judged to, and their burn rates, so the
    same answer object is not judged again (only while it is reused: an answer asked
    every cycle is not kept)."""
    if slo.period is None or slo.objective is None:
        return list(results)
    budget = 1.0 - slo.objective
    parsed: dict[float, WindowParse | None] = {}
    rates: dict[float, WindowRates] = {}
    for w, samples in answers.items():
        hit = kept.get(w) if kept is not None and w in reused else None
        if hit is not None and hit[0] is samples:
            parsed[w], rates[w] = hit[1], hit[2]
            continue
        judged = parsed[w] = (
            (yield from window_ratio_steps(slo, samples)) if samples is not None else None
        )
        if judged is not None:
            rates[w] = yield from _rate_steps(judged[0], budget)
        if kept is not None:
            if judged is not None and samples is not None and w in reused:
                kept[w] = (samples, judged, rates[w])
            else:
                kept.pop(w, None)
        yield
    by_window = {w: p[0] if p is not None else None for w, p in parsed.items()}
    garbage = {w: p[1] for w, p in parsed.items() if p is not None and p[1]}
    failed = {w for w, ratios in by_window.items() if ratios is None}
    names = {w: format_duration(w) for w in answers}
    # Each instance's burn rates, window by window in the order a report lists them.
    columns = [(names[w], rates[w]) for w in sorted(rates)]
    period, objective = slo.period, slo.objective
    period_name = names.get(period) or format_duration(period)
    period_ratios = by_window.get(period) or {}
    judges = [
        _TierJudge(plan, by_window, rates, garbage, failed)
        for plan in _tier_plans(slo, budget, names, queries)
    ]
    group_by = slo.group_by
    single = group_by[0] if len(group_by) == 1 else None
    out: list[SLOResult] = []
    tiers: list[SLOResult] = []
    for i, result in enumerate(results):
        if i % ITEMS_PER_YIELD == ITEMS_PER_YIELD - 1:
            yield
        labels = result.labels
        if not labels:
            key: InstanceKey = ()
        elif single is not None:
            key = (labels.get(single, ""),)
        else:
            key = tuple(labels.get(g, "") for g in group_by)
        # burn.budget_report, inlined (thousands per cycle; the same dict, key for key).
        burn_rates = {name: column[key] for name, column in columns if key in column}
        whole = period_ratios.get(key)
        ratio = consumed = None
        if whole is not None and whole.total > 0:
            ratio = whole.bad / whole.total
            consumed = ratio / budget
        out.append(
            with_budget(
                result,
                {
                    "period": period_name,
                    "error_ratio": ratio,
                    "sli": None if ratio is None else 1.0 - ratio,
                    "budget_total": budget,
                    "consumed": consumed,
                    "remaining": None if consumed is None else 1.0 - consumed,
                    "events": whole.total if whole is not None and whole.counted else None,
                    "burn_rates": burn_rates,
                },
            )
        )
        named = tier_names.get(key) if tier_names is not None else None
        if named is not None:
            for judge, name in zip(judges, named, strict=True):
                tiers.append(judge(slo, objective, result, key, name))
        else:
            made = [judge(slo, objective, result, key, None) for judge in judges]
            if tier_names is not None:
                tier_names[key] = [(r.labels, r.key) for r in made]
            tiers.extend(made)
    return out + tiers


def _rate_steps(ratios: Mapping[InstanceKey, WindowRatio], budget: float) -> Steps[WindowRates]:
    """Per instance, the window's burn rate (`burn.burn_rate`): None without traffic."""
    out: WindowRates = {}
    items = list(ratios.items())
    for start in range(0, len(items), SAMPLES_CHUNK):
        for key, (bad, total, _) in items[start : start + SAMPLES_CHUNK]:
            out[key] = bad / total / budget if total > 0 else None
        yield
    return out


def with_budget(result: SLOResult, budget: Mapping[str, Any]) -> SLOResult:
    """`dataclasses.replace(result, budget=budget)`, at a fifth of its cost (thousands per
    cycle); tests/unit/test_eval_fastpath.py checks that every field is carried over."""
    r = result
    out = SLOResult(
        r.service,
        r.slo,
        r.status,
        r.value,
        r.threshold,
        r.objective,
        r.window,
        r.evaluated_at,
        r.labels,
        r.events,
        r.reason,
        r.query,
        r.kind,
        r.severity,
        budget,
        r.good_when,
    )
    out._key = r._key  # the same instance: the key computed (or lent) stays valid
    return out


@dataclass(frozen=True)
class _TierPlan:
    """One burn tier of one SLO, with what every instance's judgement shares."""

    tier: BurnTier
    factor: float
    label: str  # the `tier` label: page-quick, ...
    long_name: str
    short_name: str
    query: str
    budget: float
    min_events: float


def _tier_plans(
    slo: SLO, budget: float, names: Mapping[float, str], queries: Mapping[float, str]
) -> list[_TierPlan]:
    if slo.burn is None or slo.period is None:
        return []
    return [
        _TierPlan(
            tier,
            tier.factor(slo.period),
            f"{tier.severity}-{tier.speed}",
            names.get(tier.long_window) or format_duration(tier.long_window),
            names.get(tier.short_window) or format_duration(tier.short_window),
            queries.get(tier.long_window, ""),
            budget,
            slo.burn.min_events,
        )
        for tier in slo.burn.catalogue.tiers
        if tier.severity in slo.burn.tiers
    ]


# Enum members read once (~75 ns each read through the class in CPython 3.11; four for
# each of the thousands of tier results a cycle).
_NO_DATA, _BREACH, _OK, _BURN_RATE = Status.NO_DATA, Status.BREACH, Status.OK, SLIKind.BURN_RATE


class _TierJudge:
    """One burn tier of one SLO judged for each instance of a cycle: `judge_tier` and
    `_tier_result` of tests/unit/test_eval_fastpath.py in one call, with what every
    instance shares (the tier's windows' ratios and burn rates, whether a window failed
    or holds values that cannot be judged) looked up once per cycle."""

    __slots__ = (
        "failed",
        "long_garbage",
        "long_rates",
        "long_ratios",
        "plan",
        "short_garbage",
        "short_rates",
        "short_ratios",
    )

    def __init__(
        self,
        plan: _TierPlan,
        by_window: Mapping[float, Mapping[InstanceKey, WindowRatio] | None],
        rates: Mapping[float, WindowRates],
        garbage: Mapping[float, Unusables],
        failed: Collection[float],
    ):
        long_window, short_window = plan.tier.long_window, plan.tier.short_window
        self.plan = plan
        self.long_ratios = by_window.get(long_window) or {}
        self.short_ratios = by_window.get(short_window) or {}
        self.long_rates = rates.get(long_window) or {}
        self.short_rates = rates.get(short_window) or {}
        self.failed = long_window in failed or short_window in failed
        self.long_garbage = garbage.get(long_window) or {}
        self.short_garbage = garbage.get(short_window) or {}

    def __call__(
        self,
        slo: SLO,
        objective: float,
        result: SLOResult,
        key: InstanceKey,
        named: tuple[Mapping[str, str], str] | None,
    ) -> SLOResult:
        plan = self.plan
        long_w = self.long_ratios.get(key)
        long_burn = self.long_rates.get(key)  # None: no traffic (or no answer)
        short_burn = self.short_rates.get(key)
        reason = ""
        if self.failed:
            status, reason = _NO_DATA, "a burn-rate window query failed"
        elif (self.long_garbage or self.short_garbage) and (
            key in self.long_garbage or key in self.short_garbage
        ):
            status, reason = (
                _NO_DATA,
                "; ".join(
                    f"{name}: {bad[key]}"
                    for bad, name in (
                        (self.long_garbage, plan.long_name),
                        (self.short_garbage, plan.short_name),
                    )
                    if key in bad
                ),
            )
        else:
            short_w = self.short_ratios.get(key)
            small = []
            if long_burn is None or (
                long_w is not None and long_w.counted and long_w.total < plan.min_events
            ):
                small.append(plan.long_name)
            if short_burn is None or (
                short_w is not None and short_w.counted and short_w.total < plan.min_events
            ):
                small.append(plan.short_name)
            if small:
                # Burn rates over too few events prove nothing either way: no_data, not ok.
                reason = (
                    f"too little traffic in {', '.join(small)} (min_events {plan.min_events:g})"
                )
                status = _NO_DATA
            else:
                assert long_burn is not None and short_burn is not None
                firing = long_burn > plan.factor and short_burn > plan.factor
                status = _BREACH if firing else _OK
        tiered = SLOResult(
            result.service,
            slo.name,
            status,
            long_burn,
            plan.factor,
            objective,
            plan.tier.long_window,
            result.evaluated_at,
            named[0] if named is not None else {**result.labels, "tier": plan.label},
            long_w.total if long_w is not None else None,
            reason,
            plan.query,
            _BURN_RATE,
            plan.tier.severity,
            {
                "short_window": plan.short_name,
                "short_burn": short_burn,
                "long_window": plan.long_name,
                "long_burn": long_burn,
                "factor": plan.factor,
            },
            "below",
        )
        if named is not None:
            tiered._key = named[1]
        return tiered
