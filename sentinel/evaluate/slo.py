"""Pure SLO evaluation: (SLO, query answer, evaluation time) -> one result per instance.

No I/O, no clock: everything arrives as arguments, so backtests and tests evaluate at
explicit timestamps. An empty answer, NaN (0/0) or a missing series is `no_data`, never `ok`;
so is a value no backend could honestly have measured (a negative count or latency, +Inf,
bad > total): such a value would otherwise compare its way to `ok` (every comparison with
NaN is false), and the reason names it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sentinel.query.promql import PART_LABEL
from sentinel.rules.model import (
    RATIO_SLIS,
    SLO,
    GoodWhen,
    LatencySLI,
    LogRatioSLI,
    RatioQueriesSLI,
    RatioSLI,
    SLIKind,
)
from sentinel.slicing import CHUNK, SAMPLES_CHUNK, Steps, finish_now
from sentinel.sources.base import Sample
from sentinel.units import comparison, format_measure

InstanceKey = tuple[str, ...]
# Per instance of one SLO, its result's labels and key, reused from cycle to cycle
# (`evaluate(names=...)`): every cycle built them afresh for every instance, and the alert
# manager, the status-change log and the UI history each read the key.
Names = dict[InstanceKey, tuple[Mapping[str, str], str]]


class Status(StrEnum):
    OK = "ok"
    BREACH = "breach"
    NO_DATA = "no_data"


@dataclass(slots=True)
class SLOResult:
    """One SLO instance at one time. Treated as immutable (use dataclasses.replace); not
    frozen only because frozen dataclasses are several times slower to build, and a cycle
    builds thousands."""

    service: str
    slo: str
    status: Status
    value: float | None
    threshold: float
    objective: float | None
    window: float
    evaluated_at: float
    labels: Mapping[str, str] = field(default_factory=dict)
    events: float | None = None
    reason: str = ""
    query: str = ""
    kind: str = ""
    severity: str = "page"
    budget: Mapping[str, Any] | None = None
    good_when: str = "below"
    # `key`, computed once: the alert manager, the status-change log and the UI history
    # each read it for every result of every cycle. Not an init field, so a copy made by
    # dataclasses.replace computes its own.
    _key: str | None = field(default=None, init=False, repr=False, compare=False)

    def explanation(self) -> str:
        """The reason, or for a measured value `2.31 s > 1.5 s` (built on demand: most
        results of a cycle are never shown)."""
        if self.reason or self.value is None:
            return self.reason
        if self.kind == SLIKind.BURN_RATE and self.budget is not None:
            b = self.budget
            verb = ">" if self.status is Status.BREACH else "not both >"
            return (
                f"burn rate {b['long_burn']:.3g}x over {b['long_window']} and "
                f"{b['short_burn']:.3g}x over {b['short_window']} ({verb} {b['factor']:.3g}x)"
            )
        op = comparison(self.good_when, self.status is Status.BREACH)
        value, threshold = (
            format_measure(self.kind, self.value),
            format_measure(self.kind, self.threshold),
        )
        return f"{value} {op} {threshold}"

    @property
    def instance(self) -> InstanceKey:
        # Read several times per result and cycle (state machine, alerts, logs, metrics):
        # a list comprehension, and no sort for one label, halve its cost.
        labels = self.labels
        if len(labels) == 1:
            return tuple([f"{k}={v}" for k, v in labels.items()])
        return tuple([f"{k}={v}" for k, v in sorted(labels.items())])

    @property
    def key(self) -> str:
        key = self._key
        if key is None:
            if not self.labels:
                key = f"{self.service}/{self.slo}"
            else:
                key = f"{self.service}/{self.slo}{{{','.join(self.instance)}}}"
            self._key = key
        return key

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "slo": self.slo,
            "kind": self.kind,
            "status": self.status.value,
            "value": self.value,
            "threshold": self.threshold,
            "objective": self.objective,
            "window": self.window,
            "evaluated_at": rfc3339(self.evaluated_at),
            "labels": dict(self.labels),
            "events": self.events,
            "severity": self.severity,
            **({"budget": dict(self.budget)} if self.budget is not None else {}),
            "reason": self.explanation(),
            "query": self.query,
        }


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def evaluate(
    slo: SLO,
    samples: Sequence[Sample],
    at: float,
    query: str = "",
    known: Iterable[InstanceKey] = (),
    window: float | None = None,
    seen: set[InstanceKey] | None = None,
    names: Names | None = None,
) -> list[SLOResult]:
    """Evaluate one SLO from the answer to its query.

    `known` lists instances seen in earlier cycles, so an instance whose series vanished
    is reported as no_data instead of silently disappearing; the instances of this
    answer are added to `seen` when given. `names`, kept by the caller for this SLO across
    cycles, lends each instance's labels and key (and learns those of new instances).
    """
    return finish_now(evaluate_steps(slo, samples, at, query, known, window, seen, names))


def evaluate_steps(
    slo: SLO,
    samples: Sequence[Sample],
    at: float,
    query: str = "",
    known: Iterable[InstanceKey] = (),
    window: float | None = None,
    seen: set[InstanceKey] | None = None,
    names: Names | None = None,
) -> Steps[list[SLOResult]]:
    """`evaluate` as a step that yields every few instances (sentinel/slicing.py): the
    daemon runs it on the event loop in slices."""
    pair = _pair_parts(slo)
    if pair is not None:
        split = yield from _pair_steps(slo.group_by[0], samples, *pair)
        if split is not None:
            return (
                yield from _judge_pairs_steps(
                    slo, *split, _maker(slo, at, query, window, names), known, seen
                )
            )
    parts = yield from group_parts_steps(slo, samples)
    return (yield from grouped_steps(slo, parts, at, query, known, window, seen, names))


def grouped_steps(
    slo: SLO,
    parts: Mapping[InstanceKey, Mapping[str, list[float]]],
    at: float,
    query: str = "",
    known: Iterable[InstanceKey] = (),
    window: float | None = None,
    seen: set[InstanceKey] | None = None,
    names: Names | None = None,
) -> Steps[list[SLOResult]]:
    """The results from an answer grouped by `group_parts`: every shape of answer."""
    if seen is not None:
        seen.update(key for key in parts if key)
    keys = set(parts) | set(known)
    if not keys:
        keys = {()}  # nothing at all: one no_data result for the SLO as a whole
    judge = _judge(slo, _maker(slo, at, query, window, names))
    empty: dict[str, list[float]] = {}
    ordered = sorted(keys)
    yield
    out: list[SLOResult] = []
    get = parts.get
    for start in range(0, len(ordered), CHUNK):
        out += [judge(key, get(key, empty)) for key in ordered[start : start + CHUNK]]
        yield
    return out


def _pair_parts(slo: SLO) -> tuple[str, str] | None:
    """The two parts of an SLO's answer that `_pair_steps` reads (the first is the one
    judged; the second may be absent), for an SLO grouped by one label; else None."""
    if len(slo.group_by) != 1:
        return None
    if isinstance(slo.sli, (RatioSLI, RatioQueriesSLI, LogRatioSLI)):
        return "total", "bad"
    if isinstance(slo.sli, LatencySLI):
        return "value", "events"
    return None


def _pair_steps(
    label: str, samples: Sequence[Sample], first: str, second: str
) -> Steps[tuple[dict[str, float], dict[str, float]] | None]:
    """The common answer read in one pass without grouping into lists: at most one
    series of each of the two parts per instance, none of any other part. Anything else
    returns None and the answer takes `group_parts`, so both always give the same
    results (tests/unit/test_eval_fastpath.py); a cycle reads thousands of instances."""
    firsts: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for start in range(0, len(samples), SAMPLES_CHUNK):
        for labels, value in samples[start : start + SAMPLES_CHUNK]:
            part = labels.get(PART_LABEL, "value")
            if part == first:
                firsts[labels.get(label, "")] = value
            elif part == second:
                seconds[labels.get(label, "")] = value
            else:
                return None
        yield
    if len(firsts) + len(seconds) != len(samples):
        return None  # two series of one part for an instance
    return firsts, seconds


def _judge_pairs_steps(
    slo: SLO,
    firsts: dict[str, float],
    seconds: dict[str, float],
    make: Maker,
    known: Iterable[InstanceKey],
    seen: set[InstanceKey] | None,
) -> Steps[list[SLOResult]]:
    """`grouped_steps` for an answer `_pair_steps` read: `_judge`'s inline checks on
    the two values, and `_measure`'s checked path for anything else."""
    keys: set[InstanceKey] = {(name,) for name in firsts.keys() | seconds.keys()}
    if seen is not None:
        seen.update(keys)
    keys.update(known)
    if not keys:
        return [make((), *_measure(slo, {}))]
    ratio = _pair_parts(slo) == ("total", "bad")
    first_name, second_name = ("total", "bad") if ratio else ("value", "events")
    ordered = sorted(keys)
    yield
    out: list[SLOResult] = []
    first_of, second_of = firsts.get, seconds.get
    for start in range(0, len(ordered), CHUNK):
        for key in ordered[start : start + CHUNK]:
            # A remembered key of another length (the SLO's group_by changed in a
            # reload) holds no value of this answer: no_data, as in the grouped path.
            one = two = None
            if len(key) == 1:
                one, two = first_of(key[0]), second_of(key[0])
            if one is not None and (0.0 < one <= _MAX if ratio else 0.0 <= one <= _MAX):
                if two is None:
                    out.append(make(key, 0.0, one, "") if ratio else make(key, one, None, ""))
                    continue
                if ratio:
                    # bad <= total, both finite, total > 0: bad_total's checks all pass.
                    if 0.0 <= two <= one:
                        out.append(make(key, (two or 0.0) / one, one, ""))  # -0.0 is 0
                        continue
                elif 0.0 <= two <= _MAX:
                    out.append(make(key, one, two, ""))
                    continue
            parts: dict[str, list[float]] = {}
            if one is not None:
                parts[first_name] = [one]
            if two is not None:
                parts[second_name] = [two]
            out.append(make(key, *_measure(slo, parts)))
        yield
    return out


