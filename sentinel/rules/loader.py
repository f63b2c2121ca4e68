"""Rule files -> internal model, collecting every problem of every file.

Semantic checks that need more than one field (duplicate names, unknown notifiers, label
names) live here, so `sentinel check` can report them all at once with file and line.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from sentinel.config import Config
from sentinel.errors import Problem, RuleFileError, YAMLSyntaxError
from sentinel.rules.catalogues import builtin_catalogue, load_catalogue
from sentinel.rules.model import (
    LABEL_NAME,
    METRIC_NAME,
    SLI,
    SLO,
    AlertPolicy,
    BurnPolicy,
    CanaryNoData,
    CanaryPolicy,
    CanaryTolerance,
    ErrorRatioSLI,
    GoodWhen,
    LatencySLI,
    LogQLSLI,
    LogRatioSLI,
    Matcher,
    MatchOp,
    NoDataPolicy,
    PromQLSLI,
    RatioQueriesSLI,
    RatioSLI,
    RuleGroup,
    RuleSet,
    Selector,
    Severity,
)
from sentinel.rules.spec import (
    BurnRateSpec,
    CanaryFileSpec,
    RuleFileSpec,
    SelectorSpec,
    SLISpec,
    SLOSpec,
)
from sentinel.units import format_duration, parse_duration
from sentinel.yamlsource import LocatedYAML, pydantic_problems, read_yaml_file


def rule_files(config: Config) -> list[Path]:
    files: set[Path] = set()
    for pattern in config.rules:
        files.update(Path(p) for p in glob.glob(str(config.resolve(pattern)), recursive=True))
    return sorted(files)


def load_rules(config: Config, files: Iterable[Path] | None = None) -> RuleSet:
    """Load every rule file. Raises RuleFileError listing all problems of all files."""
    rules, problems = load_rules_lenient(config, files)
    if problems:
        raise RuleFileError(problems)
    return rules


def load_rules_lenient(
    config: Config, files: Iterable[Path] | None = None
) -> tuple[RuleSet, list[Problem]]:
    """Every valid SLO, plus every problem found (for `sentinel check`)."""
    problems: list[Problem] = []
    groups: list[RuleGroup] = []
    paths = list(files) if files is not None else rule_files(config)
    if not paths:
        patterns = ", ".join(config.rules)
        file, line = config.rules_at
        message = (
            f"no rule files match {patterns} (expected at least one rule file; relative "
            f"patterns resolve against {config.base_dir})"
        )
        return RuleSet(()), [Problem(file, line, "rules", message)]
    for path in paths:
        group, file_problems = load_rule_file(path, config)
        problems += file_problems
        if group is not None:
            groups.append(group)
    problems += _cross_file_problems(groups)
    return RuleSet(tuple(groups)), problems


def load_rule_file(path: Path, config: Config) -> tuple[RuleGroup | None, list[Problem]]:
    file = _display(path)
    try:
        # Unreadable, too big, not UTF-8, not YAML, too deep, an alias bomb: one problem.
        located = read_yaml_file(path, file, "rule file")
    except YAMLSyntaxError as exc:
        return None, [exc.problem]
    if not isinstance(located.data, dict):
        return None, [located.problem((), "expected a mapping with version, service and slos")]
    try:
        spec = RuleFileSpec.model_validate(located.data)
    except ValidationError as exc:
        return None, pydantic_problems(located, exc.errors())
    problems: list[Problem] = []
    slo_specs: dict[int, SLOSpec] = {}
    for i, raw in enumerate(spec.slos):
        try:
            slo_specs[i] = SLOSpec.model_validate(raw)
        except ValidationError as exc:
            errors = [{**e, "loc": ("slos", i, *e["loc"])} for e in exc.errors()]
            problems += pydantic_problems(located, errors)
    problems += _semantic_problems(spec, slo_specs, located, config)
    slos = []
    for i, slo_spec in slo_specs.items():
        slo_problems: list[Problem] = []
        slo = _map_slo(spec, i, slo_spec, file, slo_problems, located, config)
        problems += slo_problems
        if not slo_problems:
            slos.append(slo)
    group = RuleGroup(
        name=Path(file).stem,
        file=file,
        service=spec.service,
        interval=spec.interval if spec.interval is not None else config.evaluation.interval,
        slos=tuple(slos),
    )
    return group, problems


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _semantic_problems(
    spec: RuleFileSpec, slos: dict[int, SLOSpec], located: LocatedYAML, config: Config
) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for label in spec.labels:
        if not LABEL_NAME.match(label):
            problems.append(located.problem(("labels", label), "not a valid label name"))
    problems += _canary_problems(spec.canary, located)
    for i, slo in slos.items():
        if slo.name in seen:
            msg = f"duplicate SLO name {slo.name!r} (first at slos[{seen[slo.name]}])"
            problems.append(located.problem(("slos", i, "name"), msg))
        seen.setdefault(slo.name, i)
        for j, label in enumerate(slo.group_by):
            if not LABEL_NAME.match(label) or label == "le":
                problems.append(located.problem(("slos", i, "group_by", j), "invalid label name"))
        for j, name in enumerate(slo.notify):
            if name not in config.notifiers:
                known = ", ".join(sorted(config.notifiers)) or "none configured"
                msg = f"unknown notifier {name!r} (known: {known})"
                problems.append(located.problem(("slos", i, "notify", j), msg))
        if (slo.sli.log_ratio or slo.sli.logql) and config.loki is None:
            msg = "log SLIs need a `loki:` section in the config"
            problems.append(located.problem(("slos", i, "sli"), msg))
    return problems


def _map_slo(
    spec: RuleFileSpec,
    index: int,
    slo: SLOSpec,
    file: str,
    problems: list[Problem],
    located: LocatedYAML,
    config: Config,
) -> SLO:
    path: tuple[str | int, ...] = ("slos", index, "sli")
    sli = _map_sli(slo.sli, path, problems, located)
    if slo.objective is not None:
        threshold, objective = round(1.0 - slo.objective, 12), slo.objective
    else:
        assert slo.threshold is not None  # enforced by SLOSpec._target
        threshold, objective = slo.threshold, None
    return SLO(
        service=spec.service,
        name=slo.name,
        sli=sli,
        threshold=threshold,
        objective=objective,
        window=slo.window,
        good_when=GoodWhen(slo.good_when),
        description=slo.description.strip(),
        group_by=tuple(slo.group_by),
        labels=tuple(sorted(spec.labels.items())),
        severity=Severity(slo.severity),
        gate=slo.gate,
        min_events=slo.min_events,
        runbook_url=slo.runbook_url,
        notify=tuple(slo.notify),
        alert=AlertPolicy(
            for_=slo.alert.for_,
            keep_firing_for=slo.alert.keep_firing_for,
            no_data=NoDataPolicy(slo.alert.no_data),
            no_data_for=slo.alert.no_data_for,
            repeat_interval=slo.alert.repeat_interval,
            rollback=slo.alert.rollback,
        ),
        source_file=file,
        source_line=located.line_of(("slos", index, "sli")),
        source_path=f"slos[{index}].sli",
        group_by_line=located.line_of(("slos", index, "group_by")) if slo.group_by else None,
        period=slo.period,
        burn=_burn_policy(slo, index, problems, located, config),
        canary=_canary_policy(spec.canary, index, slo, sli, problems, located),
    )


def _canary_policy(
    defaults: CanaryFileSpec | None,
    index: int,
    slo: SLOSpec,
    sli: SLI,
    problems: list[Problem],
    located: LocatedYAML,
) -> CanaryPolicy:
    """The file's `canary:` selectors and defaults merged with the SLO's `canary:`."""
    own = slo.canary
    path: tuple[str | int, ...] = ("slos", index, "canary")
    comparable = isinstance(sli, LatencySLI | RatioSLI | LogRatioSLI)
    if own is not None and own.compare and not comparable:
        msg = (
            "the canary comparison needs a latency, ratio or log_ratio SLI (a raw query "
            "cannot be split by release); set compare: false"
        )
        problems.append(located.problem(path, msg))
    minimum = (own and own.min_events) or (defaults and defaults.min_events)
    no_data = (own and own.no_data) or (defaults and defaults.no_data) or "fail"
    tolerance = None
    if own is not None and own.tolerance is not None:
        read = _tolerance(own.tolerance.relative, own.tolerance.absolute, sli)
        if isinstance(read, str):
            problems.append(located.problem((*path, "tolerance", "absolute"), read))
        else:
            tolerance = read
    return CanaryPolicy(
        canary=_canary_matchers(defaults.canary if defaults else {}),
        baseline=_canary_matchers(defaults.baseline if defaults else {}),
        compare=comparable and (own is None or own.compare),
        critical=own.critical if own is not None else True,
        weight=own.weight if own is not None else 1.0,
        tolerance=tolerance,
        detect=own.detect if own is not None else None,
        min_canary_events=minimum.canary if minimum else 100.0,
        min_baseline_events=minimum.baseline if minimum else 100.0,
        no_data=CanaryNoData(no_data),
    )


def _canary_matchers(spec: dict[str, str]) -> tuple[Matcher, ...]:
    return tuple(sorted((parse_matcher(k, v) for k, v in spec.items()), key=lambda m: m.label))


def _tolerance(relative: float, absolute: str | float | None, sli: SLI) -> CanaryTolerance | str:
    """The tolerance in the SLI's unit, or the problem with `absolute`."""
    if absolute is None:
        return CanaryTolerance(relative, 0.0 if isinstance(sli, LatencySLI) else 0.001)
    try:
        if isinstance(sli, LatencySLI):
            return CanaryTolerance(relative, parse_duration(absolute))
        if isinstance(absolute, str) and absolute.strip().endswith("%"):
            value = float(absolute.strip()[:-1]) / 100.0
        else:
            value = float(absolute)
    except ValueError as exc:
        return str(exc)
    if not 0 <= value <= 1:
        return "a ratio tolerance is a share from 0 to 1 (write 0.001 or '0.1%')"
    return CanaryTolerance(relative, value)


