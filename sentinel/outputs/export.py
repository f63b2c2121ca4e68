"""Prometheus rule export: recording rules for the SLI error ratio of every burn-rate
window and the multi-window multi-burn-rate alerts, for a Prometheus-compatible ruler
(Prometheus, Thanos Ruler, Mimir, vmalert). `promtool check rules` accepts the output.

Unlike Sloth, the period ratio is traffic-weighted: bad and total 5-minute rates are
recorded and the period ratio is `sum_over_time(bad) / sum_over_time(total)`, not an
average of 5-minute ratios (which over-weights quiet hours).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from sentinel.query.promql import exportable, render_selector, window_template
from sentinel.rules.model import SLO, ErrorRatioSLI, RatioQueriesSLI, RatioSLI
from sentinel.units import format_duration

ERROR_RATIO = "slo:sli_error:ratio_rate{window}"


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


def slo_groups(slo: SLO) -> list[dict[str, Any]]:
    assert slo.burn is not None and slo.period is not None and slo.objective is not None
    labels = _labels(slo)
    sel = _selector(slo)
    period = format_duration(slo.period)
    budget = 1.0 - slo.objective
    records: list[dict[str, Any]] = []
    for w in slo.burn.catalogue.windows():
        window = format_duration(w)
        records.append(
            {
                "record": ERROR_RATIO.format(window=window),
                "expr": ratio_expr(slo, window),
                "labels": {**labels, "sentinel_window": window},
            }
        )
    split = parts(slo, "5m")
    if split is not None:
        records += [
            {"record": "slo:sli_bad:rate5m", "expr": split[0], "labels": labels},
            {"record": "slo:sli_total:rate5m", "expr": split[1], "labels": labels},
            {
                "record": ERROR_RATIO.format(window=period),
                "expr": (
                    f"sum_over_time(slo:sli_bad:rate5m{sel}[{period}])\n/\n"
                    f"sum_over_time(slo:sli_total:rate5m{sel}[{period}])"
                ),
                "labels": {**labels, "sentinel_window": period},
            },
        ]
    else:
        records.append(
            {
                "record": ERROR_RATIO.format(window=period),
                "expr": (
                    f"sum_over_time(slo:sli_error:ratio_rate5m{sel}[{period}])\n"
                    f"/ ignoring (sentinel_window)\n"
                    f"count_over_time(slo:sli_error:ratio_rate5m{sel}[{period}])"
                ),
                "labels": {**labels, "sentinel_window": period},
            }
        )
    records += [
        {"record": "slo:objective:ratio", "expr": f"vector({slo.objective!r})", "labels": labels},
        {"record": "slo:error_budget:ratio", "expr": f"vector({budget!r})", "labels": labels},
        {
            "record": "slo:period_error_budget_remaining:ratio",
            "expr": f"1 - {ERROR_RATIO.format(window=period)}{sel} / {budget!r}",
            "labels": labels,
        },
    ]
    return [
        {"name": f"sentinel-sli-{slo.service}-{slo.name}", "rules": records},
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
                "without (sentinel_window)"
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