def evaluate_failure(
    slo: SLO,
    reason: str,
    at: float,
    query: str = "",
    known: Iterable[InstanceKey] = (),
    window: float | None = None,
    names: Names | None = None,
) -> list[SLOResult]:
    """The source could not answer: every known instance is no_data with the reason."""
    keys = sorted(set(known)) or [()]
    make = _maker(slo, at, query, window, names)
    return [make(key, None, None, reason) for key in keys]


def group_parts(slo: SLO, samples: Sequence[Sample]) -> dict[InstanceKey, dict[str, list[float]]]:
    """The answer's values per instance (the SLO's `group_by` labels) and per SLI part
    (`bad`, `total`, `value`, ...): what evaluation and the budget windows both judge."""
    return finish_now(group_parts_steps(slo, samples))


def group_parts_steps(
    slo: SLO, samples: Sequence[Sample]
) -> Steps[dict[InstanceKey, dict[str, list[float]]]]:
    """`group_parts` as a step that yields every few hundred samples."""
    grouped: dict[InstanceKey, dict[str, list[float]]] = {}
    group_by = slo.group_by
    single = group_by[0] if len(group_by) == 1 else None  # the common case, made cheap
    for start in range(0, len(samples), SAMPLES_CHUNK):
        for labels, value in samples[start : start + SAMPLES_CHUNK]:
            if single is not None:
                key: InstanceKey = (labels.get(single, ""),)
            else:
                key = tuple(labels.get(label, "") for label in group_by)
            part = labels.get(PART_LABEL, "value")
            by_part = grouped.get(key)
            if by_part is None:
                grouped[key] = {part: [value]}
            elif part in by_part:
                by_part[part].append(value)
            else:
                by_part[part] = [value]
        yield
    return grouped


