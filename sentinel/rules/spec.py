"""The rule-file spec, version `sentinel/v1`, as pydantic models (the format users write).

`loader.py` maps it to the internal model; nothing else imports these classes.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sentinel.units import format_duration, parse_duration, parse_percent

DAY = 86400.0
# Longer than any SLO period in use (a year plus slack) and far below anything that
# overflows a range selector, a scheduler trigger or a date.
MAX_WINDOW = 400 * DAY


def _within(low: float, high: float) -> AfterValidator:
    def check(seconds: float) -> float:
        if not low <= seconds <= high:
            raise ValueError(f"must be between {format_duration(low)} and {format_duration(high)}")
        return seconds

    return AfterValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration), _within(0.0, MAX_WINDOW)]
# A rule file's evaluation interval: 0s would spin, 1000000000d overflows the scheduler.
Interval = Annotated[float, BeforeValidator(parse_duration), _within(1.0, DAY)]
Window = Annotated[float, BeforeValidator(parse_duration), _within(1.0, MAX_WINDOW)]
Percent = Annotated[float, BeforeValidator(parse_percent)]


def _label_value(value: object) -> object:
    # YAML turns `status: 500` into an int; label values are always strings.
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


LabelValue = Annotated[str, BeforeValidator(_label_value)]


def _threshold(value: object) -> float:
    if isinstance(value, str) and value.strip() and value.strip()[-1].isalpha():
        return parse_duration(value)
    if isinstance(value, str) and value.strip().endswith("%"):
        return float(value.strip()[:-1]) / 100.0  # '5%' -> 0.05, for ratio thresholds
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number or a duration like '1.5s', got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        # A NaN threshold never breaches (every comparison with NaN is false).
        raise ValueError("must be a finite number")
    return number


Threshold = Annotated[float, BeforeValidator(_threshold)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SelectorSpec(_Spec):
    metric: str
    matchers: dict[str, LabelValue] = Field(default_factory=dict)


class LatencySpec(_Spec):
    histogram: str
    quantile: float = Field(0.95, gt=0, lt=1, allow_inf_nan=False)
    matchers: dict[str, LabelValue] = Field(default_factory=dict)


class RatioSpec(_Spec):
    bad: SelectorSpec
    total: SelectorSpec


class LogRatioSpec(_Spec):
    selector: str
    pipeline: str = "| json"
    bad: str
    total: str | None = None


class RawSpec(_Spec):
    query: str


class RatioQueriesSpec(_Spec):
    bad: str
    total: str


class BurnRateSpec(_Spec):
    tiers: list[Literal["page", "ticket"]] = Field(default=["page", "ticket"])
    min_events: float = Field(0.0, ge=0, allow_inf_nan=False)
    windows: str | None = None  # an AlertWindows catalogue file; default by period


class SLISpec(_Spec):
    latency: LatencySpec | None = None
    ratio: RatioSpec | None = None
    ratio_queries: RatioQueriesSpec | None = None
    error_ratio: RawSpec | None = None
    promql: RawSpec | None = None
    log_ratio: LogRatioSpec | None = None
    logql: RawSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SLISpec:
        chosen = [k for k, v in self.__dict__.items() if v is not None]
        if len(chosen) != 1:
            kinds = "latency, ratio, ratio_queries, error_ratio, promql, log_ratio, logql"
            raise ValueError(f"exactly one SLI kind is required ({kinds}); got {chosen or 'none'}")
        return self


class AlertSpec(_Spec):
    for_: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    no_data: Literal["keep_state", "alerting", "ok"] = "keep_state"
    no_data_for: Duration | None = None
    repeat_interval: Duration = 4 * 3600.0
    rollback: bool = False


class CanaryMinEventsSpec(_Spec):
    canary: float = Field(100.0, ge=0, allow_inf_nan=False)
    baseline: float = Field(100.0, ge=0, allow_inf_nan=False)


class CanaryToleranceSpec(_Spec):
    """`relative: 20%` (or 0.2); `absolute`: ratio points for ratio SLIs ('0.1%' or
    0.001), a duration for latency SLIs ('50ms'). The loader reads `absolute` by kind."""

    relative: Annotated[float, BeforeValidator(lambda v: _fraction(v, "relative"))] = 0.2
    absolute: str | float | None = None


def _fraction(value: object, name: str) -> float:
    """'20%' -> 0.2, 0.2 -> 0.2: a non-negative share (a tolerance, not an objective)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"expected a share like '20%' or 0.2, got {value!r:.60}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"expected a share like '20%' or 0.2, got {value!r:.60}")
    if not 0 <= number <= 100 or not math.isfinite(number):
        raise ValueError(f"{name} must be between 0 and 100 (10000 %)")
    return number


