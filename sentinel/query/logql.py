"""Query planning for Loki: log SLIs rendered as LogQL metric queries.

Lines that fail to parse (`| json` sets `__error__`) are dropped from BOTH numerator and
denominator by `__error__=""`: a garbled line is neither a good nor a bad answer, and
counting it would skew the ratio. (Loki itself would refuse `sum` over lines with
parse errors only when the error is a sample-extraction one; for count_over_time it
silently counts them, which is what we avoid.)
"""

from __future__ import annotations

from collections.abc import Sequence

from sentinel.query.promql import PART_LABEL, quote, render_matchers
from sentinel.rules.model import SLO, LogQLSLI, LogRatioSLI, Matcher
from sentinel.units import format_duration


def _selector(sli: LogRatioSLI, extra: Sequence[Matcher]) -> str:
    if not extra:
        return sli.selector
    # Request-time matchers (gate `env=`) join the stream selector, escaped like PromQL.
    inner = sli.selector.strip()[1:-1].strip()
    added = render_matchers(extra)
    return "{" + (f"{inner}, {added}" if inner else added) + "}"


def log_ratio_parts(slo: SLO, window: float | None, extra: Sequence[Matcher]) -> tuple[str, str]:
    sli = slo.sli
    assert isinstance(sli, LogRatioSLI)
    w = format_duration(window if window is not None else slo.window)
    base = f'{_selector(sli, extra)} {sli.pipeline} | __error__=""'.replace("  ", " ")
    total = f"{base} | {sli.total_filter}" if sli.total_filter else base
    bad = f"{total} | {sli.bad_filter}"
    by = f"sum by ({', '.join(slo.group_by)}) " if slo.group_by else "sum "
    return f"{by}(count_over_time({bad} [{w}]))", f"{by}(count_over_time({total} [{w}]))"


def slo_logql(slo: SLO, window: float | None = None, extra: Sequence[Matcher] = ()) -> str:
    sli = slo.sli
    if isinstance(sli, LogRatioSLI):
        bad, total = log_ratio_parts(slo, window, extra)
        return (
            f'label_replace({bad}, "{PART_LABEL}", "bad", "", "")\nor\n'
            f'label_replace({total}, "{PART_LABEL}", "total", "", "")'
        )
    if isinstance(sli, LogQLSLI):
        return sli.query.replace("$window", format_duration(window or slo.window))
    raise TypeError(f"{slo.key}: {type(sli).__name__} is not a Loki SLI")


def sli_logql(slo: SLO, extra: Sequence[Matcher] = ()) -> str:
    """The log SLI as one LogQL expression over the SLO window (for dashboards)."""
    if isinstance(slo.sli, LogRatioSLI):
        bad, total = log_ratio_parts(slo, None, extra)
        return f"{bad} / {total}"
    return slo_logql(slo, None, extra)


def error_lines_logql(slo: SLO) -> str | None:
    """A logs query for the service's error lines, from a log SLI's stream selector."""
    if not isinstance(slo.sli, LogRatioSLI):
        return None
    return f'{slo.sli.selector} {slo.sli.pipeline} | __error__="" | level=~"error|critical"'


__all__ = ["error_lines_logql", "log_ratio_parts", "quote", "sli_logql", "slo_logql"]