class Unusable(ValueError):
    """A value of an answer that cannot be judged; the instance is no_data with this reason."""


# One chained comparison tells a usable count from NaN, +-Inf and negatives (hot path).
_MAX = sys.float_info.max
# bad may exceed total by float rounding when both sum the same increases in another order.
_BAD_OVER_TOTAL = 1e-9


def show(value: float) -> str:
    """A value as Prometheus writes it (`NaN`, `+Inf`, `-Inf`, `1.5`)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}"


def count(values: list[float] | None, what: str) -> float | None:
    """The sum of one part's series (None when there is none). Raises Unusable for a
    value no counter can have (NaN, +-Inf, negative) and for a sum that overflows."""
    if not values:
        return None
    for value in values:
        if not 0.0 <= value <= _MAX:
            raise Unusable(f"{what} is {show(value)}, not a count")
    if len(values) == 1:
        return values[0]
    try:
        total = math.fsum(values)  # finite inputs: the only failure left is overflow
    except OverflowError:
        total = math.inf
    if total > _MAX:
        raise Unusable(f"{what} overflows: the sum of its {len(values)} series is +Inf")
    return total


def error_ratio(values: list[float] | None) -> float | None:
    """A raw error ratio (None for NaN: 0/0, no traffic). Raises Unusable outside 0..1."""
    if not values:
        return None
    if any(math.isnan(value) for value in values):
        return None
    for value in values:
        if not 0.0 <= value <= 1.0 + _BAD_OVER_TOTAL:
            raise Unusable(f"error ratio is {show(value)}, outside 0..1")
    ratio = math.fsum(values)
    if ratio > 1.0 + _BAD_OVER_TOTAL:
        raise Unusable(f"error ratio is {show(ratio)} (sum of {len(values)} series), outside 0..1")
    return min(ratio, 1.0)


def bad_total(bad: float | None, total: float) -> float:
    """bad / total for total > 0; a missing bad series is 0 (error counters often never
    exist). Raises Unusable when bad > total: no honest answer has more errors than events."""
    bad = bad or 0.0
    if bad > total * (1 + _BAD_OVER_TOTAL):
        raise Unusable(f"bad {show(bad)} > total {show(total)}: check the rule's bad and total")
    return min(bad / total, 1.0)


def _measure(slo: SLO, parts: Mapping[str, list[float]]) -> tuple[float | None, float | None, str]:
    """-> (value, events, reason); value None means no_data."""
    try:
        return _measure_checked(slo, parts)
    except Unusable as exc:
        return None, None, str(exc)


def _measure_checked(
    slo: SLO, parts: Mapping[str, list[float]]
) -> tuple[float | None, float | None, str]:
    if "ratio" in parts:  # a raw error ratio: no event counts
        ratio = error_ratio(parts.get("ratio"))
        if ratio is None:
            return None, None, "error ratio is NaN or missing (no traffic in the window)"
        return ratio, None, ""
    if isinstance(slo.sli, RATIO_SLIS):
        total = count(parts.get("total"), "total")
        bad = count(parts.get("bad"), "bad")
        if total is None or total <= 0:
            return None, total, "no traffic in the window"
        return bad_total(bad, total), total, ""
    values = parts.get("value")
    latency = isinstance(slo.sli, LatencySLI)
    events = count(parts.get("events"), "events") if latency else None
    if not values:
        return None, events, "query returned no series"
    if len(values) > 1:
        return None, events, f"query returned {len(values)} series for one instance; expected 1"
    value = values[0]
    if math.isnan(value):
        return None, events, "value is NaN (no traffic in the window)"
    if math.isinf(value):
        return None, events, f"value is {show(value)}, not a measurement"
    if latency and value < 0:
        return None, events, f"latency is {show(value)} s, below zero"
    return value, events, ""


Maker = Callable[[InstanceKey, float | None, float | None, str], SLOResult]


def _judge(slo: SLO, make: Maker) -> Callable[[InstanceKey, Mapping[str, list[float]]], SLOResult]:
    """`make(key, *_measure(slo, parts))`, with the common case measured inline: one
    finite, non-negative series per part (an honest answer). Anything else (NaN, +-Inf,
    negatives, bad > total, several series, a raw ratio) takes `_measure`'s checked path,
    so both give the same result (tests/unit/test_eval_fastpath.py); the inline path is
    about half the CPU of a cycle's judging."""
    if isinstance(slo.sli, RATIO_SLIS):

        def judge_ratio(key: InstanceKey, parts: Mapping[str, list[float]]) -> SLOResult:
            totals, bads = parts.get("total"), parts.get("bad")
            if totals is not None and len(totals) == 1 and "ratio" not in parts:
                total = totals[0]
                if bads is None:
                    if 0.0 < total <= _MAX:
                        return make(key, 0.0, total, "")
                elif len(bads) == 1:
                    bad = bads[0]
                    # bad <= total, both finite, total > 0: bad_total's checks all pass
                    # and bad / total <= 1 (a correctly rounded quotient of bad <= total).
                    if 0.0 <= bad <= total and 0.0 < total <= _MAX:
                        return make(key, (bad or 0.0) / total, total, "")  # -0.0 is 0
            return make(key, *_measure(slo, parts))

        return judge_ratio
    latency = isinstance(slo.sli, LatencySLI)
    low = 0.0 if latency else -_MAX

    def judge_value(key: InstanceKey, parts: Mapping[str, list[float]]) -> SLOResult:
        values = parts.get("value")
        if values is not None and len(values) == 1 and "ratio" not in parts:
            value = values[0]
            if low <= value <= _MAX:
                if not latency:
                    return make(key, value, None, "")
                counts = parts.get("events")
                if counts is None:
                    return make(key, value, None, "")
                if len(counts) == 1 and 0.0 <= counts[0] <= _MAX:
                    return make(key, value, counts[0], "")
        return make(key, *_measure(slo, parts))

    return judge_value