def _canary_problems(spec: CanaryFileSpec | None, located: LocatedYAML) -> list[Problem]:
    if spec is None:
        return []
    problems = []
    for side in ("canary", "baseline"):
        for label in getattr(spec, side):
            if not LABEL_NAME.match(label):
                msg = "not a valid label name"
                problems.append(located.problem(("canary", side, label), msg))
    if spec.canary and spec.canary == spec.baseline:
        msg = "canary and baseline select the same series: nothing to compare"
        problems.append(located.problem(("canary", "baseline"), msg))
    return problems


def _burn_policy(
    slo: SLOSpec, index: int, problems: list[Problem], located: LocatedYAML, config: Config
) -> BurnPolicy | None:
    if slo.period is None:
        return None
    spec = slo.burn_rate or BurnRateSpec()
    try:
        if spec.windows:
            catalogue = load_catalogue(config.resolve(spec.windows))
        else:
            catalogue = builtin_catalogue(slo.period)
    except (OSError, ValueError) as exc:
        field = "burn_rate.windows" if spec.windows else "period"
        problems.append(located.problem(("slos", index, *field.split(".")), str(exc)))
        return None
    if catalogue.period != slo.period:
        msg = (
            f"window catalogue {catalogue.name} is for a {format_duration(catalogue.period)} period"
        )
        problems.append(located.problem(("slos", index, "period"), msg))
    return BurnPolicy(catalogue, tuple(spec.tiers), spec.min_events)


