"""Query checks for `sentinel check`: syntax, by asking each backend's own parser; and for
a rule with `group_by`, how many series its query returns today against the source's
`max_series` (beyond it the SLO is no_data, "too many series")."""

from __future__ import annotations

import time

from sentinel.config import Config
from sentinel.errors import Problem, SourceError, TooManySeries
from sentinel.evaluate.wiring import build_sources, renderers
from sentinel.rules.model import SLO, RuleSet
from sentinel.sources.base import Source


async def check_queries(config: Config, rules: RuleSet) -> tuple[list[Problem], list[str]]:
    """-> (problems, notes). An unreachable backend is a note, not a problem."""
    sources = build_sources(config)
    render = renderers()
    problems: list[Problem] = []
    notes: list[str] = []
    unreachable: set[str] = set()
    try:
        for slo in rules.slos:
            if slo.source in unreachable or slo.source not in sources:
                continue
            query = render[slo.source](slo, None, ())
            try:
                error = await sources[slo.source].check_syntax(query)
            except SourceError as exc:
                unreachable.add(slo.source)
                notes.append(
                    f"{slo.source} at {sources[slo.source].health.target} is unreachable "
                    f"({exc.detail}); query syntax was NOT checked"
                )
                continue
            if error:
                msg = f"{slo.source} rejects the query: {error}"
                problems.append(Problem(slo.source_file, slo.source_line, slo.source_path, msg))
            elif slo.group_by:
                note = await _series_note(sources[slo.source], slo, query, _limit(config, slo))
                notes += [note] if note else []
    finally:
        for source in sources.values():
            await source.close()
    return problems, notes


def _limit(config: Config, slo: SLO) -> int:
    source = config.loki if slo.source == "loki" and config.loki else config.prometheus
    return source.max_series


async def _series_note(source: Source, slo: SLO, query: str, limit: int) -> str | None:
    """A located warning when a grouped query returns, now, more than half its limit."""
    try:
        count = len(await source.instant(query, time.time()))
    except TooManySeries as exc:
        count = exc.count
    except SourceError:
        return None  # not this check's business: evaluation reports it
    if count <= limit // 2:
        return None
    path = slo.source_path.rsplit(".", 1)[0] + ".group_by"
    consequence = (
        "over the limit: this SLO is no_data (too many series)"
        if count > limit
        else "over half the limit: beyond it this SLO is no_data (too many series)"
    )
    message = (
        f"the query returns {count} series now and {slo.source}.max_series is {limit}, "
        f"{consequence}; narrow the matchers or the group_by, or raise max_series"
    )
    return str(Problem(slo.source_file, slo.group_by_line or slo.source_line, path, message))
