"""Budgets and burn-rate tiers for one cycle, pure: the answers of an SLO's window
queries in, the SLO results (with their `budget`) and one result per burn tier out.

A burn tier result has `kind="burn_rate"`, the tier's severity, and a `tier` label, so
it is its own alert in the state machine (and its own row in /api/v1/slos).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from sentinel.evaluate.burn import WindowRatio, budget_report, judge_tier
from sentinel.evaluate.slo import (
    InstanceKey,
    SLOResult,
    Status,
    Unusable,
    bad_total,
    count,
    error_ratio,
    group_parts,
)
from sentinel.rules.catalogues import BurnTier
from sentinel.rules.model import SLO, SLIKind
from sentinel.sources.base import Sample
from sentinel.units import format_duration

Unusables = dict[InstanceKey, str]


def window_ratios(
    slo: SLO, samples: Sequence[Sample]
) -> tuple[dict[InstanceKey, WindowRatio], Unusables]:
    """Per instance, bad and total of one window; and, apart, the instances whose values
    cannot be judged (NaN, +-Inf, negative, bad > total) with the reason."""
    out: dict[InstanceKey, WindowRatio] = {}
    unusable: Unusables = {}
    for key, parts in group_parts(slo, samples).items():
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
) -> list[SLOResult]:
    """`answers[window]` is None when that query failed. Returns the SLO's results with
    budgets attached, followed by the burn-tier results."""
    if slo.period is None or slo.objective is None:
        return list(results)
    parsed = {w: window_ratios(slo, s) if s is not None else None for w, s in answers.items()}
    by_window = {w: p[0] if p is not None else None for w, p in parsed.items()}
    budget = 1.0 - slo.objective
    names = {w: format_duration(w) for w in answers}
    out: list[SLOResult] = []
    tiers: list[SLOResult] = []
    for result in results:
        key = tuple(result.labels.get(g, "") for g in slo.group_by) if result.labels else ()
        windows = {
            w: ratios[key]
            for w, ratios in by_window.items()
            if ratios is not None and key in ratios
        }
        unusable = {w: p[1][key] for w, p in parsed.items() if p is not None and key in p[1]}
        report = budget_report(slo.objective, slo.period, windows.get(slo.period), windows, names)
        out.append(replace(result, budget=report))
        if slo.burn is None:
            continue
        failed = [w for w, ratios in by_window.items() if ratios is None]
        for tier in slo.burn.catalogue.tiers:
            if tier.severity not in slo.burn.tiers:
                continue
            tiers.append(
                _tier_result(slo, result, tier, windows, unusable, failed, budget, queries, names)
            )
    return out + tiers


def _tier_result(
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