def _map_sli(
    spec: SLISpec, path: tuple[str | int, ...], problems: list[Problem], located: LocatedYAML
) -> SLI:
    if spec.latency is not None:
        selector = SelectorSpec(metric=spec.latency.histogram, matchers=spec.latency.matchers)
        hist = _map_selector(selector, (*path, "latency"), problems, located, "histogram")
        return LatencySLI(histogram=hist, quantile=spec.latency.quantile)
    if spec.ratio is not None:
        bad = _map_selector(spec.ratio.bad, (*path, "ratio", "bad"), problems, located)
        total = _map_selector(spec.ratio.total, (*path, "ratio", "total"), problems, located)
        return RatioSLI(bad=bad, total=total)
    if spec.promql is not None:
        return PromQLSLI(query=spec.promql.query.strip())
    if spec.ratio_queries is not None:
        return RatioQueriesSLI(spec.ratio_queries.bad.strip(), spec.ratio_queries.total.strip())
    if spec.error_ratio is not None:
        return ErrorRatioSLI(spec.error_ratio.query.strip())
    if spec.log_ratio is not None:
        lr = spec.log_ratio
        if not (lr.selector.strip().startswith("{") and lr.selector.strip().endswith("}")):
            msg = "expected a LogQL stream selector like '{app=\"chatbot-backend\"}'"
            problems.append(located.problem((*path, "log_ratio", "selector"), msg))
        return LogRatioSLI(
            selector=lr.selector.strip(),
            pipeline=lr.pipeline.strip(),
            bad_filter=lr.bad.strip(),
            total_filter=lr.total.strip() if lr.total else None,
        )
    assert spec.logql is not None  # SLISpec enforces exactly one kind
    return LogQLSLI(query=spec.logql.query.strip())


def _map_selector(
    spec: SelectorSpec,
    path: tuple[str | int, ...],
    problems: list[Problem],
    located: LocatedYAML,
    metric_field: str = "metric",
) -> Selector:
    if not METRIC_NAME.match(spec.metric):
        problems.append(located.problem((*path, metric_field), "not a valid metric name"))
    matchers = []
    for label, raw in spec.matchers.items():
        if not LABEL_NAME.match(label):
            problems.append(located.problem((*path, "matchers", label), "not a valid label name"))
        matchers.append(parse_matcher(label, raw))
    return Selector(metric=spec.metric, matchers=tuple(matchers))


def parse_matcher(label: str, raw: str) -> Matcher:
    """`status: "=~5.."` -> Matcher(status, =~, 5..); a bare value means equality."""
    for op in (MatchOp.RE, MatchOp.NRE, MatchOp.NE, MatchOp.EQ):
        if raw.startswith(op.value):
            return Matcher(label, op, raw[len(op.value) :])
    return Matcher(label, MatchOp.EQ, raw)


def _cross_file_problems(groups: list[RuleGroup]) -> list[Problem]:
    problems = []
    seen: dict[str, str] = {}
    for group in groups:
        for slo in group.slos:
            if slo.key in seen and seen[slo.key] != group.file:
                msg = f"SLO {slo.key!r} is also defined in {seen[slo.key]}"
                problems.append(Problem(group.file, None, slo.name, msg))
            seen.setdefault(slo.key, group.file)
    return problems