def _maker(
    slo: SLO, at: float, query: str, window: float | None, names: Names | None = None
) -> Maker:
    """A result constructor with everything constant for the SLO computed once (a cycle
    builds thousands of results)."""
    group_by = slo.group_by
    effective_window = window if window is not None else slo.window
    kind, severity, good_when = slo.sli.kind, slo.severity.value, slo.good_when.value
    threshold, objective, min_events = slo.threshold, slo.objective, slo.min_events
    below = slo.good_when is GoodWhen.BELOW  # SLO.breached, inlined (hot path)
    service_index = group_by.index("service") if "service" in group_by else None
    single = group_by[0] if len(group_by) == 1 else None
    no_data, breach, ok = Status.NO_DATA, Status.BREACH, Status.OK

    def make(key: InstanceKey, value: float | None, events: float | None, reason: str) -> SLOResult:
        named = names.get(key) if names is not None else None
        labels: Mapping[str, str]
        if named is not None:
            labels = named[0]
        elif not key:
            labels = {}
        elif single is not None:
            labels = {single: key[0]}
        else:
            labels = dict(zip(group_by, key, strict=True))
        status = no_data
        if value is not None:
            if events is not None and events < min_events:
                reason = f"insufficient traffic: {events:g} events < min_events {min_events:g}"
            elif below:
                status = ok if value <= threshold else breach  # NaN breaches
            else:
                status = ok if value >= threshold else breach
        service = key[service_index] if service_index is not None and key else slo.service
        result = SLOResult(
            service,
            slo.name,
            status,
            value,
            threshold,
            objective,
            effective_window,
            at,
            labels,
            events,
            reason,
            query,
            kind,
            severity,
            None,
            good_when,
        )
        if named is not None:
            result._key = named[1]
        elif names is not None:
            names[key] = (labels, result.key)
        return result

    return make
