"""Reading Sloth `prometheus/v1` SLO specs into Sentinel's model.

`sli.events` becomes a `ratio_queries` SLI (Sloth's `{{.window}}` is kept and substituted
at render time), `sli.raw.error_ratio_query` an `error_ratio` SLI; `plugin` SLIs are
refused. Sloth's default period is 30 days; `page_alert.disable` / `ticket_alert.disable`
turn tiers off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sentinel.errors import ConfigError, Problem
from sentinel.rules.catalogues import builtin_catalogue
from sentinel.rules.model import SLO, BurnPolicy, ErrorRatioSLI, RatioQueriesSLI, Severity

SLOTH_PERIOD = 30 * 86400.0


def load_sloth(path: Path, period: float = SLOTH_PERIOD) -> list[SLO]:
    text = path.read_text(encoding="utf-8")
    slos: list[SLO] = []
    problems: list[Problem] = []
    for doc_index, doc in enumerate(yaml.safe_load_all(text)):
        if not doc:
            continue
        if doc.get("version") != "prometheus/v1":
            msg = (
                f"document {doc_index}: expected version prometheus/v1, got {doc.get('version')!r}"
            )
            problems.append(Problem(str(path), None, "version", msg))
            continue
        for i, spec in enumerate(doc.get("slos") or []):
            try:
                slos.append(_slo(doc, spec, period, str(path)))
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(Problem(str(path), None, f"slos[{i}]", str(exc)))
    if problems:
        raise ConfigError(problems)
    return slos


def _slo(doc: dict[str, Any], spec: dict[str, Any], period: float, file: str) -> SLO:
    sli_spec = spec["sli"]
    sli: RatioQueriesSLI | ErrorRatioSLI
    if "events" in sli_spec:
        sli = RatioQueriesSLI(sli_spec["events"]["error_query"], sli_spec["events"]["total_query"])
    elif "raw" in sli_spec:
        sli = ErrorRatioSLI(sli_spec["raw"]["error_ratio_query"])
    else:
        raise ValueError("only events and raw SLIs are supported (plugins are not)")
    objective = float(spec["objective"]) / 100.0
    alerting = spec.get("alerting") or {}
    tiers = tuple(
        severity
        for severity, key in (("page", "page_alert"), ("ticket", "ticket_alert"))
        if not (alerting.get(key) or {}).get("disable", False)
    )
    return SLO(
        service=str(doc["service"]),
        name=str(spec["name"]),
        sli=sli,
        threshold=1.0 - objective,
        objective=objective,
        window=300.0,
        description=str(spec.get("description", "")),
        labels=(),
        severity=Severity.PAGE,
        period=period,
        burn=BurnPolicy(builtin_catalogue(period), tiers),
        source_file=file,
    )