CanaryNoDataSpec = Literal["fail", "remove", "zero"]


class CanaryFileSpec(_Spec):
    """The rule file's `canary:` block: which series are the canary release and which the
    baseline (label matchers beside the file's `labels`), and defaults for its SLOs."""

    canary: dict[str, LabelValue] = Field(default_factory=dict)
    baseline: dict[str, LabelValue] = Field(default_factory=dict)
    min_events: CanaryMinEventsSpec | None = None
    no_data: CanaryNoDataSpec | None = None


class CanarySLOSpec(_Spec):
    """An SLO's own `canary:` settings for the gate's canary mode."""

    compare: bool = True
    critical: bool = True
    weight: float = Field(1.0, gt=0, le=1000, allow_inf_nan=False)
    tolerance: CanaryToleranceSpec | None = None
    detect: float | None = Field(None, gt=1, le=1000, allow_inf_nan=False)
    min_events: CanaryMinEventsSpec | None = None
    no_data: CanaryNoDataSpec | None = None


class SLOSpec(_Spec):
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", max_length=128)
    description: str = ""
    sli: SLISpec
    threshold: Threshold | None = None
    objective: Percent | None = None
    good_when: Literal["below", "above"] = "below"
    window: Window = 300.0
    group_by: list[str] = Field(default_factory=list)
    severity: Literal["info", "ticket", "page"] = "page"
    gate: bool = True
    min_events: float = Field(0.0, ge=0, allow_inf_nan=False)
    runbook_url: str | None = None
    notify: list[str] = Field(default_factory=list)
    alert: AlertSpec = Field(default_factory=AlertSpec)
    period: Duration | None = None
    burn_rate: BurnRateSpec | None = None
    canary: CanarySLOSpec | None = None

    @field_validator("threshold")
    @classmethod
    def _threshold_fits_the_sli(cls, value: float | None, info: ValidationInfo) -> float | None:
        """A value the SLI can never reach makes an SLO that never breaches (or always does)."""
        sli = info.data.get("sli")
        if value is None or not isinstance(sli, SLISpec):
            return value
        if sli.latency is not None and value < 0:
            raise ValueError("a latency threshold must be >= 0")
        ratio = sli.ratio or sli.log_ratio or sli.ratio_queries or sli.error_ratio
        if ratio is not None and not 0 <= value <= 1:
            raise ValueError("a ratio threshold is a fraction from 0 to 1 (write 0.05 or '5%')")
        return value

    @model_validator(mode="after")
    def _target(self) -> SLOSpec:
        is_ratio = any(
            k is not None
            for k in (
                self.sli.ratio,
                self.sli.log_ratio,
                self.sli.ratio_queries,
                self.sli.error_ratio,
            )
        )
        if is_ratio and self.objective is None and self.threshold is None:
            raise ValueError("a ratio SLI needs an objective (e.g. '99.5%') or a threshold")
        if not is_ratio and self.threshold is None:
            raise ValueError("this SLI needs a threshold (e.g. '1.5s' or a number)")
        if not is_ratio and self.objective is not None:
            raise ValueError("objective applies to ratio SLIs only; use threshold")
        if self.period is not None and self.objective is None:
            raise ValueError("period (error budget) needs a ratio SLI with an objective")
        if self.burn_rate is not None and self.period is None:
            raise ValueError("burn_rate alerts need a period (e.g. period: 30d)")
        return self


class RuleFileSpec(_Spec):
    """The file header; each entry of `slos` is validated on its own as an SLOSpec, so one
    bad SLO does not hide the problems (or the query checks) of the others."""

    version: Literal["sentinel/v1"]
    service: str = Field(min_length=1, max_length=128)
    labels: dict[str, LabelValue] = Field(default_factory=dict)
    interval: Interval | None = None
    canary: CanaryFileSpec | None = None
    slos: list[Any] = Field(min_length=1)
