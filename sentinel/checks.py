"""Query syntax checks for `sentinel check`, by asking each backend's own parser."""

from __future__ import annotations

from sentinel.config import Config
from sentinel.errors import Problem, SourceError
from sentinel.model import RuleSet
from sentinel.wiring import build_sources, renderers


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
    finally:
        for source in sources.values():
            await source.close()
    return problems, notes
