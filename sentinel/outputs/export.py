"""Prometheus rule export: recording rules for the SLI error ratio of every burn-rate
window and the multi-window multi-burn-rate alerts, for a Prometheus-compatible ruler
(Prometheus, Thanos Ruler, Mimir, vmalert). `promtool check rules` accepts the output.

Unlike Sloth, the period ratio is traffic-weighted (bad events over total events, not an
average of 5-minute ratios, which over-weights quiet hours), and it is built so that no
evaluation re-reads the period's history (a 30-day `sum_over_time` over a series recorded
every interval re-sums 43,200 samples per series every interval; Pyrra's `increase[4w]`
re-reads a month of raw samples):

    every 5m  slo:sli_bad:increase5m      increase of the 5 minutes (from the raw SLI)
              slo:period_fine:timestamp_seconds         when those samples were taken
    every 1h  slo:sli_bad:increase1h      sum of the hour's 12 five-minute samples
              slo:sli_bad:increase30d     sum of the period's 720 hourly samples
              slo:period_buckets_end:timestamp_seconds   when that sum was taken (E)
    every 5m  slo:sli_error:ratio_rate30d (increase30d + the five-minute samples newer
              than E) / (the same for total): fresh to five minutes, not an hour

(the same for `sli_total`). The hourly sum and the tail partition the five-minute samples
exactly: each is counted once, by its own timestamp. The groups pin their `interval`:
the chain depends on them (12 five-minute samples an hour).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from sentinel.query.promql import WINDOW_LABEL, exportable, render_selector, window_template
from sentinel.rules.model import SLO, ErrorRatioSLI, RatioQueriesSLI, RatioSLI
from sentinel.units import format_duration

ERROR_RATIO = "slo:sli_error:ratio_rate{window}"
BUCKET_END = "slo:period_buckets_end:timestamp_seconds"
# Recorded in the same group evaluation as the five-minute samples, so its value is their
# shared timestamp: one series to compare instead of `max(timestamp(...))` over every
# instance at every subquery step (that was 60 % of the fresh ratio's cost, which was
# 70 % of the recorded budget's Prometheus CPU at 1,000 instances).
FINE_STAMP = "slo:period_fine:timestamp_seconds"
FINE, COARSE = 300, 3600  # seconds: the five-minute samples and the hourly buckets
# How far back the fresh ratio looks for the hourly sum: two hours, so one missed hourly
# evaluation (a ruler restart across the slot) does not blank the budget.
COARSE_LOOKBACK = "2h"


def _labels(slo: SLO) -> dict[str, str]:
    return {"sentinel_service": slo.service, "sentinel_slo": slo.name}


def _selector(slo: SLO) -> str:
    return f'{{sentinel_service="{slo.service}", sentinel_slo="{slo.name}"}}'


def parts(slo: SLO, window: str) -> tuple[str, str] | None:
    """(bad, total) rate expressions, or None for a raw error-ratio SLI."""
    sli = slo.sli
    by = f"sum by ({', '.join(slo.group_by)}) " if slo.group_by else "sum "
    if isinstance(sli, RatioSLI):
        bad = f"{by}(rate({render_selector(sli.bad, slo.labels)}[{window}]))"
        total = f"{by}(rate({render_selector(sli.total, slo.labels)}[{window}]))"
        # A never-created error counter is zero errors, not a missing ratio.
        return f"({bad} or 0 * {total})", f"({total})"
    if isinstance(sli, RatioQueriesSLI):
        return (
            f"({window_template(sli.bad_query, window).strip()})",
            f"({window_template(sli.total_query, window).strip()})",
        )
    return None


def ratio_expr(slo: SLO, window: str) -> str:
    if isinstance(slo.sli, ErrorRatioSLI):
        return f"({window_template(slo.sli.query, window).strip()})"
    split = parts(slo, window)
    assert split is not None
    return f"{split[0]}\n/\n{split[1]}"


def fine_exprs(slo: SLO) -> tuple[str, str]:
    """(bad, total) of one five-minute sample. A raw error-ratio SLI has no counts: bad
    is its 5m ratio and total 1, so the period is the average of 5-minute ratios (as
    Sloth's); NaN (no traffic) is dropped, not summed."""
    split = parts(slo, "5m")
    if split is None:
        ratio = f"({ratio_expr(slo, '5m')} >= 0)"
        return ratio, f"{ratio} * 0 + 1"
    return f"{FINE} * {split[0]}", f"{FINE} * {split[1]}"


def _ms(seconds: float) -> str:
    # One millisecond short of the span: Prometheus 2 ranges are closed at both ends, so
    # `[1h]` would count a sample exactly an hour old in two adjacent buckets.
    return f"{round(seconds * 1000) - 1}ms"


def _fresh(kind: str, period: str, sel: str) -> str:
    """The hourly sum of the period plus the five-minute samples newer than it (E): every
    subquery step picks the latest sample (steps and samples are both 5 minutes apart),
    kept only if its timestamp is after E; plus the newest sample when it is after the
    last step. The group records all of an SLO's five-minute samples and FINE_STAMP in
    one evaluation, so they share a timestamp, FINE_STAMP's value: the test is on that
    one series, matched `on()`, instead of a label join or a `max(timestamp())` over
    every instance. No hourly sum within two hours (a new SLO, a broken ruler): no ratio."""
    fine = f"slo:sli_{kind}:increase5m{sel}"
    summed = f"last_over_time(slo:sli_{kind}:increase{period}{sel}[{COARSE_LOOKBACK}])"
    end = f"scalar(last_over_time({BUCKET_END}{sel}[{COARSE_LOOKBACK}] @ end()))"
    stamp = f"{FINE_STAMP}{sel}"
    newer = f"({fine} and on() ({stamp} > {end}))"
    steps = f"sum_over_time({newer}[{COARSE_LOOKBACK}:{format_duration(FINE)}])"
    newest = f"({fine} and on() ({stamp} > {end} > (time() - time() % {FINE})))"
    return f"(\n  {summed}\n  + ({steps} or {summed} * 0)\n  + ({newest} or {summed} * 0)\n)"


def period_groups(slo: SLO) -> list[dict[str, Any]]:
    """The period ratio's two groups (five-minute and hourly), see the module docstring."""
    assert slo.period is not None and slo.objective is not None
    labels = _labels(slo)
    sel = _selector(slo)
    period = format_duration(slo.period)
    budget = 1.0 - slo.objective
    bad, total = fine_exprs(slo)
    fine: list[dict[str, Any]] = [
        {"record": "slo:sli_bad:increase5m", "expr": bad, "labels": labels},
        {"record": "slo:sli_total:increase5m", "expr": total, "labels": labels},
        # After the samples and before the ratio that reads both (a group's rules see the
        # results of the rules before them in the same evaluation).
        {"record": FINE_STAMP, "expr": "vector(time())", "labels": labels},
        {
            "record": ERROR_RATIO.format(window=period),
            "expr": f"{_fresh('bad', period, sel)}\n/\n{_fresh('total', period, sel)}",
            "labels": {**labels, WINDOW_LABEL: period},
        },
        {
            "record": "slo:period_error_budget_remaining:ratio",
            "expr": f"1 - {ERROR_RATIO.format(window=period)}{sel} / {budget!r}",
            "labels": labels,
        },
    ]
    coarse: list[dict[str, Any]] = [
        {
            "record": f"slo:sli_{kind}:increase1h",
            "expr": f"sum_over_time(slo:sli_{kind}:increase5m{sel}[{_ms(COARSE)}])",
            "labels": labels,
        }
        for kind in ("bad", "total")
    ]
    coarse += [
        {
            "record": f"slo:sli_{kind}:increase{period}",
            "expr": f"sum_over_time(slo:sli_{kind}:increase1h{sel}[{_ms(slo.period)}])",
            "labels": labels,
        }
        for kind in ("bad", "total")
    ]
    # Recorded after the sums: a reader between the two commits sees the new sums with
    # the old E and counts up to an hour twice (more budget spent, never less).
    coarse.append({"record": BUCKET_END, "expr": "vector(time())", "labels": labels})
    name = f"{slo.service}-{slo.name}"
    return [
        {"name": f"sentinel-period-5m-{name}", "interval": format_duration(FINE), "rules": fine},
        {
            "name": f"sentinel-period-1h-{name}",
            "interval": format_duration(COARSE),
            "rules": coarse,
        },
    ]


def slo_groups(slo: SLO) -> list[dict[str, Any]]:
    assert slo.burn is not None and slo.period is not None and slo.objective is not None
    labels = _labels(slo)
    budget = 1.0 - slo.objective
    records: list[dict[str, Any]] = []
    for w in slo.burn.catalogue.windows():
        window = format_duration(w)
        records.append(
            {
                "record": ERROR_RATIO.format(window=window),
                "expr": ratio_expr(slo, window),
                "labels": {**labels, WINDOW_LABEL: window},
            }
        )
    records += [
        {"record": "slo:objective:ratio", "expr": f"vector({slo.objective!r})", "labels": labels},
        {"record": "slo:error_budget:ratio", "expr": f"vector({budget!r})", "labels": labels},
    ]
    return [
        {"name": f"sentinel-sli-{slo.service}-{slo.name}", "rules": records},
        *period_groups(slo),
        {"name": f"sentinel-alerts-{slo.service}-{slo.name}", "rules": alert_rules(slo)},
    ]


def alert_rules(slo: SLO) -> list[dict[str, Any]]:
    assert slo.burn is not None and slo.period is not None and slo.objective is not None
    budget = 1.0 - slo.objective
    sel = _selector(slo)
    rules = []
    for severity in ("page", "ticket"):
        if severity not in slo.burn.tiers:
            continue
        pairs = []
        for tier in (t for t in slo.burn.catalogue.tiers if t.severity == severity):
            threshold = f"({tier.factor(slo.period):.6g} * {budget!r})"
            conds = [
                f"max({ERROR_RATIO.format(window=format_duration(w))}{sel} > {threshold}) "
                f"without ({WINDOW_LABEL})"
                for w in (tier.short_window, tier.long_window)
            ]
            pairs.append("(\n    " + "\n    and\n    ".join(conds) + "\n)")
        rules.append(
            {
                "alert": f"SLOErrorBudgetBurn{severity.capitalize()}",
                "expr": "\nor\n".join(pairs),
                "labels": {"severity": severity, "tier": severity, **_labels(slo)},
                "annotations": {
                    "summary": (
                        f"{slo.service} {slo.name}: error budget burning too fast ({severity})"
                    ),
                    "description": slo.description or f"objective {slo.objective * 100:g} %",
                    **({"runbook_url": slo.runbook_url} if slo.runbook_url else {}),
                },
            }
        )
    return rules


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as YAML block scalars, like hand-written rule files."""


def _literal(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def export(slos: Sequence[SLO]) -> str:
    groups = [g for slo in slos if exportable(slo) for g in slo_groups(slo)]
    header = "# Generated by Sentinel (sentinel rules export). Do not edit: change the rules.\n"
    return header + yaml.dump({"groups": groups}, Dumper=_Dumper, sort_keys=False, width=1000)


_Dumper.add_representer(str, _literal)
