"""The internal SLO model: frozen, normalised, independent of the rule-file format.

Durations are float seconds, ratios are 0..1. Nothing here knows about YAML or PromQL text.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from enum import StrEnum
from functools import cached_property

from sentinel.rules.catalogues import WindowCatalogue

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class MatchOp(StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True)
class Matcher:
    label: str
    op: MatchOp
    value: str


@dataclass(frozen=True)
class Selector:
    """A metric name plus label matchers (the rule file's default labels not yet applied)."""

    metric: str
    matchers: tuple[Matcher, ...] = ()


class SLIKind(StrEnum):
    """What a result's value measures, which decides how it is judged and written: ratios
    as percentages, latencies in seconds, raw queries as plain numbers. `burn_rate` is
    the kind of a burn-tier result (a multiple of the error budget's rate)."""

    LATENCY = "latency"
    RATIO = "ratio"
    LOG_RATIO = "log_ratio"
    PROMQL = "promql"
    LOGQL = "logql"
    BURN_RATE = "burn_rate"


@dataclass(frozen=True)
class LatencySLI:
    """A quantile of a Prometheus histogram (`<metric>_bucket`) over the SLO window."""

    histogram: Selector
    quantile: float
    kind: SLIKind = field(default=SLIKind.LATENCY, init=False)


@dataclass(frozen=True)
class RatioSLI:
    """bad events / total events from two counters (5xx ratio, fallback answer rate)."""

    bad: Selector
    total: Selector
    kind: SLIKind = field(default=SLIKind.RATIO, init=False)


@dataclass(frozen=True)
class PromQLSLI:
    """Raw PromQL returning one number per instance; `$window` is replaced by the window."""

    query: str
    kind: SLIKind = field(default=SLIKind.PROMQL, init=False)


@dataclass(frozen=True)
class RatioQueriesSLI:
    """bad / total from two raw PromQL queries ($window or Sloth's {{.window}} substituted)."""

    bad_query: str
    total_query: str
    kind: SLIKind = field(default=SLIKind.RATIO, init=False)


@dataclass(frozen=True)
class ErrorRatioSLI:
    """A raw PromQL error ratio (Sloth's `raw.error_ratio_query`); no event counts."""

    query: str
    kind: SLIKind = field(default=SLIKind.RATIO, init=False)


@dataclass(frozen=True)
class LogRatioSLI:
    """bad lines / total lines from Loki: a stream selector, a pipeline and two filters."""

    selector: str
    pipeline: str
    bad_filter: str
    total_filter: str | None
    kind: SLIKind = field(default=SLIKind.LOG_RATIO, init=False)


@dataclass(frozen=True)
class LogQLSLI:
    """Raw LogQL metric query returning one number per instance; `$window` substituted."""

    query: str
    kind: SLIKind = field(default=SLIKind.LOGQL, init=False)


SLI = LatencySLI | RatioSLI | RatioQueriesSLI | ErrorRatioSLI | PromQLSLI | LogRatioSLI | LogQLSLI
RATIO_SLIS = (RatioSLI, RatioQueriesSLI, ErrorRatioSLI, LogRatioSLI)


class GoodWhen(StrEnum):
    BELOW = "below"  # breach when value > threshold (latency, error ratios)
    ABOVE = "above"  # breach when value < threshold (e.g. availability from raw PromQL)


class NoDataPolicy(StrEnum):
    KEEP_STATE = "keep_state"
    ALERTING = "alerting"
    OK = "ok"


class Severity(StrEnum):
    INFO = "info"
    TICKET = "ticket"
    PAGE = "page"


SEVERITY_ORDER = {"info": 0, "ticket": 1, "page": 2}


def severity_at_least(severity: str, minimum: str) -> bool:
    # An unknown severity counts as a page: never drop what might be urgent.
    return SEVERITY_ORDER.get(severity, 2) >= SEVERITY_ORDER.get(minimum, 0)


@dataclass(frozen=True)
class AlertPolicy:
    for_: float = 0.0
    keep_firing_for: float = 0.0
    no_data: NoDataPolicy = NoDataPolicy.KEEP_STATE
    no_data_for: float | None = None
    repeat_interval: float = 4 * 3600.0
    rollback: bool = False


@dataclass(frozen=True)
class BurnPolicy:
    """Multi-window multi-burn-rate alerting of one SLO."""

    catalogue: WindowCatalogue
    tiers: tuple[str, ...] = ("page", "ticket")
    min_events: float = 0.0


class CanaryNoData(StrEnum):
    """What the canary comparison does with an SLO one side has no series for."""

    FAIL = "fail"  # must have data: the SLO fails (the default: fail closed)
    REMOVE = "remove"  # left out of the comparison and the score
    ZERO = "zero"  # missing series count as zero events (pending until traffic arrives)


@dataclass(frozen=True)
class CanaryTolerance:
    """How much worse the canary may be: beyond BOTH bounds it is worse (`relative` 0.2 =
    +20 %; `absolute` in the SLI's unit: ratio points or seconds)."""

    relative: float
    absolute: float


# The defaults: ratios "+20 % relative and +0.1 pp absolute", latency "+20 % P95".
RATIO_TOLERANCE = CanaryTolerance(0.2, 0.001)
LATENCY_TOLERANCE = CanaryTolerance(0.2, 0.0)
# ... and the regressions it names: 2x the 5xx or fallback ratio, +50 % P95.
RATIO_DETECT, LATENCY_DETECT = 2.0, 1.5


@dataclass(frozen=True)
class CanaryPolicy:
    """How the deploy gate's canary mode judges one SLO: the rule file's `canary:`
    defaults (which series are the canary and which the baseline) merged with the SLO's
    own `canary:` settings."""

    canary: tuple[Matcher, ...] = ()
    baseline: tuple[Matcher, ...] = ()
    compare: bool = True
    critical: bool = True
    weight: float = 1.0
    tolerance: CanaryTolerance | None = None  # None: RATIO_/LATENCY_TOLERANCE by kind
    # The regression the comparison must be able to detect before it may pass, as a
    # factor on the baseline (ratio x2, latency quantile x1.5); None: DETECT by kind.
    detect: float | None = None
    min_canary_events: float = 100.0
    min_baseline_events: float = 100.0
    no_data: CanaryNoData = CanaryNoData.FAIL


@dataclass(frozen=True)
class SLO:
    service: str
    name: str
    sli: SLI
    threshold: float
    window: float
    objective: float | None = None
    good_when: GoodWhen = GoodWhen.BELOW
    description: str = ""
    group_by: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # default matchers of the rule file
    severity: Severity = Severity.PAGE
    gate: bool = True
    min_events: float = 0.0
    runbook_url: str | None = None
    notify: tuple[str, ...] = ()
    alert: AlertPolicy = AlertPolicy()
    source_file: str = ""
    source_line: int | None = None
    source_path: str = ""
    group_by_line: int | None = None
    period: float | None = None
    burn: BurnPolicy | None = None
    canary: CanaryPolicy = CanaryPolicy()

    @property
    def key(self) -> str:
        return f"{self.service}/{self.name}"

    @property
    def source(self) -> str:
        return "loki" if isinstance(self.sli, LogRatioSLI | LogQLSLI) else "prometheus"

    def breached(self, value: float) -> bool:
        """Whether `value` violates the threshold. Phrased as "not within": every comparison
        with NaN is false, so a NaN value (or threshold) breaches instead of reading as ok."""
        if self.good_when is GoodWhen.BELOW:
            return not value <= self.threshold
        return not value >= self.threshold


@dataclass(frozen=True)
class RuleGroup:
    """The SLOs of one rule file, evaluated together on one schedule."""

    name: str
    file: str
    service: str
    interval: float
    slos: tuple[SLO, ...]


@dataclass(frozen=True)
class RuleSet:
    groups: tuple[RuleGroup, ...]

    @cached_property
    def fingerprint(self) -> str:
        """What the rules say, hashed: equal on every replica that loaded the same rules,
        wherever the files are and whatever their comments, formatting, key order and
        SLO order. Replicas that disagree judge the same traffic differently;
        `sentinel_rules_info` and /health/detailed show it. Built from the model (so a
        config default the rules rely on counts too), leaving out positions and fields
        at their defaults: a Sentinel release that adds a field with a default does not
        change the fingerprint of rules that do not use it (a staged upgrade is no drift)."""
        groups = sorted(
            (
                [
                    group.name,
                    group.service,
                    group.interval,
                    *sorted((_canonical(slo) for slo in group.slos), key=_dumps),
                ]
                for group in self.groups
            ),
            key=_dumps,
        )
        return hashlib.sha256(_dumps(groups).encode()).hexdigest()[:16]

    @property
    def slos(self) -> tuple[SLO, ...]:
        return tuple(slo for group in self.groups for slo in group.slos)

    def services(self) -> list[str]:
        return sorted({slo.service for slo in self.slos})


# Where a rule came from, not what it says: left out of RuleSet.fingerprint.
_POSITIONS = frozenset({"source_file", "source_line", "source_path", "group_by_line"})
# Written as YAML mappings (or AND-ed together): their order says nothing.
_UNORDERED = frozenset({"labels", "matchers"})


def _canonical(value: object) -> object:
    """A JSON-able form of a model value that omits positions and defaulted fields."""
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, object] = {"": type(value).__name__}
        for f in fields(value):
            got = getattr(value, f.name)
            if f.name in _POSITIONS or _is_default(f, got):
                continue
            canonical = _canonical(got)
            if f.name in _UNORDERED and isinstance(canonical, list):
                canonical = sorted(canonical, key=_dumps)
            out[f.name] = canonical
        return out
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, float):
        return repr(value)  # 1.5 and 1.50 alike; nan and inf as text, not invalid JSON
    if value is None or isinstance(value, str | int | bool):
        return value
    return repr(value)


def _is_default(f: Field[object], value: object) -> bool:
    if f.default is not MISSING:
        return bool(value == f.default)
    if f.default_factory is not MISSING:
        return bool(value == f.default_factory())
    return False


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
